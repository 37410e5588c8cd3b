//! How a connection ends on this shard: its last words (a WebSocket close frame or an HTTP
//! error) are queued, reading stops, and once no operation of it is in flight the socket is
//! closed — or, for a CONNECT that belongs to another shard, handed over with its state.

use std::time::{Duration, Instant};

use log::{debug, info};

use super::peer::{CloseCause, Phase};
use super::{CLOSE_LINGER, Shard};
use crate::broker::reply::frame;
use crate::conn::{Chunk, ConnId, Droppable, Transport};
use crate::protocol::mqtt::{Disconnect, Packet, Properties, ProtocolVersion, ReasonCode};
use crate::protocol::ws::frame::{WsError, write_close_frame};
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
        let v5 = peer.phase == Phase::Connected(ProtocolVersion::V5);
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
        if let Some(bytes) = last_words(cause, transport, upgraded, v5).filter(|_| !sealed) {
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
/// browser's idle preconnected socket for one (RFC 6455 §4.1). An MQTT 5 client (`v5`) whose
/// frame or message is over the size limit hears it in MQTT first: DISCONNECT 0x95 Packet
/// too large, as it would over TCP, then the close frame.
fn last_words(
    cause: CloseCause,
    transport: Transport,
    upgraded: bool,
    v5: bool,
) -> Option<Vec<u8>> {
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
            let too_large = matches!(
                cause,
                CloseCause::Ws(WsError::FrameTooLarge | WsError::MessageTooLarge)
            );
            let mut bytes = Vec::new();
            if v5 && too_large {
                let disconnect = Packet::Disconnect(Disconnect {
                    reason: ReasonCode::PACKET_TOO_LARGE,
                    properties: Properties::EMPTY,
                });
                bytes = frame(&disconnect, ProtocolVersion::V5, Transport::Ws);
            }
            write_close_frame(code, reason, &mut bytes);
            bytes
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
            false,
        )
        .expect("an HTTP error");
        assert!(refused.starts_with(b"HTTP/1.1 404"));
        let shutdown =
            last_words(CloseCause::Shutdown, Transport::Ws, true, true).expect("a frame");
        assert_eq!(
            &shutdown[..4],
            &[0x88, 2, 0x03, 0xE9],
            "close frame, code 1001"
        );
        assert_eq!(
            last_words(CloseCause::Shutdown, Transport::Ws, false, false),
            None
        );
        assert_eq!(
            last_words(CloseCause::Shutdown, Transport::Tcp, true, true),
            None
        );
        assert_eq!(
            last_words(CloseCause::PeerClosed, Transport::Ws, true, true),
            None
        );
    }

    #[test]
    fn an_oversize_frame_tells_an_mqtt5_client_0x95_first() {
        let cause = CloseCause::Ws(WsError::FrameTooLarge);
        let v5 = last_words(cause, Transport::Ws, true, true).expect("words");
        // A binary frame holding DISCONNECT with reason 0x95, then close 1009 "frame too large".
        let disconnect_len = usize::from(v5[1]);
        assert_eq!(&v5[..5], &[0x82, v5[1], 0xE0, v5[3], 0x95]);
        let close = &v5[2 + disconnect_len..];
        assert_eq!(&close[..4], &[0x88, 17, 0x03, 0xF1], "then close 1009");
        let v311 = last_words(cause, Transport::Ws, true, false).expect("words");
        assert_eq!(v311, close);
    }
}
