"""The crash test of persistence under `durability = "sync"`: publishers send numbered QoS 1
and QoS 2 messages and update retained topics while the broker is killed (`kill -9`) at
random moments and restarted on the same data directory, for several rounds. The oracle:

- two of the publishers have persistent sessions (3.1.1 clean session 0, MQTT 5 Session
  Expiry) and send what was not acknowledged again after each restart, with DUP and the same
  packet identifier, as the protocol asks of them; at the end they connect once more and get
  every message they sent acknowledged. Their QoS 2 messages are exactly once too, though the
  broker may die after such a message is on disk everywhere and before its identifier is
  (docs/persistence.md, "Acknowledgements under sync");
- every message a publisher got PUBACK (QoS 1) or PUBCOMP (QoS 2) for reaches every persistent
  subscriber at least once: 3.1.1 clean session 0 and MQTT 5 Session Expiry, some connected
  through the rounds (reconnecting after each restart), some offline until the end;
- per publisher and stream, what a subscriber receives first of each message comes in publish
  order; QoS 1 duplicates are allowed and counted (a message in flight when the broker died
  comes again), QoS 2 ones fail the test: exactly once to every persistent subscriber
  (docs/persistence.md, "Sends that wait for their session's record");
- every acknowledged message reaches a shared group of persistent members, two per shard (its
  owner hands messages to the other shard), QoS 2 at most once across the group; one member
  per shard stays offline until the end, so that the messages given to it go back to the
  owner and on to another member (hand-backs);
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
    """One publisher's record across the rounds: what it sent and what was acknowledged.

    A persistent one keeps its client (and so its unacknowledged publishes, which paho sends
    again at the next connection) and what it waits for across the rounds."""
    client_id: str
    persistent: bool = False
    v5: bool = False
    seq: dict[str, int] = field(default_factory=lambda: {"q1": 0, "q2": 0})
    acked: dict[str, set[int]] = field(default_factory=lambda: {"q1": set(), "q2": set()})
    # Per retained topic, the values in publish order, and the index of the last acknowledged.
    retained_sent: dict[str, list[str]] = field(default_factory=dict)
    retained_acked: dict[str, int] = field(default_factory=dict)
    unacknowledged: int = 0
    # mid → what it acknowledges, for publishes not acknowledged yet.
    pending: dict = field(default_factory=dict)
    # Acknowledgements that came before `publish` returned their mid.
    early: set = field(default_factory=set)
    cv: threading.Condition = field(default_factory=threading.Condition)
    client: paho.Client | None = None

    def stream_topic(self, stream: str) -> str:
        return f"crash/{self.client_id}/{stream}"

    def retained_topic(self, k: int) -> str:
        return f"crash/{self.client_id}/r{k}"


def run_publisher(pub: Publisher, port: int, stop: threading.Event) -> None:
    """Publishes until `stop` or the broker dies; records every acknowledgement."""
    client = connect_publisher(pub, port)
    if client is None:
        return
    try:
        n = 0
        while not stop.is_set() and client.is_connected():
            n += 1
            with pub.cv:
                while len(pub.pending) >= WINDOW and not stop.is_set():
                    pub.cv.wait(0.05)
            if stop.is_set():
                break
            if n % 5 == 0 and not pub.persistent:
                topic = pub.retained_topic(n % RETAINED_TOPICS)
                values = pub.retained_sent.setdefault(topic, [])
                values.append(f"{pub.client_id} {len(values)}")
                send(pub, client, topic, values[-1], 1, True,
                     ("retained", (topic, len(values) - 1)))
                continue
            stream, qos = STREAMS[n % 2]
            pub.seq[stream] += 1
            seq = pub.seq[stream]
            send(pub, client, pub.stream_topic(stream), f"{seq}", qos, False, (stream, seq))
    finally:
        stop.wait()
        end_publisher(pub, client)


def record(pub: Publisher, what: tuple[str, object]) -> None:
    kind, value = what
    if kind == "retained":
        topic, index = value
        pub.retained_acked[topic] = max(pub.retained_acked.get(topic, -1), index)
    else:
        pub.acked[kind].add(value)


def send(pub: Publisher, client: paho.Client, topic: str, payload: str, qos: int,
         retain: bool, what) -> None:
    info = client.publish(topic, payload, qos, retain=retain)
    with pub.cv:
        acked = info.mid in pub.early
        pub.early.discard(info.mid)
        if not acked:
            pub.pending[info.mid] = what
    if acked:
        record(pub, what)


def connect_publisher(pub: Publisher, port: int) -> paho.Client | None:
    """A connected client for `pub`: a persistent publisher's own, which sends again what
    was not acknowledged (DUP, same packet identifier) once connected; None if the broker is
    gone."""

    def on_publish(_c, _u, mid, _rc, _p):
        # paho calls this holding its own lock: only `cv` is taken here, and `publish` is
        # never called holding `cv`.
        with pub.cv:
            what = pub.pending.pop(mid, None)
            if what is None:
                pub.early.add(mid)
            pub.cv.notify_all()
        if what is not None:
            record(pub, what)

    client = pub.client
    if client is None:
        protocol = paho.MQTTv5 if pub.v5 else paho.MQTTv311
        kw = {"clean_session": False} if pub.persistent and not pub.v5 else {}
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=pub.client_id,
                             protocol=protocol, reconnect_on_failure=False, **kw)
        client.max_inflight_messages_set(WINDOW)
        client.on_publish = on_publish
    if pub.persistent:
        pub.client = client
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    try:
        if pub.v5:
            client.connect(HOST, port, 30, clean_start=not pub.persistent,
                           properties=props(PacketTypes.CONNECT, SessionExpiryInterval=3600))
        else:
            client.connect(HOST, port, 30)
    except OSError:
        return None
    client.loop_start()
    connected.wait(TIMEOUT_S)
    return client


def end_publisher(pub: Publisher, client: paho.Client) -> None:
    """After a kill: the connection is dropped; a persistent publisher keeps what it waits
    for, to send it again at its next connection."""
    client.loop_stop()
    with pub.cv:
        pub.unacknowledged += len(pub.pending)
        if not pub.persistent:
            pub.pending.clear()
    sock = client.socket()
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def drain_publisher(pub: Publisher, port: int) -> None:
    """A persistent publisher's last connection: everything it sent is acknowledged."""
    client = connect_publisher(pub, port)
    assert client is not None, f"{pub.client_id}: no connection"
    deadline = time.monotonic() + TIMEOUT_S
    with pub.cv:
        while pub.pending and time.monotonic() < deadline:
            pub.cv.wait(0.05)
        left = len(pub.pending)
    client.disconnect()
    client.loop_stop()
    assert left == 0, f"{pub.client_id}: {left} publishes never acknowledged"


class Subscriber:
    """A persistent subscriber whose received messages are kept across its connections."""

    def __init__(self, client_id: str, v5: bool, share: str = ""):
        self.client_id = client_id
        self.v5 = v5
        # A shared subscription's group ("$share/<name>/"), or "" for an ordinary one.
        self.share = share
        self.received: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.client: paho.Client | None = None
        # QoS 2 publishes received and not released yet (PUBREC sent, PUBREL awaited): part of
        # the client's session state [MQTT-4.1.0-1], delivered at their PUBREL. paho keeps
        # them across reconnections of one Client object; each connection here is a new
        # object, so they are carried from one to the next.
        self.awaiting_pubrel: dict = {}

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
        client._in_messages.update(self.awaiting_pubrel)
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
                client.subscribe(f"{self.share}crash/+/{stream}", qos)
            for _ in STREAMS:
                assert subacks.acquire(timeout=TIMEOUT_S), f"{self.client_id}: no SUBACK"
        self.client = client

    def disconnect(self, clean: bool) -> None:
        if self.client is None:
            return
        if clean:
            self.client.disconnect()
        self.client.loop_stop()
        self.awaiting_pubrel = dict(self.client._in_messages)
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
    # Persistent publishers, one per shard: 3.1.1 clean session 0 and MQTT 5 Session Expiry.
    publishers += [Publisher(cid, persistent=True, v5=shard == 1)
                   for shard, cid in enumerate(first_ids("cppub"))]
    online = [Subscriber(cid, v5) for v5 in (False, True) for cid in first_ids("con")]
    offline = [Subscriber(cid, v5) for v5 in (False, True) for cid in first_ids("coff")]
    # One member per shard, so that the group's owner hands messages to another shard.
    shared = [Subscriber(cid, True, "$share/crash/") for cid in first_ids("cshr")]
    online += shared
    # And one offline member per shard: a message the owner gives one goes back to the
    # owner, which gives it to the next (a hand-back), on its last try queued for it.
    shared_offline = [Subscriber(cid, True, "$share/crash/") for cid in first_ids("cshoff")]
    offline += shared_offline
    shared += shared_offline

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

    for pub in publishers:
        if pub.persistent:
            drain_publisher(pub, broker.tcp_port)
    for sub in offline:
        sub.connect(broker.tcp_port, subscribe=False)
    plain = [sub for sub in online + offline if not sub.share]
    wait_for_everything(plain, publishers)
    check(plain, publishers)
    check_shared(shared, publishers)
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
    assert duplicates["q2"] == 0, f"{duplicates['q2']} QoS 2 messages delivered twice"


def check_shared(members: list[Subscriber], publishers: list[Publisher]) -> None:
    """Every acknowledged message reaches the group (one member or another), QoS 2 once."""
    deadline = time.monotonic() + TIMEOUT_S
    want = {(p.stream_topic(s), seq) for p in publishers for s, _ in STREAMS for seq in p.acked[s]}
    while True:
        received = []
        for sub in members:
            with sub.lock:
                received += sub.received
        if want <= set(received) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    duplicates = {"q1": 0, "q2": 0}
    for pub in publishers:
        for stream, _ in STREAMS:
            topic = pub.stream_topic(stream)
            seqs = [seq for t, seq in received if t == topic]
            duplicates[stream] += len(seqs) - len(set(seqs))
            missing = sorted(pub.acked[stream] - set(seqs))
            assert not missing, (f"the shared group lacks acknowledged {topic} "
                                 f"{missing[:10]} ({len(missing)} in all)")
    print(f"crash test: a shared group of {len(members)} persistent members got every "
          f"acknowledged message; QoS 1: {duplicates['q1']} duplicates, "
          f"QoS 2: {duplicates['q2']} duplicates")
    assert duplicates["q2"] == 0, f"{duplicates['q2']} QoS 2 messages delivered twice"


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
