//! The process's allocator: mimalloc, with a second heap for what lives as long as a shard.
//!
//! mimalloc carves memory into pages that each hold blocks of one size (64 KiB pages for
//! blocks up to 10 KiB, 512 KiB pages up to 84 KiB) and gives a page back to the system only
//! once every block in it is free. A shard allocates its long-lived parts (queues, rings'
//! bookkeeping, the broker's fixed tables) when it starts, and then millions of short-lived
//! blocks (messages, send queues) during a burst. If both kinds share pages, each long-lived
//! block keeps the page it sits in resident after the burst, full of free blocks: measured
//! with the chaos soak, about 3 MB per shard that never came back (docs/testing.md).
//! Allocating the long-lived parts from a heap of their own ([`long_lived`]) keeps the pages
//! that bursts fill free of them, so those pages empty completely and go back.
//!
//! Everything else goes to mimalloc's default heap exactly as before; the only cost on the
//! hot path is reading one thread-local flag per allocation.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libmimalloc_sys::{
    mi_collect, mi_free, mi_heap_collect, mi_heap_malloc_aligned, mi_heap_new,
    mi_heap_realloc_aligned, mi_heap_t, mi_heap_zalloc_aligned, mi_malloc_aligned,
    mi_realloc_aligned, mi_zalloc_aligned,
};

/// The process-wide allocator (`#[global_allocator]` in `main.rs`).
pub struct Allocator;

/// The heap of long-lived allocations, made on first use. mimalloc heaps serve every thread
/// (each allocating thread gets its own part of the heap), so one is enough.
static LONG_LIVED_HEAP: AtomicPtr<mi_heap_t> = AtomicPtr::new(ptr::null_mut());

thread_local! {
    /// Whether this thread is inside [`long_lived`].
    static IN_LONG_LIVED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `build` with its allocations (and the growth of what it allocates, while inside)
/// taken from the long-lived heap. For what is made once and kept until the shard stops.
pub fn long_lived<R>(build: impl FnOnce() -> R) -> R {
    let outer = IN_LONG_LIVED.with(|flag| flag.replace(true));
    let result = build();
    IN_LONG_LIVED.with(|flag| flag.set(outer));
    result
}

/// Has the allocator return what this thread holds free, in both heaps: blocks other threads
/// freed (the messages a shard routes are freed by the last shard that delivers them, often
/// another one, and the allocator takes such blocks back only when their owner allocates
/// again, which an idle shard does not), empty pages, and with `force` their memory to the
/// system.
pub fn collect_free_memory(force: bool) {
    // SAFETY: mi_collect takes no pointers and only touches the calling thread's part of the
    // default heap.
    unsafe { mi_collect(force) };
    let heap = LONG_LIVED_HEAP.load(Ordering::Acquire);
    if !heap.is_null() {
        // SAFETY: a heap made by mi_heap_new and never deleted; collecting touches only the
        // calling thread's part of it.
        unsafe { mi_heap_collect(heap, force) };
    }
}

/// The long-lived heap when this thread is inside [`long_lived`].
#[inline]
fn scoped_heap() -> Option<*mut mi_heap_t> {
    if !IN_LONG_LIVED.with(Cell::get) {
        return None;
    }
    let heap = LONG_LIVED_HEAP.load(Ordering::Acquire);
    if !heap.is_null() {
        return Some(heap);
    }
    // SAFETY: mi_heap_new takes no arguments; a null result (no memory) falls back to the
    // default heap.
    let made = unsafe { mi_heap_new() };
    if made.is_null() {
        return None;
    }
    match LONG_LIVED_HEAP.compare_exchange(
        ptr::null_mut(),
        made,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Some(made),
        // Another thread made one first; the spare heap stays empty (it is never used).
        Err(winner) => Some(winner),
    }
}

// SAFETY: every block comes from mimalloc (either heap) with the layout's size and alignment,
// and `mi_free` frees a block of any mimalloc heap, from any thread.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: size and alignment come from a valid `Layout`.
        unsafe {
            match scoped_heap() {
                Some(heap) => mi_heap_malloc_aligned(heap, layout.size(), layout.align()),
                None => mi_malloc_aligned(layout.size(), layout.align()),
            }
        }
        .cast()
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            match scoped_heap() {
                Some(heap) => mi_heap_zalloc_aligned(heap, layout.size(), layout.align()),
                None => mi_zalloc_aligned(layout.size(), layout.align()),
            }
        }
        .cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator (the `GlobalAlloc` contract).
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let block = ptr.cast::<c_void>();
        // SAFETY: `ptr` was returned by this allocator with `layout` (the `GlobalAlloc`
        // contract); the new size is non-zero and the alignment is the layout's.
        unsafe {
            match scoped_heap() {
                Some(heap) => mi_heap_realloc_aligned(heap, block, new_size, layout.align()),
                None => mi_realloc_aligned(block, new_size, layout.align()),
            }
        }
        .cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        // In mimalloc's header; the -sys crate binds it for mimalloc 2 only.
        fn mi_heap_contains(heap: *const mi_heap_t, p: *const c_void) -> bool;
    }

    fn in_long_lived_heap(block: *mut u8) -> bool {
        let heap = LONG_LIVED_HEAP.load(Ordering::Acquire);
        // SAFETY: both pointers come from mimalloc; the call only looks them up.
        !heap.is_null() && unsafe { mi_heap_contains(heap, block.cast()) }
    }

    #[test]
    fn blocks_made_inside_long_lived_come_from_their_own_heap_and_grow_there() {
        // A medium size: the pages whose sharing the long-lived heap is there to avoid.
        let layout = Layout::from_size_align(24 * 1024, 8).expect("a valid layout");
        // SAFETY: a non-zero size; every block is freed below with its layout.
        unsafe {
            let outside = Allocator.alloc(layout);
            let inside = long_lived(|| Allocator.alloc(layout));
            assert!(!outside.is_null() && !inside.is_null());
            assert!(in_long_lived_heap(inside));
            assert!(!in_long_lived_heap(outside));

            let grown = long_lived(|| Allocator.realloc(inside, layout, 48 * 1024));
            assert!(
                in_long_lived_heap(grown),
                "growth inside the scope stays there"
            );
            let grown_layout = Layout::from_size_align(48 * 1024, 8).expect("a valid layout");
            let moved = Allocator.realloc(grown, grown_layout, 96 * 1024);
            assert!(
                !in_long_lived_heap(moved),
                "growth outside goes to the default heap"
            );

            Allocator.dealloc(outside, layout);
            let moved_layout = Layout::from_size_align(96 * 1024, 8).expect("a valid layout");
            Allocator.dealloc(moved, moved_layout);
        }
    }

    #[test]
    fn long_lived_scopes_nest() {
        long_lived(|| {
            long_lived(|| {});
            assert!(IN_LONG_LIVED.with(Cell::get), "the outer scope still holds");
        });
        assert!(!IN_LONG_LIVED.with(Cell::get));
    }
}
