//! Writes a data directory for the restart benchmark (`scripts/bench-restart.sh`,
//! `docs/benchmarks.md`): N retained topics and M offline persistent sessions, each with a
//! subscription and K queued QoS 1 messages, as one snapshot per shard.
//!
//! The files are encoded by the store's own record encoders (`fanfare::store::record`,
//! `fanfare::store::session_record`) and laid out as a start-up compaction leaves them: each
//! topic and session in its owner shard's snapshot, an empty log beside it. Driving a broker to
//! the same state would take minutes of publishing and end in the same files; this takes
//! seconds and gives the same bytes every run but for the wall-clock deadlines.
//!
//! ```sh
//! cargo run --release --example store_fill -- DIR [--retained N] [--sessions M]
//!     [--queued K] [--shards S] [--payload BYTES]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use fanfare::broker::{Broker, QueuedImage, RoutedMessage, SessionImage, SubscriptionImage};
use fanfare::protocol::mqtt::{ProtocolVersion, QoS};
use fanfare::store::record::{self, MAGIC, SetRef};
use fanfare::store::session_record::{self, SessionRef};

/// Flushed to the shard's file past this many bytes, so the tool's memory stays small.
const BUFFER_BYTES: usize = 8 << 20;

struct Args {
    dir: PathBuf,
    retained: usize,
    sessions: usize,
    queued: usize,
    shards: usize,
    payload: usize,
}

fn args() -> anyhow::Result<Args> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut dir = None;
    let mut args = Args {
        dir: PathBuf::new(),
        retained: 1_000_000,
        sessions: 100_000,
        queued: 10,
        shards: 2,
        payload: 60,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Long("retained") => args.retained = parser.value()?.parse()?,
            Long("sessions") => args.sessions = parser.value()?.parse()?,
            Long("queued") => args.queued = parser.value()?.parse()?,
            Long("shards") => args.shards = parser.value()?.parse()?,
            Long("payload") => args.payload = parser.value()?.parse()?,
            Value(value) if dir.is_none() => dir = Some(PathBuf::from(value)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    args.dir = dir.context("usage: store_fill DIR [--retained N] [--sessions M] ...")?;
    if args.shards == 0 {
        bail!("--shards must be at least 1");
    }
    Ok(args)
}

/// One shard's snapshot, written through a bounded buffer.
struct ShardFile {
    file: std::fs::File,
    buffer: Vec<u8>,
}

impl ShardFile {
    fn create(dir: &Path) -> anyhow::Result<ShardFile> {
        std::fs::create_dir_all(dir)?;
        let mut file = std::fs::File::create(dir.join("retained.snapshot"))?;
        file.write_all(&MAGIC)?;
        let mut log = std::fs::File::create(dir.join("retained.log"))?;
        log.write_all(&MAGIC)?;
        Ok(ShardFile {
            file,
            buffer: Vec::with_capacity(BUFFER_BYTES),
        })
    }

    fn flush_if_full(&mut self) -> std::io::Result<()> {
        if self.buffer.len() >= BUFFER_BYTES {
            self.file.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.file.write_all(&self.buffer)?;
        self.file.sync_all()
    }
}

/// A payload of `bytes` bytes that differs per `n`, as score updates do.
fn payload(n: usize, bytes: usize) -> Vec<u8> {
    let mut payload = format!("{{\"home\":{},\"away\":{},\"clock\":\"", n % 7, n % 5).into_bytes();
    payload.resize(bytes.max(payload.len() + 2) - 2, b'0');
    payload.extend_from_slice(b"\"}");
    payload
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    if args.dir.exists() {
        bail!("{} exists: give a new directory", args.dir.display());
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let mut shards = (0..args.shards)
        .map(|shard| ShardFile::create(&args.dir.join(format!("shard-{shard}"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Stamps only order records of one key; each key is written once, so any distinct ones do.
    let mut stamp = 0;
    for n in 0..args.retained {
        stamp += 1;
        let topic = format!("bench/r/{}/{}", n / 1000, n % 1000);
        let shard = &mut shards[Broker::owner_shard(&topic, args.shards)];
        record::encode_set(
            &mut shard.buffer,
            &SetRef {
                stamp,
                topic: &topic,
                qos: QoS::AtLeastOnce,
                expires_at_ms: None,
                properties: &[],
                payload: &payload(n, args.payload),
            },
        );
        shard.flush_if_full()?;
    }
    // Offline for a minute, with a day of Session Expiry Interval left.
    let expiry_s = 86_400;
    let expiry_ms = vec![None; args.queued];
    for n in 0..args.sessions {
        stamp += 1;
        let client_id = format!("bench-s-{n}");
        let topic = format!("bench/q/{n}");
        let messages = (0..args.queued)
            .map(|k| QueuedImage {
                message: Arc::new(RoutedMessage::new(
                    &topic,
                    &payload(k, args.payload),
                    QoS::AtLeastOnce,
                    false,
                )),
                qos: QoS::AtLeastOnce,
                retain: false,
                ids: Vec::new(),
                packet_id: None,
            })
            .collect();
        let image = SessionImage {
            client_id: client_id.as_str().into(),
            version: ProtocolVersion::V311,
            expiry_s,
            expires_at: None,
            connected: false,
            subscriptions: vec![SubscriptionImage {
                filter: topic.as_str().into(),
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                id: 0,
            }],
            messages,
            released: Vec::new(),
            inbound_qos2: Vec::new(),
            delayed_will: None,
            incarnation: 0,
            committed_seq: 0,
            sent_ids: Vec::new(),
        };
        let shard = &mut shards[Broker::owner_shard(&client_id, args.shards)];
        session_record::encode(
            &mut shard.buffer,
            &SessionRef {
                stamp,
                image: &image,
                expires_at_ms: Some(now_ms + u64::from(expiry_s) * 1000 - 60_000),
                offline_since_ms: Some(now_ms - 60_000),
                message_expiry_ms: &expiry_ms,
                will_due_ms: 0,
                will_expiry_ms: None,
            },
        );
        shard.flush_if_full()?;
    }
    for shard in shards {
        shard.finish()?;
    }
    println!(
        "{}: {} retained topics, {} sessions with {} queued messages each, {} shards",
        args.dir.display(),
        args.retained,
        args.sessions,
        args.queued,
        args.shards
    );
    Ok(())
}
