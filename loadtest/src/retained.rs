//! The `retained` scenario: one publisher stores a retained value on each of M topics, then K
//! late joiners subscribe to `prefix/#` at once and must each receive all M values. What is
//! measured is the time from SUBSCRIBE to the last value, per joiner and for all of them.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::bail;

use crate::codec::{self, Packet};
use crate::conn::{self, Conn};
use crate::ctx::{Ctx, establish};
use crate::stats;

pub fn topic(ctx: &Ctx, i: usize) -> String {
    format!("{}/r/{i}", ctx.cfg.topic_prefix)
}

/// Publishes the retained values, waits until the broker has processed them (all PUBACKs for
/// QoS 1, then a PINGRESP: a broker handles one connection's packets in order), then lets the
/// joiners go. At the end it clears the values again (an empty retained PUBLISH deletes).
pub async fn publisher_task(ctx: Rc<Ctx>) {
    let shared = &*ctx.shared;
    let topics = ctx.cfg.topics;
    while shared.counters.setup_done.load(Relaxed) < ctx.cfg.subscribers as u64 {
        if shared.stop.load(Relaxed) {
            return;
        }
        monoio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let Some(mut conn) = establish(&ctx, usize::MAX / 2, None, true).await else {
        shared.note_error("retained publisher could not connect".into());
        return;
    };
    if let Err(e) = store(&ctx, &mut conn, topics, ctx.cfg.payload_bytes).await {
        shared.note_error(format!("retained publisher: {e:#}"));
        return;
    }
    shared.window_start_ns.store(stats::now_ns(), Relaxed);
    shared.go.store(true, Relaxed);
    while !shared.stop.load(Relaxed) {
        monoio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if let Err(e) = store(&ctx, &mut conn, topics, 0).await {
        shared.note_error(format!("clearing retained values: {e:#}"));
    }
    conn.disconnect().await;
}

async fn store(
    ctx: &Ctx,
    conn: &mut Conn,
    topics: usize,
    payload_bytes: usize,
) -> anyhow::Result<()> {
    let version = ctx.cfg.target.version;
    let qos = ctx.cfg.qos;
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut packet_id = 0u16;
    let mut acked = 0usize;
    for i in 0..topics {
        let mut t = codec::publish_template(version, &topic(ctx, i), qos, true, payload_bytes);
        if payload_bytes > 0 {
            let now = stats::now_ns();
            let s = stats::Stamp {
                sent_ns: now,
                intended_ns: now,
                stream: i as u32,
                seq: 0,
            };
            stats::stamp(&mut t.bytes[t.payload_at..], s);
        }
        if let Some(at) = t.packet_id_at {
            packet_id = packet_id.checked_add(1).unwrap_or(1);
            t.bytes[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        batch.extend_from_slice(&t.bytes);
        let last = i + 1 == topics;
        // Bounded batches; QoS 1 keeps at most `inflight_max` unacknowledged.
        let unacked = if qos == 1 { i + 1 - acked } else { 0 };
        if batch.len() >= 32 * 1024 || last || unacked >= ctx.cfg.inflight_max as usize {
            conn.send(&batch).await?;
            batch.clear();
            if qos == 1 && (unacked >= ctx.cfg.inflight_max as usize || last) {
                let target = if last {
                    i + 1
                } else {
                    i + 1 - ctx.cfg.inflight_max as usize / 2
                };
                while acked < target {
                    conn.await_packet(ctx.cfg.target.timeout, |p| {
                        matches!(p, Packet::Puback { .. }).then_some(())
                    })
                    .await
                    .map_err(|e| e.error)?;
                    acked += 1;
                }
            }
        }
    }
    let mut ping = Vec::with_capacity(2);
    codec::encode_pingreq(&mut ping);
    conn.send(&ping).await?;
    conn.await_packet(ctx.cfg.target.timeout, |p| {
        matches!(p, Packet::Pingresp).then_some(())
    })
    .await
    .map_err(|e| e.error)?;
    Ok(())
}

/// A late joiner: connected during set-up, subscribes when the values are stored.
pub async fn joiner(ctx: Rc<Ctx>, index: usize, setting_up: Rc<Cell<usize>>) {
    let shared = ctx.shared.clone();
    let conn = establish(&ctx, index, None, false).await;
    setting_up.set(setting_up.get() - 1);
    shared.counters.setup_done.fetch_add(1, Relaxed);
    let Some(mut conn) = conn else { return };
    ctx.live.set(ctx.live.get() + 1);
    ctx.writers.borrow_mut().push(conn.writer.clone());
    let result = join(&ctx, &mut conn).await;
    if let Err(e) = result
        && !shared.stop.load(Relaxed)
    {
        shared.counters.dropped.fetch_add(1, Relaxed);
        shared.note_error(format!("joiner {index}: {e:#}"));
    }
    ctx.live.set(ctx.live.get() - 1);
}

async fn join(ctx: &Ctx, conn: &mut Conn) -> anyhow::Result<()> {
    let shared = &*ctx.shared;
    let topics = ctx.cfg.topics;
    while !shared.go.load(Relaxed) {
        if shared.stop.load(Relaxed) {
            conn.disconnect().await;
            return Ok(());
        }
        monoio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let t0 = stats::now_ns();
    let filter = format!("{}/r/#", ctx.cfg.topic_prefix);
    conn.subscribe(&filter, ctx.cfg.qos, ctx.cfg.target.timeout)
        .await
        .map_err(|e| e.error)?;
    shared.wildcard_subs.fetch_add(1, Relaxed);
    let mut seen = vec![0u64; topics.div_ceil(64)];
    let mut distinct = 0usize;
    let mut acks = Vec::new();
    let c = &shared.counters;
    loop {
        let mut used = 0;
        let (mut delivered, mut duplicates, mut foreign) = (0u64, 0u64, 0u64);
        let data = conn.reader.data();
        while let Some((packet, n)) =
            codec::decode(&data[used..], conn.version, ctx.cfg.target.packet_bytes_max)?
        {
            used += n;
            match packet {
                Packet::Publish {
                    payload, packet_id, ..
                } => {
                    if let Some(id) = packet_id {
                        codec::encode_puback(&mut acks, id);
                    }
                    let Some(stats::Stamp { stream, .. }) = stats::read_stamp(payload) else {
                        foreign += 1;
                        continue;
                    };
                    let i = stream as usize;
                    if i >= topics {
                        foreign += 1;
                        continue;
                    }
                    delivered += 1;
                    if seen[i / 64] & (1 << (i % 64)) != 0 {
                        duplicates += 1;
                        continue;
                    }
                    seen[i / 64] |= 1 << (i % 64);
                    distinct += 1;
                    if distinct == topics {
                        let now = stats::now_ns();
                        shared
                            .latency
                            .lock()
                            .expect("no panics while held")
                            .saturating_record(now.saturating_sub(t0).max(1));
                        c.retained_complete.fetch_add(1, Relaxed);
                        shared.retained_last_ns.fetch_max(now, Relaxed);
                    }
                }
                Packet::Disconnect { reason } => {
                    bail!("DISCONNECT from the broker, reason {reason:#x}")
                }
                _ => {}
            }
        }
        conn.reader.consume(used);
        c.delivered.fetch_add(delivered, Relaxed);
        c.delivered_all.fetch_add(delivered, Relaxed);
        c.duplicates.fetch_add(duplicates, Relaxed);
        c.foreign.fetch_add(foreign, Relaxed);
        if !acks.is_empty() {
            conn.writer.borrow_mut().queue(&acks);
            acks.clear();
            conn::flush(&conn.writer).await?;
        }
        if shared.stop.load(Relaxed) {
            conn.disconnect().await;
            return Ok(());
        }
        if conn.reader.fill(&conn.writer).await? == 0 {
            bail!("closed by the broker");
        }
    }
}
