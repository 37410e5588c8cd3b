"""The oracle subscribers: well-behaved clients that subscribe before the chaos starts, read and
acknowledge everything, and stay connected until the coordinator says the publishers are done.
What they received is compared with what the broker accepted from the publishers.

Runs as its own process (`chaos.py --role oracle`), so the chaos workers' load does not slow
its reads. Prints `ready` once every subscription is granted, waits for `drain` on standard
input, then reads until the stream has been quiet for a while and writes its results.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import wire as w
from behaviours import QUEUE_TOPICS, RETAINED_TOPICS
from session import OP_TIMEOUT_S, Client, LagWatch

QUIET_S = 3.0      # no delivery for this long after the publishers stopped: all has arrived
DRAIN_MAX_S = 30.0


def plan_filters(index: int, rng: random.Random) -> list[tuple[str, int]]:
    """A few oracles see everything through wildcards; the rest watch one to three topics at a
    requested QoS of 2 (mostly) or 1, so both exactly-once and downgraded deliveries are
    checked. Oracle 3 holds overlapping filters: it must get each message once, at the highest
    granted QoS."""
    fixed = {
        0: [("soak/#", 2)],
        1: [("soak/q/+", 2)],
        2: [("soak/q/+", 1)],
        3: [("soak/+/3", 2), ("soak/q/3", 1), ("soak/q/#", 1)],
        4: [("soak/r/+", 2), ("soak/big/+", 1)],
    }
    if index in fixed:
        return fixed[index]
    topics = rng.sample(range(QUEUE_TOPICS), rng.randint(1, 3))
    filters = [(f"soak/q/{k}", 2 if rng.random() < 0.7 else 1) for k in topics]
    if rng.random() < 0.2:
        filters.append((f"soak/r/{rng.randrange(RETAINED_TOPICS)}", 2))
    return filters


class Oracle:
    def __init__(self, index: int, rng: random.Random):
        self.index = index
        self.ws = index % 2 == 1
        self.version = (4, 5, 4, 5, 3)[index % 5]
        self.filters = plan_filters(index, rng)
        self.granted: list[int] = []
        # message id → [deliveries, lowest QoS, highest QoS, topic, dup flags seen]
        self.got: dict[str, list] = {}
        self.unparsable = 0
        self.client: Client | None = None
        self.last_at = 0.0

    def on_message(self, topic: str, payload: bytes, qos: int, dup: bool) -> None:
        self.last_at = time.monotonic()  # the clock of loop.time()
        mid, sep, _ = payload.partition(b"|")
        if not sep:
            self.unparsable += 1
            return
        entry = self.got.get(mid.decode("ascii", "replace"))
        if entry is None:
            self.got[mid.decode("ascii", "replace")] = [1, qos, qos, topic, int(dup)]
        else:
            entry[0] += 1
            entry[1] = min(entry[1], qos)
            entry[2] = max(entry[2], qos)
            entry[4] += int(dup)

    async def start(self, target: w.Target, source: str | None) -> None:
        link = await w.Link.open(target, ws=self.ws, source=source, timeout_s=OP_TIMEOUT_S,
                                 version=self.version)
        self.client = Client(link, self.version, on_message=self.on_message)
        await self.client.handshake(f"oracle{self.index}", keepalive=20)
        self.granted = await self.client.subscribe(self.filters)
        if any(code >= 0x80 for code in self.granted):
            raise RuntimeError(f"oracle {self.index}: SUBACK {self.granted}")

    def result(self) -> dict:
        lost = self.client is None or self.client.lost.is_set()
        return {
            "index": self.index,
            "ws": self.ws,
            "version": self.version,
            "filters": self.filters,
            "granted": self.granted,
            "lost": lost,
            "disconnect_reason": self.client.disconnect_reason if self.client else None,
            "unparsable": self.unparsable,
            "got": self.got,
        }


async def run(cfg: dict) -> None:
    target = w.Target(cfg["host"], cfg["tcp_port"], cfg["ws_port"], cfg["ws_path"])
    sources = w.Sources(cfg["sources"])
    rng = random.Random(cfg["seed"])
    oracles = [Oracle(i, rng) for i in range(cfg["oracles"])]
    lag = LagWatch()
    lag_task = asyncio.create_task(lag.run())
    await asyncio.gather(*(o.start(target, sources.pick()) for o in oracles))
    print("ready", flush=True)

    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "drain":
        raise RuntimeError(f"oracle: expected 'drain', got {line!r}")
    # The publishers are done; what the broker accepted is in flight or queued. Read until
    # the stream has been quiet for QUIET_S (bounded by DRAIN_MAX_S).
    started = loop.time()
    while loop.time() - started < DRAIN_MAX_S:
        last = max(o.last_at for o in oracles)
        if loop.time() - max(last, started) >= QUIET_S:
            break
        await asyncio.sleep(0.2)
    results = [o.result() for o in oracles]  # before our own DISCONNECT marks them ended
    for o in oracles:
        if o.client and not o.client.lost.is_set():
            o.client.disconnect()
    await asyncio.sleep(0.2)
    with open(cfg["results"], "w") as f:
        json.dump({"oracles": results, "drain_s": round(loop.time() - started, 2),
                   "loop_lag": lag.result()}, f)
    lag_task.cancel()
