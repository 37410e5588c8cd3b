//! Kernel receive timestamps (`SO_TIMESTAMPNS`): when a subscriber's bytes reached its socket,
//! as opposed to when this generator got round to reading them.
//!
//! A burst of deliveries (one publish to 10 000 subscribers) arrives faster than one thread can
//! read 10 000 sockets, so the end-to-end latency this generator measures includes its own
//! queueing. The kernel stamps each packet as it enters the receive path; latency to that
//! stamp is what the broker and the network took, and the difference is the generator's own
//! read lag. Both are reported, so a reader can tell a slow broker from a busy generator.
//!
//! The stamp is of the last packet a read returned: a read that gathers several messages
//! gives them all the latest arrival, which overstates the earlier ones' latency, never
//! understates it.

use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::stats;

/// Room for one `SCM_TIMESTAMPNS` control message (16-byte header + 16-byte timespec) and
/// whatever else the kernel might add.
const CONTROL_BYTES: usize = 64;

/// A control-message buffer aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct Control([u8; CONTROL_BYTES]);

/// Asks the kernel to stamp what this socket receives.
pub fn enable(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a live c_int of
    // the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads without blocking into the spare capacity of `buf`, appending. Returns the bytes read
/// (0 = end of stream) and the receive stamp of the last packet read, on the clock of
/// [`stats::now_ns`], when the kernel gave one.
pub fn recv(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<(usize, Option<u64>)> {
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let mut control = Control([0; CONTROL_BYTES]);
    // SAFETY: an all-zero msghdr is a valid "no name, no buffers" header; the fields set below
    // point at live buffers of the lengths given.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_BYTES;
    // SAFETY: `fd` is an open socket; `msg` describes buffers that outlive the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    let control_len = msg.msg_controllen.min(CONTROL_BYTES);
    Ok((n, timestamp_ns(&control.0[..control_len]).map(to_clock)))
}

/// The `SCM_TIMESTAMPNS` timespec in a control buffer, as nanoseconds since the Unix epoch.
fn timestamp_ns(control: &[u8]) -> Option<u64> {
    const HEADER: usize = 16; // cmsg_len (usize), cmsg_level (i32), cmsg_type (i32)
    let mut at = 0;
    while control.len() >= at + HEADER {
        let word = |from: usize, len: usize| &control[at + from..at + from + len];
        let len = usize::from_ne_bytes(word(0, 8).try_into().ok()?);
        let level = i32::from_ne_bytes(word(8, 4).try_into().ok()?);
        let kind = i32::from_ne_bytes(word(12, 4).try_into().ok()?);
        if len < HEADER || control.len() < at + len {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS && len >= HEADER + 16 {
            let secs = i64::from_ne_bytes(word(HEADER, 8).try_into().ok()?);
            let nanos = i64::from_ne_bytes(word(HEADER + 8, 8).try_into().ok()?);
            return u64::try_from(secs)
                .ok()?
                .checked_mul(1_000_000_000)?
                .checked_add(u64::try_from(nanos).ok()?);
        }
        at += len.next_multiple_of(8);
    }
    None
}

/// Wall-clock nanoseconds to the monotonic clock payloads are stamped with. The offset is
/// taken once, from the closest of a few paired readings.
fn to_clock(realtime_ns: u64) -> u64 {
    static OFFSET: OnceLock<i128> = OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        (0..5)
            .map(|_| {
                let before = stats::now_ns();
                let wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                let after = stats::now_ns();
                (
                    after - before,
                    wall - i128::from(before + (after - before) / 2),
                )
            })
            .min_by_key(|(spread, _)| *spread)
            .map_or(0, |(_, offset)| offset)
    });
    u64::try_from(i128::from(realtime_ns) - offset).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(16 + data.len()).to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(8), 0);
        out
    }

    fn timespec(secs: i64, nanos: i64) -> Vec<u8> {
        [secs.to_ne_bytes(), nanos.to_ne_bytes()].concat()
    }

    #[test]
    fn finds_the_timestamp_after_other_messages() {
        let mut control = cmsg(libc::SOL_IP, 1, &[1, 2, 3, 4]);
        control.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(3, 250),
        ));
        assert_eq!(timestamp_ns(&control), Some(3_000_000_250));
    }

    #[test]
    fn no_or_truncated_control_data_gives_no_timestamp() {
        assert_eq!(timestamp_ns(&[]), None);
        let whole = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(1, 0));
        assert_eq!(timestamp_ns(&whole[..20]), None);
        let mut bad_len = whole.clone();
        bad_len[..8].copy_from_slice(&4usize.to_ne_bytes());
        assert_eq!(timestamp_ns(&bad_len), None);
    }

    #[test]
    fn a_real_socket_gets_stamps_on_the_payload_clock() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("bound")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        enable(server.as_raw_fd()).expect("SO_TIMESTAMPNS");
        // The kernel turns stamping on for the whole system from a work queue when the first
        // socket asks, so the first packets may come unstamped: retry for up to a second.
        let (stamp, before, after) = (0..100)
            .find_map(|_| {
                let before = stats::now_ns();
                client.write_all(b"hello").expect("write");
                let mut buf = Vec::with_capacity(64);
                let (n, stamp) = loop {
                    match recv(server.as_raw_fd(), &mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                        other => break other.expect("recvmsg"),
                    }
                };
                let after = stats::now_ns();
                assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
                if stamp.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                stamp.map(|stamp| (stamp, before, after))
            })
            .expect("a stamp within a second");
        // Allow for the offset's estimate: well under a millisecond either way.
        assert!(stamp + 1_000_000 > before && stamp < after + 1_000_000);
    }
}
