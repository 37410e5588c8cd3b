"""Slow consumers: a subscriber that stops reading costs the others nothing and the broker a
bounded amount of memory; its backlog is handled by the configured policy.

The stalled subscriber is a raw socket with a small receive buffer that never reads until the
test says so. Publishing is paced by a healthy subscriber that must receive every message (the
test waits for it after each batch), so what is checked is the broker's behaviour, never its
speed: every wait has a deadline, and no assertion is about time.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from broker import Broker, write_toml
from rawmqtt import SUBACK, Mqtt, TcpConn, assert_loopback, publish, subscribe
from scrape import wait_for_metric

WAIT_S = 60.0


def rss_bytes(broker: Broker) -> int:
    with open(f"/proc/{broker.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")


def stalled_subscriber(broker: Broker, client_id: str, topic_filter: str) -> Mqtt:
    """Subscribed, then never read from: a 4 KiB receive buffer fills at once."""
    assert_loopback(broker.host)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5.0)
    sock.connect((broker.host, broker.tcp_port))
    conn = TcpConn.__new__(TcpConn)
    conn.sock = sock
    mqtt = Mqtt(conn)
    mqtt.handshake(client_id)
    mqtt.send(subscribe(1, (topic_filter, 0)))
    mqtt.expect(SUBACK)
    return mqtt


class Reader:
    """Reads QoS 0 publishes on its own thread: how many, and the last payload per topic."""

    def __init__(self, mqtt: Mqtt):
        self.sock = mqtt.conn.sock
        self.buf = bytes(mqtt.buf)
        self.count = 0
        self.last: dict[str, bytes] = {}
        self.order_errors = 0
        self.lock = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self._parse(self.buf + data)

    def _parse(self, buf: bytes) -> None:
        pos = 0
        with self.lock:
            while True:
                if len(buf) - pos < 2:
                    break
                length, shift, head = 0, 0, pos + 1
                while head < len(buf):
                    byte = buf[head]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    head += 1
                    if not byte & 0x80:
                        break
                else:
                    break
                if len(buf) < head + length:
                    break
                if buf[pos] >> 4 == 3:
                    (n,) = struct.unpack_from("!H", buf, head)
                    topic = buf[head + 2 : head + 2 + n].decode()
                    payload = buf[head + 2 + n : head + length]
                    previous = self.last.get(topic)
                    if previous is not None and seq(payload) <= seq(previous):
                        self.order_errors += 1
                    self.last[topic] = payload
                    self.count += 1
                pos = head + length
            self.lock.notify_all()
        self.buf = buf[pos:]

    def wait_count(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            with self.lock:
                if self.count >= count:
                    return
                got = self.count
            assert self.thread.is_alive(), f"reader's connection ended after {got} publishes"
            assert time.monotonic() < deadline, f"only {got} of {count} publishes arrived"
            with self.lock:
                self.lock.wait(0.05)

    def wait_for(self, done) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            with self.lock:
                if done(self):
                    return
            assert time.monotonic() < deadline, f"not all expected publishes arrived: {self.last}"
            with self.lock:
                self.lock.wait(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def seq(payload: bytes) -> int:
    return struct.unpack_from("!I", payload, 0)[0]


def paced_publish(pub: Mqtt, healthy: Reader, topics: list[str], first: int, count: int,
                  payload_bytes: int) -> dict[str, int]:
    """Publishes `count` messages round-robin over `topics`, sequence numbers from `first`;
    after each batch waits until `healthy` has them all. A batch is 32 KiB, half the default
    `queue_bytes_max`, so a reader that keeps up loses nothing. Returns the last sequence per
    topic."""
    batch = max(1, 32 * 1024 // payload_bytes)
    last = {}
    sent = first
    filler = b"x" * (payload_bytes - 4)
    while sent < first + count:
        chunk = []
        for number in range(sent, min(sent + batch, first + count)):
            topic = topics[number % len(topics)]
            chunk.append(publish(topic, struct.pack("!I", number) + filler))
            last[topic] = number
        pub.send(b"".join(chunk))
        sent += len(chunk)
        healthy.wait_count(sent)
    return last


@pytest.fixture
def readers():
    made: list[Reader] = []

    def _make(mqtt: Mqtt) -> Reader:
        reader = Reader(mqtt)
        made.append(reader)
        return reader

    yield _make
    for reader in made:
        reader.close()


def stalled_healthy_and_publisher(broker: Broker, raw, readers, topic: str):
    """The cast of every test here: a subscriber to `topic/#` that never reads, one that
    reads everything on its own thread, and a publisher."""
    stalled = stalled_subscriber(broker, "stalled", f"{topic}/#")
    healthy_mqtt = raw(broker)
    healthy_mqtt.handshake("healthy")
    healthy_mqtt.send(subscribe(1, (f"{topic}/#", 0)))
    healthy_mqtt.expect(SUBACK)
    healthy = readers(healthy_mqtt)
    pub = raw(broker)
    pub.handshake("publisher")
    return stalled, healthy, pub


@pytest.mark.fanfare_only
def test_stalled_subscriber_costs_others_nothing_and_memory_stays_bounded(
        start, raw, readers, topic):
    broker = start()
    stalled, healthy, pub = stalled_healthy_and_publisher(broker, raw, readers, topic)
    topics = [f"{topic}/{i}" for i in range(100)]

    # Warm-up: queues and buffers reach their working size, the stalled reader its bound.
    paced_publish(pub, healthy, topics, 0, 2_000, payload_bytes=1000)
    before = rss_bytes(broker)
    paced_publish(pub, healthy, topics, 2_000, 48_000, payload_bytes=1000)
    after = rss_bytes(broker)

    assert healthy.count == 50_000, "the healthy subscriber got every publish"
    assert healthy.order_errors == 0, "in order"
    # 48 MB went to the stalled subscriber; held, it would show here.
    assert after - before < 16 * 1024 * 1024, f"RSS grew from {before} to {after} bytes"
    assert "reads too slowly" in broker.log()
    wait_for_metric(broker, "fanfare_slow_consumer_dropped_oldest_total", lambda n: n > 0)
    stalled.close()


@pytest.mark.fanfare_only
def test_conflate_gives_a_stalled_subscriber_the_latest_value_of_each_topic(
        start, raw, readers, topic):
    broker = start(config={
        "tcp_slow_consumer": "drop-newest",
        "policy": [{"filter": f"{topic}/#", "on_full": "conflate"}],
    })
    stalled, healthy, pub = stalled_healthy_and_publisher(broker, raw, readers, topic)
    topics = [f"{topic}/score/{i}" for i in range(20)]
    total = 20_000

    # 20 000 × 200 B is far more than the queue bound and the kernel buffers together.
    latest = paced_publish(pub, healthy, topics, 0, total, payload_bytes=200)

    late = readers(stalled)
    late.wait_for(lambda r: all(
        topic_name in r.last and seq(r.last[topic_name]) == number
        for topic_name, number in latest.items()))
    # Nothing older follows: a marker published now arrives after everything queued.
    pub.send(publish(f"{topic}/end", struct.pack("!I", total)))
    late.wait_for(lambda r: f"{topic}/end" in r.last)
    for topic_name, number in latest.items():
        assert seq(late.last[topic_name]) == number, topic_name
    assert late.order_errors == 0
    assert late.count < total // 2, f"conflated: {late.count} of {total} delivered"
    assert "policy conflate" in broker.log()
    wait_for_metric(broker, "fanfare_slow_consumer_conflated_total", lambda n: n > 0)


@pytest.mark.fanfare_only
def test_disconnect_policy_closes_a_stalled_subscriber(start, raw, readers, topic):
    broker = start(config={"tcp_slow_consumer": "disconnect"})
    stalled, healthy, pub = stalled_healthy_and_publisher(broker, raw, readers, topic)
    paced_publish(pub, healthy, [f"{topic}/a"], 0, 5_000, payload_bytes=200)
    stalled.wait_closed(timeout=WAIT_S)
    assert "peer stopped reading" in broker.log()
    wait_for_metric(broker, "fanfare_slow_consumer_disconnects_total", lambda n: n == 1)


@pytest.mark.fanfare_only
def test_sighup_changes_the_slow_consumer_policy_live(start, raw, readers, topic):
    broker = start(config={"tcp_slow_consumer": "drop-oldest"})
    args = broker.proc.args
    config_file = args[args.index("--config") + 1]
    write_toml(Path(config_file), {"tcp_slow_consumer": "disconnect"})
    broker.reload()
    broker.wait_for_log("reloaded, applied: tcp_slow_consumer")
    stalled, healthy, pub = stalled_healthy_and_publisher(broker, raw, readers, topic)
    paced_publish(pub, healthy, [f"{topic}/a"], 0, 5_000, payload_bytes=200)
    stalled.wait_closed(timeout=WAIT_S)
    wait_for_metric(broker, "fanfare_slow_consumer_disconnects_total", lambda n: n == 1)
