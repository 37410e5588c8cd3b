"""Fan-out across shards keeps every message and per-publisher order."""

import threading
import time

from client import unique_id

SUBSCRIBERS = 20
PUBLISHERS = 4
MESSAGES = 200


def test_multi_shard_fanout_order(start, clients, topic):
    broker = start(shards=2)
    subs = []
    for i in range(SUBSCRIBERS):
        s = clients(broker, "ws" if i % 4 == 0 else "tcp", unique_id(f"fan{i}"))
        s.subscribe(topic + "/#", 1)
        subs.append(s)
    pubs = [clients(broker, "tcp" if p % 2 else "ws", unique_id(f"pub{p}")) for p in range(PUBLISHERS)]

    errors = []

    def run(p, pub):
        try:
            for n in range(MESSAGES):
                pub.publish(f"{topic}/{p}", f"{p}:{n}", 1, timeout=20)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p, pub)) for p, pub in enumerate(pubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    for s in subs:
        seen = {p: [] for p in range(PUBLISHERS)}
        for _ in range(PUBLISHERS * MESSAGES):
            p, n = s.wait_for_message(timeout=10).payload.decode().split(":")
            seen[int(p)].append(int(n))
        # [MQTT-4.6.0-5]: order per publisher (ordered topic) is kept; nothing lost, nothing doubled.
        for p in range(PUBLISHERS):
            assert seen[p] == list(range(MESSAGES)), f"{s.client_id}: publisher {p} out of order"
        s.expect_no_message(0.05)


def test_subscriber_on_each_shard_gets_publish_from_the_other(start, clients, topic):
    broker = start(shards=2)
    subs = [clients(broker, "tcp", f"cross-shard-{i}") for i in range(8)]
    for s in subs:
        s.subscribe(topic, 2)
    pubs = [clients(broker, "ws", f"cross-pub-{i}") for i in range(4)]
    for i, p in enumerate(pubs):
        p.publish(topic, f"from {i}", 2)
    for s in subs:
        got = sorted(s.wait_for_message().payload for _ in pubs)
        assert got == sorted(f"from {i}".encode() for i in range(len(pubs)))


BURST = 2000
BURST_PAYLOAD_BYTES = 512


def test_a_full_cross_shard_backlog_slows_the_publisher_and_loses_nothing(start, clients, topic):
    """One queue slot between shards and a 4 KiB backlog: a burst from one publisher overflows
    both, so the broker stops reading the publisher until the other shard caught up. Every
    subscriber, on either shard, still gets every message, in order."""
    from rawmqtt import TcpConn, connect, publish
    from scrape import fetch_metrics, parse

    broker = start(shards=2, config={"limits": {
        "cross_shard_queue_len_max": 1,
        "cross_shard_backlog_bytes_max": 4096,
        # The subscribers must not be the bottleneck here.
        "queue_bytes_max": 16 * 1024 * 1024,
    }})
    # Client ids spread over both shards, so some subscribers share the publisher's shard and
    # the others are reached only through the cross-shard queue.
    subs = [clients(broker, "tcp", unique_id(f"burst-sub{i}")) for i in range(6)]
    for s in subs:
        s.subscribe(topic, 0)
    pub = TcpConn(broker.host, broker.tcp_port)
    pub.send(connect(unique_id("burst-pub")))
    assert pub.recv_some(5.0)[:1] == b"\x20", "CONNACK"
    padding = b"x" * (BURST_PAYLOAD_BYTES - 8)
    pub.send(b"".join(publish(topic, b"%08d" % n + padding) for n in range(BURST)))

    for s in subs:
        got = [int(s.wait_for_message(timeout=20).payload[:8]) for _ in range(BURST)]
        assert got == list(range(BURST)), f"{s.client_id}: lost or reordered"
    # Shards publish their figures once a tick (100 ms): wait for one after the drain.
    time.sleep(0.3)
    status, _, text = fetch_metrics(broker)
    assert status == 200
    metrics = parse(text)
    assert sum(metrics["fanfare_receives_paused_total"].values()) >= 1, "the publisher was slowed"
    assert sum(metrics["fanfare_cross_shard_backlog_bytes"].values()) == 0, "the backlog drained"
    pub.close()
