//! The thread of one bridge: an MQTT client of the remote broker, written with this crate's
//! own codec (`crate::protocol::mqtt`), never on a shard loop.
//!
//! **Transport.** The bytes travel over TCP, TLS, WebSocket or WebSocket over TLS, as the
//! URL says (`transport.rs`); the client reads and writes MQTT bytes the same way over each.
//!
//! **Why tokio.** The client waits on three things at once: bytes from the remote, publishes
//! from the shards (the `Notify` of `shard::byte_queue::Pipes`, as the cluster's link has) and the
//! keep-alive timer. On a current-thread tokio runtime that is one `select!`, with one thread
//! and one socket per bridge and no timeouts polled in a loop. Blocking sockets would need a
//! reader and a writer thread per bridge sharing the session's state (in-flight publishes,
//! keep alive) behind locks, and a condition variable beside the shards' wake-up. tokio is
//! already linked for the NATS client; monoio would bring a second io_uring runtime for a
//! handful of connections that carry one stream each.
//!
//! **Session.** After CONNACK the client subscribes the remote filters of the `in` and `both`
//! mappings (MQTT 5: with No Local, so the remote does not send back what this broker
//! published). Publishes to the remote are taken from the shards' queue as they come, whether
//! the remote is connected or not, into the bridge's own queue (`queue.rs`): QoS 1 ones are
//! written to its files (`journal.rs`) and kept until PUBACK, at most `inflight_max` sent at
//! a time, sent again, flagged DUP, after a reconnection. QoS 1 messages from the remote are
//! acknowledged once handed to the shards' queue (memory only).
//!
//! **Loops** (`docs/bridges.md`). With `try_private` the CONNECT says this is a bridge
//! (3.1.1: protocol level 0x84; MQTT 5: the user property [`BRIDGE_USER_PROPERTY`]); a
//! 3.1.1 remote that refuses it is asked again without, for good. Messages from the remote
//! are marked as having crossed a bridge (`RoutedMessage::bridged`), and one that the
//! remote's own bridge connection already published here is dropped
//! (`crate::broker::crossings`).
//!
//! **3.1.1 echoes.** MQTT 3.1.1 has no No Local: a remote that did not take the mark sends
//! this broker's own publishes back when a `both` mapping covers them. The client then
//! remembers the last [`ECHOES_REMEMBERED_MAX`] publishes it sent that will come back that
//! way and drops the first message from the remote equal to one (topic and payload), once.

use std::collections::{BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::{debug, info, warn};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::journal::Journal;
use super::link::{BridgeLink, Full};
use super::queue::{Now, OutQueue, Pushed, QueueSettings};
use super::remap::{to_local, to_remote};
use super::tls::{TlsClient, TlsSetupError};
use super::transport::{Received, Transport, TransportError};
use crate::broker::RoutedMessage;
use crate::broker::crossings::{self, Path};
use crate::config::bridge::{BridgeProtocol, BridgeSettings, RemoteUrl};
use crate::config::{Limits, Persistence};
use crate::protocol::mqtt::topic::validate_topic_name;
use crate::protocol::mqtt::{
    Ack, BRIDGE_USER_PROPERTY, Connect, DecodeError, DecodeLimits, Delivery, Packet, PacketId,
    Properties, PropertiesBuf, Property, PropertyScope, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, SubscribeReturnCode, SubscriptionOptions, decode_from_server, encode,
};
use crate::store::StoreError;

/// Publishes sent to a 3.1.1 remote that it may echo back, remembered to drop the echo.
/// Worst case 8 bytes each per bridge.
pub const ECHOES_REMEMBERED_MAX: usize = 4096;

/// While the in queue is full, how often the held publish is offered again.
const IN_QUEUE_RETRY: Duration = Duration::from_millis(5);

/// Messages taken from the shards' queue before the client looks at its socket again: bounds
/// one turn of the bridge's loop while the shards keep publishing.
const INTAKE_PER_TURN_MAX: usize = 4096;

/// Why a bridge could not start.
#[derive(Debug)]
pub enum BridgeError {
    /// `password_file` unreadable.
    Secret(PathBuf, std::io::Error),
    /// The TLS settings of the named bridge.
    Tls(String, TlsSetupError),
    /// The runtime or the thread.
    Start(std::io::Error),
    /// The store-and-forward queue's directory cannot be used (locked, unreadable, corrupt).
    Queue(StoreError),
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::Secret(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            BridgeError::Tls(name, e) => write!(f, "bridge {name}: TLS: {e}"),
            BridgeError::Start(e) => write!(f, "cannot start a bridge: {e}"),
            BridgeError::Queue(e) => write!(f, "cannot open a bridge's queue: {e}"),
        }
    }
}

impl std::error::Error for BridgeError {}

/// Why a connection to the remote ended or was not made.
#[derive(Debug)]
enum Down {
    /// The stream failed: a TLS, WebSocket or socket error.
    Transport(TransportError),
    /// The remote closed the connection.
    Closed,
    /// No connection, handshake or CONNACK within `connect_timeout_ms` (the value).
    Timeout(u32),
    /// CONNACK refused, with its reason code (a 3.1.1 return code as its MQTT 5 equivalent:
    /// 5, not authorized, is 0x87).
    Refused(ReasonCode),
    /// DISCONNECT from the remote, with its reason code.
    Disconnected(ReasonCode),
    /// Bytes that are no valid packet.
    Malformed(DecodeError),
    /// A packet the remote must not send here.
    Unexpected(&'static str),
    /// No PINGRESP within a keep-alive period.
    KeepAlive,
    /// The broker stops.
    Stopping,
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Down::Transport(e) => write!(f, "{e}"),
            Down::Closed => write!(f, "closed by the remote"),
            Down::Timeout(ms) => write!(
                f,
                "no CONNACK within connect_timeout_ms ({ms} ms): connection, handshakes and \
                 CONNACK included"
            ),
            Down::Refused(reason) => {
                let name = reason.name();
                write!(
                    f,
                    "CONNACK refused with reason code {:#04x} ({name})",
                    reason.0
                )
            }
            Down::Disconnected(reason) => {
                write!(
                    f,
                    "DISCONNECT from the remote with reason code {:#04x} ({})",
                    reason.0,
                    reason.name()
                )
            }
            Down::Malformed(e) => write!(f, "malformed packet: {e:?}"),
            Down::Unexpected(what) => write!(f, "unexpected {what}"),
            Down::KeepAlive => write!(f, "no PINGRESP within the keep alive"),
            Down::Stopping => write!(f, "the broker stops"),
        }
    }
}

impl From<TransportError> for Down {
    fn from(e: TransportError) -> Down {
        Down::Transport(e)
    }
}

/// Opens the bridge's queue (its files under `queue_dir` or the data directory, loaded before
/// the broker is ready) and starts the bridge's thread. It connects in the background: the
/// broker serves its local clients whether the remote is up or not. The thread ends after
/// [`BridgeLink::request_stop`].
pub fn spawn(
    settings: &BridgeSettings,
    limits: &Limits,
    persistence: &Persistence,
    link: Arc<BridgeLink>,
) -> Result<std::thread::JoinHandle<()>, BridgeError> {
    let password = match &settings.password_file {
        Some(path) => Some(
            std::fs::read(path)
                .map(|mut bytes| {
                    if bytes.last() == Some(&b'\n') {
                        bytes.pop();
                    }
                    bytes
                })
                .map_err(|e| BridgeError::Secret(path.clone(), e))?,
        ),
        None => None,
    };
    let remote = settings
        .remote()
        .expect("validated at start-up: a URL this parses");
    let tls = match remote.scheme.tls() {
        true => Some(
            super::tls::client(settings, &remote)
                .map_err(|e| BridgeError::Tls(settings.name.clone(), e))?,
        ),
        false => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BridgeError::Start)?;
    let queue = open_queue(settings, persistence)?;
    let client = Client {
        settings: settings.clone(),
        version: match settings.protocol {
            BridgeProtocol::V311 => ProtocolVersion::V311,
            BridgeProtocol::V5 => ProtocolVersion::V5,
        },
        password,
        remote,
        tls,
        random: SystemRandom::new(),
        limits: limits.decode_limits(),
        link,
        queue,
        echoes: VecDeque::new(),
        ping_outstanding: false,
        inbound_qos2: BTreeSet::new(),
        inbound_qos2_max: usize::from(limits.inbound_qos2_max),
        private: settings.try_private,
        private_accepted: false,
    };
    // What the queue loaded shows from the start, before the broker is ready.
    client.publish_figures();
    let expired = client.queue.expired_at_load();
    client
        .link
        .figures
        .dropped_out
        .fetch_add(expired, Ordering::Relaxed);
    std::thread::Builder::new()
        .name(format!("bridge-{}", settings.name))
        .spawn(move || runtime.block_on(client.run()))
        .map_err(BridgeError::Start)
}

struct Client {
    settings: BridgeSettings,
    version: ProtocolVersion,
    password: Option<Vec<u8>>,
    remote: RemoteUrl,
    tls: Option<TlsClient>,
    /// The reconnection jitter's source.
    random: SystemRandom,
    limits: DecodeLimits,
    link: Arc<BridgeLink>,
    /// What waits for the remote, and what was sent and is not acknowledged.
    queue: OutQueue,
    /// Fingerprints of publishes a 3.1.1 remote will echo (see the module documentation).
    echoes: VecDeque<u64>,
    ping_outstanding: bool,
    /// Packet ids of the remote's QoS 2 publishes delivered and awaiting PUBREL: at most
    /// `inbound_qos2_max` (2 bytes each).
    inbound_qos2: BTreeSet<u16>,
    inbound_qos2_max: usize,
    /// Whether the next CONNECT says it is a bridge (`try_private`): cleared for good when
    /// the remote refuses it.
    private: bool,
    /// The connection up now said so and was accepted: the remote does not echo.
    private_accepted: bool,
}

impl Client {
    async fn run(mut self) {
        let initial = Duration::from_millis(u64::from(self.settings.reconnect_initial_ms));
        let max = Duration::from_millis(u64::from(self.settings.reconnect_max_ms));
        let mut backoff = initial;
        let mut connections: u64 = 0;
        // Failures in a row are logged once, as one change of state.
        let mut failing = false;
        let (name, url) = (self.settings.name.clone(), self.settings.url.clone());
        let v5 = self.version == ProtocolVersion::V5;
        let link = Arc::clone(&self.link);
        loop {
            let attempt = tokio::select! {
                attempt = self.connect() => attempt,
                () = link.stopped() => Err(Down::Stopping),
            };
            match attempt {
                Ok((stream, buf)) => {
                    if connections > 0 {
                        self.link.figures.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    connections += 1;
                    failing = false;
                    backoff = initial;
                    self.link.figures.connected.store(true, Ordering::Relaxed);
                    info!("bridge {name}: connected to {url}");
                    let why = self.serve(stream, buf).await;
                    self.link.figures.connected.store(false, Ordering::Relaxed);
                    self.private_accepted = false;
                    if matches!(why, Down::Stopping) {
                        break;
                    }
                    warn!(
                        "bridge {name}: disconnected from {url}: {why}; reconnecting in {} ms",
                        backoff.as_millis()
                    );
                }
                Err(Down::Stopping) => break,
                Err(why) if self.private && !v5 && refuses_the_mark(&why) => {
                    self.private = false;
                    warn!(
                        "bridge {name}: {url} refused the bridge's CONNECT with protocol level \
                         0x84 (try_private: {why}); connecting as an ordinary 3.1.1 client from \
                         now on"
                    );
                    continue;
                }
                Err(why) if !failing => {
                    failing = true;
                    warn!(
                        "bridge {name}: cannot connect to {url}: {why}; retrying with back-off up to {} ms",
                        max.as_millis()
                    );
                }
                Err(why) => debug!("bridge {name}: cannot connect to {url}: {why}"),
            }
            if self.pause(self.jittered(backoff)).await.is_err() {
                break;
            }
            backoff = (backoff * 2).min(max);
        }
        self.finish();
    }

    /// Waits `how_long` before the next attempt, taking the shards' publishes into the queue
    /// meanwhile (the remote away, this is what store-and-forward is for); `Err` when the
    /// broker stops.
    async fn pause(&mut self, how_long: Duration) -> Result<(), Down> {
        let until = Instant::now() + how_long;
        let link = Arc::clone(&self.link);
        loop {
            let sync_due = self.queue.sync_due().map(Instant::from_std);
            tokio::select! {
                () = sleep_until(until) => return Ok(()),
                () = link.stopped() => return Err(Down::Stopping),
                () = link.pipes.woken() => {
                    self.intake();
                }
                () = sleep_until(sync_due.unwrap_or(until)), if sync_due.is_some() => {}
            }
            self.queue.flush(std::time::Instant::now());
        }
    }

    /// The broker stops, its shards stopped: what they handed over goes into the queue, and
    /// the queue's files are synced.
    fn finish(&mut self) {
        while self.intake() {}
        self.queue.flush(std::time::Instant::now());
        self.queue.sync();
        info!(
            "bridge {}: stopped, {} messages queued",
            self.settings.name,
            self.queue.messages()
        );
    }

    /// `wait` shortened by a random part of up to `reconnect_jitter` of it.
    fn jittered(&self, wait: Duration) -> Duration {
        let mut bytes = [0u8; 4];
        // Without randomness the wait is the plain back-off: jitter only spreads the load.
        if self.random.fill(&mut bytes).is_err() {
            return wait;
        }
        self.settings
            .reconnect_jitter
            .shorten(wait, u32::from_le_bytes(bytes))
    }

    /// Opens the connection and waits for CONNACK, all within `connect_timeout_ms`; gives
    /// back the bytes read past it.
    async fn connect(&mut self) -> Result<(Transport, Vec<u8>), Down> {
        let limit_ms = self.settings.connect_timeout_ms;
        let limit = Duration::from_millis(u64::from(limit_ms));
        let deadline = Instant::now() + limit;
        let mut stream = timeout(limit, Transport::open(&self.remote, self.tls.as_ref()))
            .await
            .map_err(|_| Down::Timeout(limit_ms))??;
        let client_id = self.settings.client_id();
        let mut properties = PropertiesBuf::new();
        if self.version == ProtocolVersion::V5 && self.settings.session_expiry_s > 0 {
            properties.push(Property::SessionExpiryInterval(
                self.settings.session_expiry_s,
            ));
        }
        let v5 = self.version == ProtocolVersion::V5;
        if v5 && self.private {
            properties.push(Property::UserProperty(BRIDGE_USER_PROPERTY, "1"));
        }
        let connect = Packet::Connect(Connect {
            version: self.version,
            clean_session: self.settings.clean_start,
            keep_alive_s: self.settings.keep_alive_s,
            client_id: &client_id,
            will: None,
            username: self.settings.username.as_deref(),
            password: self.password.as_deref(),
            properties: properties.as_properties(),
            bridge: self.private && !v5,
        });
        let mut out = Vec::new();
        encode(&connect, self.version, &mut out);
        timeout_at(deadline, stream.write(&out), limit_ms).await??;
        let mut buf = Vec::new();
        loop {
            match timeout_at(deadline, stream.read(&mut buf), limit_ms).await?? {
                Received::Closed => return Err(Down::Closed),
                Received::Nothing => continue,
                Received::Bytes => {}
            }
            let Some((packet, used)) =
                decode_from_server(&buf, self.version, &self.limits).map_err(Down::Malformed)?
            else {
                continue;
            };
            let Packet::ConnAck(connack) = packet else {
                return Err(Down::Unexpected("packet before CONNACK"));
            };
            if connack.reason != ReasonCode::SUCCESS {
                return Err(Down::Refused(connack.reason));
            }
            self.private_accepted = self.private;
            buf.drain(..used);
            return Ok((stream, buf));
        }
    }

    /// Runs one connection until it ends, and says why.
    async fn serve(&mut self, mut stream: Transport, mut buf: Vec<u8>) -> Down {
        let mut out = Vec::new();
        self.subscribe(&mut out);
        // What the last connection left unacknowledged goes again, in order.
        self.queue.reconnected();
        // A released QoS 2 message goes on with its PUBREL [MQTT-4.4.0-1].
        let now = std::time::Instant::now();
        for entry in self.queue.in_flight() {
            let Some(id) = entry.id else {
                continue;
            };
            if entry.released {
                encode(&Packet::PubRel(Ack::new(id)), self.version, &mut out);
                continue;
            }
            let delivery = delivery_of(entry.qos, id);
            let message = (&*entry.topic, &*entry.message);
            put_publish(&mut out, self.version, message, delivery, true, now);
        }
        // A clean start ends the remote's side of the QoS 2 publishes it sent: their ids are
        // new again.
        if self.settings.clean_start {
            self.inbound_qos2.clear();
        }
        self.ping_outstanding = false;
        let keep_alive = Duration::from_secs(u64::from(self.settings.keep_alive_s.max(1)));
        let mut next_ping = Instant::now() + keep_alive;
        let mut stalled = false;
        loop {
            self.take_out(&mut out);
            self.queue.flush(std::time::Instant::now());
            if !out.is_empty() || stream.has_pending() {
                if let Err(e) = stream.write(&out).await {
                    return Down::Transport(e);
                }
                out.clear();
            }
            let turn = self.wait(&mut stream, &mut buf, stalled, next_ping).await;
            match turn {
                Wait::Read(Ok(Received::Closed)) => return Down::Closed,
                Wait::Read(Ok(Received::Nothing)) | Wait::Woken | Wait::Sync => {}
                Wait::Read(Ok(Received::Bytes)) | Wait::Retry => {
                    match self.take_packets(&mut buf, &mut out) {
                        Ok(now_stalled) => stalled = now_stalled,
                        Err(why) => return why,
                    }
                }
                Wait::Read(Err(e)) => return Down::Transport(e),
                Wait::Stop => return Down::Stopping,
                Wait::Ping => {
                    if self.ping_outstanding {
                        return Down::KeepAlive;
                    }
                    if self.settings.keep_alive_s > 0 {
                        encode(&Packet::PingReq, self.version, &mut out);
                        self.ping_outstanding = true;
                    }
                    next_ping = Instant::now() + keep_alive;
                }
            }
        }
    }

    async fn wait(
        &self,
        stream: &mut Transport,
        buf: &mut Vec<u8>,
        stalled: bool,
        next_ping: Instant,
    ) -> Wait {
        let sync_due = self.queue.sync_due().map(Instant::from_std);
        tokio::select! {
            // Not read while stalled: the remote's writes then wait in TCP, which slows it.
            read = stream.read(buf), if !stalled => Wait::Read(read),
            () = sleep(IN_QUEUE_RETRY), if stalled => Wait::Retry,
            // Taken even with no room to send: what the shards queued goes to the files.
            () = self.link.pipes.woken() => Wait::Woken,
            () = self.link.stopped() => Wait::Stop,
            () = sleep_until(sync_due.unwrap_or(next_ping)), if sync_due.is_some() => Wait::Sync,
            () = sleep_until(next_ping) => Wait::Ping,
        }
    }

    fn subscribe(&mut self, out: &mut Vec<u8>) {
        let v5 = self.version == ProtocolVersion::V5;
        let remote_filters: Vec<(String, QoS)> = self
            .settings
            .topics
            .iter()
            .filter(|mapping| mapping.direction.carries_in())
            .map(|mapping| {
                let qos = QoS::from_bits(mapping.qos).unwrap_or(QoS::AtMostOnce);
                (mapping.remote_filter(), qos)
            })
            .collect();
        if remote_filters.is_empty() {
            return;
        }
        let filters = remote_filters
            .iter()
            .map(|(filter, qos)| {
                let mut options = SubscriptionOptions::new(*qos);
                options.no_local = v5;
                options.retain_as_published = v5;
                (filter.as_str(), options)
            })
            .collect();
        let packet_id = self.queue.allocate_id();
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties: Properties::EMPTY,
        });
        encode(&subscribe, self.version, out);
    }

    /// Takes what the shards queued for the remote into the bridge's queue, at most
    /// [`INTAKE_PER_TURN_MAX`]; `true` when more may wait (the bridge is woken again for it).
    fn intake(&mut self) -> bool {
        let link = Arc::clone(&self.link);
        let figures = &link.figures;
        let now = Now::read();
        let mut more = true;
        for _ in 0..INTAKE_PER_TURN_MAX {
            let Some(message) = link.pipes.next_out() else {
                more = false;
                break;
            };
            let Some((topic, qos_max)) = to_remote(&self.settings.topics, &message.topic) else {
                figures.dropped_out.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let qos = message
                .qos
                .min(QoS::from_bits(qos_max).unwrap_or(QoS::AtMostOnce));
            if qos == QoS::AtMostOnce {
                if !self.queue.push_volatile(topic.into(), message) {
                    figures.dropped_out.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let dropped = match self.queue.push(topic.into(), message, qos, now) {
                Pushed::Queued { dropped } => dropped,
                Pushed::Dropped => 1,
            };
            figures.queue_dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if more {
            link.pipes.wake_remote();
        }
        // Written before the figures count them: what they show survives a kill -9.
        self.queue.flush(now.at);
        self.publish_figures();
        more
    }

    /// The queue's figures and, under `refuse`, whether the shards refuse for it now.
    fn publish_figures(&self) {
        // The flag first: once the figures say the queue emptied, the shards accept again.
        self.link
            .refusing
            .store(self.queue.refusing(), Ordering::Relaxed);
        let figures = &self.link.figures;
        let (messages, bytes) = (self.queue.messages() as u64, self.queue.bytes());
        figures.queued_messages.store(messages, Ordering::Relaxed);
        figures.queued_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Encodes what waits in the queue: every QoS 0 message, and QoS 1 ones as many as
    /// `inflight_max` allows.
    fn take_out(&mut self, out: &mut Vec<u8>) {
        self.intake();
        let link = Arc::clone(&self.link);
        let figures = &link.figures;
        let now = std::time::Instant::now();
        // A message past its Message Expiry Interval goes to no one [MQTT-3.3.2-5]: it is
        // dropped, and counted, instead of sent.
        while let Some((topic, message)) = self.queue.pop_volatile() {
            if message.expired(now) {
                figures.dropped_out.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.remember_echo(&topic, &message.payload);
            let delivery = Delivery::AtMostOnce;
            put_publish(out, self.version, (&topic, &message), delivery, false, now);
            figures.forwarded_out.fetch_add(1, Ordering::Relaxed);
        }
        let window = usize::from(self.settings.inflight_max);
        let echoes = self.echoes_expected();
        while let Some(entry) = self.queue.next_to_send(window) {
            let Some(id) = entry.id else {
                continue;
            };
            if entry.message.expired(now) {
                self.queue.ack(id);
                figures.dropped_out.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let delivery = delivery_of(entry.qos, id);
            let message = (&*entry.topic, &*entry.message);
            put_publish(out, self.version, message, delivery, false, now);
            if echoes && to_local(&self.settings.topics, &entry.topic).is_some() {
                remember(
                    &mut self.echoes,
                    fingerprint(&entry.topic, &entry.message.payload),
                );
            }
        }
        self.publish_figures();
    }

    /// Whether the remote sends this bridge's own publishes back: a 3.1.1 remote that was
    /// not told, or refused to hear, that this is a bridge. One that accepted the mark
    /// (Mosquitto, fanfare) subscribes it with No Local.
    fn echoes_expected(&self) -> bool {
        self.version == ProtocolVersion::V311 && !self.private_accepted
    }

    /// A 3.1.1 remote sends back a publish to a topic that an `in` mapping covers too.
    fn remember_echo(&mut self, topic: &str, payload: &[u8]) {
        if self.echoes_expected() && to_local(&self.settings.topics, topic).is_some() {
            remember(&mut self.echoes, fingerprint(topic, payload));
        }
    }

    /// Handles the complete packets in `buf`, answering into `out`. Stops at a publish the in
    /// queue has no room for, leaving it in `buf` unacknowledged: `Ok(true)`, stalled.
    fn take_packets(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, Down> {
        let mut start = 0;
        let result = loop {
            let decoded = decode_from_server(&buf[start..], self.version, &self.limits);
            let (packet, used) = match decoded {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break Ok(false),
                Err(e) => break Err(Down::Malformed(e)),
            };
            match self.take_packet(packet, out) {
                Ok(Taken::Done) => start += used,
                Ok(Taken::Stalled) => break Ok(true),
                Err(why) => break Err(why),
            }
        };
        buf.drain(..start);
        result
    }

    fn take_packet(&mut self, packet: Packet<'_>, out: &mut Vec<u8>) -> Result<Taken, Down> {
        let figures = &self.link.figures;
        match packet {
            Packet::Publish(publish) => return self.take_remote_publish(&publish, out),
            Packet::PubAck(ack) | Packet::PubComp(ack) => {
                if self.queue.ack(ack.packet_id) {
                    figures.forwarded_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A PUBREC with an error ends the exchange (§4.3.3): the remote will not have it.
            Packet::PubRec(ack) if ack.reason.is_error() => {
                self.queue.ack(ack.packet_id);
                figures.dropped_out.fetch_add(1, Ordering::Relaxed);
            }
            Packet::PubRec(ack) => {
                if self.queue.received(ack.packet_id) {
                    encode(&Packet::PubRel(Ack::new(ack.packet_id)), self.version, out);
                }
            }
            Packet::PubRel(ack) => {
                // Known or not (a retransmission after PUBCOMP was lost), PUBCOMP ends it.
                self.inbound_qos2.remove(&ack.packet_id.get());
                encode(&Packet::PubComp(Ack::new(ack.packet_id)), self.version, out);
            }
            Packet::SubAck(suback) => {
                let refused = suback
                    .codes
                    .iter()
                    .any(|code| !matches!(code, SubscribeReturnCode::Granted(_)));
                if refused {
                    warn!(
                        "bridge {}: the remote refused a subscription: {:?}",
                        self.settings.name, suback.codes
                    );
                }
            }
            Packet::PingResp => self.ping_outstanding = false,
            Packet::Disconnect(disconnect) => return Err(Down::Disconnected(disconnect.reason)),
            Packet::UnsubAck(_) => {}
            _ => return Err(Down::Unexpected("packet from the remote")),
        }
        Ok(Taken::Done)
    }

    /// A PUBLISH from the remote: handed to the shards and acknowledged, QoS 2 ones once per
    /// packet id until their PUBREL [MQTT-4.3.3-3] (a retransmission only gets PUBREC again).
    fn take_remote_publish(
        &mut self,
        publish: &Publish<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Taken, Down> {
        match publish.delivery {
            Delivery::AtMostOnce => {
                if self.take_publish(publish).is_err() {
                    return Ok(Taken::Stalled);
                }
            }
            Delivery::AtLeastOnce(id) => {
                if self.take_publish(publish).is_err() {
                    return Ok(Taken::Stalled);
                }
                encode(&Packet::PubAck(Ack::new(id)), self.version, out);
            }
            Delivery::ExactlyOnce(id) => {
                if !self.inbound_qos2.contains(&id.get()) {
                    if self.inbound_qos2.len() >= self.inbound_qos2_max {
                        return Err(Down::Unexpected(
                            "QoS 2 publish past inbound_qos2_max awaiting PUBREL",
                        ));
                    }
                    if self.take_publish(publish).is_err() {
                        return Ok(Taken::Stalled);
                    }
                    self.inbound_qos2.insert(id.get());
                }
                encode(&Packet::PubRec(Ack::new(id)), self.version, out);
            }
        }
        Ok(Taken::Done)
    }

    /// Hands a publish from the remote to the shards under its local name; [`Full`] when the
    /// in queue has no room for it now (nothing changed: it is taken again later).
    fn take_publish(&mut self, publish: &Publish<'_>) -> Result<(), Full> {
        let dropped = &self.link.figures.dropped_in;
        if self.version == ProtocolVersion::V311 && !self.echoes.is_empty() {
            let print = fingerprint(publish.topic, publish.payload);
            if let Some(at) = self.echoes.iter().position(|&seen| seen == print) {
                self.echoes.remove(at);
                return Ok(());
            }
        }
        let Some((topic, qos_max)) = to_local(&self.settings.topics, publish.topic) else {
            dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        if topic.starts_with('$') || validate_topic_name(&topic, &self.limits).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let qos = publish
            .delivery
            .qos()
            .min(QoS::from_bits(qos_max).unwrap_or(QoS::AtMostOnce));
        // MQTT 5: with the publisher's properties and what remains of its expiry.
        let mut message = RoutedMessage::of_publish(publish, &topic, std::time::Instant::now());
        message.qos = qos;
        message.bridged = true;
        // The remote's own bridge connection may have published it here already.
        let print = crossings::fingerprint(&topic, publish.payload);
        let mut crossings = self.link.lock_crossings();
        if crossings.second_copy(Path::Pulled, print) {
            return Ok(());
        }
        self.link.deliver(message)?;
        crossings.note(Path::Pulled, print);
        Ok(())
    }
}

enum Wait {
    Read(Result<Received, TransportError>),
    Woken,
    Ping,
    /// A sync of the queue's files is due (`batch` durability).
    Sync,
    Stop,
    /// Stalled on a full in queue: time to offer the held publish again.
    Retry,
}

/// What became of a packet from the remote.
enum Taken {
    Done,
    /// A publish the in queue has no room for yet: it stays unread and unacknowledged.
    Stalled,
}

/// How a queued message is sent: QoS 1 or 2 with packet id `id`.
fn delivery_of(qos: QoS, id: PacketId) -> Delivery {
    match qos {
        QoS::ExactlyOnce => Delivery::ExactlyOnce(id),
        QoS::AtMostOnce | QoS::AtLeastOnce => Delivery::AtLeastOnce(id),
    }
}

/// Encodes `message` as a PUBLISH to the remote: for MQTT 5 with the properties its
/// publisher gave it (user properties, content type, payload format, response topic,
/// correlation data) and the Message Expiry Interval that remains at `now` [MQTT-3.3.2-6].
fn put_publish(
    out: &mut Vec<u8>,
    version: ProtocolVersion,
    (topic, message): (&str, &RoutedMessage),
    delivery: Delivery,
    dup: bool,
    now: std::time::Instant,
) {
    let mut properties = PropertiesBuf::new();
    if version == ProtocolVersion::V5 {
        // Validated when the publisher sent them: unreadable, they are left out.
        if let Ok(given) = Properties::parse(&message.properties, PropertyScope::Publish) {
            given.copy_except(&[], &mut properties);
        }
        if let Some(remaining_s) = message.remaining_expiry_s(now) {
            properties.push(Property::MessageExpiryInterval(remaining_s));
        }
    }
    let publish = Packet::Publish(Publish {
        dup,
        retain: message.retain,
        delivery,
        topic,
        payload: &message.payload,
        properties: properties.as_properties(),
    });
    encode(&publish, version, out);
}

/// Whether a failed attempt says the remote does not take protocol level 0x84: a refusal
/// with return code 1 (0x84, Unsupported Protocol Version), or a remote that closes the
/// connection without CONNACK, as some do with a CONNECT they cannot read.
fn refuses_the_mark(why: &Down) -> bool {
    matches!(
        why,
        Down::Refused(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION) | Down::Closed
    )
}

/// `future` unless `deadline` passes first: then the connection attempt has taken
/// `connect_timeout_ms` (`limit_ms`).
async fn timeout_at<T>(
    deadline: Instant,
    future: impl Future<Output = T>,
    limit_ms: u32,
) -> Result<T, Down> {
    tokio::time::timeout_at(deadline, future)
        .await
        .map_err(|_| Down::Timeout(limit_ms))
}

/// Notes the fingerprint of a publish a 3.1.1 remote will echo, forgetting the oldest past
/// [`ECHOES_REMEMBERED_MAX`].
fn remember(echoes: &mut VecDeque<u64>, print: u64) {
    if echoes.len() == ECHOES_REMEMBERED_MAX {
        echoes.pop_front();
    }
    echoes.push_back(print);
}

/// Topic and payload, for recognising an echo.
fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut hasher);
    payload.hash(&mut hasher);
    hasher.finish()
}

/// The bridge's queue: on disk under `queue_dir` or the data directory, loaded now; in memory
/// only without either (logged when QoS 1 messages go out, since a restart loses them).
fn open_queue(
    settings: &BridgeSettings,
    persistence: &Persistence,
) -> Result<OutQueue, BridgeError> {
    let name = &settings.name;
    let journal = match settings.queue_path(persistence.data_dir.as_deref()) {
        Some(dir) => {
            let opened = Journal::open(
                &dir,
                settings.queue_segment_bytes_max,
                persistence.durability,
            )
            .map_err(BridgeError::Queue)?;
            info!(
                "bridge {name}: queue in {}, {} messages to send",
                dir.display(),
                opened.1.messages.len()
            );
            Some(opened)
        }
        None => {
            let qos1_out = settings
                .topics
                .iter()
                .any(|mapping| mapping.direction.carries_out() && mapping.qos > 0);
            if qos1_out {
                warn!(
                    "bridge {name}: neither queue_dir nor data_dir: QoS 1 messages for the remote wait in memory only, and a restart loses them"
                );
            }
            None
        }
    };
    let queue_settings = QueueSettings {
        name: name.clone(),
        bytes_max: settings.queue_bytes_max,
        policy: settings.queue_full_policy,
        volatile_bytes_max: settings.out_queue_bytes_max,
        durability: persistence.durability,
        sync_interval: Duration::from_millis(u64::from(persistence.durability_interval_ms)),
    };
    let queue = OutQueue::new(queue_settings, journal, Now::read());
    if queue.expired_at_load() > 0 {
        info!(
            "bridge {name}: {} queued messages expired while the broker was down: dropped",
            queue.expired_at_load()
        );
    }
    Ok(queue)
}
