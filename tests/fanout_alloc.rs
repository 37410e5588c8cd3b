//! No heap allocation per delivery once warm: one publish fanned out to N in-process
//! subscribers (broker, send queues and send pool; no sockets) costs the same few allocations
//! — the message itself and one encoding per wire variant — whether N is 100 or 3000.

mod rig;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use fanfare::broker::FANOUT_SESSIONS_PER_TURN_MAX;
use fanfare::protocol::mqtt::{Delivery, PacketId, ProtocolVersion};
use rig::Rig;

/// Counts allocations and reallocations; frees are free.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` or `realloc` above, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller's contract on `new_size` is the system's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: usize = 3;
const MEASURED: u64 = 10;

/// Allocations per publish, after warm-up, for the `n` subscribers of `rig`.
fn allocations_per_publish_of(mut rig: Rig, n: usize) -> (u64, u64) {
    let qos1 = Delivery::AtLeastOnce(PacketId::new(7).expect("non-zero"));
    for _ in 0..WARM_UP {
        rig.publish("scores/match-1", &[0x55; 64], qos1);
    }
    let sent_before = rig.delivered_bytes;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..MEASURED {
        rig.publish("scores/match-1", &[0x55; 64], qos1);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let sent = rig.delivered_bytes - sent_before;
    assert!(
        sent >= MEASURED * n as u64 * 64,
        "every subscriber got every publish"
    );
    (allocations / MEASURED, allocations % MEASURED)
}

/// The count for 100 subscribers and for more than one turn delivers (so the sliced path is
/// measured too), with clients made by `rig`.
fn small_and_large(rig: impl Fn(usize) -> Rig) -> ((u64, u64), (u64, u64)) {
    let large = 3 * FANOUT_SESSIONS_PER_TURN_MAX;
    (
        allocations_per_publish_of(rig(100), 100),
        allocations_per_publish_of(rig(large), large),
    )
}

/// One test, since the counter is the whole process's: tests running beside each other
/// would count each other's allocations.
#[test]
fn a_delivery_allocates_nothing_once_warm() {
    let plain = |n| Rig::new(n, "scores/match-1", 3);
    // MQTT 5 subscribers taking Topic Aliases: every delivery once warm is "alias only".
    let aliased = |n| Rig::with_clients(n, "scores/match-1", 3, ProtocolVersion::V5, 16);
    // The message (Arc, topic, payload), the PUBACK to the publisher, and per wire variant
    // used (TCP and WebSocket at QoS 0 and QoS 1) its encoding and the shared copy of it; with
    // aliases, each variant's property list (the Topic Alias) too.
    for ((small, large), most) in [(small_and_large(plain), 12), (small_and_large(aliased), 16)] {
        assert_eq!(small, large, "allocations do not grow with the subscribers");
        assert_eq!(small.1, 0, "the same count for every publish");
        assert!(small.0 <= most, "{} allocations per publish", small.0);
    }
}
