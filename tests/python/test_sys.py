"""The `$SYS` topics: every `sys_interval_s` the broker publishes its figures, summed over the
shards, as retained messages under Mosquitto's names, read with paho-mqtt and `mosquitto_sub`.

Every wait has a timeout; nothing asserts how long a publication took.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.fanfare_only

SYS = "$SYS/broker/"
WAIT_S = 10.0


def wait_for(client, checks: dict, timeout: float = WAIT_S) -> dict:
    """Reads `client`'s messages until every topic of `checks` came with a payload its check
    accepts (`None`: any payload); returns those messages by topic."""
    deadline = time.monotonic() + timeout
    found = {}
    while set(found) != set(checks):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"waiting for {sorted(set(checks) - set(found))}"
        msg = client.wait_for_message(remaining)
        check = checks.get(msg.topic)
        if msg.topic in checks and (check is None or check(msg.payload.decode())):
            found[msg.topic] = msg
    return found


def test_the_topics_appear_under_mosquittos_names(start, clients):
    broker = start(shards=2, config={"sys_interval_s": 1})
    sub = clients(broker)
    sub.subscribe("$SYS/#")
    topics = ["version", "uptime", "clients/connected", "clients/total", "clients/maximum",
              "clients/disconnected", "messages/received", "messages/sent",
              "publish/messages/dropped", "subscriptions/count", "retained messages/count",
              "bytes/received", "bytes/sent", "fanfare/slow-consumer/dropped-newest",
              "fanfare/slow-consumer/dropped-oldest", "fanfare/slow-consumer/conflated",
              "fanfare/slow-consumer/disconnected", "fanfare/session-queue/dropped"]
    topics += [f"load/{what}/{window}"
               for what in ("messages/received", "messages/sent", "publish/dropped",
                            "bytes/received", "bytes/sent")
               for window in ("1min", "5min", "15min")]
    got = wait_for(sub, {SYS + topic: None for topic in topics})
    assert got[SYS + "version"].payload.decode().startswith("fanfare version ")
    uptime, unit = got[SYS + "uptime"].payload.decode().split()
    assert int(uptime) >= 0 and unit == "seconds"
    for topic in topics:
        payload = got[SYS + topic].payload.decode()
        if topic.startswith("load/"):
            assert float(payload) >= 0, (topic, payload)
        elif topic not in ("version", "uptime"):
            assert int(payload) >= 0, (topic, payload)
    # The subscriber itself, whichever shard holds it; the $SYS topics are retained.
    wait_for(sub, {SYS + "clients/connected": lambda n: n == "1",
                   SYS + "subscriptions/count": lambda n: int(n) >= 1,
                   SYS + "retained messages/count": lambda n: int(n) >= len(topics)})


def test_they_are_retained_for_a_late_subscriber(start, clients):
    broker = start(shards=2, config={"sys_interval_s": 1})
    first = clients(broker)
    first.subscribe(SYS + "version")
    first.wait_for_message()
    late = clients(broker)
    late.subscribe("$SYS/broker/+")
    got = wait_for(late, {SYS + "version": None, SYS + "uptime": None})
    assert got[SYS + "version"].retain and got[SYS + "uptime"].retain


def test_clients_connected_follows_the_connected_clients(start, clients):
    broker = start(shards=2, config={"sys_interval_s": 1})
    watcher = clients(broker)
    watcher.subscribe(SYS + "clients/connected")
    others = [clients(broker, transport) for transport in ("tcp", "ws", "tcp")]
    wait_for(watcher, {SYS + "clients/connected": lambda n: n == "4"})
    for other in others[:2]:
        other.close()
    wait_for(watcher, {SYS + "clients/connected": lambda n: n == "2"})


def test_messages_and_bytes_received_grow_after_publishes(start, clients, topic):
    broker = start(shards=2, config={"sys_interval_s": 1})
    watcher = clients(broker)
    watcher.subscribe(SYS + "messages/received")
    watcher.subscribe(SYS + "bytes/received")
    before = wait_for(watcher, {SYS + "messages/received": None, SYS + "bytes/received": None})
    messages = int(before[SYS + "messages/received"].payload)
    received = int(before[SYS + "bytes/received"].payload)
    pub = clients(broker, "ws")
    for i in range(5):
        pub.publish(f"{topic}/{i}", "x" * 1000, 1)
    wait_for(watcher, {SYS + "messages/received": lambda n: int(n) >= messages + 5,
                       SYS + "bytes/received": lambda n: int(n) >= received + 5000})


def test_a_subscription_to_hash_does_not_get_them(start, clients):
    broker = start(shards=2, config={"sys_interval_s": 1})
    everything = clients(broker)
    everything.subscribe("#")
    sys_sub = clients(broker)
    sys_sub.subscribe(SYS + "uptime")
    # Two publications made while `#` was subscribed (the retained one may predate it).
    seen = set()
    while len(seen) < 2:
        msg = sys_sub.wait_for_message(WAIT_S)
        if not msg.retain:
            seen.add(msg.payload)
    everything.expect_no_message()


def test_without_topic_rules_a_client_may_publish_there_and_the_broker_corrects_it(start,
                                                                                   clients):
    broker = start(config={"sys_interval_s": 1})
    sub = clients(broker)
    sub.subscribe(SYS + "version")
    sub.wait_for_message()
    clients(broker).publish(SYS + "version", "not a version", 1, retain=True)
    wait_for(sub, {SYS + "version": lambda v: v == "not a version"})
    wait_for(sub, {SYS + "version": lambda v: v.startswith("fanfare version ")})


def test_an_interval_of_0_publishes_none(start, clients):
    broker = start(shards=2, config={"sys_interval_s": 0})
    sub = clients(broker)
    sub.subscribe("$SYS/#")
    sub.expect_no_message(2.0)


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None,
                    reason="mosquitto_sub missing (Debian's mosquitto-clients)")
def test_mosquitto_sub_reads_them(start):
    broker = start(shards=2, config={"sys_interval_s": 1})
    count = 30
    sub = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port("tcp")),
                          "-t", "$SYS/#", "-C", str(count), "-W", "20", "-v"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert sub.returncode == 0, sub.stderr
    lines = sub.stdout.splitlines()
    assert len(lines) == count
    assert all(line.startswith(SYS) for line in lines), lines
    assert any(line.startswith(SYS + "version fanfare version ") for line in lines), lines
