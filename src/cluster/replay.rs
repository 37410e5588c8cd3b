//! Reading the QoS stream again for the sessions of a node that died (`docs/scale-out.md`,
//! "Persistent sessions across nodes"): a session resumed from its image in the bucket gets
//! the QoS 1/2 messages its subscriptions match published since its start
//! (`session_replay_margin_ms` before the image was written), but those it holds or was sent
//! (`broker/message_ids.rs`).
//!
//! A dead node's clients come back together. A session with one subscription reads its one
//! subject, which the server filters, but one with several reads every subject since its
//! start: with a consumer each, a thousand of them read the same messages a thousand times
//! (a storm of 3 000 such sessions brought 345 of them back within a minute). So the sessions
//! read together:
//! - requests wait in a queue while [`PASSES_AT_ONCE`] passes run, and a pass takes every
//!   request waiting when it begins (at most [`REQUESTS_PER_PASS_MAX`]);
//! - a pass splits them by start, those within [`GROUP_SPAN`] of each other together (a
//!   session idle for hours does not make the others read hours of the stream), and reads
//!   its groups at once;
//! - a group reads one ordered consumer from its earliest start: of the subject its sessions
//!   share, or of every subject while the stream holds at most [`READ_TOGETHER_MAX`]
//!   messages since then; past that each subject apart, filtered by the server;
//! - at most [`CONSUMERS_AT_ONCE`] consumers are read at once;
//! - each message goes to each session of its group it matches, published at or after that
//!   session's start, at most `session_queue_bytes_max` per session.
//!
//! A session alone is read at once, as before.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use log::warn;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::qos::QosStream;
use super::subject::filter_subjects;
use crate::broker::message_ids::MessageId;
use crate::broker::{QueuedImage, RoutedMessage, SessionImage};
use crate::protocol::mqtt::QoS;
use crate::protocol::mqtt::topic::filter_matches;

/// Passes reading the stream at once.
const PASSES_AT_ONCE: usize = 8;

/// Ordered consumers the passes read at once: JetStream makes them one after the other, and
/// past a few dozen at once each waits longer than it reads.
const CONSUMERS_AT_ONCE: usize = 32;

/// Messages since a group's start up to which its sessions of different subjects read every
/// subject together (filtered here) rather than each its own (filtered by the server).
const READ_TOGETHER_MAX: u64 = 10_000;

/// Requests one pass takes at most.
const REQUESTS_PER_PASS_MAX: usize = 512;

/// How far apart the starts of the sessions of one group may be: each reads up to this much
/// more of the stream than its own start asks for.
const GROUP_SPAN: time::Duration = time::Duration::seconds(5);

/// The queue of sessions waiting to be read again.
pub(super) struct Replays {
    requests: mpsc::Sender<Request>,
    /// The QoS stream's subjects begin with it.
    root: String,
}

struct Request {
    image: SessionImage,
    /// The subject it reads ([`replay_subject`]).
    subject: String,
    start: OffsetDateTime,
    answer: oneshot::Sender<SessionImage>,
}

/// What a pass reads with.
pub(super) struct Reader {
    jetstream: jetstream::Context,
    qos: Arc<QosStream>,
    /// What one session's replay may queue (`session_queue_bytes_max`).
    queue_bytes_max: u64,
    /// How long one group reads at most.
    time_max: Duration,
    /// At most [`CONSUMERS_AT_ONCE`].
    consumers: Semaphore,
}

/// A session's reading in a group.
struct Reading {
    had: HashSet<MessageId>,
    queued_bytes: u64,
    full: bool,
}

impl Replays {
    /// Starts the task that gathers the requests; at most `waiting_max` wait (the searches
    /// for a session under way are bounded by as much).
    pub(super) fn start(reader: Reader, waiting_max: usize) -> Replays {
        let (requests, waiting) = mpsc::channel(waiting_max.max(1));
        let root = reader.qos.root.clone();
        drop(tokio::spawn(gather(Arc::new(reader), waiting)));
        Replays { requests, root }
    }

    /// `image` with the messages published since `start` that it is to get; as it was
    /// (logged) when the stream cannot be read. `None` only if the pass reading it ended
    /// without an answer.
    pub(super) async fn replay(
        &self,
        image: SessionImage,
        start: OffsetDateTime,
    ) -> Option<SessionImage> {
        if image.subscriptions.is_empty() {
            return Some(image);
        }
        let (answer, answered) = oneshot::channel();
        let request = Request {
            subject: replay_subject(&self.root, &image),
            image,
            start,
            answer,
        };
        if let Err(mpsc::error::SendError(request)) = self.requests.send(request).await {
            return Some(request.image);
        }
        answered.await.ok()
    }
}

/// Hands the waiting requests to passes, as many as wait when a pass may begin.
async fn gather(reader: Arc<Reader>, mut waiting: mpsc::Receiver<Request>) {
    let passes = Arc::new(Semaphore::new(PASSES_AT_ONCE));
    while let Some(first) = waiting.recv().await {
        let Ok(pass) = Arc::clone(&passes).acquire_owned().await else {
            return;
        };
        // Those that came while the passes were busy go together.
        let mut taken = vec![first];
        while taken.len() < REQUESTS_PER_PASS_MAX {
            match waiting.try_recv() {
                Ok(request) => taken.push(request),
                Err(_) => break,
            }
        }
        let reader = Arc::clone(&reader);
        drop(tokio::spawn(async move {
            reader.pass(taken).await;
            drop(pass);
        }));
    }
}

impl Reader {
    pub(super) fn new(
        jetstream: jetstream::Context,
        qos: Arc<QosStream>,
        queue_bytes_max: u64,
        time_max: Duration,
    ) -> Reader {
        Reader {
            jetstream,
            qos,
            queue_bytes_max,
            time_max,
            consumers: Semaphore::new(CONSUMERS_AT_ONCE),
        }
    }

    async fn pass(&self, mut requests: Vec<Request>) {
        requests.sort_by_key(|request| request.start);
        let groups = split_by_start(requests);
        futures::future::join_all(groups.into_iter().map(|group| self.read_group(group))).await;
    }

    /// Reads one group, within `time_max`, and answers each of its sessions.
    async fn read_group(&self, mut group: Vec<Request>) {
        let read = tokio::time::timeout(self.time_max, self.read_together(&mut group)).await;
        let sessions = group.len();
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(
                "cluster: {sessions} sessions resumed without the messages published since their node last wrote them: {e}"
            ),
            Err(_) => warn!(
                "cluster: {sessions} sessions resumed with part of the messages published since their node last wrote them: the QoS stream took too long to read"
            ),
        }
        for request in group {
            // Not heard: the CONNECT waiting for it was refused meanwhile.
            let _ = request.answer.send(request.image);
        }
    }

    /// One reading for `group`, sorted by start: of the subject its sessions share, or of
    /// every subject when the stream holds at most [`READ_TOGETHER_MAX`] messages since the
    /// group's start; past that, one reading per subject, which the server filters.
    async fn read_together(&self, group: &mut [Request]) -> Result<(), async_nats::Error> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        let (subject, start) = (first.subject.clone(), first.start);
        if group.iter().all(|request| request.subject == subject) {
            self.read_subject(&subject, start, group, None).await?;
            return Ok(());
        }
        let every = format!("{}.>", self.qos.root);
        if self
            .read_subject(&every, start, group, Some(READ_TOGETHER_MAX))
            .await?
        {
            return Ok(());
        }
        group.sort_by(|a, b| a.subject.cmp(&b.subject).then(a.start.cmp(&b.start)));
        let apart = group
            .chunk_by_mut(|a, b| a.subject == b.subject)
            .map(|group| async move {
                let Some(first) = group.first() else {
                    return Ok(());
                };
                let (subject, start) = (first.subject.clone(), first.start);
                self.read_subject(&subject, start, group, None)
                    .await
                    .map(drop)
            });
        for read in futures::future::join_all(apart).await {
            read?;
        }
        Ok(())
    }

    /// Reads `subject` from `start` for `group`, one of [`CONSUMERS_AT_ONCE`]; or, when more
    /// than `most` messages wait there, nothing, and says so (`false`).
    async fn read_subject(
        &self,
        subject: &str,
        start: OffsetDateTime,
        group: &mut [Request],
        most: Option<u64>,
    ) -> Result<bool, async_nats::Error> {
        let _reading = self.consumers.acquire().await?;
        let consumer = self.consumer(subject, start).await?;
        let pending = consumer.cached_info().num_pending;
        if most.is_some_and(|most| pending > most) {
            return Ok(false);
        }
        self.read(consumer, pending, group).await?;
        Ok(true)
    }

    /// An ordered consumer of `subject` from `start`.
    async fn consumer(
        &self,
        subject: &str,
        start: OffsetDateTime,
    ) -> Result<consumer::Consumer<consumer::pull::OrderedConfig>, async_nats::Error> {
        let stream = self.jetstream.get_stream(&self.qos.stream).await?;
        Ok(stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
                filter_subject: subject.to_owned(),
                ..Default::default()
            })
            .await?)
    }

    /// Reads `consumer`, with `pending` messages, for `group`.
    async fn read(
        &self,
        consumer: consumer::Consumer<consumer::pull::OrderedConfig>,
        pending: u64,
        group: &mut [Request],
    ) -> Result<(), async_nats::Error> {
        if pending == 0 {
            return Ok(());
        }
        let mut readings: Vec<Reading> = group
            .iter()
            .map(|request| Reading {
                had: had_ids(&request.image),
                queued_bytes: 0,
                full: false,
            })
            .collect();
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let (pending, published) = {
                let info = message.info().map_err(|e| e.to_string())?;
                (info.pending, info.published)
            };
            if let Some(publish) = self.qos.publish_of(&message.message) {
                let publish = Arc::new(publish);
                for (request, reading) in group.iter_mut().zip(&mut readings) {
                    self.offer(request, reading, &publish, published);
                }
                if readings.iter().all(|reading| reading.full) {
                    break;
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Queues `publish` in the session of `request` if it is to get it.
    fn offer(
        &self,
        request: &mut Request,
        reading: &mut Reading,
        publish: &Arc<RoutedMessage>,
        published: OffsetDateTime,
    ) {
        if reading.full
            || published < request.start
            || publish.id.is_some_and(|id| !reading.had.insert(id))
        {
            return;
        }
        let Some(queued) = queued_for(&request.image, publish) else {
            return;
        };
        reading.queued_bytes += queued.message.bytes() as u64;
        if reading.queued_bytes > self.queue_bytes_max {
            reading.full = true;
            return;
        }
        request.image.messages.push(queued);
    }
}

/// `requests`, sorted by start, in groups whose starts lie within [`GROUP_SPAN`] of the
/// group's first.
fn split_by_start(requests: Vec<Request>) -> Vec<Vec<Request>> {
    let mut groups: Vec<Vec<Request>> = Vec::new();
    for request in requests {
        match groups.last_mut() {
            Some(group) if request.start - group[0].start <= GROUP_SPAN => group.push(request),
            _ => groups.push(vec![request]),
        }
    }
    groups
}

/// The subject of the QoS stream to read again for `image`: that of its one subscription
/// when it has one mapping to one subject (JetStream 2.9 takes one filter per consumer), so
/// that the server skips the other topics' messages; otherwise every subject, matched here.
fn replay_subject(root: &str, image: &SessionImage) -> String {
    if let [only] = image.subscriptions.as_slice()
        && !only.filter.starts_with("$share/")
        && let Ok(subjects) = filter_subjects(root, &only.filter)
        && let [subject] = subjects.as_slice()
    {
        return subject.clone();
    }
    format!("{root}.>")
}

/// The identities of the messages `image` holds, queued or in flight, and of those its client
/// was sent lately: a replay does not queue them again.
fn had_ids(image: &SessionImage) -> HashSet<MessageId> {
    let queued = image.messages.iter().filter_map(|queued| queued.message.id);
    queued.chain(image.sent_ids.iter().copied()).collect()
}

/// `publish` as the session of `image` gets it, if a subscription of it matches: once,
/// whatever the number of matching subscriptions, at the highest QoS they grant, with all
/// their Subscription Identifiers [MQTT-3.3.4-3]; retained only under Retain As Published.
fn queued_for(image: &SessionImage, publish: &Arc<RoutedMessage>) -> Option<QueuedImage> {
    let mut granted = None;
    let mut ids = Vec::new();
    let mut retain = false;
    for subscription in &image.subscriptions {
        if !filter_matches(&subscription.filter, &publish.topic) {
            continue;
        }
        granted = granted.max(Some(subscription.qos.min(publish.qos)));
        if subscription.id != 0 {
            ids.push(subscription.id);
        }
        retain |= subscription.retain_as_published && publish.retain;
    }
    // An offline session is not queued QoS 0 messages (`broker/fanout.rs`).
    let qos = granted.filter(|&qos| qos != QoS::AtMostOnce)?;
    Some(QueuedImage {
        qos,
        message: Arc::clone(publish),
        retain,
        ids,
        packet_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::SubscriptionImage;
    use crate::protocol::mqtt::ProtocolVersion;

    /// An offline session of client "c" with `subscriptions` and nothing else.
    fn image(subscriptions: Vec<SubscriptionImage>) -> SessionImage {
        SessionImage {
            client_id: "c".into(),
            version: ProtocolVersion::V5,
            expiry_s: 60,
            expires_at: None,
            connected: false,
            subscriptions,
            messages: Vec::new(),
            released: Vec::new(),
            inbound_qos2: Vec::new(),
            delayed_will: None,
            incarnation: 0,
            committed_seq: 0,
            sent_ids: Vec::new(),
        }
    }

    #[test]
    fn a_session_with_one_subscription_reads_its_subject_alone() {
        let image = |filters: &[&str]| {
            image(
                filters
                    .iter()
                    .map(|filter| SubscriptionImage {
                        filter: (*filter).into(),
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        id: 0,
                    })
                    .collect(),
            )
        };
        let root = "$FANFARE.FANFARE_QOS";
        assert_eq!(
            replay_subject(root, &image(&["scores/+/live"])),
            "$FANFARE.FANFARE_QOS.scores.*.live"
        );
        // `a/#` is two subjects (`a.>` and `a`), two filters two consumers' worth, a shared
        // subscription not a subject at all: every subject, matched here.
        for filters in [&["a/#"][..], &["a", "b"], &["$share/g/a"]] {
            assert_eq!(replay_subject(root, &image(filters)), format!("{root}.>"));
        }
    }

    #[test]
    fn a_replayed_message_is_queued_once_at_the_highest_qos_granted() {
        let subscription = |filter: &str, qos, id| SubscriptionImage {
            filter: filter.into(),
            qos,
            no_local: false,
            retain_as_published: id == 2,
            id,
        };
        let image = image(vec![
            subscription("a/#", QoS::AtLeastOnce, 1),
            subscription("a/b", QoS::ExactlyOnce, 2),
            subscription("z/+", QoS::AtMostOnce, 0),
        ]);
        let publish = |topic: &str, qos| Arc::new(RoutedMessage::new(topic, b"p", qos, true));
        let both = queued_for(&image, &publish("a/b", QoS::ExactlyOnce)).expect("matches");
        assert_eq!(both.qos, QoS::ExactlyOnce);
        assert_eq!(both.ids, vec![1, 2]);
        assert!(both.retain, "retain as published on one of them");
        let one = queued_for(&image, &publish("a/c", QoS::ExactlyOnce)).expect("matches");
        assert_eq!((one.qos, one.retain), (QoS::AtLeastOnce, false));
        assert!(queued_for(&image, &publish("b", QoS::AtLeastOnce)).is_none());
        assert!(
            queued_for(&image, &publish("z/1", QoS::AtLeastOnce)).is_none(),
            "QoS 0 is not queued offline"
        );
    }

    #[test]
    fn a_replay_knows_what_the_session_holds_or_was_sent_by_identity() {
        let with_id = |id| {
            let mut message = RoutedMessage::new("t", b"p", QoS::AtLeastOnce, false);
            message.id = id;
            QueuedImage {
                message: Arc::new(message),
                qos: QoS::AtLeastOnce,
                retain: false,
                ids: Vec::new(),
                packet_id: None,
            }
        };
        let image = SessionImage {
            messages: vec![with_id(Some(MessageId(1))), with_id(None)],
            sent_ids: vec![MessageId(7), MessageId(8)],
            ..image(Vec::new())
        };
        let had = had_ids(&image);
        let mut had: Vec<u128> = had.into_iter().map(|id| id.0).collect();
        had.sort_unstable();
        assert_eq!(had, [1, 7, 8]);
    }

    #[test]
    fn requests_far_apart_in_time_read_apart() {
        let at = |s: i64| {
            let (answer, _) = oneshot::channel();
            Request {
                subject: String::new(),
                image: image(Vec::new()),
                start: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s),
                answer,
            }
        };
        let groups = split_by_start(vec![at(0), at(3), at(5), at(6), at(100)]);
        let starts: Vec<Vec<i64>> = groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|r| (r.start - OffsetDateTime::UNIX_EPOCH).whole_seconds())
                    .collect()
            })
            .collect();
        assert_eq!(starts, [vec![0, 3, 5], vec![6], vec![100]]);
    }
}
