#!/usr/bin/env python3
"""Chaos soak of fanfare: thousands of clients that connect, subscribe, publish at QoS 0/1/2,
drop without DISCONNECT, reset, send garbage, stall reading and never CONNECT, against a
two-shard broker, for a bounded time. Then checks, each answered PASS or FAIL (`verdicts.py`),
first the three the soak exists for:

1. Does the broker's RSS come back to within 10 % of a freshly started broker's?
2. Is any connection left half-open (`ss`, the `/metrics` gauges), and did the broker close
   every watched connection within its deadline (connect, upgrade and keep-alive timeouts,
   takeover, a stalled reader's close linger)?
3. Did every QoS 1/2 message the broker acknowledged reach every oracle subscriber whose
   filters match it, exactly once at QoS 2 and at least once at QoS 1?

Besides: MQTT 5 clients are told why they are closed, session present is right, the broker
stays up with no panic and no state left, and the soak's own code raised nothing.

Processes: this coordinator starts the broker, runs a short warm-up, starts the oracle
subscribers (one process) and the chaos workers (`--workers`, one asyncio process each, so
each stays under the 20 000 open-file limit and the load is spread over both cores), then
checks. Standard library only. `scripts/soak.sh` is the entry point; see `--help`.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import behaviours as b
import checks
import garbage
import oracle
import verdicts
import wire as w
from session import OP_TIMEOUT_S, Client, Refused

HOST = "127.0.0.1"
END_GRACE_S = 6.0  # behaviours get this long to end on their own when the window closes

EXPECTED_ERRORS = (w.Closed, w.Malformed, w.UpgradeRefused, Refused, asyncio.TimeoutError,
                   ConnectionError, OSError, asyncio.IncompleteReadError,
                   asyncio.LimitOverrunError)

BEHAVIOURS = {
    "subscriber_drop": lambda ctx, rng: b.subscriber(ctx, rng, "drop"),
    "subscriber_reset": lambda ctx, rng: b.subscriber(ctx, rng, "reset"),
    "subscriber_clean": lambda ctx, rng: b.subscriber(ctx, rng, "disconnect"),
    "pub_burst": b.pub_burst,
    "garbage": garbage.garbage,
    "stall": b.stall,
    "silent": b.silent,
    "idle_keepalive": b.idle_keepalive,
    "persistent": b.persistent,
    "takeover": b.takeover,
}
assert BEHAVIOURS.keys() == b.WEIGHTS.keys()


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a child is killed if the coordinator dies, so nothing outlives it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)


def log(t0: float, message: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {message}", flush=True)


# ---------------------------------------------------------------- the chaos worker


async def guarded(ctx: b.Ctx, name: str, coro) -> None:
    """Runs one client; network trouble is counted, a bug in the soak itself is recorded."""
    ctx.stats[f"{name}.started"] += 1
    try:
        await coro
        ctx.stats[f"{name}.done"] += 1
    except asyncio.CancelledError:
        ctx.stats[f"{name}.cut_at_end"] += 1
    except EXPECTED_ERRORS as e:
        ctx.stats[f"{name}.error.{type(e).__name__}"] += 1
    except Exception:  # noqa: BLE001 - a soak bug must not stop the other clients
        ctx.stats[f"{name}.bug"] += 1
        if len(ctx.bugs) < 20:
            ctx.bugs.append(f"{name}: {traceback.format_exc()}")


async def clean_sessions(ctx: b.Ctx) -> Counter:
    """Ends every persistent session the pool used (clean session 1 discards it,
    [MQTT-3.1.2-6]), so what is left in the broker afterwards is a leak, not the soak's."""
    done: Counter[str] = Counter()
    sem = asyncio.Semaphore(16)

    async def one(client_id: str) -> None:
        async with sem:
            try:
                link = await w.Link.open(ctx.target, ws=False, source=ctx.sources.pick(),
                                         timeout_s=OP_TIMEOUT_S)
                client = Client(link, 4)
                await client.handshake(client_id, clean=True, keepalive=0)
                client.disconnect()
                done["ok"] += 1
            except EXPECTED_ERRORS as e:
                done[type(e).__name__] += 1

    await asyncio.gather(*(one(cid) for cid in ctx.pool_until))
    return done


async def start_clients(ctx: b.Ctx, cfg: dict, rng: random.Random) -> tuple[set, int]:
    """Until the window closes, keeps up to `population` chaos clients alive, starting at most
    `conn_rate` a second, each drawn by weight. Returns the clients still running and the
    most that ran at once."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()
    names, weights = zip(*cfg["weights"].items())
    tokens, last = 0.0, loop.time()
    peak = 0
    while loop.time() < ctx.stop_at:
        now = loop.time()
        tokens = min(tokens + (now - last) * cfg["conn_rate"], cfg["conn_rate"])
        last = now
        while tokens >= 1 and len(tasks) < cfg["population"]:
            name = rng.choices(names, weights)[0]
            behaviour = BEHAVIOURS[name](ctx, random.Random(rng.getrandbits(64)))
            task = asyncio.create_task(guarded(ctx, name, behaviour))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            tokens -= 1
        peak = max(peak, len(tasks))
        await asyncio.sleep(0.05)
    return tasks, peak


async def run_worker(cfg: dict) -> None:
    ctx = b.Ctx(cfg)
    rng = random.Random(cfg["seed"])
    loop = asyncio.get_running_loop()
    # start_at and stop_at are CLOCK_MONOTONIC seconds, the same clock in every process here
    # and the one asyncio's loop.time() reads.
    await asyncio.sleep(max(0.0, cfg["start_at"] - loop.time()))
    lag_task = asyncio.create_task(ctx.lag.run())
    steady = [asyncio.create_task(guarded(
        ctx, "steady", b.steady_publisher(ctx, random.Random(rng.getrandbits(64)), i,
                                          cfg["publisher_rate"])))
        for i in range(cfg["publishers"])]
    tasks, peak = await start_clients(ctx, cfg, rng)
    ctx.stopping.set()
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=END_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
    await asyncio.wait(steady, timeout=2 * OP_TIMEOUT_S)
    ctx.abort_all()
    lag_task.cancel()
    cleaned = await clean_sessions(ctx)
    with open(cfg["results"], "w") as f:
        json.dump({
            "wid": ctx.wid,
            "stats": ctx.stats,
            "peak_clients": peak,
            "loop_lag": ctx.lag.result(),
            "deadlines": ctx.judged_deadlines(),
            "sent": ctx.sent,
            "session_checks": ctx.session_checks,
            "session_mismatches": ctx.session_mismatches[:20],
            "lost_well_behaved": ctx.lost_well_behaved,
            "bugs": ctx.bugs,
            "sessions_cleaned": cleaned,
        }, f)


# ---------------------------------------------------------------- the coordinator


class Broker:
    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path):
        self.proc = proc
        self.log_path = log_path
        self.target: w.Target | None = None
        self.drain: asyncio.Task | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None


async def start_broker(args, artifacts: Path) -> Broker:
    """Starts fanfare with two shards on port 0 and reads the ports it prints."""
    config = artifacts / "fanfare.toml"
    # The soak scrapes /metrics where its clients connect (the operations listener is off):
    # one port to count sockets on.
    config.write_text("http_metrics = true\n" + args.broker_toml.replace("\\n", "\n")
                      + "\n[limits]\n"
                      f"connect_timeout_ms = {args.connect_timeout_ms}\n"
                      f"ws_handshake_timeout_ms = {args.ws_handshake_timeout_ms}\n")
    log_path = artifacts / "broker.log"
    with open(log_path, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            args.bin, "--shards", str(args.shards), "--tcp", f"{HOST}:0", "--ws", f"{HOST}:0",
            "--admin", "off", "--config", str(config), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=log_file, preexec_fn=die_with_parent)
    broker = Broker(proc, log_path)
    tcp_port = ws_port = 0
    ws_path = "/mqtt"
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20.0)).decode().split()
        if not line:
            raise RuntimeError(f"broker exited before 'ready'; see {log_path}")
        if line == ["ready"]:
            break
        if len(line) == 3 and line[0] == "listening":
            addr, _, path = line[2].partition("/")
            host, _, port = addr.rpartition(":")
            w.assert_loopback(host)
            if line[1] == "tcp":
                tcp_port = int(port)
            else:
                ws_port, ws_path = int(port), "/" + path
    broker.target = w.Target(HOST, tcp_port, ws_port, ws_path)
    broker.drain = asyncio.create_task(proc.stdout.read())  # keep its stdout drained
    return broker


async def warm_up(target: w.Target, sources: w.Sources) -> dict:
    """Exercises every path once at low load: 100 subscribers (TCP and WebSocket, 3.1.1 and
    5), 10 publishers of 10 QoS 1 messages each, then everyone says DISCONNECT."""
    received = Counter()
    subs: list[Client] = []
    for i in range(100):
        version = (4, 5)[i % 2]
        link = await w.Link.open(target, ws=i % 4 >= 2, source=sources.pick(),
                                 timeout_s=OP_TIMEOUT_S, version=version)
        client = Client(link, version, on_message=lambda t, p, q, d, i=i: received.update((i,)))
        await client.handshake(f"warm-s{i}", keepalive=30)
        await client.subscribe([("warm/#", 1)])
        subs.append(client)
    pubs = []
    for i in range(10):
        link = await w.Link.open(target, ws=i % 2 == 1, source=sources.pick(),
                                 timeout_s=OP_TIMEOUT_S, version=5)
        client = Client(link, 5)
        await client.handshake(f"warm-p{i}", keepalive=30)
        pubs.append(client)
    futures = [p.publish(f"warm/{i}", b"warm-up|" + bytes(64), 1)
               for i, p in enumerate(pubs) for _ in range(10)]
    await asyncio.wait_for(asyncio.gather(*futures), OP_TIMEOUT_S)
    deadline = time.monotonic() + OP_TIMEOUT_S
    while sum(received.values()) < 100 * 100 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for client in subs + pubs:
        client.disconnect()
    return {"deliveries": sum(received.values()), "expected": 100 * 100}


async def clear_retained(target: w.Target) -> None:
    """Deletes the retained messages the soak set (an empty retained publish, §3.3.1.3)."""
    link = await w.Link.open(target, ws=False, source=None, timeout_s=OP_TIMEOUT_S)
    client = Client(link, 4)
    await client.handshake("soak-cleaner", keepalive=30)
    futures = [client.publish(f"soak/r/{k}", b"", 1, retain=True)
               for k in range(b.RETAINED_TOPICS)]
    await asyncio.wait_for(asyncio.gather(*futures), OP_TIMEOUT_S)
    client.disconnect()


async def spawn(role: str, cfg: dict, artifacts: Path, name: str, *, talk: bool = False):
    """This script again in another role; `talk` gives it pipes for stdin and stdout (the
    oracle's `ready` and `drain`), otherwise its output goes to NAME.out."""
    path = artifacts / f"{name}.json"
    path.write_text(json.dumps(cfg))
    with open(artifacts / f"{name}.out", "wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--role", role, "--config", str(path),
            stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
            stdout=subprocess.PIPE if talk else out, stderr=out, preexec_fn=die_with_parent)


class Sampler:
    """Every second the shard threads' run-queue wait; every two, RSS and the broker's gauges
    (peaks); every ten, a progress line."""

    def __init__(self, broker: Broker, t0: float):
        self.broker = broker
        self.t0 = t0
        self.peak = Counter()
        self.broker_died_at: float | None = None
        self.run_queue = checks.RunQueueWait(broker.pid)

    async def run(self) -> None:
        ticks = 0
        while True:
            if not self.broker.alive():
                self.broker_died_at = time.monotonic() - self.t0
                log(self.t0, f"broker exited with {self.broker.proc.returncode}")
                return
            self.run_queue.sample(time.monotonic())
            await asyncio.sleep(1.0)
            ticks += 1
            if ticks % 2:
                continue
            rss = checks.rss_kb(self.broker.pid)
            try:
                m = await checks.scrape(self.broker.target)
            except (OSError, asyncio.TimeoutError, RuntimeError) as e:
                log(self.t0, f"metrics scrape failed: {e}")
                continue
            for key, value in (("rss_kb", rss), ("connections", m["fanfare_connections"]),
                               ("sockets", m["fanfare_sockets"]),
                               ("sessions", m["fanfare_sessions"])):
                self.peak[key] = max(self.peak[key], value)
            if ticks % 10 == 0:
                log(self.t0, f"rss {rss} KiB, sockets {m['fanfare_sockets']}, connections "
                             f"{m['fanfare_connections']}, sessions {m['fanfare_sessions']}, "
                             f"publishes {m['fanfare_publishes_received_total']}, deliveries "
                             f"{m['fanfare_deliveries_total']}")


async def settle(broker: Broker, seconds: float) -> dict:
    """Waits (at most `seconds`) for the broker to hold no socket, connection or session."""
    deadline = time.monotonic() + seconds
    while True:
        m = await checks.scrape(broker.target)
        idle = (m["fanfare_connections"] == 0 and m["fanfare_sockets"] == 0
                and m["fanfare_sessions"] == 0)
        if idle or time.monotonic() > deadline:
            return m
        await asyncio.sleep(0.5)


async def measure_fresh(broker: Broker, args, summary: dict, t0: float) -> tuple[dict, dict]:
    """RSS and descriptors of the fresh broker, and its RSS after a warm-up."""
    await asyncio.sleep(1.0)
    rss = {"fresh_kb": checks.rss_kb(broker.pid)}
    fds = {"fresh": checks.fd_count(broker.pid)}
    summary["memory_fresh"] = checks.memory_detail_kb(broker.pid)
    # The broker's own retained messages (the $SYS topics, published from its first tick):
    # what "no state left" compares against.
    fresh = await checks.scrape(broker.target)
    summary["retained_fresh"] = fresh["fanfare_retained_messages"]
    log(t0, f"fresh RSS {rss['fresh_kb']} KiB, {fds['fresh']} descriptors")
    summary["warm_up"] = warm = await warm_up(broker.target, w.Sources(args.sources))
    await settle(broker, 10.0)
    await asyncio.sleep(2.0)
    rss["warm_kb"] = checks.rss_kb(broker.pid)
    log(t0, f"warm-up: {warm['deliveries']}/{warm['expected']} deliveries; "
            f"RSS {rss['warm_kb']} KiB")
    return rss, fds


async def run_chaos(broker: Broker, args, artifacts: Path,
                    t0: float) -> tuple[Sampler, list, int | None]:
    """The oracles subscribe, the workers run the chaos window, the oracles drain. Returns the
    sampler and the exit codes of the workers and of the oracle process."""
    target = broker.target
    base = {"host": HOST, "tcp_port": target.tcp_port, "ws_port": target.ws_port,
            "ws_path": target.ws_path, "connect_timeout_ms": args.connect_timeout_ms,
            "ws_handshake_timeout_ms": args.ws_handshake_timeout_ms, "slack_s": args.slack}
    procs = []
    try:
        oracle_cfg = dict(base, seed=args.seed, oracles=args.oracles, sources=[],
                          results=str(artifacts / "oracle-results.json"))
        oracle_proc = await spawn("oracle", oracle_cfg, artifacts, "oracle", talk=True)
        procs.append(oracle_proc)
        line = await asyncio.wait_for(oracle_proc.stdout.readline(), 60.0)
        if line.strip() != b"ready":
            raise RuntimeError(f"oracles did not start ({line!r}); see {artifacts}/oracle.out")
        log(t0, f"{args.oracles} oracle subscribers ready")

        start_at = time.monotonic() + 1.0
        stop_at = start_at + args.duration
        workers = []
        for i in range(args.workers):
            cfg = dict(base, wid=i, seed=args.seed * 1000 + i + 1, start_at=start_at,
                       stop_at=stop_at, population=args.population, conn_rate=args.conn_rate,
                       publishers=args.publishers,
                       publisher_rate=args.rate / (args.workers * args.publishers),
                       persistent_ids=args.persistent_ids, sources=args.sources,
                       weights={k: v for k, v in b.WEIGHTS.items()
                                if not args.only or k in args.only},
                       results=str(artifacts / f"worker{i}-results.json"))
            workers.append(await spawn("worker", cfg, artifacts, f"worker{i}"))
            procs.append(workers[-1])
        log(t0, f"chaos for {args.duration} s: {args.workers} workers × up to "
                f"{args.population} clients, {args.conn_rate} new clients/s each, "
                f"{args.rate} steady publishes/s")
        sampler = Sampler(broker, t0)
        sampling = asyncio.create_task(sampler.run())
        worker_codes = []
        for proc in workers:
            left = stop_at + END_GRACE_S + 4 * OP_TIMEOUT_S + 30 - time.monotonic()
            try:
                worker_codes.append(await asyncio.wait_for(proc.wait(), max(left, 1.0)))
            except asyncio.TimeoutError:
                proc.kill()
                worker_codes.append("killed: did not finish")
        log(t0, f"chaos over; workers exited {worker_codes}")
        oracle_proc.stdin.write(b"drain\n")
        await oracle_proc.stdin.drain()
        oracle_code = await asyncio.wait_for(oracle_proc.wait(), oracle.DRAIN_MAX_S + 30)
        sampling.cancel()
        sampler.run_queue.sample(time.monotonic())
        log(t0, f"oracles drained (exit {oracle_code})")
        return sampler, worker_codes, oracle_code
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()


async def measure_after(broker: Broker, args, sampler: Sampler, rss: dict, fds: dict,
                        summary: dict) -> tuple[dict, dict]:
    """Once the broker holds no socket, connection or session and has rested: its RSS,
    descriptors, gauges and sockets; then, as a clue, its RSS after a second warm-up."""
    target = broker.target
    if broker.alive():
        await clear_retained(target)
    settle_s = (max(args.connect_timeout_ms, args.ws_handshake_timeout_ms) / 1000
                + b.CLOSE_LINGER_S + 5 + 10)
    await settle(broker, settle_s)
    await asyncio.sleep(args.rest)
    rss_series = []
    for _ in range(3):
        rss_series.append(checks.rss_kb(broker.pid))
        await asyncio.sleep(1.0)
    rss.update(after_kb=rss_series[-1], after_series_kb=rss_series,
               peak_kb=sampler.peak["rss_kb"])
    fds["after"] = checks.fd_count(broker.pid)
    summary["memory_after"] = checks.memory_detail_kb(broker.pid)
    # The scrape's own socket may be counted by the tick it lands in: take the least.
    scrapes = [await checks.scrape(target) for _ in range(3)]
    metrics = min(scrapes, key=lambda m: m["fanfare_sockets"])
    sockets, socket_lines = checks.sockets_on({target.tcp_port, target.ws_port})
    summary["sockets_not_time_wait"] = socket_lines[:50]
    # Not a check, a clue: memory an allocator holds for an idle thread (frees from another
    # thread wait until the owner allocates again) comes back once the shards run a little;
    # memory still referenced does not.
    await warm_up(target, w.Sources(args.sources))
    await settle(broker, 10.0)
    await asyncio.sleep(args.rest)
    rss["after_rewarm_kb"] = checks.rss_kb(broker.pid)
    return metrics, sockets


def report(e: verdicts.Evidence, summary: dict, t0: float) -> int:
    """Prints each check as PASS or FAIL with its figures; 1 when any failed."""
    lines = verdicts.judge(e)
    figures = verdicts.figures(e)
    summary.update(e.summary, rss=e.rss, fds=e.fds, figures=figures, checks=lines,
                   sockets={k: dict(v) for k, v in e.sockets.items()},
                   bugs=e.each("bugs"), session_mismatches=e.each("session_mismatches"),
                   lost_well_behaved=e.each("lost_well_behaved"),
                   oracle_drain_s=(e.oracle_results or {}).get("drain_s"),
                   loop_lag={"workers": [r["loop_lag"] for r in e.results],
                             "oracle": (e.oracle_results or {}).get("loop_lag")})
    started = figures["by_behaviour"]
    log(t0, f"{figures['clients_started']} clients started "
            f"({', '.join(f'{k} {v}' for k, v in sorted(started.items()))}); peak "
            f"{e.peak['connections']} connections, {e.peak['sockets']} sockets")
    errors = figures["client_errors"]
    if errors:
        log(t0, "client-side errors: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))
    for example in verdicts.examples(e):
        log(t0, f"  {example}")
    print("\n".join(lines), flush=True)
    return 0 if all(line.startswith("PASS") for line in lines) else 1


async def stop_broker(broker: Broker, args, summary: dict, t0: float) -> None:
    if args.hold and broker.alive():
        log(t0, f"holding broker pid {broker.pid} for {args.hold} s (inspect it now)")
        await asyncio.sleep(args.hold)
    if broker.alive():
        broker.proc.send_signal(signal.SIGTERM)
        try:
            summary["broker_exit"] = await asyncio.wait_for(broker.proc.wait(), 10.0)
        except asyncio.TimeoutError:
            broker.proc.kill()
            summary["broker_exit"] = "killed: did not stop within 10 s of SIGTERM"


async def coordinate(args) -> int:
    t0 = time.monotonic()
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    summary: dict = {"seed": args.seed, "params": {k: v for k, v in vars(args).items()
                                                   if k not in ("role", "config")}}
    log(t0, f"seed {args.seed} (rerun with --seed {args.seed}); artifacts in {artifacts}")
    broker = await start_broker(args, artifacts)
    target = broker.target
    log(t0, f"broker pid {broker.pid}: tcp {target.tcp_port}, ws {target.ws_port}{target.ws_path}")
    try:
        rss, fds = await measure_fresh(broker, args, summary, t0)
        sampler, worker_codes, oracle_code = await run_chaos(broker, args, artifacts, t0)
        metrics, sockets = await measure_after(broker, args, sampler, rss, fds, summary)
        log(t0, "settled; checking")
        results, oracle_results = verdicts.load(artifacts, args.workers)
        evidence = verdicts.Evidence(
            args=args, results=results, oracle_results=oracle_results, rss=rss, fds=fds,
            metrics=metrics, sockets=sockets, peak=dict(sampler.peak),
            run_queue=sampler.run_queue, broker_alive=broker.alive(),
            broker_died_at=sampler.broker_died_at,
            broker_log=broker.log_path.read_text(errors="replace"),
            worker_codes=worker_codes, oracle_code=oracle_code,
            retained_fresh=summary["retained_fresh"])
        return report(evidence, summary, t0)
    finally:
        await stop_broker(broker, args, summary, t0)
        (artifacts / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bin", default="target/release/fanfare", help="broker binary")
    p.add_argument("--duration", type=float, default=float(env("SOAK_DURATION_S", 180)),
                   help="seconds of chaos (env SOAK_DURATION_S)")
    p.add_argument("--seed", type=int, default=int(env("SOAK_SEED", 0)) or None,
                   help="random seed (env SOAK_SEED); printed, chosen at random when absent")
    p.add_argument("--workers", type=int, default=2, help="chaos processes")
    p.add_argument("--population", type=int, default=1000,
                   help="chaos clients alive at once, per worker")
    p.add_argument("--conn-rate", type=float, default=120.0,
                   help="new chaos clients per second, per worker")
    p.add_argument("--rate", type=float, default=200.0,
                   help="publishes/s of the steady publishers, in all")
    p.add_argument("--publishers", type=int, default=8, help="steady publishers per worker")
    p.add_argument("--oracles", type=int, default=24, help="oracle subscribers")
    p.add_argument("--persistent-ids", type=int, default=48,
                   help="client ids of persistent sessions, per worker")
    p.add_argument("--sources", default=",".join(f"127.0.0.{i}" for i in range(2, 10)),
                   help="source addresses of the chaos clients")
    p.add_argument("--shards", type=int, default=2,
                   help="broker shards (the soak is meant for 2; 1 helps tell shards apart)")
    p.add_argument("--only", default="",
                   help="comma-separated behaviours to run alone (to chase one problem): "
                        + ", ".join(b.WEIGHTS))
    p.add_argument("--broker-toml", default="",
                   help="top-level TOML keys for the broker's config file ('\\n' between lines)")
    p.add_argument("--connect-timeout-ms", type=int, default=3000)
    p.add_argument("--ws-handshake-timeout-ms", type=int, default=3000)
    p.add_argument("--slack", type=float, default=2.0,
                   help="seconds past a deadline before a close counts as late")
    p.add_argument("--rest", type=float, default=3.0,
                   help="seconds the settled broker rests before RSS is read")
    p.add_argument("--hold", type=float, default=0.0,
                   help="seconds to keep the settled broker running after the checks, to "
                        "inspect it (gdb, /proc/PID/smaps)")
    p.add_argument("--artifacts", default="target/soak", help="where logs and results go")
    p.add_argument("--role", choices=("coordinator", "worker", "oracle"), default="coordinator",
                   help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.only = [name for name in args.only.split(",") if name]
    unknown = set(args.only) - b.WEIGHTS.keys()
    if unknown:
        p.error(f"unknown behaviours {sorted(unknown)}")
    if isinstance(args.sources, str):
        args.sources = [s for s in args.sources.split(",") if s]
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    return args


def main() -> int:
    args = parse_args()
    if args.role == "coordinator":
        return asyncio.run(coordinate(args))
    die_with_parent()
    cfg = json.loads(Path(args.config).read_text())
    asyncio.run(run_worker(cfg) if args.role == "worker" else oracle.run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
