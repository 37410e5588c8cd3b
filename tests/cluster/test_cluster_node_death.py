"""A fanfare node killed while QoS 1/2 messages stream to its persistent sessions
(docs/scale-out.md, "Persistent sessions across nodes"): every message its publisher had
acknowledged reaches each session where it resumes, the one that was offline in order and
once, the one that was connected at least once. The messages on their way to the node when it
last wrote a session are the ones at risk: published before that write, read from JetStream
after it. Under `durability = "sync"` a QoS 2 subscriber connected to the dying node gets
each message exactly once.
"""

from __future__ import annotations

import threading
import time

import rawmqtt

import pytest

from client import unique_id
from natsserver import nats_server_bin
from nodes import start_node, start_nodes, wait_in_cluster
from scrape import wait_for_metric

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(nats_server_bin() is None, reason="nats-server not installed"),
]

# Messages the connected subscriber gets before the node is killed, and for how long the
# publisher goes on after: the kill falls in a steady stream.
BEFORE_KILL = 60
AFTER_KILL_S = 0.5
# How long the resumed sessions may take to get everything.
RESUME_TIMEOUT_S = 15.0
# A node back after a crash gets the stream messages it had not acknowledged when JetStream
# delivers them again, `qos_redeliver_after_ms` after their first delivery: 30 s by default,
# REDELIVER_AFTER_MS for the node that comes back.
REDELIVER_AFTER_MS = 2000
REDELIVERY_TIMEOUT_S = 60.0
# How long the node's consumers may take to be taken up with its new settings.
CONSUMERS_TIMEOUT_S = 10.0
# A CONNECT that resumes a session is refused with this (3.1.1) when the session was not found
# within `session_fetch_timeout_ms`; its client tries again, this many times in all.
SERVER_UNAVAILABLE = 3
CONNECT_TRIES = 3


def drain(client, until, timeout_s: float) -> list[bytes]:
    """Payloads `client` got, until `until(got)` holds or the time is out."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while not until(got) and time.monotonic() < deadline:
        try:
            got.append(client.wait_for_message(timeout=0.2).payload)
        except AssertionError:
            pass
    return got


def publishing(pub, topic: str, qos: int):
    """Publishes "0", "1", ... to `topic` on a thread until the returned event is set;
    `acked` fills with the payloads acknowledged, in order."""
    acked: list[bytes] = []
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.is_set():
            payload = b"%d" % n
            pub.publish(topic, payload, qos)
            acked.append(payload)
            n += 1

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    return acked, stop, thread


def test_no_acknowledged_message_is_lost_when_the_node_holding_the_session_dies(
        three, clients, topic):
    a, b, c = three
    away_id, here_id = unique_id("away"), unique_id("here")
    away = clients(a, "tcp", away_id, clean_session=False)
    away.subscribe(topic, 1)
    away.disconnect()
    here = clients(a, "tcp", here_id, clean_session=False)
    here.subscribe(topic, 1)
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v >= 1)

    acked, stop, publisher = publishing(clients(b, "tcp"), topic, 1)
    try:
        before = drain(here, lambda got: len(got) >= BEFORE_KILL, RESUME_TIMEOUT_S)
        assert len(before) >= BEFORE_KILL, "the stream reaches node 1"
        a.kill()
        stop.wait(AFTER_KILL_S)
    finally:
        stop.set()
        publisher.join()
    here.wait_for_disconnect()
    # What the connected client had not read yet when its node died.
    before += drain(here, lambda got: False, 0.3)

    back = clients(c, "tcp", away_id, clean_session=False, connect=False)
    assert back.connect() is True, "session present on node 3"
    got = drain(back, lambda got: len(got) >= len(acked), RESUME_TIMEOUT_S)
    assert got == acked, "the offline session: every acknowledged message, in order, once"
    back.expect_no_message()

    again = clients(c, "tcp", here_id, clean_session=False, connect=False)
    assert again.connect() is True, "session present on node 3"
    want = set(acked)
    after = drain(again, lambda got: want <= set(before) | set(got), RESUME_TIMEOUT_S)
    missing = want - set(before) - set(after)
    assert not missing, f"the connected session lost {sorted(missing, key=int)[:10]}"


class QoS2Receiver:
    """A QoS 2 subscriber that keeps its in-flight state across connections, as a client
    with a persistent session must: a message is delivered at its PUBREL, once, and a
    PUBLISH whose packet identifier it holds is not a new message [MQTT-4.3.3-9]."""

    def __init__(self, client_id: str):
        self.client_id = client_id
        self.holding: dict[int, bytes] = {}
        self.delivered: list[bytes] = []

    def connect(self, raw, broker) -> rawmqtt.Mqtt:
        conn = raw(broker, "tcp")
        connack = conn.handshake(self.client_id, clean=False)
        assert connack.body[1] == 0, f"CONNACK {connack.body!r}"
        return conn

    def serve(self, conn: rawmqtt.Mqtt, until, timeout_s: float) -> None:
        """Answers the broker until `until()` holds, the connection ends or time is out."""
        deadline = time.monotonic() + timeout_s
        while not until() and time.monotonic() < deadline:
            try:
                packet = conn.read(timeout=0.2)
            except TimeoutError:
                continue
            except (rawmqtt.Closed, OSError):
                return
            if packet.ptype == rawmqtt.PUBLISH:
                assert packet.qos == 2, packet
                self.holding.setdefault(packet.packet_id, packet.payload)
                conn.send(rawmqtt.ack(rawmqtt.PUBREC, packet.packet_id))
            elif packet.ptype == rawmqtt.PUBREL:
                if packet.packet_id in self.holding:
                    self.delivered.append(self.holding.pop(packet.packet_id))
                conn.send(rawmqtt.ack(rawmqtt.PUBCOMP, packet.packet_id))


def test_under_sync_a_qos2_subscriber_gets_each_message_once_across_its_nodes_death(
        start, nats_cluster, clients, raw, topic, tmp_path):
    """Under `sync` what a node sends a persistent session's client waits until the bucket
    holds the session's state that allowed it (`cluster/bucket_marks.rs`): the node it
    resumes on after the kill neither sends a completed message again nor forgets one."""
    a, b, c = start_nodes(start, nats_cluster.servers,
                          args=lambda i: ["--data-dir", str(tmp_path / f"data{i}")],
                          config=lambda i: {"durability": "sync"})
    receiver = QoS2Receiver(unique_id("once"))
    conn = receiver.connect(raw, a)
    conn.send(rawmqtt.subscribe(1, (topic, 2)))
    conn.expect(rawmqtt.SUBACK)
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v >= 1)

    acked, stop, publisher = publishing(clients(b, "tcp"), topic, 2)
    try:
        receiver.serve(conn, lambda: len(receiver.delivered) >= BEFORE_KILL, RESUME_TIMEOUT_S)
        assert len(receiver.delivered) >= BEFORE_KILL, "the stream reaches node 1"
        killer = threading.Timer(0.05, a.kill)
        killer.start()
        # Answering to the end: the kill falls while exchanges are under way.
        receiver.serve(conn, lambda: False, RESUME_TIMEOUT_S)
        killer.join()
        stop.wait(AFTER_KILL_S)
    finally:
        stop.set()
        publisher.join()

    conn = receiver.connect(raw, c)
    receiver.serve(conn, lambda: len(receiver.delivered) >= len(acked), RESUME_TIMEOUT_S)
    receiver.serve(conn, lambda: False, 0.5)
    assert receiver.delivered == acked, "every acknowledged message once, in order"


def test_a_node_back_with_its_data_directory_gets_what_was_on_its_way_to_its_sessions(
        start, nats, clients, topic, tmp_path):
    """A node acknowledges a message of the QoS stream to JetStream only once it delivered it
    (under `sync`, once it is on disk on every shard): killed with messages taken from
    JetStream and not yet in its offline sessions, it gets them again from its consumer when
    it is back with its data directory, and the sessions resume there with every message
    their publisher had acknowledged. It comes back with a shorter `qos_redeliver_after_ms`,
    which its existing consumers take up."""
    args = ["--data-dir", str(tmp_path / "a")]
    a = start_node(start, nats, "a", args, config={"durability": "sync"})
    wait_in_cluster(a)
    b = start_node(start, nats, "b")
    wait_in_cluster(b)
    away_id = unique_id("away")
    away = clients(a, "tcp", away_id, clean_session=False)
    away.subscribe(topic, 1)
    away.disconnect()
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v >= 1)

    acked, stop, publisher = publishing(clients(b, "tcp"), topic, 1)
    try:
        wait_for_metric(a, "fanfare_cluster_qos_received_total", lambda v: v >= BEFORE_KILL)
        a.kill()
        stop.wait(AFTER_KILL_S)
    finally:
        stop.set()
        publisher.join()

    a = start_node(start, nats, "a", args, config={"durability": "sync"},
                   cluster={"qos_redeliver_after_ms": REDELIVER_AFTER_MS})
    wait_in_cluster(a)
    deadline = time.monotonic() + CONSUMERS_TIMEOUT_S
    while True:
        waits = {name: config.get("ack_wait")
                 for name, config in nats.consumer_configs("FANFARE_QOS").items()
                 if name.startswith("fanfare_a_")}
        if waits and set(waits.values()) == {REDELIVER_AFTER_MS * 1_000_000}:
            break
        assert time.monotonic() < deadline, f"node a's consumers wait {waits} ns"
        time.sleep(0.2)
    back = clients(a, "tcp", away_id, clean_session=False, connect=False)
    assert back.connect() is True, "session present on node a"
    want = set(acked)
    got = drain(back, lambda got: want <= set(got), REDELIVERY_TIMEOUT_S)
    missing = want - set(got)
    assert not missing, f"lost {sorted(missing, key=int)[:10]} of {len(acked)}"


class QoS2Sender:
    """A QoS 2 publisher that keeps its in-flight state across connections, as a client with
    a persistent session must [MQTT-4.4.0-1]: on its next connection it sends again, with
    DUP set, each PUBLISH whose PUBREC it did not get, then the PUBRELs whose PUBCOMP it did
    not get. It publishes "0", "1", ... with up to `window` exchanges under way, and takes
    the lowest packet identifier free, so identifiers come back soon after their exchange
    ends."""

    def __init__(self, client_id: str, topic: str, window: int = 20):
        self.client_id = client_id
        self.topic = topic
        self.window = window
        self.next = 0
        # Insertion order is publishing order.
        self.unreceived: dict[int, bytes] = {}
        self.released: dict[int, bytes] = {}
        self.acked: list[bytes] = []

    def connect(self, raw, broker) -> rawmqtt.Mqtt:
        for _ in range(CONNECT_TRIES):
            conn = raw(broker, "tcp")
            connack = conn.handshake(self.client_id, clean=False)
            # Server unavailable: the session was not found in time (its node just died);
            # a client comes back.
            if connack.body[1] != SERVER_UNAVAILABLE:
                break
        assert connack.body[1] == 0, f"CONNACK {connack.body!r}"
        for packet_id, payload in self.unreceived.items():
            conn.send(rawmqtt.publish(self.topic, payload, qos=2, packet_id=packet_id,
                                      dup=True))
        for packet_id in self.released:
            conn.send(rawmqtt.ack(rawmqtt.PUBREL, packet_id))
        return conn

    def in_flight(self) -> int:
        return len(self.unreceived) + len(self.released)

    def serve(self, conn: rawmqtt.Mqtt, publish, until, timeout_s: float) -> None:
        """Publishes while `publish()` holds and answers the broker, until `until()` holds,
        the connection ends or time is out."""
        deadline = time.monotonic() + timeout_s
        while not until() and time.monotonic() < deadline:
            try:
                while publish() and self.in_flight() < self.window:
                    taken = self.unreceived.keys() | self.released.keys()
                    packet_id = min(set(range(1, self.window + 2)) - taken)
                    payload = b"%d" % self.next
                    self.next += 1
                    self.unreceived[packet_id] = payload
                    conn.send(rawmqtt.publish(self.topic, payload, qos=2,
                                              packet_id=packet_id))
                packet = conn.read(timeout=0.2)
            except TimeoutError:
                continue
            except (rawmqtt.Closed, OSError):
                return
            if packet.ptype == rawmqtt.PUBREC and packet.packet_id in self.unreceived:
                payload = self.unreceived.pop(packet.packet_id)
                self.released[packet.packet_id] = payload
                self.acked.append(payload)
                conn.send(rawmqtt.ack(rawmqtt.PUBREL, packet.packet_id))
            elif packet.ptype == rawmqtt.PUBCOMP:
                self.released.pop(packet.packet_id, None)


def test_under_sync_a_qos2_publisher_whose_node_dies_is_delivered_once(
        start, nats_cluster, clients, raw, topic, tmp_path):
    """A QoS 2 publish JetStream stored whose PUBREC the dying node never sent comes again from
    its client, on the node its session moves to: JetStream knows it by an identity both
    nodes derive alike (the session's incarnation, the publish's number in it and its
    packet identifier) and keeps one copy, and the new node, which had it from the stream
    already, does not deliver it a second time."""
    a, b, c = start_nodes(start, nats_cluster.servers,
                          args=lambda i: ["--data-dir", str(tmp_path / f"data{i}")],
                          config=lambda i: {"durability": "sync"})
    subscribers = []
    for node in (b, c):
        subscriber = clients(node, "tcp")
        subscriber.subscribe(topic, 2)
        wait_for_metric(node, "fanfare_cluster_qos_consumers", lambda v: v >= 1)
        subscribers.append(subscriber)

    sender = QoS2Sender(unique_id("sender"), topic)
    conn = sender.connect(raw, a)
    sender.serve(conn, lambda: True, lambda: len(sender.acked) >= BEFORE_KILL,
                 RESUME_TIMEOUT_S)
    assert len(sender.acked) >= BEFORE_KILL, "node 1 acknowledges"
    killer = threading.Timer(0.05, a.kill)
    killer.start()
    sender.serve(conn, lambda: True, lambda: False, RESUME_TIMEOUT_S)
    killer.join()
    cut = sender.next

    conn = sender.connect(raw, b)
    more = cut + BEFORE_KILL
    sender.serve(conn, lambda: sender.next < more,
                 lambda: sender.next >= more and sender.in_flight() == 0, RESUME_TIMEOUT_S)
    assert sender.in_flight() == 0, "every exchange completes on node 2"
    assert sorted(sender.acked, key=int) == [b"%d" % n for n in range(more)]

    for node, subscriber in zip(("node 2", "node 3"), subscribers):
        got = drain(subscriber, lambda got: len(got) >= more, RESUME_TIMEOUT_S)
        got += drain(subscriber, lambda got: False, 0.5)
        twice = sorted({p for p in got if got.count(p) > 1}, key=int)
        assert not twice, f"{node}: {len(twice)} came twice, {twice[:10]}"
        assert got == [b"%d" % n for n in range(more)], f"{node}: each once, in order"
