"""Fan-out across shards keeps every message and per-publisher order."""

import threading

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
