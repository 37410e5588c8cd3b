//! What the shard does with the events of its sockets: accepted connections get their deadlines
//! and a receive; received bytes go through `ingest.rs` to the broker; a receive that ended is
//! armed again (or not: the peer left, the connection is closing, or it feeds a cross-shard
//! backlog that is over its bound); a failed send closes its connection.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::address_book::{AddressBook, AddressRefusal};
use super::deadlines::Deadline;
use super::ingest::{self, Flow};
use super::peer::{CloseCause, Peer, Phase};
use super::{Shard, TICK, ingest_context};

use crate::config::{Config, ProxyProtocol};
use crate::conn::{ConnId, Transport};
use crate::net::io::{Event, Received, RecvBuffer, RecvEnd, TlsLayer};
use crate::net::listener::ListenerKind;
use crate::net::preamble::Expect;
use crate::net::sys;
use crate::protocol::proxy::ProxyHeader;
use crate::tls::{TlsFailure, TlsSession};

/// How long a listener whose multishot accept the kernel refused waits before it is tried
/// again: the refusal is about the operation, not one connection, so retrying at once would
/// spin.
const ACCEPT_REFUSED_RETRY: Duration = Duration::from_secs(3600);

impl Shard {
    /// Handles this turn's completions (at most `COMPLETIONS_PER_TURN_MAX`).
    pub(super) fn handle_events(&mut self, now: Instant) {
        let mut events = std::mem::take(&mut self.events);
        if self
            .io
            .take_events(&mut events, super::COMPLETIONS_PER_TURN_MAX)
        {
            self.busy = true;
        }
        for event in events.drain(..) {
            match event {
                Event::Accept {
                    listener,
                    result,
                    armed,
                } => self.on_accept(listener, result, armed, now),
                Event::Received { id, buffer, armed } => self.on_received(id, buffer, armed, now),
                Event::RecvEnded { id, why } => self.on_recv_ended(id, why),
                Event::Sent { id, result } => self.on_sent(id, result),
                Event::Woken => self.io.arm_wake(self.mailboxes.wake_fd(self.id)),
            }
        }
        self.events = events;
    }

    pub(super) fn arm_accept(&mut self, index: usize) {
        let listener = &mut self.listeners[index];
        if listener.armed || self.stop_deadline.is_some() || self.drain.is_some() {
            return;
        }
        let Some(socket) = &listener.socket else {
            return;
        };
        listener.armed = true;
        self.io.arm_accept(index, socket);
    }

    fn on_accept(&mut self, index: usize, result: Result<OwnedFd, i32>, armed: bool, now: Instant) {
        let listener = &mut self.listeners[index];
        listener.armed &= armed;
        if !listener.armed && self.drain.is_some() {
            // No operation uses the socket any more: this process's copy can close.
            listener.socket = None;
        }
        let kind = listener.kind;
        match result {
            Ok(fd) => self.accepted(fd, kind, now),
            Err(libc::ECANCELED) => {}
            Err(errno @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => {
                warn!(
                    "shard {}: accept on {} listener failed: {}; pausing accepts for {TICK:?}",
                    self.id,
                    kind.name(),
                    std::io::Error::from_raw_os_error(errno)
                );
                listener.retry_at = Some(now + TICK);
            }
            // The kernel refused the operation itself, not one connection. Stop this listener on
            // this shard and say why.
            Err(errno @ (libc::EINVAL | libc::EOPNOTSUPP)) => {
                error!(
                    "shard {}: multishot accept refused by the kernel ({}); {} listener stopped on this shard",
                    self.id,
                    std::io::Error::from_raw_os_error(errno),
                    kind.name()
                );
                listener.retry_at = Some(now + ACCEPT_REFUSED_RETRY);
            }
            Err(errno) => warn!(
                "shard {}: accept failed: {}",
                self.id,
                std::io::Error::from_raw_os_error(errno)
            ),
        }
        let listener = &self.listeners[index];
        if !listener.armed && listener.retry_at.is_none() {
            self.arm_accept(index);
        }
    }

    fn accepted(&mut self, fd: OwnedFd, kind: ListenerKind, now: Instant) {
        if self.io.len() >= self.config.limits.connections_per_shard_max as usize {
            warn!(
                "shard {}: connections_per_shard_max reached; refusing a connection",
                self.id
            );
            return;
        }
        let addr = match sys::prepare_accepted(&fd, self.config.tcp_notsent_lowat_bytes) {
            Ok(addr) => addr,
            Err(e) => {
                debug!("accepted connection vanished before set-up: {e}");
                return;
            }
        };
        let ip = addr.ip();
        if self.addresses.counts(ip)
            && let Err(refusal) = self.addresses.admit(ip, now)
        {
            // Closed at once, the socket dropped here: no byte is read or sent.
            self.refused_by_address(addr, refusal);
            return;
        }
        let transport = kind.transport();
        let tls = match self.tls_session(kind) {
            Ok(tls) => tls,
            Err(failure) => {
                warn!("{addr}: refused: cannot start TLS: {failure}");
                if self.addresses.counts(ip) {
                    self.addresses.release(ip, now);
                }
                return;
            }
        };
        let id = self.io.add(
            fd,
            Peer::new(addr, transport, std::rc::Rc::clone(&self.wire_limits)),
            tls,
        );
        debug!("{addr}: connected over {}", kind.name());
        if proxy_protocol_on(self.config.proxy_protocol, kind) {
            let expect = if self.config.trusted_proxies.contains(addr.ip()) {
                Expect::Header
            } else {
                Expect::NoHeader
            };
            self.io.read_preamble_first(id, expect);
        }
        let limits = &self.config.limits;
        let (deadline, timeout_ms) = match transport {
            Transport::Ws => (Deadline::Upgrade, limits.ws_handshake_timeout_ms),
            Transport::Tcp => (Deadline::Connect, limits.connect_timeout_ms),
        };
        let timeout = Duration::from_millis(timeout_ms.into());
        self.deadlines.push(deadline, id, now, timeout);
        self.io.arm_recv(id);
    }

    /// Counts a connection the per-address limits refused; the log says so at most once a
    /// second (`log_address_refusals`), since a flood would otherwise flood the log too.
    pub(super) fn refused_by_address(
        &mut self,
        addr: std::net::SocketAddr,
        refusal: AddressRefusal,
    ) {
        self.address_refusals += 1;
        self.address_refusals_unlogged += 1;
        debug!("{addr}: refused: {}", refusal.description());
    }

    pub(super) fn log_address_refusals(&mut self) {
        if self.address_refusals_unlogged > 0 {
            warn!(
                "shard {}: {} connections refused by connections_per_ip_max or connect_rate_per_ip_max in the last second",
                self.id, self.address_refusals_unlogged
            );
            self.address_refusals_unlogged = 0;
        }
    }

    /// A new TLS session for a connection accepted on a TLS listener, with the certificates of
    /// the moment; `None` for a plain listener.
    fn tls_session(&self, kind: ListenerKind) -> Result<Option<TlsLayer>, TlsFailure> {
        let Some(shared) = self.tls.as_ref().filter(|_| kind.tls()) else {
            return Ok(None);
        };
        let servers = shared.current();
        let config = match kind {
            ListenerKind::Mqtts => &servers.mqtts,
            _ => &servers.wss,
        };
        TlsSession::new(Arc::clone(config)).map(|session| Some(TlsLayer::Rustls(Box::new(session))))
    }

    fn on_received(&mut self, id: ConnId, buffer: RecvBuffer, armed: bool, now: Instant) {
        let feeding_before = self.outbox.to_other_shards.len();
        let mut cx = ingest_context!(self, id, now);
        // A close asked for earlier this turn (an oversize packet, say) begins only when the
        // turn's closes are carried out: what a second receive brought meanwhile is dropped,
        // not decoded as the rest of a stream that already ended.
        let closing = self
            .pending_closes
            .iter()
            .any(|&(pending, _)| pending == id);
        let addresses = &self.addresses;
        let address_refused = std::cell::Cell::new(None);
        let on_header = |peer: &mut Peer, header: ProxyHeader| {
            if let Err(refusal) = take_proxy_header(peer, header, addresses, now) {
                address_refused.set(Some(refusal));
            }
        };
        let read = self
            .io
            .read_received(id, buffer, on_header, |peer, data, tls| {
                if closing || address_refused.get().is_some() {
                    // Closed below, with nothing of it read.
                    return (Flow::Continue, false, false);
                }
                take_client_identity(cx.config, peer, tls);
                let was_upgrading = peer.phase == Phase::WsHandshake;
                let flow = ingest::ingest(&mut cx, peer, data);
                let upgraded = was_upgrading && peer.phase != Phase::WsHandshake;
                // A multishot receive that ended is armed again only while this shard still reads
                // the connection: not once it is closing or moving to another shard.
                let still_reading = matches!(
                    peer.phase,
                    Phase::WsHandshake | Phase::AwaitConnect | Phase::Connected(_)
                );
                (flow, upgraded, still_reading)
            });
        if let Some(refusal) = address_refused.get() {
            self.pending_closes.push((id, CloseCause::Address(refusal)));
            return;
        }
        let ((flow, upgraded, still_reading), peer_closed) = match read {
            Received::Read(read) => (read, false),
            Received::Closed(Some(read)) => (read, true),
            Received::Closed(None) => {
                self.pending_closes.push((id, CloseCause::PeerClosed));
                return;
            }
            Received::Nothing => {
                let reading = self.io.state(id).is_some_and(|peer| peer.reads());
                if !armed && reading {
                    self.rearm.push(id);
                }
                return;
            }
            Received::Failed(failure) => {
                self.tls_failures += 1;
                self.pending_closes.push((id, CloseCause::Tls(failure)));
                return;
            }
            Received::Refused(refusal) => {
                self.proxy_refusals += 1;
                self.pending_closes
                    .push((id, CloseCause::Preamble(refusal)));
                return;
            }
            Received::Gone => return,
        };
        if upgraded {
            let timeout = Duration::from_millis(self.config.limits.connect_timeout_ms.into());
            self.deadlines.push(Deadline::Connect, id, now, timeout);
        }
        if self.outbox.to_other_shards.len() > feeding_before {
            self.cross_shard.fed_by(id);
        }
        self.after_flow(id, flow);
        if peer_closed && still_reading {
            // close_notify came after the bytes just read: the peer is done, even if its TCP
            // side stays open.
            self.pending_closes.push((id, CloseCause::PeerClosed));
        } else if !armed && still_reading {
            self.rearm.push(id);
        }
    }

    fn on_recv_ended(&mut self, id: ConnId, why: RecvEnd) {
        let Some(peer) = self.io.state(id) else {
            return;
        };
        let ending = matches!(peer.phase, Phase::Closing | Phase::HandingOff(_));
        let reading = peer.reads();
        match why {
            RecvEnd::PeerClosed => self.pending_closes.push((id, CloseCause::PeerClosed)),
            // The ring ran out of buffers: they come back as this turn's data is handled.
            RecvEnd::NoBuffers if !ending => self.rearm.push(id),
            // Cancelled for a pause (a verdict, the publish rate, the cross-shard backlog) that
            // ended before the cancel did: the re-arm then found the receive still armed, so it
            // is armed now, unless another pause began meanwhile (`rearm_receives` checks).
            RecvEnd::Cancelled if reading => self.rearm.push(id),
            RecvEnd::NoBuffers | RecvEnd::Cancelled => self.finishing.push(id),
            RecvEnd::Tls(failure) => {
                self.tls_failures += 1;
                self.pending_closes.push((id, CloseCause::Tls(failure)));
            }
            RecvEnd::Failed(errno) => self
                .pending_closes
                .push((id, CloseCause::NetworkError(errno))),
        }
    }

    fn on_sent(&mut self, id: ConnId, result: Result<(), i32>) {
        if let Err(errno) = result
            && self
                .io
                .state(id)
                .is_some_and(|peer| peer.phase != Phase::Closing)
        {
            self.pending_closes
                .push((id, CloseCause::NetworkError(errno)));
        }
    }

    /// What a connection's bytes asked for: nothing more, a close, or a move to the shard that
    /// owns its session.
    pub(super) fn after_flow(&mut self, id: ConnId, flow: Flow) {
        match flow {
            Flow::Continue => {}
            Flow::Close(cause) => self.pending_closes.push((id, cause)),
            Flow::HandOff(_) => {
                self.io.cancel_recv(id);
                self.finishing.push(id);
            }
            // Nothing is read until the verdict (`take_verdicts`).
            Flow::Verify => self.io.cancel_recv(id),
            // Nothing is read until the rate allows (`resume_throttled`).
            Flow::Throttle(until) => {
                self.io.cancel_recv(id);
                self.throttled.pause(id, until);
            }
            // Read again once acknowledgements were sent (`persist.rs`), at the latest at the
            // next tick.
            Flow::AwaitAcks => {
                self.io.cancel_recv(id);
                self.throttled.wait_for_acks(id, Instant::now());
            }
        }
    }

    /// Arms again the receives that ended this turn, except those of connections feeding a
    /// cross-shard backlog over its bound: they wait until it drains (`mailbox.rs`).
    pub(super) fn rearm_receives(&mut self) {
        for id in self.cross_shard.resume() {
            self.rearm.push(id);
        }
        for id in self.cross_shard.to_pause() {
            self.io.cancel_recv(id);
        }
        let mut rearm = std::mem::take(&mut self.rearm);
        for id in rearm.drain(..) {
            let reading = self.io.state(id).is_some_and(|peer| {
                matches!(
                    peer.phase,
                    Phase::WsHandshake | Phase::AwaitConnect | Phase::Connected(_)
                )
            });
            if reading && !self.cross_shard.is_paused(id) && !self.throttled.is_paused(id) {
                self.io.arm_recv(id);
            }
        }
        self.rearm = rearm;
    }

    /// Reads again a connection whose CONNECT waited (for a password's verdict, or for its
    /// session from the cluster) once the answer is on it, then its socket.
    pub(super) fn read_parked_connect(&mut self, id: ConnId, now: Instant) {
        let mut cx = ingest_context!(self, id, now);
        let Some(peer) = self.io.state_mut(id) else {
            return;
        };
        let flow = ingest::ingest_pending(&mut cx, peer);
        let reading = peer.reads();
        self.after_flow(id, flow);
        if reading {
            self.io.arm_recv(id);
        }
    }

    /// Reads again the connections whose publish rate allows it: first what they sent before
    /// the pause, then the socket.
    pub(super) fn resume_throttled(&mut self, now: Instant) {
        for id in self.throttled.resume(now) {
            let mut cx = ingest_context!(self, id, now);
            let Some(peer) = self.io.state_mut(id) else {
                continue;
            };
            let flow = ingest::ingest_pending(&mut cx, peer);
            let reading = peer.reads();
            self.after_flow(id, flow);
            if reading && !matches!(flow, Flow::Throttle(_) | Flow::AwaitAcks) {
                self.rearm.push(id);
            }
        }
    }

    /// Closes the connections that missed their upgrade or CONNECT deadline.
    pub(super) fn expire_deadlines(&mut self, now: Instant) {
        let (io, closes) = (&self.io, &mut self.pending_closes);
        self.deadlines.expire(now, |deadline, id| {
            let (phases, cause) = match deadline {
                Deadline::Upgrade => ([Phase::WsHandshake; 3], CloseCause::HandshakeTimeout),
                // A password still with a verifier, or a session with the cluster, counts
                // against the CONNECT deadline too.
                Deadline::Connect => (
                    [
                        Phase::AwaitConnect,
                        Phase::Verifying,
                        Phase::FetchingSession,
                    ],
                    CloseCause::ConnectTimeout,
                ),
            };
            let missed = io
                .state(id)
                .is_some_and(|peer| phases.contains(&peer.phase));
            if missed {
                closes.push((id, cause));
            }
            missed
        });
    }
}

/// Whether connections of a `kind` listener start with a PROXY header when they come from a
/// trusted proxy.
fn proxy_protocol_on(on: ProxyProtocol, kind: ListenerKind) -> bool {
    match kind {
        ListenerKind::Tcp => on.tcp,
        ListenerKind::Ws => on.ws,
        ListenerKind::Mqtts => on.mqtts,
        ListenerKind::Wss => on.wss,
    }
}

/// A trusted proxy's header names the client, or (LOCAL, UNKNOWN) leaves the proxy's address.
/// The client a PROXY header names becomes the connection's address, once the per-address
/// limits count it (the proxy's own address was not counted). Refused, the connection keeps
/// the proxy's address, so that nothing is released for it at the close.
fn take_proxy_header(
    peer: &mut Peer,
    header: ProxyHeader,
    addresses: &AddressBook,
    now: Instant,
) -> Result<(), AddressRefusal> {
    match header.source() {
        Some(client) => {
            debug!("{}: PROXY header: the client is {client}", peer.addr);
            let ip = client.ip().to_canonical();
            if addresses.counts(ip)
                && let Err(refusal) = addresses.admit(ip, now)
            {
                info!(
                    "{}: the client {client} is refused: {}",
                    peer.addr,
                    refusal.description()
                );
                return Err(refusal);
            }
            peer.proxied_for(client);
        }
        None => debug!(
            "{}: PROXY header names no client (LOCAL or UNKNOWN): the proxy's address stays",
            peer.addr
        ),
    }
    Ok(())
}

/// With `identity_as_username`, a TLS client's certificate names it once the handshake verified
/// one; its CONNECT then carries that name (`ingest.rs`). Taken before the bytes are read: the
/// records that finish the handshake may bring the CONNECT too.
fn take_client_identity(config: &Config, peer: &mut Peer, tls: Option<&TlsSession>) {
    if !config.tls.identity_as_username || peer.identity().is_some() {
        return;
    }
    if let Some(identity) = tls.and_then(TlsSession::client_identity) {
        // No authentication reads the name yet: the log is where an operator sees it.
        debug!(
            "{}: the client certificate names the user {identity:?}",
            peer.addr
        );
        peer.rare_mut().identity = Some(identity.into_boxed_str());
    }
}
