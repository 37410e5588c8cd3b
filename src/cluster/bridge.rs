//! The one thread that speaks NATS: the `async-nats` client on a current-thread tokio runtime,
//! never on a shard loop (`docs/scale-out.md` says why). It moves publishes from the shards'
//! out queue to NATS, holds one NATS subscription per filter some shard subscribes to, and
//! hands what those bring to the shards (`link.rs`).
//!
//! **Interest.** Each change from the shards' tries moves the filter's count; the first
//! subscribes its subjects (`subject::filter_subjects`), and the count's return to zero
//! unsubscribes them. A subscription is a task of the runtime owning the client's
//! `Subscriber`; aborting the task drops it, and the client unsubscribes. The client itself
//! subscribes everything again after a reconnect.
//!
//! **Whole messages.** The RETAIN flag and the MQTT 5 properties travel as headers
//! (`headers.rs`); a retained publish is also written to the JetStream stream that every
//! node follows (`retained.rs`).
//!
//! **QoS 1/2** publishes cross on a JetStream stream instead (`qos.rs`): each filter's
//! interest also holds a durable consumer per subject, and a copy on core NATS serves native
//! NATS subscribers only.
//!
//! **Sessions.** The images of this node's persistent sessions go to a JetStream bucket, and
//! a CONNECT that resumes a session held elsewhere fetches it (`sessions.rs`).
//!
//! **No echo.** The connection asks the server not to send back its own messages, and every
//! message carries [`headers::ORIGIN`] with the node's name: one that comes back from another
//! connection of the same node (a restart, a second connection) is still recognised and
//! ignored, since the node delivered it to its own subscribers already.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{ConnectOptions, Event, ServerAddr};
use futures::StreamExt;
use log::{info, warn};
use tokio::task::JoinHandle;

use super::client_ids::{self, Takeovers};
use super::headers::{self, from_headers, to_headers};
use super::link::{ClusterLink, QosPublish};
use super::qos::QosStream;
use super::retained::RetainedStream;
use super::sessions::{SessionFetched, Sessions};
use super::subject::{filter_subjects, subject_to_topic, topic_to_subject};
use crate::broker::RoutedMessage;
use crate::config::{ClusterSettings, Limits};
use crate::protocol::mqtt::QoS;
use crate::protocol::mqtt::topic::validate_topic_name;

/// Messages the client holds for one subscription before the bridge's task takes them. The
/// task only moves them to the shards' in queue, so it keeps up unless the runtime is starved;
/// past it the client drops messages and reports a slow consumer (logged). Worst case per
/// subscription: 1 024 × the largest message.
const SUBSCRIPTION_MESSAGES_MAX: usize = 1024;

/// Publishes moved to the NATS client before the bridge looks at interest changes again, so a
/// flood of publishes cannot hold back a subscription.
const PUBLISHES_PER_ROUND_MAX: usize = 1024;

/// Why the bridge could not start.
#[derive(Debug)]
pub enum BridgeError {
    /// A `cluster.nats` entry that is not a server address.
    Url(String),
    /// `password_file` or `token_file` unreadable.
    Secret(std::path::PathBuf, std::io::Error),
    /// The runtime or the thread.
    Start(std::io::Error),
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::Url(url) => write!(f, "cluster.nats: {url:?} is not a NATS server URL"),
            BridgeError::Secret(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            BridgeError::Start(e) => write!(f, "cannot start the cluster bridge: {e}"),
        }
    }
}

impl std::error::Error for BridgeError {}

/// Starts the bridge's thread. The connection is made in the background: the node serves its
/// local clients whether NATS is up or not.
pub fn spawn(
    settings: &ClusterSettings,
    limits: &Limits,
    link: Arc<ClusterLink>,
) -> Result<std::thread::JoinHandle<()>, BridgeError> {
    let servers = settings
        .nats
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|_| BridgeError::Url(url.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = connect_options(settings, Arc::clone(&link))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BridgeError::Start)?;
    let bridge = Bridge {
        settings: settings.clone(),
        retained: None,
        qos: None,
        node: settings.node.clone(),
        prefix: settings.subject_prefix.clone(),
        limits: limits.clone(),
        link,
        filters: HashMap::new(),
        deleting: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("cluster".to_owned())
        .spawn(move || runtime.block_on(bridge.run(servers, options)))
        .map_err(BridgeError::Start)
}

fn connect_options(
    settings: &ClusterSettings,
    link: Arc<ClusterLink>,
) -> Result<ConnectOptions, BridgeError> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read_to_string(path)
            .map(|text| text.strip_suffix('\n').unwrap_or(&text).to_owned())
            .map_err(|e| BridgeError::Secret(path.clone(), e))
    };
    let mut options = ConnectOptions::new()
        .name(format!("fanfare {}", settings.node))
        .no_echo()
        .retry_on_initial_connect()
        .subscription_capacity(SUBSCRIPTION_MESSAGES_MAX)
        .event_callback(move |event| {
            let link = Arc::clone(&link);
            async move { on_event(&link, event) }
        });
    if let (Some(user), Some(path)) = (&settings.user, &settings.password_file) {
        options = options.user_and_password(user.clone(), read(path)?);
    }
    if let Some(path) = &settings.token_file {
        options = options.token(read(path)?);
    }
    if let Some(ca) = &settings.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(options)
}

/// Says the connection's changes in the log and the metrics.
fn on_event(link: &ClusterLink, event: Event) {
    let connected = &link.figures.connected;
    match event {
        Event::Connected => {
            connected.store(true, Ordering::Relaxed);
            info!("cluster: connected to NATS");
        }
        Event::Disconnected => {
            connected.store(false, Ordering::Relaxed);
            warn!(
                "cluster: disconnected from NATS; local delivery goes on, publishes to other nodes are dropped until it reconnects"
            );
        }
        Event::Closed => {
            connected.store(false, Ordering::Relaxed);
            warn!("cluster: NATS connection closed");
        }
        other => warn!("cluster: NATS {other}"),
    }
}

struct Bridge {
    settings: ClusterSettings,
    /// The stream of retained messages, once connected.
    retained: Option<Arc<RetainedStream>>,
    /// The stream of QoS 1/2 publishes, once connected.
    qos: Option<Arc<QosStream>>,
    node: String,
    prefix: String,
    limits: Limits,
    link: Arc<ClusterLink>,
    /// Filter → how many tries hold it over all shards, and the tasks of its subscriptions.
    filters: HashMap<Box<str>, Interest>,
    /// Consumers being deleted, by name: one made again for the same subject waits for it.
    deleting: HashMap<String, JoinHandle<()>>,
}

/// What one filter holds on NATS.
#[derive(Default)]
struct Interest {
    /// Tries that hold the filter, over all shards.
    count: u32,
    /// The tasks of its core NATS subscriptions.
    subscriptions: Vec<JoinHandle<()>>,
    /// Its consumers of the QoS stream: each one's name and the task that reads it.
    consumers: Vec<(String, JoinHandle<()>)>,
}

impl Bridge {
    async fn run(mut self, servers: Vec<ServerAddr>, options: ConnectOptions) {
        let client = match options.connect(servers).await {
            Ok(client) => client,
            Err(e) => {
                warn!("cluster: cannot connect to NATS: {e}; this node serves alone");
                self.discard_forever().await;
                return;
            }
        };
        let retained = Arc::new(RetainedStream::new(
            client.clone(),
            &self.settings,
            &self.limits,
            Arc::clone(&self.link),
        ));
        tokio::spawn(Arc::clone(&retained).follow());
        tokio::spawn(Arc::clone(&retained).send_unsent());
        self.retained = Some(retained);
        let qos = Arc::new(QosStream::new(
            client.clone(),
            &self.settings,
            &self.limits,
            Arc::clone(&self.link),
        ));
        let sessions = Arc::new(Sessions::new(
            client.clone(),
            &self.settings,
            &self.limits,
            Arc::clone(&self.link),
            Arc::clone(&qos),
        ));
        tokio::spawn(Arc::clone(&sessions).write());
        tokio::spawn(Arc::clone(&sessions).finish());
        let take_subject = sessions.take_subject();
        match client.subscribe(take_subject.clone()).await {
            Ok(subscriber) => drop(tokio::spawn(Arc::clone(&sessions).serve_takes(subscriber))),
            Err(e) => warn!(
                "cluster: cannot subscribe to {take_subject:?}: {e}; other nodes read the sessions of this node's clients from the bucket"
            ),
        }
        tokio::spawn(Arc::clone(&qos).prepare(client.clone()));
        tokio::spawn(Arc::clone(&qos).acknowledge_delivered());
        self.qos = Some(qos);
        let intake = Arc::new(Intake {
            node: self.node.clone(),
            prefix: self.prefix.clone(),
            limits: self.limits.clone(),
            link: Arc::clone(&self.link),
        });
        let takeovers = Takeovers {
            node: self.node.clone(),
            client_id_bytes_max: usize::from(self.limits.client_id_bytes_max),
            link: Arc::clone(&self.link),
        };
        let clients_subject = client_ids::subject(&self.prefix);
        match client.subscribe(clients_subject.clone()).await {
            Ok(subscriber) => drop(tokio::spawn(takeovers.serve(subscriber))),
            Err(e) => warn!(
                "cluster: cannot subscribe to {clients_subject:?}: {e}; a CONNECT on another node does not take over a client id connected here"
            ),
        }
        loop {
            let more_clients = self.announce_clients(&client).await;
            // Bounded by the queue: at most `sessions_waiting_max` per round.
            while let Some(fetch) = self.link.next_fetch() {
                sessions.start_fetch(fetch);
            }
            if self.link.sessions_waiting() {
                sessions.writes_waiting.notify_one();
            }
            let loaded = self.link.take_loaded();
            if !loaded.is_empty() {
                drop(tokio::spawn(Arc::clone(&sessions).check_loaded(loaded)));
            }
            while let Some((filter, gained)) = self.link.next_interest() {
                self.change_interest(&client, &intake, filter, gained).await;
            }
            let mut sent = 0;
            while sent < PUBLISHES_PER_ROUND_MAX {
                let Some(message) = self.link.pipes.next_out() else {
                    break;
                };
                self.publish(&client, &message).await;
                sent += 1;
            }
            let mut sent_qos = 0;
            while sent_qos < PUBLISHES_PER_ROUND_MAX {
                let Some(publish) = self.link.next_qos_out() else {
                    break;
                };
                self.publish_qos(&client, publish).await;
                sent_qos += 1;
            }
            let sent = sent.max(sent_qos);
            if sent < PUBLISHES_PER_ROUND_MAX && !more_clients {
                self.link.pipes.woken().await;
            } else {
                // Let the subscriptions' tasks run between rounds.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Without a client: empties the queues as they fill, so the shards' interest changes
    /// do not pile up, and counts every publish dropped.
    async fn discard_forever(&self) {
        loop {
            while self.link.next_interest().is_some() {}
            while self.link.next_connected().is_some() {
                self.link.figures.dropped.fetch_add(1, Ordering::Relaxed);
            }
            while self.link.pipes.next_out().is_some() {
                self.link.figures.dropped.fetch_add(1, Ordering::Relaxed);
            }
            while self.link.next_session_out().is_some() {}
            while let Some(fetch) = self.link.next_fetch() {
                let figures = &self.link.figures;
                figures
                    .session_fetches_failed
                    .fetch_add(1, Ordering::Relaxed);
                let fetched = SessionFetched {
                    conn: fetch.conn,
                    client_id: fetch.client_id,
                    image: None,
                    unavailable: false,
                };
                // A CONNECT that got no answer ends at its connect deadline.
                drop(self.link.fetched(fetch.shard, fetched));
            }
            while let Some(publish) = self.link.next_qos_out() {
                self.link.figures.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(ticket) = publish.ticket {
                    self.link.settle(ticket, false);
                }
            }
            self.link.pipes.woken().await;
        }
    }

    /// Tells the other nodes the client ids of the CONNECTs accepted here since the last
    /// round, up to [`PUBLISHES_PER_ROUND_MAX`] of them; returns whether more wait. Dropped
    /// while NATS is down: told later, an id could take down a newer connection elsewhere.
    async fn announce_clients(&self, client: &async_nats::Client) -> bool {
        for _ in 0..PUBLISHES_PER_ROUND_MAX {
            let Some((client_id, at_us)) = self.link.next_connected() else {
                return false;
            };
            if client.connection_state() != async_nats::connection::State::Connected {
                self.link.figures.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let (prefix, node) = (&self.prefix, &self.node);
            client_ids::announce(client, prefix, node, &client_id, at_us).await;
        }
        true
    }

    /// Moves `filter`'s count; subscribes its subjects on the first holder and unsubscribes
    /// them after the last.
    async fn change_interest(
        &mut self,
        client: &async_nats::Client,
        intake: &Arc<Intake>,
        filter: Box<str>,
        gained: bool,
    ) {
        let subjects_held = &self.link.figures.subjects;
        if !gained {
            let Some(entry) = self.filters.get_mut(&filter) else {
                debug_assert!(false, "a filter is lost only after it was gained");
                return;
            };
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0
                && let Some(interest) = self.filters.remove(&filter)
            {
                subjects_held.fetch_sub(interest.subscriptions.len() as u64, Ordering::Relaxed);
                // Dropping a subscription's task drops its `Subscriber`: the client
                // unsubscribes.
                for task in interest.subscriptions {
                    task.abort();
                }
                self.drop_consumers(interest.consumers);
            }
            return;
        }
        let entry = self.filters.entry(filter.clone()).or_default();
        entry.count += 1;
        if entry.count > 1 {
            return;
        }
        let subjects = match filter_subjects(&self.prefix, &filter) {
            Ok(subjects) => subjects,
            Err(e) => {
                warn!(
                    "cluster: filter {filter:?} has no NATS subject ({e:?}); its subscribers hear this node only"
                );
                return;
            }
        };
        let mut tasks = Vec::with_capacity(subjects.len());
        for subject in subjects {
            match client.subscribe(subject.clone()).await {
                Ok(subscriber) => tasks.push(tokio::spawn(Arc::clone(intake).serve(subscriber))),
                Err(e) => warn!("cluster: cannot subscribe to {subject:?}: {e}"),
            }
        }
        subjects_held.fetch_add(tasks.len() as u64, Ordering::Relaxed);
        let consumers = self.make_consumers(&filter);
        if let Some(entry) = self.filters.get_mut(&filter) {
            entry.subscriptions = tasks;
            entry.consumers = consumers;
        }
    }

    /// Starts reading this node's consumers of `filter` in the QoS stream, each once the
    /// deletion of its namesake, if one is under way, is over.
    fn make_consumers(&mut self, filter: &str) -> Vec<(String, JoinHandle<()>)> {
        let Some(qos) = &self.qos else {
            return Vec::new();
        };
        qos.consumers_of(filter)
            .into_iter()
            .map(|(name, subject)| {
                let deleting = self.deleting.remove(&name);
                let qos = Arc::clone(qos);
                let task_name = name.clone();
                let task = tokio::spawn(async move {
                    if let Some(deleting) = deleting {
                        let _ = deleting.await;
                    }
                    qos.consume(task_name, subject).await;
                });
                (name, task)
            })
            .collect()
    }

    /// Stops reading `consumers` and deletes them from the stream.
    fn drop_consumers(&mut self, consumers: Vec<(String, JoinHandle<()>)>) {
        let Some(qos) = &self.qos else {
            return;
        };
        self.deleting.retain(|_, task| !task.is_finished());
        for (name, task) in consumers {
            task.abort();
            let deleting = tokio::spawn(Arc::clone(qos).delete_consumer(name.clone()));
            self.deleting.insert(name, deleting);
        }
    }

    /// A QoS 1/2 publish of this node: to the QoS stream, whose answer settles its ticket,
    /// and to its live subject on core NATS for native NATS subscribers, marked so that fanfare
    /// nodes ignore that copy.
    async fn publish_qos(&self, client: &async_nats::Client, publish: QosPublish) {
        let QosPublish { message, ticket } = publish;
        let (Some(qos), State::Connected) = (&self.qos, client.connection_state()) else {
            self.link.figures.dropped.fetch_add(1, Ordering::Relaxed);
            // Refused to its publisher, but applied on this node already (NATS went between
            // the shard's look and this one): written to the retained stream once connected
            // again, as a QoS 0 one is.
            if message.retain
                && let Some(retained) = &self.retained
            {
                retained.remember(&message);
            }
            self.link
                .figures
                .qos_store_failed
                .fetch_add(1, Ordering::Relaxed);
            if let Some(ticket) = ticket {
                self.link.settle(ticket, false);
            }
            return;
        };
        let headers = to_headers(&message, &self.node, std::time::Instant::now());
        qos.publish(&message, headers.clone(), ticket).await;
        let mut live = headers;
        live.insert(headers::CARRIED_BY, self.settings.qos_stream.as_str());
        self.publish_core(client, &message, live).await;
    }

    async fn publish(&self, client: &async_nats::Client, message: &Arc<RoutedMessage>) {
        debug_assert!(
            message.qos == QoS::AtMostOnce,
            "QoS 1/2 go by `publish_qos`"
        );
        let headers = to_headers(message, &self.node, std::time::Instant::now());
        self.publish_core(client, message, headers).await;
    }

    /// Sends `message` to its live subject, and a retained one to the retained stream.
    async fn publish_core(
        &self,
        client: &async_nats::Client,
        message: &Arc<RoutedMessage>,
        headers: async_nats::HeaderMap,
    ) {
        let figures = &self.link.figures;
        let subject = match topic_to_subject(&self.prefix, &message.topic) {
            Ok(subject) => subject,
            Err(_) => {
                figures.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if client.connection_state() != State::Connected {
            // The live publish is lost to the other nodes; a retained value is written to the
            // stream once connected again.
            figures.dropped.fetch_add(1, Ordering::Relaxed);
            if message.retain
                && let Some(retained) = &self.retained
            {
                retained.remember(message);
            }
            return;
        }
        if message.retain
            && let Some(retained) = &self.retained
        {
            retained.store(message, headers.clone()).await;
        }
        let payload = bytes::Bytes::copy_from_slice(&message.payload);
        match client.publish_with_headers(subject, headers, payload).await {
            Ok(()) => figures.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => figures.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// What turns a NATS message into a publish of this node.
struct Intake {
    node: String,
    prefix: String,
    limits: Limits,
    link: Arc<ClusterLink>,
}

impl Intake {
    /// Hands every message of one subscription to the shards, until the task is aborted.
    async fn serve(self: Arc<Self>, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            self.take(message);
        }
    }

    fn take(&self, message: async_nats::Message) {
        let origin = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(headers::ORIGIN));
        if origin.is_some_and(|origin| origin.as_str() == self.node) {
            return;
        }
        // A QoS 1/2 publish of another node: its own copy comes through the QoS stream.
        let carried = message
            .headers
            .as_ref()
            .is_some_and(|headers| headers.get(headers::CARRIED_BY).is_some());
        if origin.is_some() && carried {
            return;
        }
        match self.publish_of(&message) {
            Some(publish) => self.link.deliver(publish),
            None => {
                self.link
                    .figures
                    .received_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The publish a NATS message stands for (see [`publish_of`]).
    fn publish_of(&self, message: &async_nats::Message) -> Option<RoutedMessage> {
        publish_of(&self.prefix, &self.limits, message)
    }
}

/// The publish a NATS message on a subject under `prefix` stands for: QoS 0 (core NATS
/// promises no more; the QoS stream sets its own, `qos.rs`), with the RETAIN flag and MQTT 5
/// properties of its headers (`headers.rs`); `None` when its subject maps to no topic a
/// client could publish to under `limits`, or to a `$` topic (each node's own), or its
/// headers make no valid PUBLISH, or it is larger than a client could publish, or it has
/// expired on the way.
pub(super) fn publish_of(
    prefix: &str,
    limits: &Limits,
    message: &async_nats::Message,
) -> Option<RoutedMessage> {
    let topic = subject_to_topic(prefix, message.subject.as_str())?;
    if topic.starts_with('$') || topic.contains('\0') {
        return None;
    }
    let decode = limits.decode_limits();
    validate_topic_name(&topic, &decode).ok()?;
    let now = std::time::Instant::now();
    let headers = message.headers.as_ref();
    let publish = from_headers(
        &topic,
        &message.payload,
        headers,
        &decode,
        now,
        Duration::ZERO,
    )
    .ok()??;
    let packet_bytes = publish.payload.len() + publish.properties.len() + topic.len() + 16;
    if packet_bytes > limits.packet_bytes_max as usize {
        return None;
    }
    Some(publish)
}
