//! How a connection ends on this shard: its last words (a WebSocket close frame or an HTTP
//! error) are queued, reading stops, and once no operation of it is in flight the socket is
//! closed — or, for a CONNECT that belongs to another shard, handed over with its state.

use std::time::{Duration, Instant};

use log::{debug, info};

use super::peer::{CloseCause, Phase};
use super::{CLOSE_LINGER, Shard};
use crate::conn::{Chunk, ConnId, Droppable, Transport};
use crate::protocol::ws::frame::write_close_frame;
use crate::protocol::ws::handshake::write_error_response;

impl Shard {
    /// Stops reading, queues the connection's last words (a close frame or HTTP error), and
    /// lets the queue drain before the socket closes.
    pub(super) fn begin_close(&mut self, id: ConnId, cause: CloseCause, now: Instant) {
        let Some(peer) = self.io.state_mut(id) else {
            return;
        };
        if peer.phase == Phase::Closing {
            return;
        }
        let upgraded = peer.phase != Phase::WsHandshake;
        peer.phase = Phase::Closing;
        peer.rare_mut().closing_since = Some(now);
        let sealed = std::mem::replace(&mut peer.sealed, true);
        let (addr, transport) = (peer.addr, peer.transport);
        if cause == CloseCause::SendQueueOverflow {
            self.slow.disconnected += 1;
        }
        if matches!(cause, CloseCause::NetworkError(_)) {
            self.io.abandon_queue(id);
        }
        if let Some(bytes) = last_words(cause, transport, upgraded).filter(|_| !sealed) {
            let policy = self.config.slow_consumer(transport);
            // Always taken: a required chunk is refused only past twice the bound, and the
            // bound here is none.
            self.io
                .queue(id, Chunk::Owned(bytes), Droppable::No, u64::MAX, policy);
        }
        // A TLS connection says it ends on purpose, after its last words; not when the peer is
        // gone, the TLS layer itself failed (its alert is on the way), or TLS never began.
        if !matches!(
            cause,
            CloseCause::NetworkError(_)
                | CloseCause::PeerClosed
                | CloseCause::Tls(_)
                | CloseCause::Preamble(_)
                | CloseCause::Address(_)
        ) {
            self.io.close_notify(id);
        }
        if cause.is_error() {
            info!("{addr}: closing: {cause}");
        } else {
            debug!("{addr}: closing: {cause}");
        }
        // The receive stays armed: what the peer sends until the close is read and dropped
        // (`try_finish` lingers), so its unread bytes do not turn the close into a reset.
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

    /// The lingering close of a connection whose last words are all sent: its write side is
    /// shut, and its receive, still armed, reads and drops what the peer sends until the peer
    /// closes or `close_linger_ms` passes. True once nothing is being read any more.
    fn linger(&mut self, id: ConnId, lingering_since: Option<Instant>, now: Instant) -> bool {
        if !self.io.recv_armed(id) {
            // The peer closed (or the receive ended): nothing to wait for.
            return !self.io.busy(id);
        }
        let linger = Duration::from_millis(self.config.limits.close_linger_ms.into());
        match lingering_since {
            None if self.lingering < self.config.limits.lingering_closes_per_shard_max => {
                self.io.shutdown_write(id);
                if let Some(peer) = self.io.state_mut(id) {
                    peer.rare_mut().lingering_since = Some(now);
                }
                self.lingering += 1;
                self.lingering_closes += 1;
            }
            Some(since) if now - since < linger => {}
            // Past the bound (too many lingering, or for too long): stop reading, then close.
            _ => self.io.cancel_recv(id),
        }
        false
    }

    /// Returns true when the connection is gone from this shard (or was already).
    fn try_finish(&mut self, id: ConnId, now: Instant) -> bool {
        let Some(peer) = self.io.state(id) else {
            return true;
        };
        match peer.phase {
            Phase::Closing => {
                let (closing_since, lingering_since) =
                    peer.rare.as_ref().map_or((None, None), |rare| {
                        (rare.closing_since, rare.lingering_since)
                    });
                let stuck = closing_since.is_some_and(|since| now - since >= CLOSE_LINGER);
                if stuck && self.io.busy(id) && lingering_since.is_none() {
                    // The peer does not read: cut the socket so the pending operations end.
                    self.io.cut(id);
                }
                if self.io.send_in_flight(id) || (self.io.sending(id) && !stuck) {
                    return false;
                }
                if !self.linger(id, lingering_since, now) {
                    return false;
                }
                if lingering_since.is_some() {
                    self.lingering -= 1;
                } else {
                    self.io.shutdown_write(id);
                }
                if let Some(released) = self.io.release(id) {
                    let ip = released.state.addr.ip();
                    if self.addresses.counts(ip) {
                        self.addresses.release(ip, now);
                    }
                    self.broker.connection_lost(id, now, &mut self.outbox);
                }
                true
            }
            Phase::HandingOff(target) => self.hand_off(id, usize::from(target)),
            // A receive was cancelled for a connection that is not ending: nothing to finish.
            _ => true,
        }
    }
}

/// What the peer is told before its connection closes, if anything. Before the upgrade the
/// peer speaks HTTP: a WebSocket close frame would be read as a broken response, by a
/// browser's idle preconnected socket for one (RFC 6455 §4.1).
fn last_words(cause: CloseCause, transport: Transport, upgraded: bool) -> Option<Vec<u8>> {
    match cause {
        CloseCause::Handshake(error) => {
            let mut response = Vec::new();
            write_error_response(error, &mut response);
            Some(response)
        }
        _ if transport == Transport::Ws && upgraded => cause.ws_close_code().map(|code| {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ws::handshake::HandshakeError;

    #[test]
    fn last_words_follow_the_transport_and_the_stage() {
        let refused = last_words(
            CloseCause::Handshake(HandshakeError::NotFound),
            Transport::Ws,
            false,
        )
        .expect("an HTTP error");
        assert!(refused.starts_with(b"HTTP/1.1 404"));
        let shutdown = last_words(CloseCause::Shutdown, Transport::Ws, true).expect("a frame");
        assert_eq!(
            &shutdown[..4],
            &[0x88, 2, 0x03, 0xE9],
            "close frame, code 1001"
        );
        assert_eq!(last_words(CloseCause::Shutdown, Transport::Ws, false), None);
        assert_eq!(last_words(CloseCause::Shutdown, Transport::Tcp, true), None);
        assert_eq!(
            last_words(CloseCause::PeerClosed, Transport::Ws, true),
            None
        );
    }
}
