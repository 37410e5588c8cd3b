"""The crash test of persistence under `durability = "sync"`: publishers send numbered QoS 1
and QoS 2 messages and update retained topics while the broker is killed (`kill -9`) at
random moments and restarted on the same data directory, for several rounds. The oracle:

- every message a publisher got PUBACK (QoS 1) or PUBCOMP (QoS 2) for reaches every persistent
  subscriber at least once: 3.1.1 clean session 0 and MQTT 5 Session Expiry, some connected
  through the rounds (reconnecting after each restart), some offline until the end;
- per publisher and stream, what a subscriber receives first of each message comes in publish
  order; duplicates are allowed and counted (QoS 2 too: an exchange whose identifier had not
  reached the disk when the broker died may deliver its message twice, docs/persistence.md);
- each retained topic holds the last value acknowledged to its publisher, or a later one that
  was not acknowledged: the broker may die after a change was on disk and before its
  PUBACK left, and the publisher cannot tell those apart from lost ones.

Size: `FANFARE_CRASH_ROUNDS` (default 3) rounds of `FANFARE_CRASH_ROUND_S` (default 1.0)
seconds at most each; the counts are printed (`pytest -s`). docs/persistence.md has the
numbers of a larger run.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes

from broker import HOST, owner_shard
from client import TIMEOUT_S, unique_id
from client5 import props

pytestmark = pytest.mark.fanfare_only

ROUNDS = int(os.environ.get("FANFARE_CRASH_ROUNDS", "3"))
ROUND_S = float(os.environ.get("FANFARE_CRASH_ROUND_S", "1.0"))
SHARDS = 2
RETAINED_TOPICS = 4
# Messages a publisher has sent and not seen acknowledged before it sends more.
WINDOW = 20
STREAMS = (("q1", 1), ("q2", 2))


@dataclass
class Publisher:
    """One publisher's record across the rounds: what it sent and what was acknowledged."""
    client_id: str
    seq: dict[str, int] = field(default_factory=lambda: {"q1": 0, "q2": 0})
    acked: dict[str, set[int]] = field(default_factory=lambda: {"q1": set(), "q2": set()})
    # Per retained topic, the values in publish order, and the index of the last acknowledged.
    retained_sent: dict[str, list[str]] = field(default_factory=dict)
    retained_acked: dict[str, int] = field(default_factory=dict)
    unacknowledged: int = 0

    def stream_topic(self, stream: str) -> str:
        return f"crash/{self.client_id}/{stream}"

    def retained_topic(self, k: int) -> str:
        return f"crash/{self.client_id}/r{k}"


def run_publisher(pub: Publisher, port: int, stop: threading.Event) -> None:
    """Publishes until `stop` or the broker dies; records every acknowledgement."""
    pending: dict[int, tuple[str, object]] = {}
    # Acknowledgements that came before `publish` returned their mid.
    early: set[int] = set()
    cv = threading.Condition()

    def record(what: tuple[str, object]) -> None:
        kind, value = what
        if kind == "retained":
            topic, index = value
            pub.retained_acked[topic] = max(pub.retained_acked.get(topic, -1), index)
        else:
            pub.acked[kind].add(value)

    def on_publish(_c, _u, mid, _rc, _p):
        # paho calls this holding its own lock: only `cv` is taken here, and `publish` is
        # never called holding `cv`.
        with cv:
            what = pending.pop(mid, None)
            if what is None:
                early.add(mid)
            cv.notify_all()
        if what is not None:
            record(what)

    def send(topic: str, payload: str, qos: int, retain: bool, what) -> None:
        info = client.publish(topic, payload, qos, retain=retain)
        with cv:
            acked = info.mid in early
            early.discard(info.mid)
            if not acked:
                pending[info.mid] = what
        if acked:
            record(what)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=pub.client_id,
                         protocol=paho.MQTTv311, reconnect_on_failure=False)
    client.max_inflight_messages_set(WINDOW)
    client.on_publish = on_publish
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    try:
        client.connect(HOST, port, 30)
    except OSError:
        return
    client.loop_start()
    try:
        connected.wait(TIMEOUT_S)
        n = 0
        while not stop.is_set() and client.is_connected():
            n += 1
            with cv:
                while len(pending) >= WINDOW and not stop.is_set():
                    cv.wait(0.05)
            if stop.is_set():
                break
            if n % 5 == 0:
                topic = pub.retained_topic(n % RETAINED_TOPICS)
                values = pub.retained_sent.setdefault(topic, [])
                values.append(f"{pub.client_id} {len(values)}")
                send(topic, values[-1], 1, True, ("retained", (topic, len(values) - 1)))
                continue
            stream, qos = STREAMS[n % 2]
            pub.seq[stream] += 1
            seq = pub.seq[stream]
            send(pub.stream_topic(stream), f"{seq}", qos, False, (stream, seq))
    finally:
        stop.wait()
        client.loop_stop()
        with cv:
            pub.unacknowledged += len(pending)
        sock = client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class Subscriber:
    """A persistent subscriber whose received messages are kept across its connections."""

    def __init__(self, client_id: str, v5: bool):
        self.client_id = client_id
        self.v5 = v5
        self.received: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.client: paho.Client | None = None

    def on_message(self, _c, _u, msg):
        with self.lock:
            self.received.append((msg.topic, int(msg.payload)))

    def connect(self, port: int, subscribe: bool) -> None:
        protocol = paho.MQTTv5 if self.v5 else paho.MQTTv311
        kw = {} if self.v5 else {"clean_session": False}
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=protocol, reconnect_on_failure=False, **kw)
        client.max_inflight_messages_set(100)
        client.on_message = self.on_message
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        subacks = threading.Semaphore(0)
        client.on_subscribe = lambda *_: subacks.release()
        if self.v5:
            client.connect(HOST, port, 30, clean_start=False,
                           properties=props(PacketTypes.CONNECT, SessionExpiryInterval=3600))
        else:
            client.connect(HOST, port, 30)
        client.loop_start()
        assert connected.wait(TIMEOUT_S), f"{self.client_id}: no CONNACK"
        if subscribe:
            for stream, qos in STREAMS:
                client.subscribe(f"crash/+/{stream}", qos)
            for _ in STREAMS:
                assert subacks.acquire(timeout=TIMEOUT_S), f"{self.client_id}: no SUBACK"
        self.client = client

    def disconnect(self, clean: bool) -> None:
        if self.client is None:
            return
        if clean:
            self.client.disconnect()
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self.client = None


def first_ids(prefix: str) -> list[str]:
    """One client identifier owned by each shard."""
    names = iter(unique_id(prefix) for _ in range(1000))
    return [next(i for i in names if owner_shard(i, SHARDS) == s) for s in range(SHARDS)]


def test_acknowledged_messages_survive_kill_9_at_random_moments(start, tmp_path):
    rng = random.Random(os.environ.get("FANFARE_CRASH_SEED"))
    data = tmp_path / "data"
    config = {"durability": "sync",
              "limits": {"session_queue_bytes_max": 256 * 1024 * 1024}}
    args = ["--data-dir", str(data)]
    publishers = [Publisher(cid) for cid in first_ids("cpub")]
    online = [Subscriber(cid, v5) for v5 in (False, True) for cid in first_ids("con")]
    offline = [Subscriber(cid, v5) for v5 in (False, True) for cid in first_ids("coff")]

    broker = start(shards=SHARDS, args=args, config=config)
    for sub in online + offline:
        sub.connect(broker.tcp_port, subscribe=True)
    for sub in offline:
        sub.disconnect(clean=True)

    for _ in range(ROUNDS):
        stop = threading.Event()
        threads = [threading.Thread(target=run_publisher, args=(p, broker.tcp_port, stop))
                   for p in publishers]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.2, ROUND_S))
        broker.kill()
        stop.set()
        for t in threads:
            t.join(TIMEOUT_S)
        for sub in online:
            sub.disconnect(clean=False)
        broker = start(shards=SHARDS, args=args, config=config)
        for sub in online:
            sub.connect(broker.tcp_port, subscribe=False)

    for sub in offline:
        sub.connect(broker.tcp_port, subscribe=False)
    wait_for_everything(online + offline, publishers)
    check(online + offline, publishers)
    check_retained(broker, publishers)
    for sub in online + offline:
        sub.disconnect(clean=True)


def wait_for_everything(subscribers: list[Subscriber], publishers: list[Publisher]) -> None:
    """Until every subscriber has every acknowledged message, or nothing came for a while."""
    want = {(p.stream_topic(s), seq) for p in publishers for s, _ in STREAMS for seq in p.acked[s]}
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 2.0:
        counts = []
        for sub in subscribers:
            with sub.lock:
                counts.append(len(sub.received))
                complete = want <= set(sub.received)
            if not complete:
                break
        else:
            return
        if sum(counts) != last:
            last, quiet_since = sum(counts), time.monotonic()
        time.sleep(0.05)


def check(subscribers: list[Subscriber], publishers: list[Publisher]) -> None:
    duplicates = {"q1": 0, "q2": 0}
    acked = {s: sum(len(p.acked[s]) for p in publishers) for s, _ in STREAMS}
    sent = {s: sum(p.seq[s] for p in publishers) for s, _ in STREAMS}
    for sub in subscribers:
        with sub.lock:
            received = list(sub.received)
        for pub in publishers:
            for stream, _ in STREAMS:
                topic = pub.stream_topic(stream)
                seqs = [seq for t, seq in received if t == topic]
                firsts = list(dict.fromkeys(seqs))
                duplicates[stream] += len(seqs) - len(firsts)
                missing = sorted(pub.acked[stream] - set(firsts))
                assert not missing, (f"{sub.client_id} lacks acknowledged {topic} "
                                     f"{missing[:10]} ({len(missing)} in all)")
                assert firsts == sorted(firsts), (f"{sub.client_id}: {topic} out of order: "
                                                  f"{out_of_order(firsts)}")
    print(f"\ncrash test: {ROUNDS} rounds of kill -9, {len(subscribers)} persistent subscribers; "
          f"QoS 1: {sent['q1']} sent, {acked['q1']} acknowledged, {duplicates['q1']} duplicates; "
          f"QoS 2: {sent['q2']} sent, {acked['q2']} acknowledged, {duplicates['q2']} duplicates; "
          f"{sum(p.unacknowledged for p in publishers)} publishes unacknowledged at a kill")


def out_of_order(seqs: list[int]) -> list[int]:
    at = next(i for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1])
    return seqs[max(0, at - 3):at + 3]


def check_retained(broker, publishers: list[Publisher]) -> None:
    got: dict[str, str] = {}
    done = threading.Event()
    want = sum(len(p.retained_sent) for p in publishers)

    def on_message(_c, _u, msg):
        got[msg.topic] = msg.payload.decode()
        if len(got) >= want:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique_id("cret"),
                         protocol=paho.MQTTv311)
    client.on_message = on_message
    client.connect(HOST, broker.tcp_port, 30)
    client.loop_start()
    try:
        client.subscribe("crash/+/+", 1)
        done.wait(TIMEOUT_S)
        time.sleep(0.2)
    finally:
        client.disconnect()
        client.loop_stop()
    kept = 0
    for pub in publishers:
        for topic, values in pub.retained_sent.items():
            last_acked = pub.retained_acked.get(topic, -1)
            if last_acked < 0 and topic not in got:
                continue
            assert topic in got, f"{topic}: acknowledged {values[last_acked]!r} is gone"
            index = values.index(got[topic])
            assert index >= last_acked, (f"{topic} holds {got[topic]!r}, older than the "
                                         f"acknowledged {values[last_acked]!r}")
            kept += 1
    print(f"crash test: {kept} retained topics hold their last acknowledged value or a later one")
