//! A send made directly, outside the runtime's ring. The runtime submits queued operations
//! only after polling every task that is ready, and a burst of deliveries can make thousands
//! ready at once; a publish stamped with its send time must not wait behind them, or its
//! latency would include this generator's own backlog.

use std::io;
use std::os::fd::RawFd;

/// Writes what the socket takes now without blocking; returns the bytes written.
pub fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `fd` is an open socket owned by the caller; `bytes` is a live buffer of the
    // length given.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
