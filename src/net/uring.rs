//! The io_uring instance and the provided-buffer ring of one shard.
//!
//! This is the one module that holds `unsafe`. Two promises make it sound, and every caller of
//! [`Ring::push`] keeps them:
//! - memory an operation points at (a `msghdr` and its iovecs, the bytes they name, an eventfd
//!   read target, a timespec) stays where it is until that operation's last completion;
//! - a receive buffer handed out by [`BufRing::buffer_mut`] is given back with
//!   [`BufRing::recycle`] only after the caller stopped using it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::types::{BufRingEntry, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

/// Why io_uring cannot serve this process, in words an operator can act on.
#[derive(Debug)]
pub struct RingUnavailable(pub String);

impl std::fmt::Display for RingUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RingUnavailable {}

/// What the kernel accepted when the ring was set up; logged at start-up.
#[derive(Debug, Clone, Copy)]
pub struct RingFeatures {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
}

pub struct Ring {
    ring: IoUring,
    pub features: RingFeatures,
}

/// The operations the data plane cannot do without, with the kernel that brought each.
const REQUIRED_OPCODES: [(u8, &str); 8] = [
    (
        opcode::AcceptMulti::CODE,
        "ACCEPT (multishot since Linux 5.19)",
    ),
    (opcode::RecvMulti::CODE, "RECV (multishot since Linux 6.0)"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::Send::CODE, "SEND"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Read::CODE, "READ"),
    (opcode::Close::CODE, "CLOSE"),
    (opcode::Shutdown::CODE, "SHUTDOWN"),
];

impl Ring {
    /// Sets up a ring, preferring the flags that suit one thread per ring, falling back to a
    /// plain ring where the kernel refuses them.
    pub fn new(entries: u32) -> Result<Ring, RingUnavailable> {
        let attempts = [
            RingFeatures {
                single_issuer: true,
                defer_taskrun: true,
            },
            RingFeatures {
                single_issuer: true,
                defer_taskrun: false,
            },
            RingFeatures {
                single_issuer: false,
                defer_taskrun: false,
            },
        ];
        let mut last_error = None;
        for features in attempts {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(entries * 4);
            if features.single_issuer {
                builder.setup_single_issuer();
            }
            if features.defer_taskrun {
                builder.setup_defer_taskrun();
            }
            match builder.build(entries) {
                Ok(ring) => {
                    Ring::check_kernel_release()?;
                    let ring = Ring { ring, features };
                    ring.check_opcodes()?;
                    return Ok(ring);
                }
                Err(e) => last_error = Some(e),
            }
        }
        let error = last_error.expect("at least one attempt was made");
        Err(RingUnavailable(explain_setup_error(&error)))
    }

    /// The opcode probe cannot see the multishot flags, so the kernel release decides: multishot
    /// receive into provided buffers arrived in Linux 6.0.
    fn check_kernel_release() -> Result<(), RingUnavailable> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        match parse_release(&release) {
            Some(version) if version < (6, 0) => Err(RingUnavailable(format!(
                "Linux {} is too old: fanfare needs 6.0 or later for multishot receive into provided buffers",
                release.trim()
            ))),
            // An unreadable release is no reason to refuse: the operations report themselves.
            _ => Ok(()),
        }
    }

    fn check_opcodes(&self) -> Result<(), RingUnavailable> {
        let mut probe = io_uring::Probe::new();
        self.ring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| {
                RingUnavailable(format!(
                    "io_uring probe failed ({e}): the kernel is older than 5.6"
                ))
            })?;
        for (code, name) in REQUIRED_OPCODES {
            if !probe.is_supported(code) {
                return Err(RingUnavailable(format!(
                    "io_uring operation {name} is not supported by this kernel; fanfare needs Linux 6.0 or later"
                )));
            }
        }
        Ok(())
    }

    /// Queues one operation, submitting first when the submission queue is full.
    ///
    /// # Safety
    /// Whatever `entry` points at must stay valid and unmoved until its last completion.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller guarantees the pointed-at memory outlives the operation.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Submits what is queued and waits until at least one completion is ready or `timeout`
    /// passes. A zero timeout does not wait, but still asks for completions: with deferred
    /// task running the kernel posts receive and retried-send completions only when the
    /// ring is asked for events, so a loop that stays busy (a fan-out sliced over turns) would
    /// otherwise see no receive, accept or ping until it went idle.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            // ETIME: the wait timed out; EINTR: a signal arrived. Both just end the wait.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes up to `max` completions; the loop handles them after this borrow ends, so a
    /// handler that queues new operations never runs inside another (no recursion).
    pub fn drain_completions(&mut self, into: &mut Vec<cqueue::Entry>, max: usize) {
        let mut completion = self.ring.completion();
        completion.sync();
        for entry in completion.by_ref().take(max) {
            into.push(entry);
        }
    }

    fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// Registers an empty table of `slots` fixed files. An operation on a registered socket
    /// skips the kernel's per-operation file lookup and reference count (`fget`/`fput`, ~4 %
    /// of a one-message send). The table counts against `RLIMIT_NOFILE`.
    pub fn register_fixed_files(&self, slots: u32) -> io::Result<()> {
        self.submitter().register_files_sparse(slots)
    }

    /// Puts socket `fd` in fixed-file slot `slot`; the table holds its own reference to the
    /// socket until [`Ring::clear_fixed_file`].
    pub fn set_fixed_file(&self, slot: u32, fd: RawFd) -> io::Result<()> {
        self.submitter()
            .register_files_update(slot, &[fd])
            .map(|_| ())
    }

    /// Empties fixed-file slot `slot`, dropping the table's reference to its socket
    /// (operations in flight keep their own).
    pub fn clear_fixed_file(&self, slot: u32) -> io::Result<()> {
        self.submitter()
            .register_files_update(slot, &[-1])
            .map(|_| ())
    }
}

/// `"6.18.3-foo"` → `(6, 18)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn explain_setup_error(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring is not available: the kernel was built without it (ENOSYS)".to_owned(),
        Some(libc::EPERM) => "io_uring is disabled for this process: check `sysctl kernel.io_uring_disabled` \
             (must be 0, or 1 with this user in kernel.io_uring_group) and any seccomp profile (EPERM)"
            .to_owned(),
        Some(libc::ENOMEM) => "io_uring ring memory could not be allocated: raise `ulimit -l` (ENOMEM)".to_owned(),
        _ => format!("io_uring setup failed: {error}"),
    }
}

/// Anonymous private memory the kernel reads or writes on the shard's behalf, with every page
/// faulted in when it is mapped (`MAP_POPULATE`).
///
/// Populating is what keeps the receive buffers a fixed cost of the shard: untouched, their
/// pages would be faulted in one by one as the first connections read (the kernel hands out
/// buffers round-robin), so the first bursts of a fresh shard would pay page faults inside
/// receives, and RSS would climb by 4 MiB with the first few thousand connections, as if each
/// of them cost ~200 B more than it does.
struct Mapping {
    addr: *mut u8,
    bytes: usize,
}

impl Mapping {
    fn populated(bytes: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            addr: addr.cast(),
            bytes,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // The kernel no longer reads or writes it: a shard unregisters its buffer ring before
        // dropping it, or drops the ring first, which releases the registration with it.
        // SAFETY: the mapping was created in `populated` with exactly this length.
        unsafe {
            libc::munmap(self.addr.cast(), self.bytes);
        }
    }
}

/// A ring of fixed-size receive buffers the kernel picks from for multishot receives, so an
/// idle connection holds no buffer of its own.
pub struct BufRing {
    /// The ring entries the kernel reads buffer addresses from; the first one holds the tail.
    entries: Mapping,
    entry_count: u16,
    tail: u16,
    buffers: Mapping,
    buffer_bytes: usize,
    pub group: u16,
}

impl BufRing {
    /// Allocates `entry_count` (a power of two) buffers of `buffer_bytes` and registers them as
    /// buffer group `group`.
    pub fn new(
        ring: &Ring,
        group: u16,
        entry_count: u16,
        buffer_bytes: usize,
    ) -> Result<BufRing, RingUnavailable> {
        assert!(
            entry_count.is_power_of_two(),
            "the kernel requires a power-of-two ring"
        );
        let unmappable = |what: &str, e: io::Error| {
            RingUnavailable(format!("cannot map the receive {what}: {e}"))
        };
        let entries_bytes = usize::from(entry_count) * std::mem::size_of::<BufRingEntry>();
        let entries =
            Mapping::populated(entries_bytes).map_err(|e| unmappable("buffer ring", e))?;
        let buffers = Mapping::populated(usize::from(entry_count) * buffer_bytes)
            .map_err(|e| unmappable("buffers", e))?;
        let addr = entries.addr as u64;
        let mut buf_ring = BufRing {
            entries,
            entry_count,
            tail: 0,
            buffers,
            buffer_bytes,
            group,
        };
        // SAFETY: the mapping is page aligned, lives as long as `buf_ring`, and is unregistered
        // before it is unmapped (`unregister`, or the ring going first).
        let registered = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr, entry_count, group, 0)
        };
        registered.map_err(|e| {
            RingUnavailable(format!(
                "io_uring provided-buffer rings are not supported ({e}); fanfare needs Linux 5.19 or later"
            ))
        })?;
        for id in 0..entry_count {
            buf_ring.recycle(id);
        }
        Ok(buf_ring)
    }

    /// Where buffer `id` starts.
    fn buffer_addr(&self, id: u16) -> *mut u8 {
        assert!(
            id < self.entry_count,
            "buffer id from the kernel is within the ring"
        );
        // In bounds: `id` < entry_count, and the mapping holds entry_count buffers.
        self.buffers
            .addr
            .wrapping_add(usize::from(id) * self.buffer_bytes)
    }

    /// The first `len` bytes of buffer `id`, which the kernel filled and handed to us.
    pub fn buffer_mut(&mut self, id: u16, len: usize) -> &mut [u8] {
        let len = len.min(self.buffer_bytes);
        // SAFETY: the range lies inside buffer `id` of the mapping; the kernel handed the
        // buffer over with this completion and gets it back only through `recycle`, which
        // the exclusive borrow of `self` keeps from happening while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.buffer_addr(id), len) }
    }

    /// Gives buffer `id` back to the kernel.
    pub fn recycle(&mut self, id: u16) {
        let addr = self.buffer_addr(id) as u64;
        let mask = self.entry_count - 1;
        let slot = self.tail & mask;
        let entries: *mut BufRingEntry = self.entries.addr.cast();
        // SAFETY: `slot` < entry_count, inside the mapping; the kernel reads entries only up to
        // the tail, which is published after the entry is written.
        unsafe {
            let entry = &mut *entries.add(usize::from(slot));
            entry.set_addr(addr);
            entry.set_len(self.buffer_bytes as u32);
            entry.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lives in the first entry of the mapping; the release store
        // orders the entry writes above before the kernel sees the new tail.
        unsafe {
            let tail = BufRingEntry::tail(entries) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Withdraws the buffer ring from the kernel before it is unmapped.
pub fn unregister(ring: &Ring, buf_ring: &BufRing) {
    // An error here only means the kernel already dropped it with the ring.
    let _ = ring.submitter().unregister_buf_ring(buf_ring.group);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_release("6.18.3-arch1\n"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
    }
}
