//! In cluster mode, persistent sessions that move between nodes (`crate::cluster::sessions`):
//! which CONNECTs ask the cluster for their session before their CONNACK, a session installed
//! from another node's image, and a session this node hands over to another.
//!
//! A session lives on one node at a time. The node a client connects to with Clean Start 0
//! (3.x: clean session 0) and no session here asks the cluster for it; the node that holds it
//! ends its copy and answers with its image ([`Broker::hand_over_session`]), or the cluster's
//! bucket answers for a node that is gone. The image is installed as a session offline
//! ([`Broker::install_session`]), and the CONNECT then resumes it as any other: its
//! subscriptions made again, its unacknowledged messages resent with DUP and their packet
//! identifiers, and CONNACK says session present.

use std::time::Instant;

use super::Broker;
use super::outbox::Outbox;
use super::session::Session;
use super::session_writes::{SessionImage, image};
use crate::protocol::mqtt::Connect;

impl Broker {
    /// Whether `connect`, accepted, would resume a session only another node may hold: cluster
    /// mode, Clean Start 0, a client identifier of its own, and no session for it here.
    pub fn fetches_session(&self, connect: &Connect<'_>) -> bool {
        self.announces_clients
            && !connect.clean_session
            && !connect.client_id.is_empty()
            && connect.client_id.len() <= usize::from(self.limits.client_id_bytes_max)
            && self
                .client_ids
                .get(connect.client_id, &self.sessions)
                .is_none()
    }

    /// Installs a session that another node held, offline, for the CONNECT about to resume
    /// it; noted, so that the cluster's bucket learns it lives here now. A session that
    /// appeared here meanwhile stays as it is.
    pub fn install_session(&mut self, image: &SessionImage, now: Instant, out: &mut Outbox) {
        self.now = now;
        if self
            .client_ids
            .get(&image.client_id, &self.sessions)
            .is_some()
        {
            return;
        }
        let key = self.load_session(image, now, out);
        self.note_session(key);
        for will in self.evict_offline_past_bound(out).into_iter().flatten() {
            self.publish_will(will, now, out);
        }
    }

    /// Another node resumes the session of `client_id`: its connection here, if any, is taken
    /// over (MQTT 5: DISCONNECT 0x8E; the will is published), and the session ends here
    /// without ending in the cluster's bucket. Returns its image, or `None` when this shard
    /// holds no persistent session for `client_id`. A delayed will goes with the image.
    pub fn hand_over_session(
        &mut self,
        client_id: &str,
        now: Instant,
        out: &mut Outbox,
    ) -> Option<SessionImage> {
        self.now = now;
        let key = self.client_ids.get(client_id, &self.sessions)?;
        if !self.sessions.get(key).is_some_and(Session::persistent) {
            return None;
        }
        self.take_over(client_id, now, out);
        let handed = image(self.sessions.get(key)?);
        // The delayed will moved with the image: the new node publishes it if it is due.
        drop(self.discard_session(key, out));
        self.note_session_moved(client_id);
        Some(handed)
    }
}
