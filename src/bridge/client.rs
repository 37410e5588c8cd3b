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
//! published). QoS 1 publishes to the remote stay in memory until PUBACK, at most
//! `inflight_max`, and are sent again, flagged DUP, after a reconnection; those past it wait
//! in the out queue. QoS 1 messages from the remote are acknowledged once handed to the
//! shards' queue (memory only: nothing is written to disk yet).
//!
//! **3.1.1 echoes.** MQTT 3.1.1 has no No Local: the remote sends this broker's own publishes
//! back when a `both` mapping covers them. The client remembers the last
//! [`ECHOES_REMEMBERED_MAX`] publishes it sent that will come back that way and drops the
//! first message from the remote equal to one (topic and payload), once.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::{debug, info, warn};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::link::{BridgeLink, Full};
use super::remap::{to_local, to_remote};
use super::tls::{TlsClient, TlsSetupError};
use super::transport::{Received, Transport, TransportError};
use crate::broker::RoutedMessage;
use crate::config::Limits;
use crate::config::bridge::{BridgeProtocol, BridgeSettings, RemoteUrl};
use crate::protocol::mqtt::topic::validate_topic_name;
use crate::protocol::mqtt::{
    Ack, Connect, DecodeError, DecodeLimits, Delivery, Packet, PacketId, Properties, PropertiesBuf,
    Property, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, SubscribeReturnCode,
    SubscriptionOptions, decode_from_server, encode,
};

/// Publishes sent to a 3.1.1 remote that it may echo back, remembered to drop the echo.
/// Worst case 8 bytes each per bridge.
pub const ECHOES_REMEMBERED_MAX: usize = 4096;

/// While the in queue is full, how often the held publish is offered again.
const IN_QUEUE_RETRY: Duration = Duration::from_millis(5);

/// Why a bridge could not start.
#[derive(Debug)]
pub enum BridgeError {
    /// `password_file` unreadable.
    Secret(PathBuf, std::io::Error),
    /// The TLS settings of the named bridge.
    Tls(String, TlsSetupError),
    /// The runtime or the thread.
    Start(std::io::Error),
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::Secret(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            BridgeError::Tls(name, e) => write!(f, "bridge {name}: TLS: {e}"),
            BridgeError::Start(e) => write!(f, "cannot start a bridge: {e}"),
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
        }
    }
}

impl From<TransportError> for Down {
    fn from(e: TransportError) -> Down {
        Down::Transport(e)
    }
}

/// Starts the bridge's thread. It connects in the background: the broker serves its local
/// clients whether the remote is up or not.
pub fn spawn(
    settings: &BridgeSettings,
    limits: &Limits,
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
        inflight: BTreeMap::new(),
        next_id: 0,
        echoes: VecDeque::new(),
        ping_outstanding: false,
    };
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
    /// QoS 1 publishes sent and not acknowledged, by packet id: the remote name and message.
    inflight: BTreeMap<u16, (String, Arc<RoutedMessage>)>,
    next_id: u16,
    /// Fingerprints of publishes a 3.1.1 remote will echo (see the module documentation).
    echoes: VecDeque<u64>,
    ping_outstanding: bool,
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
        loop {
            match self.connect().await {
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
                    warn!(
                        "bridge {name}: disconnected from {url}: {why}; reconnecting in {} ms",
                        backoff.as_millis()
                    );
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
            sleep(self.jittered(backoff)).await;
            backoff = (backoff * 2).min(max);
        }
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
        let connect = Packet::Connect(Connect {
            version: self.version,
            clean_session: self.settings.clean_start,
            keep_alive_s: self.settings.keep_alive_s,
            client_id: &client_id,
            will: None,
            username: self.settings.username.as_deref(),
            password: self.password.as_deref(),
            properties: properties.as_properties(),
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
            buf.drain(..used);
            return Ok((stream, buf));
        }
    }

    /// Runs one connection until it ends, and says why.
    async fn serve(&mut self, mut stream: Transport, mut buf: Vec<u8>) -> Down {
        let mut out = Vec::new();
        self.subscribe(&mut out);
        // What the last connection left unacknowledged goes again, in order.
        for (id, (topic, message)) in &self.inflight {
            let delivery = Delivery::AtLeastOnce(PacketId::new(*id).expect("ids are not zero"));
            put_publish(&mut out, self.version, topic, message, delivery, true);
        }
        self.ping_outstanding = false;
        let keep_alive = Duration::from_secs(u64::from(self.settings.keep_alive_s.max(1)));
        let mut next_ping = Instant::now() + keep_alive;
        let mut stalled = false;
        loop {
            self.take_out(&mut out);
            if !out.is_empty() || stream.has_pending() {
                if let Err(e) = stream.write(&out).await {
                    return Down::Transport(e);
                }
                out.clear();
            }
            let room = self.inflight.len() < usize::from(self.settings.inflight_max);
            let turn = self
                .wait(&mut stream, &mut buf, room, stalled, next_ping)
                .await;
            match turn {
                Wait::Read(Ok(Received::Closed)) => return Down::Closed,
                Wait::Read(Ok(Received::Nothing)) | Wait::Woken => {}
                Wait::Read(Ok(Received::Bytes)) | Wait::Retry => {
                    match self.take_packets(&mut buf, &mut out) {
                        Ok(now_stalled) => stalled = now_stalled,
                        Err(why) => return why,
                    }
                }
                Wait::Read(Err(e)) => return Down::Transport(e),
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
        room: bool,
        stalled: bool,
        next_ping: Instant,
    ) -> Wait {
        tokio::select! {
            // Not read while stalled: the remote's writes then wait in TCP, which slows it.
            read = stream.read(buf), if !stalled => Wait::Read(read),
            () = sleep(IN_QUEUE_RETRY), if stalled => Wait::Retry,
            () = self.link.pipes.woken(), if room => Wait::Woken,
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
        let packet_id = self.allocate_id();
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties: Properties::EMPTY,
        });
        encode(&subscribe, self.version, out);
    }

    /// A packet id no in-flight publish holds; there is always one, since `inflight_max` is
    /// a `u16` and the SUBSCRIBE's id is given back at once.
    fn allocate_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if let Some(id) = PacketId::new(self.next_id)
                && !self.inflight.contains_key(&id.get())
            {
                return id;
            }
        }
    }

    /// Encodes the publishes waiting in the out queue, as many as `inflight_max` allows.
    fn take_out(&mut self, out: &mut Vec<u8>) {
        let link = Arc::clone(&self.link);
        let figures = &link.figures;
        while self.inflight.len() < usize::from(self.settings.inflight_max) {
            let Some(message) = self.link.pipes.next_out() else {
                return;
            };
            let Some((topic, qos_max)) = to_remote(&self.settings.topics, &message.topic) else {
                figures.dropped_out.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let qos = message
                .qos
                .min(QoS::from_bits(qos_max).unwrap_or(QoS::AtMostOnce));
            if self.version == ProtocolVersion::V311
                && to_local(&self.settings.topics, &topic).is_some()
            {
                if self.echoes.len() == ECHOES_REMEMBERED_MAX {
                    self.echoes.pop_front();
                }
                self.echoes.push_back(fingerprint(&topic, &message.payload));
            }
            if qos == QoS::AtMostOnce {
                put_publish(
                    out,
                    self.version,
                    &topic,
                    &message,
                    Delivery::AtMostOnce,
                    false,
                );
                figures.forwarded_out.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let id = self.allocate_id();
            put_publish(
                out,
                self.version,
                &topic,
                &message,
                Delivery::AtLeastOnce(id),
                false,
            );
            self.inflight.insert(id.get(), (topic, message));
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
            Packet::Publish(publish) => {
                let id = match publish.delivery {
                    Delivery::AtMostOnce => None,
                    Delivery::AtLeastOnce(id) => Some(id),
                    Delivery::ExactlyOnce(_) => {
                        return Err(Down::Unexpected("QoS 2 publish (subscribed at QoS 1)"));
                    }
                };
                if self.take_publish(&publish).is_err() {
                    return Ok(Taken::Stalled);
                }
                if let Some(id) = id {
                    encode(&Packet::PubAck(Ack::new(id)), self.version, out);
                }
            }
            Packet::PubAck(ack) => {
                if self.inflight.remove(&ack.packet_id.get()).is_some() {
                    figures.forwarded_out.fetch_add(1, Ordering::Relaxed);
                }
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
        self.link.deliver(RoutedMessage::new(
            &topic,
            publish.payload,
            qos,
            publish.retain,
        ))
    }
}

enum Wait {
    Read(Result<Received, TransportError>),
    Woken,
    Ping,
    /// Stalled on a full in queue: time to offer the held publish again.
    Retry,
}

/// What became of a packet from the remote.
enum Taken {
    Done,
    /// A publish the in queue has no room for yet: it stays unread and unacknowledged.
    Stalled,
}

fn put_publish(
    out: &mut Vec<u8>,
    version: ProtocolVersion,
    topic: &str,
    message: &RoutedMessage,
    delivery: Delivery,
    dup: bool,
) {
    let publish = Packet::Publish(Publish {
        dup,
        retain: message.retain,
        delivery,
        topic,
        payload: &message.payload,
        properties: Properties::EMPTY,
    });
    encode(&publish, version, out);
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

/// Topic and payload, for recognising an echo.
fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut hasher);
    payload.hash(&mut hasher);
    hasher.finish()
}
