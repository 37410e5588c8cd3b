//! How a connection ends on this shard: its last words (a WebSocket close frame or an HTTP
//! error) are queued, reading stops, and once no operation of it is in flight the socket is
//! closed — or, for a CONNECT that belongs to another shard, handed over with its state.

use std::time::Instant;

use log::{debug, info, warn};

use super::mailbox::Handoff;
use super::{CLOSE_LINGER, Shard};
use crate::conn::{Chunk, ConnId, Droppable, Transport};
use crate::net::connection::{CloseCause, Phase};
use crate::net::sys;
use crate::protocol::ws::frame::write_close_frame;
use crate::protocol::ws::handshake::write_error_response;

impl Shard {
    /// Stops reading, queues the connection's last words (a close frame or HTTP error), and
    /// lets the queue drain before the socket closes.
    pub(super) fn begin_close(&mut self, id: ConnId, cause: CloseCause, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        // Before the upgrade the peer speaks HTTP: a WebSocket close frame would be read as a
        // broken response, by a browser's idle preconnected socket for one (RFC 6455 §4.1).
        let upgraded = conn.phase != Phase::WsHandshake;
        conn.phase = Phase::Closing;
        if cause == CloseCause::SendQueueOverflow {
            self.slow.disconnected += 1;
        }
        conn.close_cause = Some(cause);
        conn.closing_since = Some(now);
        let last_words = match cause {
            CloseCause::Handshake(error) => {
                let mut response = Vec::new();
                write_error_response(error, &mut response);
                Some(response)
            }
            _ if conn.transport == Transport::Ws && !upgraded => None,
            _ if conn.transport == Transport::Ws => cause.ws_close_code().map(|code| {
                // The reason tells a browser's developer tools what went wrong.
                let reason = match cause {
                    CloseCause::Ws(error) => error.description(),
                    CloseCause::Decode(error) => error.description(),
                    _ => "",
                };
                let mut frame = Vec::new();
                write_close_frame(code, reason, &mut frame);
                frame
            }),
            _ => None,
        };
        if matches!(cause, CloseCause::NetworkError(_)) {
            conn.out.abandon();
        }
        if let Some(bytes) = last_words.filter(|_| !conn.sealed) {
            let policy = self.config.slow_consumer(conn.transport);
            conn.out.push(
                Chunk::Owned(bytes),
                Droppable::No,
                u64::MAX,
                policy,
                &mut self.send_pool,
            );
            self.dirty.push(id);
        }
        conn.sealed = true;
        if cause.is_error() {
            info!("{}: closing: {cause}", conn.peer);
        } else {
            debug!("{}: closing: {cause}", conn.peer);
        }
        self.cancel_recv(id);
        self.finishing.push(id);
    }

    /// Completes closes and handoffs whose operations have all ended.
    pub(super) fn finish_closes(&mut self, now: Instant) {
        let mut finishing = std::mem::take(&mut self.finishing);
        finishing.sort_unstable();
        finishing.dedup();
        finishing.retain(|&id| !self.try_finish(id, now));
        self.finishing = finishing;
    }

    /// Takes the connection's socket out of the fixed-file table, whose reference would
    /// otherwise keep it open after its descriptor is closed or handed to another shard.
    fn remove_fixed_file(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id).filter(|conn| conn.fixed) else {
            return;
        };
        conn.fixed = false;
        // A fixed connection's index is below the table size, a u32.
        if let Err(e) = self.ring.clear_fixed_file(id.index() as u32) {
            warn!(
                "{}: cannot take the socket out of the fixed-file table: {e}",
                conn.peer
            );
        }
    }

    /// Returns true when the connection is gone from this shard (or was already).
    fn try_finish(&mut self, id: ConnId, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return true;
        };
        match conn.phase {
            Phase::Closing => {
                let lingered = conn
                    .closing_since
                    .is_some_and(|since| now - since >= CLOSE_LINGER);
                if lingered && (conn.out.in_flight() || conn.recv_armed) {
                    // The peer does not read: cut the socket so the pending operations end.
                    conn.out.abandon();
                    sys::shutdown_both(&conn.fd);
                }
                if conn.recv_armed || conn.out.in_flight() || (!conn.out.is_empty() && !lingered) {
                    return false;
                }
                sys::shutdown_write(&conn.fd);
                self.remove_fixed_file(id);
                let Some(conn) = self.conns.remove(id) else {
                    return true;
                };
                drop(conn);
                self.broker.connection_lost(id, now, &mut self.outbox);
                true
            }
            Phase::HandingOff(target) => {
                let target = usize::from(target);
                if conn.recv_armed || conn.out.in_flight() || !conn.out.is_empty() {
                    return false;
                }
                self.remove_fixed_file(id);
                let Some(conn) = self.conns.remove(id) else {
                    return true;
                };
                let peer = conn.peer;
                let handoff = Handoff {
                    fd: conn.fd,
                    peer,
                    transport: conn.transport,
                    ws: conn.ws,
                    pending: conn.spill,
                };
                match self.mailboxes.hand_off(target, handoff) {
                    Ok(()) => self.wake[target] = true,
                    Err(_) => info!("{peer}: closing: {}", CloseCause::HandoffFailed),
                }
                true
            }
            // A receive was cancelled for a connection that is not ending: nothing to finish.
            _ => true,
        }
    }
}
