"""What the coordinator measures and judges: the broker's RSS and descriptors, its sockets as
`ss` sees them, its `/metrics` gauges, and the oracle subscribers' deliveries against what the
publishers had acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter

import wire as w


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def memory_detail_kb(pid: int) -> dict[str, int]:
    """RssAnon/RssFile/VmHWM, to tell heap from mapped files when RSS grows."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "VmData"):
                out[key] = int(line.split()[1])
    out["mappings"] = mappings_rss_kb(pid)
    return out


def mappings_rss_kb(pid: int) -> dict[str, int]:
    """Resident KiB of each mapping holding at least 64 KiB, keyed by "start-end name", so two
    snapshots show which mapping grew: the allocator's arena, a thread's stack (an anonymous
    mapping of the stack size), the receive buffers, the rings."""
    out, mapping = {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                mapping = fields[0] + (" " + fields[5] if len(fields) > 5 else "")
            elif fields[0] == "Rss:" and mapping and int(fields[1]) >= 64:
                out[mapping] = int(fields[1])
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class RunQueueWait:
    """How long the broker's shard threads waited for a CPU, sampled over time from
    /proc/PID/task/TID/schedstat (its second field: nanoseconds runnable but not running).
    On a shared machine a starved broker closes late through no fault of its logic; the
    deadline check allows what a shard lost this way during each wait."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, dict[int, int]]] = []

    def sample(self, now: float) -> None:
        waits = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/comm") as f:
                    if not f.read().startswith("shard"):
                        continue
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    waits[int(tid)] = int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                continue
        self.samples.append((now, waits))

    def during(self, start: float, end: float) -> float:
        """Seconds the most delayed shard waited between the samples around [start, end]."""
        before = [w for t, w in self.samples if t <= start]
        after = [w for t, w in self.samples if t >= end]
        if not before or not after:
            return 0.0
        a, b = before[-1], after[0]
        return max((b[tid] - a.get(tid, 0) for tid in b), default=0) / 1e9

    def worst_interval_s(self) -> float:
        """The most any shard waited between two consecutive samples."""
        worst = 0
        for (_, a), (_, b) in zip(self.samples, self.samples[1:]):
            worst = max([worst] + [b[tid] - a.get(tid, 0) for tid in b])
        return worst / 1e9


async def scrape(target: w.Target, timeout_s: float = 5.0) -> dict[str, int]:
    """`GET /metrics`, each metric summed over the shards."""
    sock = await w.open_socket(target.host, target.ws_port, None, timeout_s)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(-1), timeout_s)
    finally:
        # Closed for real before returning, or `ss` right after would see it in CLOSE-WAIT.
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/metrics answered {head[:40]!r}")
    totals: Counter[str] = Counter()
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            totals[series.split("{", 1)[0]] += int(value)
    return dict(totals)


def sockets_on(ports: set[int]) -> tuple[dict[str, Counter], list[str]]:
    """TCP sockets on the broker's ports by state: the broker's own ends (`broker`, local port
    is a listener's) and the clients' ends (`client`, peer port is a listener's); and the
    `ss` lines of those not in TIME-WAIT, to see what they are."""
    out = subprocess.run(["ss", "-Htan"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    sides = {"broker": Counter(), "client": Counter()}
    lines = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] == "LISTEN":
            continue
        state, local, peer = fields[0], fields[3], fields[4]
        if int(local.rsplit(":", 1)[1]) in ports:
            sides["broker"][state] += 1
        elif int(peer.rsplit(":", 1)[1]) in ports:
            sides["client"][state] += 1
        else:
            continue
        if state != "TIME-WAIT":
            lines.append(" ".join(fields))
    return sides, lines


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 §4.7 matching of `+` and `#` (topics here never start with `$`)."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def verify_deliveries(sent: list[list], oracles: list[dict]) -> dict:
    """Each accepted QoS 1/2 message against each oracle whose filters match its topic.

    The delivery QoS is the lower of the publish's and the highest granted among the matching
    filters (overlapping subscriptions deliver once at the highest, per the README). QoS 2
    deliveries must arrive exactly once, QoS 1 at least once; a delivery under another topic
    or at another QoS is counted as wrong. Oracles that lost their connection are left out
    and reported.
    """
    by_id = {mid: (topic, qos, accepted) for mid, topic, qos, accepted in sent}
    c = Counter()
    missing_examples: list[str] = []
    wrong_examples: list[str] = []
    for oracle in oracles:
        if oracle["lost"]:
            c["oracles_lost"] += 1
            continue
        subs = [(f, g) for (f, _), g in zip(oracle["filters"], oracle["granted"]) if g < 0x80]
        got = oracle["got"]
        best: dict[str, int] = {}  # topic → highest granted QoS of the matching filters
        for mid, (topic, qos, accepted) in by_id.items():
            if qos == 0 or not accepted:
                continue
            if topic not in best:
                best[topic] = max((g for f, g in subs if topic_matches(f, topic)), default=-1)
            if best[topic] < 0:
                continue
            expect_qos = min(qos, best[topic])
            if expect_qos == 0:
                continue
            c[f"expected_qos{expect_qos}"] += 1
            entry = got.get(mid)
            if entry is None:
                c[f"missing_qos{expect_qos}"] += 1
                if len(missing_examples) < 10:
                    missing_examples.append(f"oracle {oracle['index']}: {mid} on {topic} "
                                            f"(QoS {qos} → {expect_qos})")
                continue
            count, low, high, got_topic, _dups = entry
            c[f"received_qos{expect_qos}"] += 1
            if count > 1:
                c[f"duplicates_qos{expect_qos}"] += count - 1
            if got_topic != topic or low != expect_qos or high != expect_qos:
                c["wrong_topic_or_qos"] += 1
                if len(wrong_examples) < 10:
                    wrong_examples.append(f"oracle {oracle['index']}: {mid} published on "
                                          f"{topic} at QoS {qos}, got on {got_topic} at "
                                          f"QoS {low}..{high}")
        for mid in got:
            if mid not in by_id:
                c["unknown_messages"] += 1
        c["unparsable"] += oracle["unparsable"]
    return {"counts": dict(c), "missing_examples": missing_examples,
            "wrong_examples": wrong_examples}


def sent_totals(sent: list[list]) -> dict[str, int]:
    c = Counter()
    for _mid, _topic, qos, accepted in sent:
        c[f"sent_qos{qos}"] += 1
        if accepted:
            c[f"accepted_qos{qos}"] += 1
    return dict(c)


def deadline_summary(deadlines: list[list], slack_s: float, broker_wait) -> dict:
    """Per kind: how many closes were watched; how many came past limit + slack or never
    (`over_slack`); how many of those stay late after allowing what the watching worker's loop
    and the broker's shard threads lost to CPU starvation during the wait (`late_or_never`);
    and the worst time a close took. `broker_wait(start, end)` gives the broker's loss."""
    out: dict[str, dict] = {}
    for kind, limit_s, started_at, observed_s, worker_lag_s in deadlines:
        group = kind.split(".")[0] if kind.startswith("garbage.") else kind
        d = out.setdefault(group, {"watched": 0, "late_or_never": 0, "over_slack": 0,
                                   "worst_s": 0.0, "limit_s": limit_s, "examples": []})
        d["watched"] += 1
        d["limit_s"] = max(d["limit_s"], limit_s)
        if observed_s is not None:
            d["worst_s"] = max(d["worst_s"], observed_s)
        if observed_s is not None and observed_s <= limit_s + slack_s:
            continue
        d["over_slack"] += 1
        if observed_s is None:
            late = True
            why = "never"
        else:
            starved_s = worker_lag_s + broker_wait(started_at, started_at + observed_s)
            late = observed_s > limit_s + slack_s + starved_s
            why = f"after {observed_s} s, {starved_s:.2f} s of it lost to CPU starvation"
        if late:
            d["late_or_never"] += 1
            if len(d["examples"]) < 5:
                d["examples"].append(f"{kind}: limit {limit_s} s, closed {why}")
    return out
