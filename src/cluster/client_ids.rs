//! Client identifiers across the cluster: a CONNECT accepted on one node takes down the
//! connection with the same client identifier on every other node [MQTT-3.1.4-2], as a second
//! CONNECT does inside one node.
//!
//! Every node publishes the identifier of each CONNECT it accepts on one subject,
//! [`subject`], with its name in [`headers::ORIGIN`] and the wall-clock time it was accepted
//! in [`CONNECTED_AT`] (taken by the shard before the CONNACK leaves); every node holds one subscription to that subject and hands each
//! identifier from another node to the shard that owns it
//! ([`crate::broker::Broker::owner_shard`]), which ends a connection with that identifier as a
//! local takeover does (MQTT 5: DISCONNECT 0x8E; the will is published).
//!
//! **A publish, not a request.** The CONNACK does not wait for the other nodes: a node
//! cannot know how many nodes should answer, and a NATS outage must not hold back local
//! connects. The cost: for a moment after the CONNACK both connections are up.
//!
//! **The newest CONNECT wins.** An announcement can arrive after a newer CONNECT with the same
//! identifier was accepted here (a client that moves to this node right after connecting to
//! another; two CONNECTs at once on two nodes). The shard that owns an identifier remembers
//! when it last announced it ([`Announced`]) and ignores an announcement older than that, or
//! any for an identifier it accepted in the turn at hand (stamped later than it): of two
//! CONNECTs at once, exactly one survives, the later by the nodes' clocks (the node name
//! breaks a tie). Nodes whose clocks disagree by more than the time between two CONNECTs may
//! keep the earlier one; they never keep both or neither.
//!
//! Identifiers that a node assigned (to a client that sent an empty one) are not announced:
//! they are unique on their node only, and the client never chose them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use super::headers;
use super::link::ClusterLink;
use crate::broker::Broker;

/// The header with the wall-clock time the CONNECT was accepted, in microseconds since the
/// Unix epoch.
pub const CONNECTED_AT: &str = "Fanfare-Connected-At";

/// The subject that carries the identifiers of accepted CONNECTs: outside every subject an
/// MQTT topic maps to (those start with the prefix or are single `$` tokens) and the retained
/// streams' `$FANFARE.` subjects, so that no `#` subscription or stream takes it; and named by
/// the prefix, so that clusters sharing one NATS with different prefixes stay apart.
pub fn subject(prefix: &str) -> String {
    if prefix.is_empty() {
        "$FANFARE_CLIENTS".to_owned()
    } else {
        format!("$FANFARE_CLIENTS.{prefix}")
    }
}

/// An identifier another node accepted a CONNECT for, on its way to the shard that owns it.
pub struct TakenOver {
    pub client_id: Box<str>,
    /// When, by that node's clock ([`CONNECTED_AT`]).
    pub at_us: u64,
    /// Whether it wins over a CONNECT here stamped the same microsecond: the node names
    /// decide.
    pub wins_tie: bool,
}

/// How much of its announcements a shard remembers (`[cluster] takeover_ids_remembered_max`
/// and `takeover_remembered_s`): CONNECTs past the count within the time forget the oldest,
/// whose stale announcements from other nodes could then take down a newer connection here.
#[derive(Clone, Copy, Debug)]
pub struct Remembered {
    pub ids_max: usize,
    pub for_us: u64,
}

/// When a shard last announced each identifier, the oldest first.
#[derive(Default)]
pub struct Announced {
    at_us: HashMap<Box<str>, u64>,
    order: VecDeque<(Box<str>, u64)>,
}

impl Announced {
    /// Notes that `client_id` was announced at `at_us`, and forgets what is too old or too
    /// many.
    pub fn note(&mut self, client_id: &str, at_us: u64, remembered: Remembered) {
        self.at_us.insert(client_id.into(), at_us);
        self.order.push_back((client_id.into(), at_us));
        let horizon_us = at_us.saturating_sub(remembered.for_us);
        while let Some((oldest, oldest_us)) = self.order.front() {
            if self.order.len() <= remembered.ids_max && *oldest_us >= horizon_us {
                break;
            }
            // A later announcement of the same identifier keeps its entry.
            if self.at_us.get(oldest) == Some(oldest_us) {
                self.at_us.remove(oldest);
            }
            self.order.pop_front();
        }
    }

    /// Whether the CONNECT `taken` stands for is newer than the last one announced here.
    pub fn is_newer(&self, taken: &TakenOver) -> bool {
        match self.at_us.get(&taken.client_id) {
            None => true,
            Some(&here_us) => taken.at_us > here_us || (taken.at_us == here_us && taken.wins_tie),
        }
    }
}

/// The wall-clock time, in microseconds since the Unix epoch (0 for a clock set before it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Publishes the identifier of a CONNECT accepted on this node at `at_us`.
pub(super) async fn announce(
    client: &async_nats::Client,
    prefix: &str,
    node: &str,
    client_id: &str,
    at_us: u64,
) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(headers::ORIGIN, node);
    headers.insert(CONNECTED_AT, at_us.to_string().as_str());
    let payload = bytes::Bytes::copy_from_slice(client_id.as_bytes());
    if let Err(e) = client
        .publish_with_headers(subject(prefix), headers, payload)
        .await
    {
        log::debug!("cluster: cannot announce client {client_id:?}: {e}");
    }
}

/// What takes the identifiers other nodes announce.
pub(super) struct Takeovers {
    pub(super) node: String,
    /// Longer identifiers are no client's of this node (`client_id_bytes_max`).
    pub(super) client_id_bytes_max: usize,
    pub(super) link: Arc<ClusterLink>,
}

impl Takeovers {
    /// Hands every identifier another node announces to the shard that owns it, until the
    /// subscription ends.
    pub(super) async fn serve(self, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            self.take(&message);
        }
    }

    fn take(&self, message: &async_nats::Message) {
        let Some(headers) = message.headers.as_ref() else {
            return;
        };
        let Some(origin) = headers.get(headers::ORIGIN).map(|o| o.as_str()) else {
            return;
        };
        let at_us = headers
            .get(CONNECTED_AT)
            .and_then(|at| at.as_str().parse::<u64>().ok());
        let (Some(at_us), Ok(client_id)) = (at_us, std::str::from_utf8(&message.payload)) else {
            return;
        };
        if origin == self.node || client_id.is_empty() || client_id.len() > self.client_id_bytes_max
        {
            return;
        }
        let taken = TakenOver {
            client_id: client_id.into(),
            at_us,
            wins_tie: origin > self.node.as_str(),
        };
        let shard = Broker::owner_shard(client_id, self.link.shard_count());
        if self.link.take_over(shard, taken).is_err() {
            self.link
                .figures
                .received_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(client_id: &str, at_us: u64, wins_tie: bool) -> TakenOver {
        TakenOver {
            client_id: client_id.into(),
            at_us,
            wins_tie,
        }
    }

    #[test]
    fn one_subject_per_prefix() {
        assert_eq!(subject("mqtt"), "$FANFARE_CLIENTS.mqtt");
        assert_eq!(subject("a.b"), "$FANFARE_CLIENTS.a.b");
        assert_eq!(subject(""), "$FANFARE_CLIENTS", "no empty token");
    }

    /// The defaults of `[cluster]`: 16 384 identifiers for a minute.
    const REMEMBERED: Remembered = Remembered {
        ids_max: 16_384,
        for_us: 60_000_000,
    };

    #[test]
    fn the_newest_connect_wins() {
        let mut announced = Announced::default();
        assert!(announced.is_newer(&taken("c", 5, false)), "never here");
        announced.note("c", 10, REMEMBERED);
        assert!(!announced.is_newer(&taken("c", 9, true)), "stale");
        assert!(announced.is_newer(&taken("c", 11, false)));
        assert!(announced.is_newer(&taken("c", 10, true)), "a tie won");
        assert!(!announced.is_newer(&taken("c", 10, false)), "a tie lost");
        assert!(announced.is_newer(&taken("d", 1, false)));
    }

    #[test]
    fn forgets_the_old_and_the_many() {
        let mut announced = Announced::default();
        announced.note("old", 0, REMEMBERED);
        announced.note("again", 0, REMEMBERED);
        announced.note("again", 60_000_001, REMEMBERED);
        assert!(
            announced.is_newer(&taken("old", 1, false)),
            "a minute later"
        );
        assert!(
            !announced.is_newer(&taken("again", 60_000_000, true)),
            "its later entry stays"
        );
        for n in 0..REMEMBERED.ids_max as u64 + 1 {
            announced.note(&n.to_string(), 70_000_000, REMEMBERED);
        }
        assert_eq!(announced.order.len(), REMEMBERED.ids_max);
        assert_eq!(announced.at_us.len(), REMEMBERED.ids_max);
        assert!(
            announced.is_newer(&taken("0", 1, false)),
            "the first one out"
        );
    }
}
