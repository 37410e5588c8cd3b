//! fanfare: an MQTT broker for massive fan-out over WebSockets.
//!
//! # The map
//!
//! One shard per core (`shard/`), each with its own io_uring, connections, sessions and topic
//! trie; shards share nothing mutable and talk through bounded queues. Dependencies point one
//! way: `shard` → `net`, `broker` → `protocol`, with the nouns both `broker` and `net` use
//! (a connection's id, its framing, bytes ready for it) in [`conn`], tables in [`slots`], and
//! every bound in [`config`]; the locks on what another thread shares in [`locks`].
//!
//! | module | role |
//! |---|---|
//! | `main.rs` | argv and the configuration file → [`config::Config`] → listeners → shard threads |
//! | [`config`] | every setting and limit, defaulted, validated, named in errors |
//! | [`protocol`] | sans-IO codecs, no I/O and no clock: MQTT 3.1/3.1.1/5, WebSocket frames and upgrade, the HTTP request head |
//! | [`broker`] | sans-IO state of one shard: sessions, topic trie, retained messages, QoS flows, wills, keep-alive; takes `now`, answers with an [`broker::Outbox`] |
//! | [`shard`] | the loop of one core and its policy: what to do with socket events, when to close, what to post to other shards |
//! | [`net`] | the only code that touches sockets, and the only code exempt from the crate's `deny` below: the ring, its buffers, send queues, listeners |
//! | [`store`] | with `data_dir`: retained messages on disk, a checksummed log and snapshot per shard written by one thread off the loops, loaded before `ready` (`docs/persistence.md`) |
//! | [`http`], [`metrics`] | the files served to plain HTTP requests on the WebSocket listener, and the counters of `/metrics`; the same figures summed feed the `$SYS` topics (`shard/sys_topics.rs`) |
//! | [`admin`] | the operations listener, on threads of its own: `/metrics`, health, the admin and publish API; it asks the shards through bounded queues (`shard/admin_requests.rs`) |
//! | [`service`] | what the service manager hears: ready, stopping, and watchdog pings while every shard turns |
//!
//! # One PUBLISH, from a socket to N sockets
//!
//! In the order of a loop turn ([`shard`]'s `Shard::turn`), through five files:
//!
//! 1. **`net/io.rs`** — the kernel fills a provided receive buffer for the publisher's
//!    multishot receive; `Io::take_events` turns the completion into `Event::Received`, and
//!    `Io::read_received` lends the buffer to the shard.
//! 2. **`shard/ingest.rs`** — `ingest` unmasks WebSocket frames in place
//!    (`protocol/ws/frame.rs`, `FrameDecoder::feed`), `decode_all` decodes MQTT packets as
//!    borrowed views (`protocol/mqtt/decode.rs`, `decode`; only a packet straddling two buffers
//!    is copied), and `dispatch` hands each to `Broker::packet`.
//! 3. **`broker/inbound.rs`** — `Broker::packet` → `publish`: topic alias, expiry, QoS 1/2
//!    acknowledgement, then `route`.
//! 4. **`broker/fanout.rs`** — `route` stores a retained message (`retained.rs`), hands the
//!    message once to every other shard (`Outbox::to_other_shards`) and to the shared
//!    subscription groups (`share_groups.rs`), and parks it for `run_fanout`, which matches it
//!    against the trie (`topic_trie.rs`) and, at most 1 024 subscribers per turn, `deliver`s
//!    it: encoded once per wire variant (`publish_cache.rs`), the same bytes appended to the
//!    outbox for every subscriber.
//! 5. **`shard/carry_out.rs`** — `carry_out_outbox` queues each chunk on its connection
//!    (`Io::queue` → `net/send_queue.rs`, where the slow consumer policies apply); then, back
//!    in `net/io.rs`, `Io::start_sends` starts one send per connection with bytes queued —
//!    a plain `send` for a lone chunk, one `sendmsg` gathering everything otherwise
//!    (`net/send_buf.rs`) — and its completion frees what was sent.
//!
//! **Across shards**: `shard/mailbox.rs` posts each routed message to every other shard's
//! lock-free queue (`post_to_other_shards`), keeping what does not fit in a backlog bounded in
//! bytes, and wakes each shard at most once per turn. The receiving shard takes it in
//! `take_remote_messages` → `Broker::shard_message` (`broker/share_groups.rs`) →
//! `deliver_remote` (`broker/fanout.rs`), and steps 4–5 run there.
//!
//! # One SUBSCRIBE
//!
//! Steps 1–2 as above; then `broker/inbound.rs` `subscribe` checks each filter
//! (`protocol/mqtt/topic.rs`), records it in the session (`session.rs`) and the trie
//! (`topic_trie.rs`) or the owner shard's group (`share_groups.rs`), answers SUBACK
//! (`reply.rs`, `send_packet`) and queues the matching retained messages (`retained.rs`,
//! `for_each_match`, encoded by `publish_cache.rs`); step 5 sends them.
//!
//! # A connection's life
//!
//! Accepted in `shard/connection_io.rs` (`on_accept`) with an upgrade or CONNECT deadline
//! (`shard/deadlines.rs`); on a listener with the PROXY protocol on, its first bytes are judged
//! by `net/preamble.rs` before TLS or the shard sees any, and the header's client becomes the
//! connection's address (as `Forwarded` does on an upgrade, `shard/ingest.rs`); its CONNECT names a client identifier whose session may live on
//! another shard, which then adopts the socket (`shard/mailbox.rs`, `hand_off` / `adopt`); it
//! ends in `shard/close.rs`: last words queued, reading stopped, and the socket released by
//! `net/io.rs` only once nothing of it is in flight.

#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod bridge;
pub mod broker;
pub mod check_config;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod http;
pub mod locks;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod service;
pub mod shard;
pub mod slots;
pub mod store;
pub mod tls;
