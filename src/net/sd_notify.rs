//! The service manager's readiness protocol (systemd's `Type=notify`): one datagram of
//! `KEY=VALUE` lines per state change, sent to the unix socket named by `$NOTIFY_SOCKET`.
//!
//! Written here rather than by linking libsystemd: the protocol is a single `sendto` of a few
//! bytes, and a broker run without systemd (no `$NOTIFY_SOCKET`) sends nothing at all.
//!
//! - `READY=1` once every listener accepts, so units ordered after the broker start when it
//!   can take clients;
//! - `STOPPING=1` when a stop begins, so the manager shows the drain as "deactivating";
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC` while every shard's loop turns (the caller
//!   checks [`crate::shard::Heartbeats`]); a stuck shard then ends the pings, and the manager
//!   restarts the broker.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A state the broker tells the service manager about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    Stopping,
    Watchdog,
}

impl State {
    /// The datagram's text, as `sd_notify(3)` names the variables.
    pub const fn message(self) -> &'static str {
        match self {
            State::Ready => "READY=1",
            State::Stopping => "STOPPING=1",
            State::Watchdog => "WATCHDOG=1",
        }
    }
}

/// Why the environment's notification settings are not used.
#[derive(Debug)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor `@` and an abstract name.
    Address(String),
    /// `$WATCHDOG_USEC` is not a positive number of microseconds.
    WatchdogUsec(String),
    /// The datagram socket could not be made or the address not formed.
    Io(io::Error),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::Address(name) => write!(
                f,
                "NOTIFY_SOCKET={name}: not an absolute path or an @abstract socket name"
            ),
            NotifyError::WatchdogUsec(value) => {
                write!(f, "WATCHDOG_USEC={value}: not a positive number")
            }
            NotifyError::Io(e) => write!(f, "notification socket: {e}"),
        }
    }
}

impl std::error::Error for NotifyError {}

/// The socket the service manager listens on.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `Ok(None)` when it is unset or empty (not run by a manager that
    /// waits for readiness).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(name) if !name.is_empty() => Notifier::new(&name).map(Some),
            Some(_) | None => Ok(None),
        }
    }

    /// `name` is a file system path (absolute), or `@` followed by the name of a socket in
    /// the abstract namespace, as systemd writes it.
    pub fn new(name: &OsStr) -> Result<Notifier, NotifyError> {
        let bytes = name.as_bytes();
        let address = match bytes.split_first() {
            Some((b'@', abstract_name)) => SocketAddr::from_abstract_name(abstract_name),
            Some((b'/', _)) => SocketAddr::from_pathname(name),
            _ => return Err(NotifyError::Address(name.to_string_lossy().into_owned())),
        }
        .map_err(NotifyError::Io)?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Io)?;
        // The broker's main thread also waits for signals: a manager that stopped reading must
        // not block it. A datagram that does not fit is an error, logged by the caller.
        socket.set_nonblocking(true).map_err(NotifyError::Io)?;
        Ok(Notifier { socket, address })
    }

    /// Sends one state; the whole message goes in one datagram or not at all.
    pub fn send(&self, state: State) -> io::Result<()> {
        let message = state.message().as_bytes();
        let sent = self.socket.send_to_addr(message, &self.address)?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification datagram cut short",
            ));
        }
        Ok(())
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
/// advises, so one late ping still arrives in time. `Ok(None)` when no watchdog is asked for,
/// or when `$WATCHDOG_PID` names another process (the variables were inherited, not meant for
/// this one).
pub fn watchdog_interval() -> Result<Option<Duration>, NotifyError> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec.filter(|usec| !usec.is_empty()) else {
        return Ok(None);
    };
    if let Some(pid) = pid.filter(|pid| !pid.is_empty())
        && pid.parse::<u32>().ok() != Some(own_pid)
    {
        return Ok(None);
    }
    match usec.parse::<u64>() {
        Ok(usec) if usec > 0 => Ok(Some(Duration::from_micros(usec) / 2)),
        Ok(_) | Err(_) => Err(NotifyError::WatchdogUsec(usec.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout is valid");
        let mut buf = [0u8; 64];
        let len = socket.recv(&mut buf).expect("a datagram arrives");
        String::from_utf8(buf[..len].to_vec()).expect("the message is text")
    }

    #[test]
    fn messages_are_the_variables_sd_notify_names() {
        assert_eq!(State::Ready.message(), "READY=1");
        assert_eq!(State::Stopping.message(), "STOPPING=1");
        assert_eq!(State::Watchdog.message(), "WATCHDOG=1");
    }

    #[test]
    fn sends_each_state_as_one_datagram_to_a_path() {
        let dir = std::env::temp_dir().join(format!("fanfare-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind the manager's socket");
        let notifier = Notifier::new(path.as_os_str()).expect("an absolute path is accepted");
        for state in [State::Ready, State::Watchdog, State::Stopping] {
            notifier.send(state).expect("send");
            assert_eq!(receive(&listener), state.message());
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn sends_to_an_abstract_socket_named_with_an_at_sign() {
        let name = format!("fanfare-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let listener = UnixDatagram::bind_addr(&address).expect("bind abstract");
        let notifier = Notifier::new(OsStr::from_bytes(format!("@{name}").as_bytes()))
            .expect("an @name is accepted");
        notifier.send(State::Ready).expect("send");
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn refuses_relative_and_empty_names() {
        for name in ["notify.sock", "", "vsock:2:1234"] {
            assert!(matches!(
                Notifier::new(OsStr::new(name)),
                Err(NotifyError::Address(_))
            ));
        }
    }

    #[test]
    fn a_send_to_a_socket_nobody_listens_on_is_an_error_not_a_hang() {
        let notifier = Notifier::new(OsStr::new("@fanfare-notify-test-nobody-listens"))
            .expect("the name is well formed");
        assert!(notifier.send(State::Ready).is_err());
    }

    #[test]
    fn watchdog_pings_at_half_the_timeout() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7).expect("valid"),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7).expect("valid"),
            Some(Duration::from_secs(15))
        );
    }

    #[test]
    fn watchdog_is_off_unset_or_for_another_process() {
        assert_eq!(parse_watchdog(None, None, 7).expect("valid"), None);
        assert_eq!(parse_watchdog(Some(""), None, 7).expect("valid"), None);
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("8"), 7).expect("valid"),
            None
        );
    }

    #[test]
    fn watchdog_refuses_zero_and_garbage() {
        for usec in ["0", "-5", "thirty", "1.5"] {
            assert!(matches!(
                parse_watchdog(Some(usec), None, 7),
                Err(NotifyError::WatchdogUsec(_))
            ));
        }
    }
}
