//! The few plain system calls the data plane makes outside the ring.
#![allow(unsafe_code)]

use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// write(2); async-signal-safe.
pub fn write(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `bytes`, borrowed for the call.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if written < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(written as usize)
}

/// Takes ownership of a descriptor the kernel handed us in a completion.
pub fn own(fd: RawFd) -> OwnedFd {
    assert!(
        fd >= 0,
        "descriptors from completions are checked non-negative first"
    );
    // SAFETY: accept returned `fd` to us alone; no other owner exists.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The peer address of a connected socket, with `TCP_NODELAY` set on it (an MQTT packet is
/// complete when written, and Nagle would hold a score update back for the previous ACK) and
/// `TCP_NOTSENT_LOWAT` = `notsent_lowat_bytes` (the kernel takes more from a send only while
/// less than that is unsent, so a slow reader's backlog stays in the broker's bounded queue,
/// where it can be dropped or conflated, instead of in a kernel copy per socket).
pub fn prepare_accepted(fd: &OwnedFd, notsent_lowat_bytes: u32) -> io::Result<SocketAddr> {
    use std::os::fd::AsRawFd;
    // SAFETY: the TcpStream borrows `fd` and is never dropped, so it never closes it.
    let stream = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd.as_raw_fd()) });
    stream.set_nodelay(true)?;
    let value = libc::c_int::try_from(notsent_lowat_bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the option value is a c_int passed by pointer with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    stream.peer_addr()
}

/// Half-closes the sending side so the peer reads everything sent, then an orderly end.
pub fn shutdown_write(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown takes no pointers. Failure means the peer is gone, which is fine here.
    unsafe {
        libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR);
    }
}

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR2 in this thread and the threads it spawns afterwards, so
/// that [`wait_for_signal`] receives them instead of the default handler killing the process.
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_signals();
    // SAFETY: `set` is a valid, initialised signal set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Turns transparent huge pages off for the whole process, mappings made already included.
///
/// The allocator asks for huge pages on its heap (`madvise(MADV_HUGEPAGE)`), and the kernel
/// then backs any 2 MiB of it that is touched at all with a whole huge page: at the first
/// touch, or later when khugepaged finds even one page in use there (its default
/// `max_ptes_none` is 511). RSS then counts 2 MiB for every region the heap ever touched and
/// keeps growing after the clients went idle: a fresh shard held 27–29 MB instead of 13, and
/// 47–54 MB instead of 31–35 with 19 000 idle WebSocket subscribers. The fan-out load runs
/// showed no gain from huge pages to weigh against that (docs/benchmarks.md).
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    // SAFETY: prctl takes integer arguments only here; the result is checked.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a signal asks of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: stop gracefully.
    Stop(&'static str),
    /// SIGHUP: read the certificates again.
    Reload,
    /// SIGUSR2, raised by the instance lock's thread once a successor took the listening
    /// sockets over (`fanfare --takeover`): drain. Sent by anyone else, it is ignored.
    HandedOver,
}

/// Waits for SIGINT, SIGTERM, SIGHUP or SIGUSR2, or at most `timeout` when one is given: `None` then
/// means the time passed without a signal.
pub fn wait_for_signal(timeout: Option<Duration>) -> Option<Signal> {
    let set = stop_signals();
    let signal = match timeout {
        None => {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is initialised and `signal` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            // sigwait fails only for an invalid set, which `stop_signals` does not build.
            (rc == 0).then_some(signal)?
        }
        Some(timeout) => {
            let limit = libc::timespec {
                tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
            };
            // SAFETY: `set` and `limit` are initialised; a null info pointer is allowed.
            let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &limit) };
            // -1: the time passed (EAGAIN) or another signal's handler ran (EINTR); the caller
            // waits again either way.
            (rc > 0).then_some(rc)?
        }
    };
    Some(match signal {
        libc::SIGHUP => Signal::Reload,
        libc::SIGUSR2 => Signal::HandedOver,
        libc::SIGINT => Signal::Stop("SIGINT"),
        _ => Signal::Stop("SIGTERM"),
    })
}

/// Tells the main thread, waiting in [`wait_for_signal`], that a successor took over.
pub fn raise_handed_over() -> io::Result<()> {
    // SAFETY: kill takes integer arguments only; the signal is blocked in every thread of the
    // broker, so it waits for the main thread's sigwait instead of killing the process.
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        set
    }
}

/// The cores this process may run on (its affinity mask, as `taskset` sets it), ascending.
pub fn allowed_cores() -> io::Result<Vec<usize>> {
    // SAFETY: the set is zero-initialised, filled by sched_getaffinity with its exact size,
    // and only read through CPU_ISSET within CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&core| libc::CPU_ISSET(core, &set))
            .collect())
    }
}

/// Pins the calling thread to `core`. Failure (a restricted cpuset) is reported, not fatal.
pub fn pin_to_core(core: usize) -> io::Result<()> {
    // SAFETY: the set is zero-initialised then filled by CPU_SET, and passed by pointer with
    // its exact size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Shuts both directions: pending operations on the socket end at once.
/// The process's soft limit on open files (`RLIMIT_NOFILE`), which also caps an io_uring
/// fixed-file table.
pub fn open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit the call fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

pub fn shutdown_both(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown takes no pointers; failure means the socket is already down.
    unsafe {
        libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR);
    }
}
