//! The connections the broker of a shard knows: those that sent an accepted CONNECT, each with
//! what the broker remembers about it, in a table indexed by the connection's slot in the
//! network layer.
//!
//! The network layer numbers connections densely ([`ConnId`]: a slot index, reused before the
//! table grows, and a generation), so a vector indexed by the slot holds each connection in
//! about its own size and finds it with one bounds-checked index on every delivery. A hash map
//! cost ~180 B per connection at 19 000 (a 104-B bucket in a table of 32 768, 58 % full, whose
//! buckets are all touched since entries land anywhere in it) and hashed the id on every
//! delivery. The whole id is stored and compared, so an id that outlived its connection never
//! reaches the one that reuses its slot.
//!
//! The table is paged ([`PagedVec`]): it grows a page at a time as the network layer's slots
//! do, and gives its top pages back once they hold nothing, so it follows the connections the
//! shard holds now, not the most it ever held. Slots of connections still in their WebSocket
//! handshake or before CONNECT stay vacant here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outbox::RoutedMessage;

use super::session::SessionKey;
use super::topic_aliases::TopicAliases;
use crate::conn::{ConnId, Transport};
use crate::protocol::mqtt::ProtocolVersion;
use crate::slots::PagedVec;

/// A network connection that sent an accepted CONNECT.
pub(crate) struct Client {
    pub(crate) session: SessionKey,
    pub(crate) transport: Transport,
    pub(crate) version: ProtocolVersion,
    /// The broker asked the network layer to close the connection (it stopped taking QoS 1/2
    /// publishes): nothing more is sent to it, and it is told goodbye once, while the close
    /// runs its course.
    pub(crate) closing: bool,
    /// The topic rules denied it something, and that was reported (logged once).
    pub(crate) denial_reported: bool,
    /// 1.5 × the keep-alive the client got (its own, or the cap for MQTT 5), in milliseconds
    /// (at most 98 302 500), or 0 for none: no timeout [MQTT-3.1.2-24].
    pub(crate) keep_alive_grace_ms: u32,
    pub(crate) last_packet_at: Instant,
    /// Cleared by DISCONNECT [MQTT-3.1.2-10], unless its reason is 0x04 (§3.14.2.1). Boxed:
    /// most live-score clients have none.
    pub(crate) will: Option<Box<ClientWill>>,
    /// QoS 1/2 publishes that may be in flight to the client: min(its Receive Maximum,
    /// `inflight_max`) [MQTT-3.3.4-9].
    pub(crate) send_window: u16,
    /// Largest packet the client accepts (its Maximum Packet Size, §3.1.2.11.4); a publish
    /// larger than it is not sent to this client [MQTT-3.1.2-25].
    pub(crate) packet_bytes_max: u32,
    /// Topic Aliases of an MQTT 5 client, both ways (`topic_aliases.rs`): boxed, and none for
    /// a client that uses no aliases.
    pub(crate) topic_aliases: TopicAliases,
}

impl Client {
    /// How long the client may stay silent, if it has a keep-alive.
    pub(crate) fn keep_alive_grace(&self) -> Option<Duration> {
        (self.keep_alive_grace_ms > 0)
            .then(|| Duration::from_millis(u64::from(self.keep_alive_grace_ms)))
    }
}

/// The will of a connected client, published when its connection ends without DISCONNECT.
pub(crate) struct ClientWill {
    pub(crate) message: Arc<RoutedMessage>,
    /// MQTT 5 Message Expiry Interval of the will, counted from when it is published.
    pub(crate) expiry_s: Option<u32>,
    /// MQTT 5 Will Delay Interval (§3.1.3.2.2); 0 before MQTT 5.
    pub(crate) delay_s: u32,
}

/// The connections of the broker, indexed by [`ConnId::index`].
#[derive(Default)]
pub(crate) struct Clients {
    slots: PagedVec<Option<(ConnId, Client)>>,
}

impl Clients {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn get(&self, conn: ConnId) -> Option<&Client> {
        match self.slots.get(conn.index()) {
            Some(Some((id, connection))) if *id == conn => Some(connection),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Client> {
        match self.slots.get_mut(conn.index()) {
            Some(Some((id, connection))) if *id == conn => Some(connection),
            _ => None,
        }
    }

    pub(crate) fn contains(&self, conn: ConnId) -> bool {
        self.get(conn).is_some()
    }

    /// Adds `conn`. Its slot is vacant: the network layer reuses a slot only after telling the
    /// broker that its previous connection ended.
    pub(crate) fn insert(&mut self, conn: ConnId, connection: Client) {
        let slot = self.slots.occupy(conn.index());
        assert!(
            slot.is_none(),
            "a connection's slot is vacant until it ends"
        );
        *slot = Some((conn, connection));
    }

    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<Client> {
        let slot = self.slots.get_mut(conn.index())?;
        if !matches!(slot, Some((id, _)) if *id == conn) {
            return None;
        }
        let connection = slot.take().map(|(_, connection)| connection);
        self.slots.vacate(conn.index(), |_| {});
        connection
    }

    /// Every connection's id, in slot order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots
            .iter()
            .filter_map(|(_, slot)| slot.as_ref().map(|&(id, _)| id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    fn connection() -> Client {
        Client {
            session: crate::slots::Slots::<super::SessionKey, ()>::default().insert(()),
            transport: Transport::Ws,
            version: ProtocolVersion::V311,
            closing: false,
            denial_reported: false,
            keep_alive_grace_ms: 0,
            last_packet_at: Instant::now(),
            will: None,
            send_window: 1,
            packet_bytes_max: 1,
            topic_aliases: TopicAliases::default(),
        }
    }

    #[test]
    fn a_stale_id_does_not_reach_the_connection_in_its_slot() {
        let mut connections = Clients::default();
        let old = ConnId::new(3, 1);
        let new = ConnId::new(3, 2);
        connections.insert(old, connection());
        assert!(connections.remove(old).is_some());
        connections.insert(new, connection());
        assert!(!connections.contains(old));
        assert!(connections.get_mut(old).is_none());
        assert!(connections.remove(old).is_none());
        assert!(connections.contains(new));
        assert_eq!(connections.len(), 1);
        assert_eq!(connections.ids().collect::<Vec<_>>(), [new]);
        assert!(connections.get(ConnId::new(4, 2)).is_none());
    }

    /// The sizes the budget in `session.rs` counts.
    #[test]
    fn budget_sizes() {
        assert_eq!(size_of::<Client>(), 56);
        assert_eq!(size_of::<Option<(ConnId, Client)>>(), 64);
    }
}
