//! Listening sockets: one per shard per address, joined with `SO_REUSEPORT` so the kernel
//! spreads incoming connections across shards without a shared accept queue.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::conn::Transport;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    Ws,
    /// MQTT over TLS.
    Mqtts,
    /// MQTT over WebSocket over TLS, and the files over https.
    Wss,
}

impl ListenerKind {
    pub const fn name(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Ws => "ws",
            ListenerKind::Mqtts => "mqtts",
            ListenerKind::Wss => "wss",
        }
    }

    /// How MQTT packets are framed on the byte stream.
    pub const fn transport(self) -> Transport {
        match self {
            ListenerKind::Tcp | ListenerKind::Mqtts => Transport::Tcp,
            ListenerKind::Ws | ListenerKind::Wss => Transport::Ws,
        }
    }

    /// Whether the byte stream is inside TLS.
    pub const fn tls(self) -> bool {
        matches!(self, ListenerKind::Mqtts | ListenerKind::Wss)
    }
}

/// Pending connections the kernel holds per listener before refusing new ones: a burst of
/// browsers reconnecting after a network blip arrives at once.
const BACKLOG: i32 = 4096;

/// Binds `shards` sockets to `addr`. With port 0 the first socket picks the port and the
/// others join it, so every shard listens on the same port.
pub fn bind_reuseport(addr: SocketAddr, shards: usize) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(shards);
    let mut bound = addr;
    for index in 0..shards {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        // For port 0 the first socket binds without SO_REUSEPORT: when free ports run short
        // (many TIME_WAIT sockets, a busy test run) the kernel may otherwise hand out a port
        // another process's SO_REUSEPORT group listens on, and split its clients between two
        // brokers. Without the flag only a port nobody listens on will do; the flag is set
        // before `listen`, so the other shards still join the group.
        let shared_from_bind = index > 0 || addr.port() != 0;
        if shared_from_bind {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&bound.into())?;
        if !shared_from_bind {
            socket.set_reuse_port(true)?;
        }
        socket.listen(BACKLOG)?;
        let listener: TcpListener = socket.into();
        if let Ok(local) = listener.local_addr() {
            bound = local;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}
