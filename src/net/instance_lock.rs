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
//!   which process holds the address, and hands its sockets to a successor that asks
//!   (`fanfare --takeover`, [`super::takeover`]).
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
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::takeover::{self, Handed, Handover, TakeoverError};

/// How long the holder may take to say who it is; a holder stopped in a debugger, or one
/// too busy to answer, is still named by its address. Also how long the holder waits for a
/// request after saying so.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest answer read: `fanfare <pid>\n` with a 32-bit pid is 19 bytes.
const ANSWER_BYTES_MAX: usize = 32;

/// The addresses this process claimed; the claims last as long as the process, or until they
/// are handed to a successor (`fanfare --takeover`).
#[derive(Debug)]
pub struct InstanceLock {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
}

/// What the lock's thread shares with the rest of the process.
#[derive(Debug, Default)]
struct Shared {
    /// The sockets a successor gets besides the locks; `None` until the broker is ready.
    offer: Mutex<Option<Vec<Handed>>>,
    /// The successor's process id once it took over; 0 before.
    successor: AtomicU32,
}

impl InstanceLock {
    /// Claims every address with a concrete port, or fails naming the first one held by
    /// another process. Call it with the stop signals blocked: the claims' answering thread
    /// inherits the mask, and a stop signal must reach the thread that stops the shards.
    pub fn acquire(addrs: &[SocketAddr]) -> Result<InstanceLock, LockError> {
        let mut claims = Vec::new();
        for addr in concrete(addrs) {
            claims.push((addr, claim(addr)?));
        }
        // The thread starts only once every address is ours: a refusal leaves nothing behind.
        InstanceLock::hold(claims)
    }

    /// `fanfare --takeover`: claims the addresses nobody holds, and asks the holder of the
    /// others for its sockets. `None` when nobody held any: a normal start.
    pub fn take_over(
        addrs: &[SocketAddr],
    ) -> Result<(InstanceLock, Option<Handover>), TakeoverError> {
        let mut claims = Vec::new();
        let mut held = Vec::new();
        for addr in concrete(addrs) {
            match claim(addr) {
                Ok(listener) => claims.push((addr, listener)),
                Err(LockError::Held { .. }) => held.push(addr),
                Err(error) => return Err(TakeoverError::Lock(Box::new(error))),
            }
        }
        let Some(&first) = held.first() else {
            let lock = InstanceLock::hold(claims).map_err(|e| TakeoverError::Lock(Box::new(e)))?;
            return Ok((lock, None));
        };
        let name =
            abstract_name(first).map_err(|error| TakeoverError::NoAnswer { addr: first, error })?;
        let mut handover = Handover::request(first, &name)?;
        let mut locks = handover.take_locks();
        for &addr in &held {
            let Some(index) = locks.iter().position(|(locked, _)| *locked == addr) else {
                return Err(TakeoverError::Mismatch {
                    addr,
                    why: format!(
                        "it is held by another process than the broker on {first} (pid {})",
                        handover.pid
                    ),
                });
            };
            claims.push(locks.swap_remove(index));
        }
        let lock = InstanceLock::hold(claims).map_err(|e| TakeoverError::Lock(Box::new(e)))?;
        Ok((lock, Some(handover)))
    }

    fn hold(claims: Vec<(SocketAddr, UnixListener)>) -> Result<InstanceLock, LockError> {
        let shared = Arc::new(Shared::default());
        let addrs = claims.iter().map(|(addr, _)| *addr).collect();
        if let Some(&(addr, _)) = claims.first() {
            for (addr, listener) in &claims {
                // The thread waits on all of them at once and accepts from the one ready; one
                // taken by another process meanwhile must not block it.
                listener
                    .set_nonblocking(true)
                    .map_err(|error| LockError::Io { addr: *addr, error })?;
            }
            let thread_shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("instance-lock".to_owned())
                .spawn(move || answer(&claims, &thread_shared))
                .map_err(|error| LockError::Io { addr, error })?;
        }
        Ok(InstanceLock { addrs, shared })
    }

    /// The addresses claimed (those with a concrete port).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Once the broker serves: the sockets a successor may take over (duplicates of the
    /// listeners; the locks go along by themselves).
    pub fn offer(&self, sockets: Vec<Handed>) {
        if let Ok(mut offer) = self.shared.offer.lock() {
            *offer = Some(sockets);
        }
    }

    /// The process that took the addresses over, once one did.
    pub fn successor(&self) -> Option<u32> {
        match self.shared.successor.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }
}

/// The addresses to claim: those with a concrete port (port 0 never meets another broker),
/// each once.
fn concrete(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut concrete: Vec<SocketAddr> = Vec::new();
    for &addr in addrs.iter().filter(|addr| addr.port() != 0) {
        if !concrete.contains(&addr) {
            concrete.push(addr);
        }
    }
    concrete
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
                    "{who} already listens on {addr}; two brokers on one address would split the clients between them, so stop that one first, or replace it with `fanfare --takeover`"
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
fn abstract_name(addr: SocketAddr) -> io::Result<UnixAddr> {
    UnixAddr::from_abstract_name(format!("fanfare:{addr}"))
}

fn claim(addr: SocketAddr) -> Result<UnixListener, LockError> {
    let io_error = |error| LockError::Io { addr, error };
    let name = abstract_name(addr).map_err(io_error)?;
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
    // Up to the newline: the holder then waits for a request, and sees this one end instead.
    while len < answer.len() && !answer[..len].contains(&b'\n') {
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
    parse_pid_line(text.strip_suffix('\n')?)
}

/// `fanfare <pid>` (the newline taken off) → the pid.
pub(super) fn parse_pid_line(line: &str) -> Option<u32> {
    line.strip_prefix("fanfare ")?.parse().ok()
}

/// The holder's thread: tells each process that connects to a lock which process holds the
/// address, and hands everything over to one that asks to take over. One connection at a
/// time, each bounded by timeouts, so a flood of connections costs this thread alone; the
/// listeners' backlogs bound what waits. Ends once a successor took over, closing this
/// process's copies of the locks.
fn answer(locks: &[(SocketAddr, UnixListener)], shared: &Shared) {
    let line = format!("fanfare {}\n", std::process::id());
    let fds: Vec<_> = locks.iter().map(|(_, listener)| listener.as_fd()).collect();
    let named: Vec<_> = locks
        .iter()
        .map(|(addr, listener)| (*addr, listener.as_fd()))
        .collect();
    loop {
        let ready = match takeover::wait_readable(&fds) {
            Ok(ready) => ready,
            Err(e) => {
                log::error!(
                    "instance lock: cannot wait for connections: {e}; the lock stays held but answers no one"
                );
                return;
            }
        };
        for (index, _) in ready.iter().enumerate().filter(|(_, ready)| **ready) {
            let Ok((mut stream, _)) = locks[index].1.accept() else {
                continue;
            };
            let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
            let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
            if stream.write_all(line.as_bytes()).is_err() {
                continue;
            }
            // A process asking who holds the address closes here; only a successor asks more.
            if !takeover::read_line(&mut stream).is_ok_and(|request| request == "takeover") {
                continue;
            }
            let offer = shared.offer.lock().ok();
            let offered = offer.as_ref().and_then(|offer| offer.as_deref());
            match takeover::hand_over(&mut stream, &named, offered) {
                Ok(pid) => {
                    log::info!("pid {pid} took over the listening sockets");
                    shared.successor.store(pid, Ordering::Release);
                    if let Err(e) = super::sys::raise_handed_over() {
                        log::error!("cannot tell the main thread of the takeover: {e}");
                    }
                    return;
                }
                Err(e) => {
                    log::warn!("a takeover was asked for and did not happen: {e}; serving on")
                }
            }
        }
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
