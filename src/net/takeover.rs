//! Replacing a running broker without refusing anyone (`fanfare --takeover`).
//!
//! The new process asks the running one, through the instance lock's socket
//! ([`super::instance_lock`]), for its listening sockets, and the running one sends them as
//! file descriptors (`SCM_RIGHTS`): the very same sockets, not new members of their
//! `SO_REUSEPORT` groups. Both processes then hold one socket and one accept queue per shard,
//! so a connection queued while the old process stops accepting waits for the new one instead
//! of being reset when the old one closes its copy. The lock sockets go along, so the new
//! process holds the addresses once the old one is gone.
//!
//! The conversation, on the lock's stream socket:
//! 1. the holder says who it is: `fanfare <pid>\n` (as it does to any process that connects);
//! 2. the newcomer asks: `takeover\n`;
//! 3. the holder sends one fixed-size record per socket, each carrying its descriptor:
//!    `<role> <address>` (`lock`, `admin`, or a listener kind: `tcp`, `ws`, `mqtts`, `wss`),
//!    then `end`; or a single `refused <why>`;
//! 4. the newcomer starts its shards on them, prints `ready`, and says `go <pid>\n`. The holder
//!    then drains and exits. If the newcomer fails or goes silent before that, the holder
//!    keeps serving as if nothing happened: the sockets it sent are still its own.
//!
//! Records have a fixed size so that each `recvmsg` reads exactly one record and the
//! descriptor that came with it: a stream socket keeps message boundaries only where
//! descriptors are attached.
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use super::listener::ListenerKind;

/// Bytes of one record: a role, a space and an address (an IPv6 address with a scope and port
/// fits in 64), padded with spaces.
const RECORD_BYTES: usize = 128;
/// The most records one handover carries: 1 024 shards with four listeners each, the admin
/// listener and the locks. Limits what a misbehaving holder can make the newcomer collect.
const RECORDS_MAX: usize = 4_200;
/// The longest line either side reads: `takeover\n`, `go <pid>\n`.
const LINE_BYTES_MAX: usize = 32;
/// How long the newcomer waits for each record: the holder sends them from a thread of its
/// own, off the shard loops, so a slow answer means a stuck or stopped process.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the holder waits for `go` after sending its sockets: the newcomer's shards start
/// in that time (rings, buffers, TLS contexts). Past it, the holder carries on serving.
pub const GO_TIMEOUT: Duration = Duration::from_secs(30);

/// What a handed-over socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Listener(ListenerKind),
    /// The operations listener.
    Admin,
    /// The instance lock of an address.
    Lock,
}

impl Role {
    const fn name(self) -> &'static str {
        match self {
            Role::Listener(kind) => kind.name(),
            Role::Admin => "admin",
            Role::Lock => "lock",
        }
    }

    fn parse(word: &str) -> Option<Role> {
        Some(match word {
            "tcp" => Role::Listener(ListenerKind::Tcp),
            "ws" => Role::Listener(ListenerKind::Ws),
            "mqtts" => Role::Listener(ListenerKind::Mqtts),
            "wss" => Role::Listener(ListenerKind::Wss),
            "admin" => Role::Admin,
            "lock" => Role::Lock,
            _ => return None,
        })
    }
}

/// One socket of a handover: what it is, the address it is bound to (the lock: the address
/// it stands for), and its descriptor.
#[derive(Debug)]
pub struct Handed {
    pub role: Role,
    pub addr: SocketAddr,
    pub fd: OwnedFd,
}

/// Why a takeover did not happen; each names the address asked about.
#[derive(Debug)]
pub enum TakeoverError {
    /// The holder did not answer, or the conversation broke off.
    NoAnswer { addr: SocketAddr, error: io::Error },
    /// The holder answered something that is not this protocol.
    Garbled { addr: SocketAddr, what: String },
    /// The holder said no, and why.
    Refused { addr: SocketAddr, why: String },
    /// The sockets handed over cannot serve this configuration.
    Mismatch { addr: SocketAddr, why: String },
    /// An address nobody holds could not be claimed.
    Lock(Box<super::instance_lock::LockError>),
}

impl std::fmt::Display for TakeoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TakeoverError::NoAnswer { addr, error } => write!(
                f,
                "takeover of {addr} failed: the running broker did not answer ({error}); it keeps serving"
            ),
            TakeoverError::Garbled { addr, what } => write!(
                f,
                "takeover of {addr} failed: the process holding it answered {what:?}, not a fanfare handover; it keeps serving"
            ),
            TakeoverError::Refused { addr, why } => write!(
                f,
                "takeover of {addr} refused by the running broker: {why}; it keeps serving"
            ),
            TakeoverError::Mismatch { addr, why } => write!(
                f,
                "takeover of {addr} impossible: {why}; the running broker keeps serving"
            ),
            TakeoverError::Lock(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for TakeoverError {}

/// The newcomer's side of a handover in progress: the sockets received, and the conversation
/// to finish with [`Handover::finish`] once they serve. Dropped unfinished, it tells the holder
/// to carry on (the stream closes without `go`).
pub struct Handover {
    stream: UnixStream,
    /// The address whose lock the conversation went through.
    pub addr: SocketAddr,
    /// The holder's process id.
    pub pid: u32,
    sockets: Vec<Handed>,
}

impl Handover {
    /// Connects to the holder of `name` (the lock of `addr`) and receives its sockets.
    pub fn request(
        addr: SocketAddr,
        name: &std::os::unix::net::SocketAddr,
    ) -> Result<Handover, TakeoverError> {
        let broke = |error| TakeoverError::NoAnswer { addr, error };
        let mut stream = UnixStream::connect_addr(name).map_err(broke)?;
        stream
            .set_read_timeout(Some(HANDOVER_TIMEOUT))
            .map_err(broke)?;
        stream
            .set_write_timeout(Some(HANDOVER_TIMEOUT))
            .map_err(broke)?;
        let hello = read_line(&mut stream).map_err(broke)?;
        let pid =
            super::instance_lock::parse_pid_line(&hello).ok_or_else(|| TakeoverError::Garbled {
                addr,
                what: hello.clone(),
            })?;
        stream.write_all(b"takeover\n").map_err(broke)?;
        let mut sockets = Vec::new();
        loop {
            let (text, fd) = receive_record(&stream).map_err(broke)?;
            let mut words = text.splitn(2, ' ');
            let role = words.next().unwrap_or_default();
            let rest = words.next().unwrap_or_default();
            match (role, fd) {
                ("end", None) => break,
                ("refused", None) => {
                    return Err(TakeoverError::Refused {
                        addr,
                        why: rest.to_owned(),
                    });
                }
                (role, Some(fd)) if sockets.len() < RECORDS_MAX => {
                    let parsed = Role::parse(role).zip(rest.parse::<SocketAddr>().ok());
                    let Some((role, bound)) = parsed else {
                        return Err(TakeoverError::Garbled { addr, what: text });
                    };
                    sockets.push(Handed {
                        role,
                        addr: bound,
                        fd,
                    });
                }
                _ => return Err(TakeoverError::Garbled { addr, what: text }),
            }
        }
        Ok(Handover {
            stream,
            addr,
            pid,
            sockets,
        })
    }

    /// The lock sockets received, by the address each stands for.
    pub fn take_locks(&mut self) -> Vec<(SocketAddr, UnixListener)> {
        self.take(Role::Lock, None)
            .map(|(addr, fd)| (addr, UnixListener::from(fd)))
            .collect()
    }

    /// The listening sockets of `kind` bound to `addr` (one per shard of the holder), or an
    /// error when `addr` is handed over under another kind: one address cannot speak two
    /// protocols, and binding it anew would join the holder's group for the wrong one.
    pub fn take_listeners(
        &mut self,
        kind: ListenerKind,
        addr: SocketAddr,
    ) -> Result<Vec<TcpListener>, TakeoverError> {
        if let Some(other) = self
            .sockets
            .iter()
            .find(|handed| handed.addr == addr && handed.role != Role::Listener(kind))
        {
            return Err(TakeoverError::Mismatch {
                addr,
                why: format!(
                    "the running broker listens there for {}, this configuration for {}",
                    other.role.name(),
                    kind.name()
                ),
            });
        }
        Ok(self
            .take(Role::Listener(kind), Some(addr))
            .map(|(_, fd)| TcpListener::from(fd))
            .collect())
    }

    /// The operations listener, when the holder's is bound to `addr`.
    pub fn take_admin(&mut self, addr: SocketAddr) -> Option<TcpListener> {
        self.take(Role::Admin, Some(addr))
            .map(|(_, fd)| TcpListener::from(fd))
            .next()
    }

    /// The listeners this configuration does not use, as `kind address`: the holder closes
    /// them when it goes.
    pub fn unused(&self) -> Vec<String> {
        let mut unused: Vec<String> = self
            .sockets
            .iter()
            .filter(|handed| handed.role != Role::Lock)
            .map(|handed| format!("{} {}", handed.role.name(), handed.addr))
            .collect();
        unused.dedup();
        unused
    }

    /// Tells the holder that this process serves now: it stops accepting and drains.
    pub fn finish(mut self) -> io::Result<()> {
        self.stream
            .write_all(format!("go {}\n", std::process::id()).as_bytes())
    }

    fn take(
        &mut self,
        role: Role,
        addr: Option<SocketAddr>,
    ) -> impl Iterator<Item = (SocketAddr, OwnedFd)> {
        let (taken, kept) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|handed| handed.role == role && addr.is_none_or(|a| a == handed.addr));
        self.sockets = kept;
        taken
            .into_iter()
            .map(|handed: Handed| (handed.addr, handed.fd))
    }
}

/// The holder's side, on a stream that asked `takeover`: sends the locks and `offer`, then
/// waits for `go`. `Ok(pid)`: the newcomer serves, this process is to drain. `offer` is `None`
/// while this broker is still starting: the request is refused.
pub fn hand_over(
    stream: &mut UnixStream,
    locks: &[(SocketAddr, BorrowedFd<'_>)],
    offer: Option<&[Handed]>,
) -> io::Result<u32> {
    stream.set_write_timeout(Some(HANDOVER_TIMEOUT))?;
    let Some(offer) = offer else {
        send_record(stream, "refused the running broker is still starting", None)?;
        return Err(io::Error::other("asked while starting"));
    };
    for (addr, fd) in locks {
        send_record(stream, &format!("lock {addr}"), Some(*fd))?;
    }
    for handed in offer {
        let text = format!("{} {}", handed.role.name(), handed.addr);
        send_record(stream, &text, Some(handed.fd.as_fd()))?;
    }
    send_record(stream, "end", None)?;
    stream.set_read_timeout(Some(GO_TIMEOUT))?;
    let answer = read_line(stream)?;
    answer
        .strip_prefix("go ")
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| io::Error::other(format!("answered {answer:?} instead of go")))
}

/// Reads one line of at most [`LINE_BYTES_MAX`] bytes, without its newline. Byte by byte: the
/// next bytes on the stream may be a record with a descriptor, which `read` would not take.
pub fn read_line(stream: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < LINE_BYTES_MAX {
        match stream.read(&mut byte) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) if byte[0] == b'\n' => {
                return String::from_utf8(line).map_err(|_| io::ErrorKind::InvalidData.into());
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::ErrorKind::InvalidData.into())
}

/// Sends `text` as one record, with `fd` attached.
fn send_record(stream: &UnixStream, text: &str, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut record = [b' '; RECORD_BYTES];
    if text.len() > RECORD_BYTES {
        return Err(io::Error::other("record too long"));
    }
    record[..text.len()].copy_from_slice(text.as_bytes());
    let mut iov = libc::iovec {
        iov_base: record.as_mut_ptr().cast(),
        iov_len: record.len(),
    };
    let mut control = ControlBuffer::new();
    // SAFETY: msghdr is plain data; all-zero is its empty value, filled in below.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    if let Some(fd) = fd {
        message.msg_control = control.bytes.as_mut_ptr().cast();
        message.msg_controllen = control.bytes.len() as _;
        // SAFETY: the control buffer is CMSG_SPACE(one int) bytes, aligned for cmsghdr
        // (`ControlBuffer`), so CMSG_FIRSTHDR is non-null and its header and data fit.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(FD_BYTES) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<i32>(), fd.as_raw_fd());
        }
    }
    // SAFETY: `message` points at `iov` and `control`, both alive for the call. A record fits
    // an empty socket buffer; MSG_NOSIGNAL turns a gone peer into EPIPE instead of a signal.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &message, libc::MSG_NOSIGNAL) };
    match usize::try_from(sent) {
        Ok(RECORD_BYTES) => Ok(()),
        Ok(_) => Err(io::Error::other("record cut short")),
        Err(_) => Err(io::Error::last_os_error()),
    }
}

/// Receives one record: its text (trimmed) and the descriptor that came with it.
fn receive_record(stream: &UnixStream) -> io::Result<(String, Option<OwnedFd>)> {
    let mut record = [0u8; RECORD_BYTES];
    let mut filled = 0;
    let mut fd = None;
    while filled < RECORD_BYTES {
        let mut iov = libc::iovec {
            iov_base: record[filled..].as_mut_ptr().cast(),
            iov_len: RECORD_BYTES - filled,
        };
        let mut control = ControlBuffer::new();
        // SAFETY: msghdr is plain data; all-zero is its empty value, filled in below.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.bytes.as_mut_ptr().cast();
        message.msg_controllen = control.bytes.len() as _;
        // SAFETY: `message` points at `iov` (the unfilled rest of `record`) and `control`,
        // both alive for the call; received descriptors are close-on-exec.
        let received =
            unsafe { libc::recvmsg(stream.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC) };
        let received = match usize::try_from(received) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(_) => {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
        };
        filled += received;
        // SAFETY: the kernel filled `message.msg_control` with `msg_controllen` bytes of
        // well-formed headers; CMSG_FIRSTHDR/NXTHDR stay within them.
        unsafe {
            let mut header = libc::CMSG_FIRSTHDR(&message);
            while !header.is_null() {
                if (*header).cmsg_level == libc::SOL_SOCKET
                    && (*header).cmsg_type == libc::SCM_RIGHTS
                {
                    let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / FD_BYTES as usize;
                    for index in 0..count {
                        let raw = std::ptr::read_unaligned(
                            libc::CMSG_DATA(header).cast::<i32>().add(index),
                        );
                        // SAFETY: SCM_RIGHTS installed this descriptor in this process for us
                        // alone; owning it closes it if it is not wanted (a second one).
                        let owned = OwnedFd::from_raw_fd(raw);
                        if fd.is_none() {
                            fd = Some(owned);
                        }
                    }
                }
                header = libc::CMSG_NXTHDR(&message, header);
            }
        }
        if message.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("more descriptors than one record carries"));
        }
    }
    let text = std::str::from_utf8(&record)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?
        .trim_end()
        .to_owned();
    Ok((text, fd))
}

/// Bytes of one descriptor in a control message.
const FD_BYTES: u32 = std::mem::size_of::<i32>() as u32;

/// Room for one `SCM_RIGHTS` header and two descriptors (a second one is closed, and the
/// truncation flag says a holder sent more), aligned as `cmsghdr` requires.
#[repr(C, align(8))]
struct ControlBuffer {
    bytes: [u8; 32],
}

impl ControlBuffer {
    fn new() -> ControlBuffer {
        ControlBuffer { bytes: [0; 32] }
    }
}

/// Waits until any of `fds` is readable (a connection waits on a listener); which ones are.
pub fn wait_readable(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `polls` holds `polls.len()` initialised entries for the call's duration.
        let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if rc >= 0 {
            return Ok(polls.iter().map(|poll| poll.revents != 0).collect());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_descriptor_one_by_one() {
        let (mut holder, mut newcomer) = UnixStream::pair().expect("pair");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let offered = vec![
            Handed {
                role: Role::Listener(ListenerKind::Tcp),
                addr,
                fd: listener.try_clone().expect("dup").into(),
            },
            Handed {
                role: Role::Listener(ListenerKind::Tcp),
                addr,
                fd: listener.try_clone().expect("dup").into(),
            },
        ];
        let thread = std::thread::spawn(move || {
            let mut line = read_line(&mut holder).expect("request");
            assert_eq!(line, "takeover");
            line = hand_over(&mut holder, &[], Some(&offered))
                .expect("go")
                .to_string();
            line
        });
        newcomer.write_all(b"takeover\n").expect("ask");
        let mut received = Vec::new();
        loop {
            let (text, fd) = receive_record(&newcomer).expect("record");
            if text == "end" {
                assert!(fd.is_none());
                break;
            }
            assert_eq!(text, format!("tcp {addr}"));
            received.push(TcpListener::from(fd.expect("a descriptor")));
        }
        assert_eq!(received.len(), 2);
        // The same socket: a connection queued on it is accepted through the received copy.
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        received[1]
            .accept()
            .expect("accepted through the handed copy");
        newcomer.write_all(b"go 42\n").expect("go");
        assert_eq!(thread.join().expect("holder"), "42");
    }

    #[test]
    fn a_starting_holder_refuses() {
        let (mut holder, newcomer) = UnixStream::pair().expect("pair");
        assert!(hand_over(&mut holder, &[], None).is_err());
        let (text, fd) = receive_record(&newcomer).expect("record");
        assert!(text.starts_with("refused "), "{text}");
        assert!(fd.is_none());
    }
}
