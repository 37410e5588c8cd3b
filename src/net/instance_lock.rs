//! One broker per listening address.
//!
//! Every shard's listener joins its address's `SO_REUSEPORT` group, and the kernel lets a
//! second fanfare join that group too: it then splits new clients between two brokers that
//! know nothing of each other, so a retained message or a subscription reaches half of them.
//! Before anything is bound, each listening address with a concrete port is claimed by binding
//! a unix socket in the abstract namespace named `fanfare:<address>`:
//!
//! - the kernel frees the name the moment the holder dies, however it dies (a `kill -9`, an
//!   OOM kill), so there is no stale lock to clean up, unlike a lock file whose directory
//!   (`/run`, `$XDG_RUNTIME_DIR`) may also be missing, unwritable or private to one user;
//! - abstract names belong to the network namespace, exactly like the addresses they stand
//!   for: two brokers in two containers with their own network may both listen on
//!   `0.0.0.0:1883`, and both claim it, while a file lock in a shared `/run` would refuse one;
//! - the holder answers a connection to the name with its process id, so the refusal can say
//!   which process holds the address.
//!
//! Port 0 is never claimed: the kernel picks a port nobody listens on, so two brokers asking
//! for port 0 cannot meet (the tests start many at once that way).
//!
//! What a claim does not see: the same port under another address form, a broker on
//! `0.0.0.0:1883` and another on `127.0.0.1:1883`. The kernel does not mix those two groups
//! (connections to 127.0.0.1 go to the more specific one, all others to the wildcard), but the
//! clients are still split by the address they dial: give each port one address form.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::time::Duration;

/// How long the holder may take to say who it is; a holder stopped in a debugger, or one
/// too busy to answer, is still named by its address.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest answer read: `fanfare <pid>\n` with a 32-bit pid is 19 bytes.
const ANSWER_BYTES_MAX: usize = 32;

/// The addresses this process claimed; the claims last as long as the process.
#[derive(Debug)]
pub struct InstanceLock {
    addrs: Vec<SocketAddr>,
}

impl InstanceLock {
    /// Claims every address with a concrete port, or fails naming the first one held by
    /// another process. Call it with SIGTERM and SIGINT blocked: each claim's answering thread
    /// inherits the mask, and a stop signal must reach the thread that stops the shards.
    pub fn acquire(addrs: &[SocketAddr]) -> Result<InstanceLock, LockError> {
        let mut claimed = Vec::new();
        let mut listeners = Vec::new();
        for &addr in addrs.iter().filter(|addr| addr.port() != 0) {
            if claimed.contains(&addr) {
                continue;
            }
            listeners.push((addr, claim(addr)?));
            claimed.push(addr);
        }
        // Threads start only once every address is ours: a refusal leaves nothing behind.
        for (addr, listener) in listeners {
            std::thread::Builder::new()
                .name("instance-lock".to_owned())
                .spawn(move || answer(&listener))
                .map_err(|error| LockError::Io { addr, error })?;
        }
        Ok(InstanceLock { addrs: claimed })
    }

    /// The addresses claimed (those with a concrete port).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// Why an address could not be claimed.
#[derive(Debug)]
pub enum LockError {
    /// Another fanfare listens on `addr`; `pid` when it said which process it is.
    Held { addr: SocketAddr, pid: Option<u32> },
    /// The claim itself failed, for a reason other than another holder.
    Io { addr: SocketAddr, error: io::Error },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { addr, pid } => {
                let who = match pid {
                    Some(pid) => format!("another fanfare (pid {pid})"),
                    None => "another fanfare".to_owned(),
                };
                write!(
                    f,
                    "{who} already listens on {addr}; two brokers on one address would split the clients between them, so stop that one first"
                )
            }
            LockError::Io { addr, error } => {
                write!(f, "cannot claim {addr} for this broker: {error}")
            }
        }
    }
}

impl std::error::Error for LockError {}

/// The abstract socket name that stands for `addr`.
fn lock_name(addr: SocketAddr) -> String {
    format!("fanfare:{addr}")
}

fn claim(addr: SocketAddr) -> Result<UnixListener, LockError> {
    let io_error = |error| LockError::Io { addr, error };
    let name = UnixAddr::from_abstract_name(lock_name(addr)).map_err(io_error)?;
    match UnixListener::bind_addr(&name) {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => Err(LockError::Held {
            addr,
            pid: holder_pid(&name),
        }),
        Err(error) => Err(io_error(error)),
    }
}

/// Asks the holder of `name` who it is. Any failure only means the refusal names no process.
fn holder_pid(name: &UnixAddr) -> Option<u32> {
    let mut stream = UnixStream::connect_addr(name).ok()?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    let mut answer = [0u8; ANSWER_BYTES_MAX];
    let mut len = 0;
    while len < answer.len() {
        match stream.read(&mut answer[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    parse_answer(&answer[..len])
}

/// `fanfare <pid>\n` → the pid.
fn parse_answer(answer: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(answer).ok()?;
    text.strip_prefix("fanfare ")?
        .strip_suffix('\n')?
        .parse()
        .ok()
}

/// The holder's side: tells each process that connects which process holds the address. One
/// connection at a time, each answered with one short write and closed, so a flood of
/// connections costs this thread alone; the listener's backlog bounds what waits.
fn answer(listener: &UnixListener) {
    let line = format!("fanfare {}\n", std::process::id());
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        // The write fits in an empty socket buffer; the timeout is for a broken kernel only.
        let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
        let _ = stream.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address no test elsewhere claims: the abstract namespace is shared by every process
    /// in the network namespace, test runs included.
    fn test_addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 251], port))
    }

    #[test]
    fn a_held_address_is_refused_naming_the_holder() {
        let addr = test_addr(40_000 + (std::process::id() % 20_000) as u16);
        let lock = InstanceLock::acquire(&[addr, addr]).expect("nobody else holds it");
        assert_eq!(lock.addrs(), &[addr], "duplicates claimed once");
        match InstanceLock::acquire(&[addr]) {
            Err(LockError::Held { addr: held, pid }) => {
                assert_eq!(held, addr);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
    }

    #[test]
    fn port_zero_is_not_claimed() {
        let addr = test_addr(0);
        let first = InstanceLock::acquire(&[addr]).expect("port 0 is free");
        let second = InstanceLock::acquire(&[addr]).expect("port 0 is never claimed");
        assert!(first.addrs().is_empty());
        assert!(second.addrs().is_empty());
    }

    #[test]
    fn answers_parse_strictly() {
        assert_eq!(parse_answer(b"fanfare 1234\n"), Some(1234));
        assert_eq!(parse_answer(b"fanfare 1234"), None);
        assert_eq!(parse_answer(b"mosquitto 1234\n"), None);
        assert_eq!(parse_answer(b"fanfare -1\n"), None);
        assert_eq!(parse_answer(&[0xff; 8]), None);
    }
}
