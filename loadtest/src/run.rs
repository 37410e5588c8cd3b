//! The worker threads: one monoio runtime per thread, pinned to a core, each owning a slice of
//! the connections. A connection is a set-up task, then a reader task (deliveries, PUBACKs,
//! pongs), an optional publisher task and a keep-alive task.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::bail;

use crate::codec::{self, Packet};
use crate::config::{Config, ConnSpec, PubSpec, RingMode, Scenario, SubSpec};
use crate::conn::{self, Conn, SharedWriter};
use crate::ctx::{Ctx, establish};
use crate::stats::{self, Local, SeqEvent, SeqTrack, Shared};

/// Most messages queued in one publisher tick: bounds the batch when a tick comes late.
const BATCH_MSGS_MAX: u64 = 4096;
/// A publisher stops queueing while this much is unsent: the broker is not reading.
const PUBLISHER_PENDING_BYTES_MAX: usize = 4 << 20;
/// How long disconnecting connections get to close before the thread ends anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long set-up waits for the worker threads to report their thread ids (for `/proc`).
const TIDS_WAIT: Duration = Duration::from_secs(2);

/// Starts `cfg.workers` threads, spec k going to worker k mod workers, and waits (briefly) for
/// their thread ids so the sampler can watch each one.
pub fn start_workers(
    cfg: &Arc<Config>,
    shared: &Arc<Shared>,
    specs: Vec<ConnSpec>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut per_worker: Vec<Vec<ConnSpec>> = vec![Vec::new(); cfg.workers];
    for (k, spec) in specs.into_iter().enumerate() {
        per_worker[k % cfg.workers].push(spec);
    }
    let handles = per_worker
        .into_iter()
        .enumerate()
        .map(|(w, specs)| spawn_worker(cfg.clone(), shared.clone(), w, specs))
        .collect();
    let started = std::time::Instant::now();
    while shared
        .worker_tids
        .lock()
        .expect("no panics while held")
        .len()
        < cfg.workers
        && started.elapsed() < TIDS_WAIT
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    handles
}

/// Joins the workers that finish before `deadline`; the others are left to the process's end.
pub fn join_workers(handles: Vec<std::thread::JoinHandle<()>>, deadline: std::time::Instant) {
    for h in handles {
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
}

/// Starts worker `worker` on its own thread; it returns when `shared.stop` is set and its
/// connections have closed (or `CLOSE_GRACE` passed).
fn spawn_worker(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    worker: usize,
    specs: Vec<ConnSpec>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("loadgen-{worker}"))
        .spawn(move || {
            // Worker i takes the i-th core the process may use, so `taskset -c 1` is obeyed.
            if !cfg.pin_cores.is_empty() {
                let core = cfg.pin_cores[worker % cfg.pin_cores.len()];
                if let Err(e) = monoio::utils::bind_to_cpu_set([core]) {
                    eprintln!("warning: could not pin worker {worker} to core {core}: {e:?}");
                }
            }
            if let Some(tid) = stats::thread_id() {
                shared
                    .worker_tids
                    .lock()
                    .expect("no panics while held")
                    .push(tid);
            }
            let mut rt = runtime(cfg.ring_mode);
            let ctx = Rc::new(Ctx {
                cfg,
                shared,
                worker,
                local: RefCell::new(Local::new()),
                writers: RefCell::new(Vec::new()),
                live: Cell::new(0),
            });
            rt.block_on(worker_main(ctx, specs));
        })
        .expect("spawning a thread")
}

type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// The worker's runtime, with the ring set up as `mode` asks, falling back to fewer flags (and
/// monoio to epoll) where the kernel refuses them.
fn runtime(mode: RingMode) -> Runtime {
    let attempts: &[RingMode] = match mode {
        RingMode::Defer => &[RingMode::Defer, RingMode::Coop, RingMode::Plain],
        RingMode::Coop => &[RingMode::Coop, RingMode::Plain],
        RingMode::Plain => &[RingMode::Plain],
    };
    for &attempt in attempts {
        let mut flags = io_uring::IoUring::builder();
        match attempt {
            RingMode::Defer => {
                flags.setup_single_issuer().setup_defer_taskrun();
            }
            RingMode::Coop => {
                flags.setup_coop_taskrun();
            }
            RingMode::Plain => {}
        }
        let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .with_entries(4096)
            .uring_builder(flags)
            .enable_timer()
            .build();
        match built {
            Ok(rt) => return rt,
            Err(e) => {
                eprintln!("warning: io_uring setup {attempt:?} refused ({e}); trying fewer flags")
            }
        }
    }
    panic!("monoio runtime (io_uring or epoll) must start")
}

async fn worker_main(ctx: Rc<Ctx>, specs: Vec<ConnSpec>) {
    monoio::spawn(histogram_ticker(ctx.clone()));
    if ctx.cfg.scenario == Scenario::Retained && ctx.worker == 0 {
        monoio::spawn(crate::retained::publisher_task(ctx.clone()));
    }
    // Connections are opened at the configured rate, with a bounded number in progress.
    let rate = ctx.cfg.conn_rate / ctx.cfg.workers as f64;
    let concurrency = (ctx.cfg.connect_concurrency / ctx.cfg.workers).max(1);
    let setting_up = Rc::new(Cell::new(0usize));
    let start = monoio::time::Instant::now();
    for (k, spec) in specs.into_iter().enumerate() {
        loop {
            if ctx.shared.stop.load(Relaxed) {
                break;
            }
            let allowed = (start.elapsed().as_secs_f64() * rate) as usize + 1;
            if k < allowed && setting_up.get() < concurrency {
                break;
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        setting_up.set(setting_up.get() + 1);
        monoio::spawn(conn_task(ctx.clone(), spec, setting_up.clone()));
    }
    while !ctx.shared.stop.load(Relaxed) {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    let writers = std::mem::take(&mut *ctx.writers.borrow_mut());
    for writer in writers {
        monoio::spawn(async move {
            writer.borrow_mut().queue_disconnect();
            let _ = conn::flush(&writer).await;
        });
    }
    let deadline = monoio::time::Instant::now() + CLOSE_GRACE;
    while ctx.live.get() > 0 && monoio::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut local = ctx.local.borrow_mut();
    local.flush_counts(&ctx.shared);
    local.flush_histogram(&ctx.shared);
}

/// Merges this thread's latency histogram into the shared one once a second, so the progress
/// line can show p99 so far without the hot path taking a lock.
async fn histogram_ticker(ctx: Rc<Ctx>) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        ctx.local.borrow_mut().flush_histogram(&ctx.shared);
    }
}

fn subscribed(shared: &Shared, sub: &SubSpec, delta: i64) {
    let counter = match sub.topic {
        Some(t) => &shared.topic_subs[t],
        None => &shared.wildcard_subs,
    };
    if delta > 0 {
        counter.fetch_add(1, Relaxed);
    } else {
        counter.fetch_sub(1, Relaxed);
    }
}

async fn conn_task(ctx: Rc<Ctx>, spec: ConnSpec, setting_up: Rc<Cell<usize>>) {
    if ctx.cfg.scenario == Scenario::Retained {
        crate::retained::joiner(ctx.clone(), spec.index, setting_up).await;
        return;
    }
    let shared = ctx.shared.clone();
    let publisher_only = spec.subscribe.is_none() && spec.publish.is_some();
    let conn = establish(&ctx, spec.index, spec.subscribe.as_ref(), publisher_only).await;
    setting_up.set(setting_up.get() - 1);
    shared.counters.setup_done.fetch_add(1, Relaxed);
    let Some(mut conn) = conn else { return };
    if let Some(sub) = &spec.subscribe {
        subscribed(&shared, sub, 1);
    }
    let stamped = ctx.cfg.socket_stamps && spec.subscribe.is_some() && {
        let enabled = conn.reader.enable_stamps();
        if let Err(e) = &enabled {
            shared.note_error(format!("SO_TIMESTAMPNS: {e}; socket latency not measured"));
        }
        enabled.is_ok()
    };
    ctx.live.set(ctx.live.get() + 1);
    ctx.writers.borrow_mut().push(conn.writer.clone());
    let stop_flag = shared.clone();
    monoio::spawn(conn::keep_alive(
        conn.writer.clone(),
        ctx.cfg.target.keep_alive_s,
        move || stop_flag.stop.load(Relaxed),
    ));
    let inflight = Rc::new(Inflight::default());
    if let Some(publish) = spec.publish.clone() {
        monoio::spawn(publisher(
            ctx.clone(),
            conn.writer.clone(),
            publish,
            inflight.clone(),
        ));
    }
    let result = read_loop(&ctx, &mut conn, &inflight, stamped).await;
    if !shared.stop.load(Relaxed) {
        shared.counters.dropped.fetch_add(1, Relaxed);
        if let Some(sub) = &spec.subscribe {
            subscribed(&shared, sub, -1);
        }
        let why = match result {
            Ok(()) => "closed by the broker".to_string(),
            Err(e) => format!("{e:#}"),
        };
        shared.note_error(format!("connection {} dropped: {why}", spec.index));
    }
    ctx.live.set(ctx.live.get() - 1);
}

/// The hot path: one read per batch, packets decoded in place, counters flushed once per batch.
/// `stamped`: reads take the kernel's receive stamp too (see `stamp.rs`).
async fn read_loop(
    ctx: &Ctx,
    conn: &mut Conn,
    inflight: &Inflight,
    stamped: bool,
) -> anyhow::Result<()> {
    let shared = &*ctx.shared;
    let version = conn.version;
    let packet_bytes_max = ctx.cfg.target.packet_bytes_max;
    let mut track = SeqTrack::default();
    let mut acks = Vec::with_capacity(1024);
    loop {
        let (n, received_at) = if stamped {
            conn.reader.fill_stamped(&conn.writer).await?
        } else {
            (conn.reader.fill(&conn.writer).await?, None)
        };
        if n == 0 {
            return Ok(());
        }
        let now = stats::now_ns();
        let at = Arrival { received_at, now };
        let window = (
            shared.window_start_ns.load(Relaxed),
            shared.window_end_ns.load(Relaxed),
        );
        let mut used = 0;
        {
            let data = conn.reader.data();
            let mut local = ctx.local.borrow_mut();
            while let Some((packet, n)) = codec::decode(&data[used..], version, packet_bytes_max)? {
                used += n;
                match packet {
                    Packet::Publish {
                        payload,
                        packet_id,
                        dup,
                        ..
                    } => {
                        if let Some(id) = packet_id {
                            codec::encode_puback(&mut acks, id);
                        }
                        on_delivery(&mut local, &mut track, payload, dup, at, window);
                    }
                    Packet::Puback { packet_id } => {
                        let sent_ns = inflight.acked(packet_id);
                        if let Some(sent_ns) = sent_ns.filter(|&sent| shared.in_window(sent)) {
                            local
                                .puback_latency
                                .saturating_record(now.saturating_sub(sent_ns).max(1));
                        }
                        shared.counters.puback_received.fetch_add(1, Relaxed);
                    }
                    Packet::Disconnect { reason } => {
                        bail!("DISCONNECT from the broker, reason {reason:#x}")
                    }
                    _ => {}
                }
            }
            local.flush_counts(shared);
        }
        conn.reader.consume(used);
        if !acks.is_empty() {
            conn.writer.borrow_mut().queue(&acks);
            acks.clear();
            conn::flush(&conn.writer).await?;
        }
    }
}

/// When a read's bytes reached the socket (kernel stamp, if taken) and when they were read.
#[derive(Clone, Copy)]
struct Arrival {
    received_at: Option<u64>,
    now: u64,
}

fn on_delivery(
    local: &mut Local,
    track: &mut SeqTrack,
    payload: &[u8],
    dup: bool,
    at: Arrival,
    (start, end): (u64, u64),
) {
    let Some(stats::Stamp {
        sent_ns,
        intended_ns,
        stream,
        seq,
    }) = stats::read_stamp(payload)
    else {
        local.foreign += 1;
        return;
    };
    local.delivered_all += 1;
    let in_window = start != 0 && sent_ns >= start && sent_ns < end;
    let event = track.observe(stream, seq, dup);
    if !in_window {
        return;
    }
    match event {
        SeqEvent::InOrder => {}
        SeqEvent::Gap { missing } => local.gap_missing += missing,
        SeqEvent::Duplicate => local.duplicates += 1,
        SeqEvent::OutOfOrder => local.out_of_order += 1,
    }
    local.delivered += 1;
    local
        .latency
        .saturating_record(at.now.saturating_sub(sent_ns).max(1));
    local
        .intended_latency
        .saturating_record(at.now.saturating_sub(intended_ns).max(1));
    if let Some(received_at) = at.received_at {
        local
            .socket_latency
            .saturating_record(received_at.saturating_sub(sent_ns).max(1));
        local
            .read_lag
            .saturating_record(at.now.saturating_sub(received_at).max(1));
    }
}

async fn wait_for_go(shared: &Shared) -> bool {
    while !shared.go.load(Relaxed) {
        if shared.stop.load(Relaxed) {
            return false;
        }
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Publishes at `rate_per_s` (open loop) or keeps `window_msgs` outstanding (closed loop),
/// one coalesced send per tick.
/// A publisher's QoS 1 publishes not acknowledged yet, by packet identifier: when each was
/// sent, for the PUBACK latency.
#[derive(Default)]
struct Inflight {
    sent_ns: RefCell<HashMap<u16, u64>>,
}

impl Inflight {
    fn len(&self) -> u32 {
        u32::try_from(self.sent_ns.borrow().len()).unwrap_or(u32::MAX)
    }

    fn sent(&self, packet_id: u16, at_ns: u64) {
        self.sent_ns.borrow_mut().insert(packet_id, at_ns);
    }

    /// When the publish `packet_id` acknowledges was sent; `None` for an unknown identifier.
    fn acked(&self, packet_id: u16) -> Option<u64> {
        self.sent_ns.borrow_mut().remove(&packet_id)
    }
}

async fn publisher(ctx: Rc<Ctx>, writer: SharedWriter, spec: PubSpec, inflight: Rc<Inflight>) {
    let shared = &*ctx.shared;
    let cfg = &ctx.cfg;
    if !wait_for_go(shared).await {
        return;
    }
    let mut templates: Vec<_> = spec
        .topics
        .iter()
        .map(|(topic, _, _)| {
            codec::publish_template(
                cfg.target.version,
                topic,
                cfg.qos,
                spec.retain,
                cfg.payload_bytes,
            )
        })
        .collect();
    let mut seqs = vec![0u32; templates.len()];
    let tick = if cfg.closed_loop.is_some() || spec.rate_per_s >= 1000.0 {
        Duration::from_millis(1)
    } else {
        Duration::from_millis((1000.0 / spec.rate_per_s.max(0.01)).clamp(1.0, 100.0) as u64)
    };
    let start = stats::now_ns();
    let mut sent = 0u64;
    let mut next_topic = 0usize;
    let mut packet_id = 0u16;
    let mut batch = Vec::with_capacity(64 * 1024);
    // Closed loop: deliveries written off as lost after a stall, so one loss cannot stop it.
    let mut forgiven = 0u64;
    let mut last_progress = (0u64, start);
    let c = &shared.counters;
    // Set before `go` when other processes hold subscribers too.
    let remote = shared.remote_subs.get();
    while !shared.publish_stop.load(Relaxed) && !writer.borrow().failed {
        let now = stats::now_ns();
        let mut due = match cfg.closed_loop {
            Some(_) => {
                let published = c.published_all.load(Relaxed).max(1);
                let expected = c.expected_all.load(Relaxed);
                let delivered = c.delivered_all.load(Relaxed);
                let fan = (expected / published).max(1);
                if delivered != last_progress.0 {
                    last_progress = (delivered, now);
                } else if now - last_progress.1 > 1_000_000_000 {
                    forgiven = expected.saturating_sub(delivered);
                    last_progress.1 = now;
                }
                let outstanding = expected.saturating_sub(delivered).saturating_sub(forgiven) / fan;
                spec.window_msgs.saturating_sub(outstanding)
            }
            None => (((now - start) as f64 * spec.rate_per_s / 1e9) as u64).saturating_sub(sent),
        };
        due = due.min(BATCH_MSGS_MAX);
        if cfg.qos == 1 {
            due = due.min(u64::from(cfg.inflight_max.saturating_sub(inflight.len())));
        }
        if writer.borrow().pending_bytes() > PUBLISHER_PENDING_BYTES_MAX {
            due = 0;
        }
        let in_window = shared.in_window(now);
        let (mut matched, mut count) = (0u64, 0u64);
        for _ in 0..due {
            let i = next_topic;
            next_topic = (next_topic + 1) % templates.len();
            let (_, stream, topic) = spec.topics[i];
            let t = &mut templates[i];
            let s = stats::Stamp {
                sent_ns: now,
                intended_ns: match cfg.closed_loop {
                    Some(_) => now,
                    // Message `sent` of this publisher was due `sent / rate` after its start.
                    None => start + (sent as f64 * 1e9 / spec.rate_per_s) as u64,
                },
                stream,
                seq: seqs[i],
            };
            stats::stamp(&mut t.bytes[t.payload_at..], s);
            sent += 1;
            seqs[i] = seqs[i].wrapping_add(1);
            if let Some(at) = t.packet_id_at {
                packet_id = packet_id.checked_add(1).unwrap_or(1);
                t.bytes[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
                inflight.sent(packet_id, now);
            }
            batch.extend_from_slice(&t.bytes);
            matched += shared.topic_subs[topic].load(Relaxed)
                + shared.wildcard_subs.load(Relaxed)
                + remote.map_or(0, |r| {
                    r.topics.get(topic).copied().unwrap_or(0) + r.wildcard
                });
            count += 1;
        }
        if count > 0 {
            c.published_all.fetch_add(count, Relaxed);
            c.expected_all.fetch_add(matched, Relaxed);
            if in_window {
                c.published.fetch_add(count, Relaxed);
                c.expected.fetch_add(matched, Relaxed);
            }
            writer.borrow_mut().queue(&batch);
            batch.clear();
            // Leaves now, not when the runtime next submits (see `direct.rs`); a remainder the
            // socket did not take goes with the flush.
            let sent_now = conn::send_now(&writer);
            let flushed = match sent_now {
                Ok(()) => conn::flush(&writer).await,
                Err(e) => Err(e),
            };
            if let Err(e) = flushed {
                shared.note_error(format!("publisher send failed: {e}"));
                return;
            }
        }
        monoio::time::sleep(tick).await;
    }
}
