"""What each kind of chaos client does. A worker process mixes them at random (`WEIGHTS`).

Every behaviour opens its links through a `Bag`, which resets whatever is still open when the
behaviour ends, fails or is cancelled, so no socket outlives its client. Behaviours that wait
for the broker to close a connection record the wait in `Ctx.deadlines`: what bounds it, when
the wait began, and how long the close took (None when it did not come even 10 s past the
limit and slack).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter

import wire as w
from session import OP_TIMEOUT_S, Client, LagWatch

# Topic layout. Oracle subscribers listen on `soak/q/+` and a few wildcards over everything.
QUEUE_TOPICS = 16            # soak/q/0 .. soak/q/15: where most publishes go
RETAINED_TOPICS = 8          # soak/r/0 .. soak/r/7: retained publishes, cleared at the end
BIG_TOPICS = 4               # soak/big/0 .. 3: 2-16 KiB payloads, to fill stalled readers
QOS_WEIGHTS = (30, 35, 35)   # QoS 0, 1, 2

# Relative frequency of each chaos behaviour among the clients a worker starts.
WEIGHTS = {
    "subscriber_drop": 16,   # subscribe, read, then FIN without DISCONNECT
    "subscriber_reset": 10,  # subscribe, read, then RST (SO_LINGER 0)
    "subscriber_clean": 8,   # subscribe, read, DISCONNECT
    "pub_burst": 12,         # publish a burst at QoS 0/1/2, end in one of several ways
    "garbage": 16,           # see garbage.py
    "stall": 8,              # subscribe to busy topics, then stop reading
    "silent": 6,             # never send CONNECT (or never finish the upgrade)
    "idle_keepalive": 5,     # CONNECT with a short keep-alive, then say nothing
    "persistent": 10,        # clean session 0 / session expiry, coming and going
    "takeover": 6,           # a second connection with the same client id
}

# A close not seen by limit + slack is waited for this much longer, so that a broker (or a
# worker) starved of CPU on a shared machine gives a time to judge rather than a "never".
CLOSE_WAIT_EXTRA_S = 10.0

# The broker gives a peer that does not read this long to take its last bytes before it cuts
# the socket (src/shard/mod.rs, CLOSE_LINGER).
CLOSE_LINGER_S = 5.0

# Session expiry is checked only this far from the boundary: the broker's timers run on its
# 100 ms tick, and an asyncio close reaches the socket one loop turn after it is asked for.
SESSION_MARGIN_S = 0.5


class Ctx:
    """One worker's view of the soak: where the broker is, its deadlines, and what happened."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.wid = cfg["wid"]
        self.target = w.Target(cfg["host"], cfg["tcp_port"], cfg["ws_port"], cfg["ws_path"])
        self.sources = w.Sources(cfg["sources"])
        self.connect_timeout_s = cfg["connect_timeout_ms"] / 1000
        self.ws_handshake_timeout_s = cfg["ws_handshake_timeout_ms"] / 1000
        self.slack_s = cfg["slack_s"]
        # A session end is timed when this client closes; the socket closes up to a loop turn
        # later, which on a busy worker can be this long.
        self.lag_allowance_s = cfg["slack_s"]
        self.stop_at = cfg["stop_at"]
        self.stopping = asyncio.Event()
        self.stats: Counter[str] = Counter()
        # (kind, the broker's limit, when the wait began, how long the close took or None)
        self.deadlines: list[tuple[str, float, float, float | None]] = []
        self.lag = LagWatch()
        self.sent: list[list] = []  # [message id, topic, qos, accepted]
        self.serial = 0
        self.links: set[w.Link] = set()
        # Persistent sessions: client id → monotonic time until which the broker must keep
        # the session (inf: MQTT 3 clean session 0), and whether a client is using it.
        self.pool_until: dict[str, float | None] = {}  # None: unknown
        self.pool_busy: set[str] = set()
        self.pool_history: dict[str, list[dict]] = {}  # the last visits, to explain mismatches
        self.session_checks: Counter[str] = Counter()
        self.session_mismatches: list[str] = []
        self.bugs: list[str] = []  # exceptions in the soak's own code
        self.lost_well_behaved: list[str] = []

    def close_wait_s(self, limit_s: float) -> float:
        """How long to wait for a close the broker owes within `limit_s`."""
        return limit_s + self.slack_s + CLOSE_WAIT_EXTRA_S

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def client_id(self, tag: str) -> str:
        return f"w{self.wid}{tag}{self.next_serial()}"

    def deadline(self, kind: str, limit_s: float, started_at: float,
                 observed_s: float | None) -> None:
        self.deadlines.append((kind, limit_s, started_at, observed_s))

    def judged_deadlines(self) -> list[tuple[str, float, float, float | None, float]]:
        """(kind, limit, started at, observed, lag allowance): the allowance is the worst
        stall of this worker's own loop during the wait, which lengthened what it measured."""
        out = []
        for kind, limit_s, started_at, observed_s in self.deadlines:
            waited_s = observed_s if observed_s is not None else self.close_wait_s(limit_s)
            allowance_s = self.lag.worst_during(started_at, started_at + waited_s)
            out.append((kind, round(limit_s, 3), round(started_at, 3),
                        None if observed_s is None else round(observed_s, 3),
                        round(allowance_s, 3)))
        return out

    async def sleep(self, seconds: float) -> bool:
        """Sleeps, cut short when the soak stops; True when the whole time passed."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return False
        except asyncio.TimeoutError:
            return True

    def abort_all(self) -> None:
        for link in list(self.links):
            if not link.closed:
                link.abort()
        self.links.clear()


class Bag:
    """The links of one behaviour; whatever is still open at the end is reset."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.links: list[w.Link] = []

    async def open(self, *, ws: bool, version: int = 4) -> w.Link:
        link = await w.Link.open(self.ctx.target, ws=ws, source=self.ctx.sources.pick(),
                                 timeout_s=OP_TIMEOUT_S, version=version)
        return self.keep(link)

    async def open_raw(self, *, ws_port: bool, version: int = 4) -> w.Link:
        link = await w.Link.open_raw(self.ctx.target, ws_port=ws_port,
                                     source=self.ctx.sources.pick(), timeout_s=OP_TIMEOUT_S,
                                     version=version)
        return self.keep(link)

    def keep(self, link: w.Link) -> w.Link:
        self.links.append(link)
        self.ctx.links.add(link)
        return link

    async def __aenter__(self) -> "Bag":
        return self

    async def __aexit__(self, *exc) -> None:
        for link in self.links:
            if not link.closed:
                link.abort()
            self.ctx.links.discard(link)


def pick_protocol(rng: random.Random) -> tuple[bool, int]:
    """(over WebSocket?, MQTT version): half WebSocket; 3.1.1 and 5 mostly, some 3.1."""
    return rng.random() < 0.5, rng.choices((3, 4, 5), (1, 5, 4))[0]


def pick_filters(rng: random.Random) -> list[tuple[str, int]]:
    """One or two filters at a random QoS, mostly single topics: every reading subscriber on a
    wildcard over everything costs its worker the whole publish rate, and a worker that cannot
    keep up with its own readers would blur the timing of everything else it watches. (The
    stalled readers take the wildcards: they cost the broker, not the worker.)"""
    def one() -> str:
        r = rng.random()
        if r < 0.75:
            return f"soak/q/{rng.randrange(QUEUE_TOPICS)}"
        if r < 0.90:
            return f"soak/r/{rng.randrange(RETAINED_TOPICS)}"
        if r < 0.97:
            return f"soak/+/{rng.randrange(BIG_TOPICS)}"
        return "soak/q/+"
    return [(one(), rng.randrange(3)) for _ in range(rng.randint(1, 2))]


def end_link(client: Client, how: str) -> None:
    """Ends a connection: `disconnect` (DISCONNECT, FIN), `drop` (FIN only), `reset` (RST)."""
    if how == "disconnect":
        client.disconnect()
        return
    client.stop()
    if how == "drop":
        client.link.close()
    else:
        client.link.abort()


class Publisher:
    """Publishes with at most `window` QoS 1/2 messages unacknowledged, recording each one."""

    def __init__(self, ctx: Ctx, rng: random.Random, client: Client, window: int,
                 use_aliases: bool):
        self.ctx = ctx
        self.rng = rng
        self.client = client
        self.stream = f"{ctx.wid}.{ctx.next_serial()}"
        self.seq = 0
        self.window = asyncio.Semaphore(window)
        self.pending: set[asyncio.Future] = set()
        # MQTT 5 topic aliases [§3.3.2.3.4]: alias → topic it stands for on this connection.
        alias_count = min(client.alias_max, 8) if use_aliases else 0
        self.aliases: dict[int, str] = {}
        self.alias_count = alias_count

    def pick(self) -> tuple[str, bool, int]:
        """(topic, retain, payload padding in bytes)."""
        r = self.rng.random()
        if r < 0.80:
            return f"soak/q/{self.rng.randrange(QUEUE_TOPICS)}", False, self.rng.randrange(200)
        if r < 0.90:
            return f"soak/n/{self.rng.randrange(QUEUE_TOPICS)}", False, self.rng.randrange(200)
        if r < 0.95:
            return f"soak/r/{self.rng.randrange(RETAINED_TOPICS)}", True, self.rng.randrange(64)
        return f"soak/big/{self.rng.randrange(BIG_TOPICS)}", False, self.rng.randint(2048, 16384)

    async def one(self, qos: int | None = None) -> asyncio.Future | None:
        """Publishes one message (waiting for room in the window first); for QoS 1/2 the
        future of its acknowledgement."""
        if self.client.lost.is_set():
            raise w.Closed()
        topic, retain, pad = self.pick()
        if qos is None:
            qos = self.rng.choices((0, 1, 2), QOS_WEIGHTS)[0]
        self.seq += 1
        mid = f"{self.stream}.{self.seq}"
        payload = mid.encode() + b"|" + b"x" * pad
        entry = [mid, topic, qos, False]
        alias, known = None, False
        if self.alias_count and self.rng.random() < 0.5:
            alias = self.rng.randint(1, self.alias_count)
            known = self.aliases.get(alias) == topic
            self.aliases[alias] = topic
        if qos:
            await asyncio.wait_for(self.window.acquire(), OP_TIMEOUT_S)
        self.ctx.sent.append(entry)
        self.ctx.stats[f"publish.qos{qos}.sent"] += 1
        fut = self.client.publish(topic, payload, qos, retain=retain, alias=alias,
                                  topic_known=known)
        if fut is None:
            return None
        self.pending.add(fut)

        def done(f: asyncio.Future) -> None:
            self.pending.discard(f)
            self.window.release()
            if not f.cancelled() and f.exception() is None and f.result() < 0x80:
                entry[3] = True
                self.ctx.stats[f"publish.qos{qos}.accepted"] += 1

        fut.add_done_callback(done)
        return fut

    async def settle(self, timeout_s: float) -> None:
        """Waits for the acknowledgements still outstanding."""
        if self.pending:
            await asyncio.wait(list(self.pending), timeout=timeout_s)


# ---------------------------------------------------------------- well-behaved publishers


async def steady_publisher(ctx: Ctx, rng: random.Random, index: int, rate: float) -> None:
    """Publishes at `rate` messages/s for the whole window over one connection, then waits for
    its acknowledgements and says DISCONNECT. It is well behaved: losing its connection is
    counted as a failure (`steady.lost`)."""
    version = (4, 5)[index % 2]
    ws = index % 4 >= 2
    loop = asyncio.get_running_loop()
    async with Bag(ctx) as bag:
        link = await bag.open(ws=ws, version=version)
        client = Client(link, version)
        await client.handshake(ctx.client_id("P"), keepalive=20)
        pub = Publisher(ctx, rng, client, window=16, use_aliases=version == 5)
        next_at = loop.time()
        while loop.time() < ctx.stop_at:
            if client.lost.is_set():
                ctx.stats["steady.lost"] += 1
                ctx.lost_well_behaved.append(
                    f"worker {ctx.wid} steady publisher {index} lost its connection "
                    f"(DISCONNECT reason {client.disconnect_reason})")
                return
            await pub.one()
            next_at += 1.0 / rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await pub.settle(OP_TIMEOUT_S)
        if pub.pending:
            ctx.stats["steady.unacknowledged_at_end"] += len(pub.pending)
        client.disconnect()
        ctx.stats["steady.done"] += 1


# ---------------------------------------------------------------- chaos behaviours


async def subscriber(ctx: Ctx, rng: random.Random, ending: str) -> None:
    """Connects, subscribes, reads for a while and ends with `ending`."""
    ws, version = pick_protocol(rng)
    async with Bag(ctx) as bag:
        link = await bag.open(ws=ws, version=version)
        got = Counter()
        client = Client(link, version, on_message=lambda t, p, q, d: got.update((q,)))
        await client.handshake(ctx.client_id("S"), keepalive=rng.choice((0, 10, 30)))
        await client.subscribe(pick_filters(rng))
        await ctx.sleep(rng.uniform(0.5, 30.0))
        ctx.stats["subscriber.received"] += sum(got.values())
        end_link(client, ending)


async def pub_burst(ctx: Ctx, rng: random.Random) -> None:
    """Publishes 1-40 messages, then DISCONNECTs after the acknowledgements, or drops or resets
    mid-flight, or leaves a QoS 2 exchange after PUBREC without sending PUBREL."""
    ws, version = pick_protocol(rng)
    ending = rng.choices(("disconnect", "drop", "reset", "abandon_qos2"), (50, 20, 15, 15))[0]
    async with Bag(ctx) as bag:
        link = await bag.open(ws=ws, version=version)
        client = Client(link, version)
        await client.handshake(ctx.client_id("B"), keepalive=30)
        pub = Publisher(ctx, rng, client, window=rng.randint(1, 8),
                        use_aliases=version == 5 and rng.random() < 0.5)
        count = rng.randint(1, 40)
        cut = rng.randint(0, count) if ending in ("drop", "reset") else count
        for _ in range(cut):
            await pub.one()
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0.0, 0.05))
        if ending in ("drop", "reset"):
            end_link(client, ending)  # whatever is unacknowledged stays unaccepted
        elif ending == "abandon_qos2":
            await pub.settle(OP_TIMEOUT_S)
            client.hold_pubrel = True
            fut = await pub.one(qos=2)
            await asyncio.wait_for(client.pubrec_seen[fut.packet_id].wait(), OP_TIMEOUT_S)
            end_link(client, rng.choice(("drop", "reset")))
        else:
            await pub.settle(OP_TIMEOUT_S)
            end_link(client, "disconnect")
        ctx.stats[f"pub_burst.{ending}"] += 1


async def stall(ctx: Ctx, rng: random.Random) -> None:
    """Subscribes to busy topics, then stops reading while publishes flow to it.

    With a keep-alive and no pings, the broker must give up on it within 1.5 × keep-alive
    plus its close linger; the client then reads again and must find the end of the stream.
    Otherwise it keeps pinging (or has no keep-alive) and ends on its own with FIN or RST.
    """
    ws, version = pick_protocol(rng)
    keepalive = rng.choice((0, 0, 2, 3))
    pinging = keepalive > 0 and rng.random() < 0.4
    loop = asyncio.get_running_loop()
    async with Bag(ctx) as bag:
        link = await bag.open(ws=ws, version=version)
        client = Client(link, version)
        await client.handshake(ctx.client_id("L"), keepalive=keepalive)
        filters = [("soak/big/#", rng.randrange(3)), ("soak/q/+", rng.randrange(3))]
        await client.subscribe(rng.sample(filters, rng.randint(1, 2)))
        # Stop reading; the ping loop keeps running only for the pinging kind.
        await client.stop_reading()
        if not pinging and client.ping_task:
            client.ping_task.cancel()
        if keepalive and not pinging:
            # The close cannot be seen without reading: the client looks at limit + slack and
            # drains what the broker sent before closing (quick: the kernel's buffers). It
            # counts as closed at the limit plus however long the end of the stream took
            # after looking: a broker that closed in time makes that a moment.
            limit_s = 1.5 * keepalive + CLOSE_LINGER_S
            started = loop.time()
            if not await ctx.sleep(limit_s + ctx.slack_s):
                return
            looked_at = loop.time()
            closed = await link.wait_eof_raw(ctx.close_wait_s(limit_s) - ctx.slack_s - limit_s)
            ctx.deadline("stalled_reader_keepalive", limit_s, started,
                         limit_s + loop.time() - looked_at if closed else None)
            return
        await ctx.sleep(rng.uniform(3.0, 30.0))
        end_link(client, rng.choice(("drop", "reset")))


async def silent(ctx: Ctx, rng: random.Random) -> None:
    """Opens a connection and never sends CONNECT (or never finishes the upgrade)."""
    kind = rng.choice(("tcp_no_connect", "ws_no_upgrade", "ws_no_connect"))
    loop = asyncio.get_running_loop()
    async with Bag(ctx) as bag:
        if kind == "ws_no_connect":
            link = await bag.open(ws=True)
            limit_s = ctx.connect_timeout_s
        else:
            link = await bag.open_raw(ws_port=kind == "ws_no_upgrade")
            limit_s = ctx.ws_handshake_timeout_s if kind == "ws_no_upgrade" \
                else ctx.connect_timeout_s
        start = loop.time()
        closed = await link.wait_eof_raw(ctx.close_wait_s(limit_s))
        ctx.deadline(kind, limit_s, start, loop.time() - start if closed else None)


async def idle_keepalive(ctx: Ctx, rng: random.Random) -> None:
    """CONNECT with a 1-3 s keep-alive, then silence while reading: closed within 1.5 ×
    keep-alive [MQTT-3.1.2-24], MQTT 5 clients told so with DISCONNECT 0x8D."""
    ws, version = pick_protocol(rng)
    keepalive = rng.randint(1, 3)
    loop = asyncio.get_running_loop()
    async with Bag(ctx) as bag:
        link = await bag.open(ws=ws, version=version)
        link.send(w.connect(ctx.client_id("K"), version=version, keepalive=keepalive))
        pkt = await link.read_packet(OP_TIMEOUT_S)
        start = loop.time()
        if pkt.ptype != w.CONNACK:
            raise w.Malformed("no CONNACK")
        limit_s = 1.5 * keepalive
        closed, seen = await link.wait_closed(ctx.close_wait_s(limit_s))
        ctx.deadline("keepalive", limit_s, start, loop.time() - start if closed else None)
        if version == 5 and closed:
            told = any(p.ptype == w.DISCONNECT and p.reason(5) == 0x8D for p in seen)
            transport = "ws" if ws else "tcp"
            ctx.stats[f"idle_keepalive.v5_disconnect_0x8d.{transport}.{told}"] += 1


async def persistent(ctx: Ctx, rng: random.Random) -> None:
    """A client id from a small pool comes back with clean session 0 (MQTT 3) or a session
    expiry (MQTT 5): the broker's session present flag is checked against what the earlier
    visits of the id imply, away from the expiry boundary."""
    free = [f"w{ctx.wid}p{i}" for i in range(ctx.cfg["persistent_ids"])
            if f"w{ctx.wid}p{i}" not in ctx.pool_busy]
    if not free:
        return
    client_id = rng.choice(free)
    ctx.pool_busy.add(client_id)
    loop = asyncio.get_running_loop()
    ws, version = pick_protocol(rng)
    clean = rng.random() < 0.15
    expiry_s = rng.choice((0, 1, 2, 3, 5)) if version == 5 else None
    visit = {"v": version, "ws": ws, "clean": clean, "expiry_s": expiry_s}
    history = ctx.pool_history.setdefault(client_id, [])
    history.append(visit)
    del history[:-3]
    try:
        until = ctx.pool_until.get(client_id, -math.inf)
        async with Bag(ctx) as bag:
            link = await bag.open(ws=ws, version=version)
            client = Client(link, version)
            # The broker decides at some moment between sending CONNECT and reading CONNACK;
            # a busy worker can be late by a second or more on either side, so both ends
            # bracket it. `until` is the earliest the session may have ended.
            sent_at = loop.time()
            present = await client.handshake(client_id, clean=clean, keepalive=30,
                                             session_expiry_s=expiry_s)
            acked_at = loop.time()
            ctx.pool_until[client_id] = math.inf  # connected: the session is there
            visit.update(at=round(sent_at, 2), acked=round(acked_at, 2), present=present)
            if version == 3:
                expected = None  # MQTT 3.1's CONNACK has no session present flag
                ctx.session_checks["not_in_mqtt31"] += 1
            elif clean:
                expected = False
            elif until is None:
                expected = None  # the previous visit ended in a way not seen
            elif acked_at < until - SESSION_MARGIN_S:
                expected = True
            elif sent_at > until + SESSION_MARGIN_S + ctx.lag_allowance_s:
                expected = False
            else:
                expected = None  # too near the expiry to call
            if version == 3:
                pass
            elif expected is None:
                ctx.session_checks["skipped_near_expiry"] += 1
            elif expected == present:
                ctx.session_checks["ok"] += 1
            else:
                ctx.session_checks["mismatch"] += 1
                ctx.session_mismatches.append(
                    f"{client_id}: present={present}, expected {expected} (CONNECT "
                    f"{sent_at - until:+.2f} s, CONNACK {acked_at - until:+.2f} s past the "
                    f"earliest end of the session); visits {history}")
            if not present or rng.random() < 0.5:
                topic = f"soak/q/{rng.randrange(QUEUE_TOPICS)}"
                await client.subscribe([(topic, rng.randint(1, 2))])
            await ctx.sleep(rng.uniform(0.5, 8.0))
            if client.lost.is_set():
                # The broker ended it first, at a moment this client did not see.
                visit["lost"] = client.disconnect_reason
                ctx.stats["persistent.lost_before_end"] += 1
                ctx.pool_until[client_id] = None
                return
            how = rng.choice(("disconnect", "drop", "reset"))
            end_link(client, how)
            ended = loop.time()
            visit.update(ended=round(ended, 2), how=how)
            if version == 5:
                ctx.pool_until[client_id] = ended + (expiry_s or 0)
            else:
                ctx.pool_until[client_id] = ended if clean else math.inf
            ctx.stats[f"persistent.v{version}.{how}"] += 1
    except BaseException as e:
        # How the session ended is unknown: nothing may be expected of its next visit.
        visit["error"] = type(e).__name__
        ctx.pool_until[client_id] = None
        ctx.session_checks["unknown_after_error"] += 1
        raise
    finally:
        ctx.pool_busy.discard(client_id)


async def timed_wait_closed(link: w.Link, timeout_s: float) -> tuple[bool, list, float]:
    """`Link.wait_closed` and the moment it returned."""
    closed, seen = await link.wait_closed(timeout_s)
    return closed, seen, asyncio.get_running_loop().time()


async def takeover(ctx: Ctx, rng: random.Random) -> None:
    """A second connection with the same client id, over any transport and version, must end
    the first at once [MQTT-3.1.4-2]; MQTT 5 first connections are told 0x8E. Sometimes a
    third takes over the second."""
    client_id = ctx.client_id("T")
    loop = asyncio.get_running_loop()
    async with Bag(ctx) as bag:
        ws, version = pick_protocol(rng)
        first = await bag.open(ws=ws, version=version)
        first.send(w.connect(client_id, version=version, keepalive=30))
        if (await first.read_packet(OP_TIMEOUT_S)).ptype != w.CONNACK:
            raise w.Malformed("no CONNACK")
        for _ in range(rng.choice((1, 1, 2))):
            await ctx.sleep(rng.uniform(0.2, 3.0))
            if ctx.stopping.is_set():
                return
            waiting = asyncio.create_task(timed_wait_closed(first, ctx.close_wait_s(0.0)))
            ws, version = pick_protocol(rng)
            second = await bag.open(ws=ws, version=version)
            sent_at = loop.time()
            second.send(w.connect(client_id, version=version, keepalive=30))
            connack = await second.read_packet(OP_TIMEOUT_S)
            if connack.ptype != w.CONNACK or connack.connack(version)[1] != 0:
                raise w.Malformed("takeover CONNECT refused")
            closed, seen, closed_at = await waiting
            ctx.deadline("takeover", 0.0, sent_at, closed_at - sent_at if closed else None)
            if first.version == 5 and closed:
                told = any(p.ptype == w.DISCONNECT and p.reason(5) == 0x8E for p in seen)
                transport = "ws" if first.ws else "tcp"
                ctx.stats[f"takeover.v5_disconnect_0x8e.{transport}.{told}"] += 1
            first = second
        await ctx.sleep(rng.uniform(0.5, 5.0))
        how = rng.choice(("disconnect", "drop", "reset"))
        if how == "disconnect":
            first.send(w.disconnect())
            first.close()
        elif how == "drop":
            first.close()
        else:
            first.abort()
