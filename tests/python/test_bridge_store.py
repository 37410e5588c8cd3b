"""Store-and-forward across a bridge (docs/bridges.md): QoS 1 messages for a Mosquitto remote
that is down wait in the bridge's queue under the data directory, survive a clean stop and a
`kill -9` of fanfare, and all arrive in order once the remote is back; a small
`queue_bytes_max` drops the oldest (`drop_oldest`) or refuses the publishers (`refuse`). An
MQTT 5 message keeps its properties and what remains of its expiry across a `kill -9`.

The messages cross while nobody is connected to the remote: a subscriber on Mosquitto makes a
persistent session first, Mosquitto keeps it across its restart (its own persistence), and
the subscriber collects what the session queued once it comes back. So no race decides
whether the subscriber was there before the bridge delivered.
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes

from broker import HOST
from client import Client
from client5 import Client5, props
from scrape import totals, wait_for_metric
from test_bridge import MOSQUITTO, Mosquitto, check_properties

COUNT = 1000
# PUBACK reason codes of an accepted MQTT 5 publish: success, or no matching subscribers here.
ACCEPTED = (0, 0x10)
PAYLOAD_PAD = b"." * 100

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed"),
]


class PersistentMosquitto(Mosquitto):
    """Mosquitto that keeps its sessions across a clean stop (`terminate`)."""

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.stop()
        # Started as root, Mosquitto would switch to its own user, which cannot write its
        # database into the test's private directory; `user` keeps the user it started as.
        user = pwd.getpwuid(os.getuid()).pw_name
        self.conf.write_text(f"listener {self.port} {HOST}\nallow_anonymous true\n"
                             f"user {user}\n"
                             f"persistence true\npersistence_location {workdir}/\n"
                             "max_queued_messages 100000\n")
        self.start()

    def terminate(self) -> None:
        assert self.broker is not None
        assert self.broker.terminate() == 0, "mosquitto did not stop cleanly"


class Sink:
    """A persistent session on the remote that collects what the bridge forwards."""

    def __init__(self, remote: PersistentMosquitto, topic_filter: str, made: list):
        self.remote = remote
        self.client_id = f"sink-{topic_filter.replace('/', '-').replace('#', 'all')}"
        self.made = made
        client = self.connect()
        client.subscribe(topic_filter, 1)
        client.disconnect()

    def connect(self) -> Client:
        client = Client(self.remote.broker, "tcp", self.client_id, clean_session=False)
        self.made.append(client)
        client.connect()
        return client

    def collect(self, expected: int) -> list[bytes]:
        """The payloads queued for the session: `expected` distinct ones, then any more that
        come within a short quiet time (duplicates)."""
        client = self.connect()
        got: list[bytes] = []
        while len(set(got)) < expected:
            got.append(client.wait_for_message().payload)
        while True:
            try:
                got.append(client.wait_for_message(timeout=0.5).payload)
            except AssertionError:
                return got


@pytest.fixture
def remote(tmp_path_factory):
    mosquitto = PersistentMosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def made():
    clients: list = []
    yield clients
    for client in clients:
        client.close()


def bridge_config(remote: Mosquitto, topic: str, **bridge) -> dict:
    return {"bridge": [{
        "name": "up",
        "url": f"mqtt://{HOST}:{remote.port}",
        "keep_alive_s": 5,
        "reconnect_initial_ms": 50,
        "reconnect_max_ms": 200,
        "topics": [{"filter": f"{topic}/#", "direction": "out", "qos": 1}],
        **bridge,
    }]}


def numbered(i: int) -> bytes:
    return b"%05d" % i + PAYLOAD_PAD


def check_in_order(got: list[bytes], expected: list[bytes]) -> int:
    """Every expected payload, first seen in order; duplicates only of earlier ones, as QoS 1
    allows. Returns how many duplicates came."""
    firsts: list[bytes] = []
    seen: set[bytes] = set()
    for payload in got:
        if payload not in seen:
            seen.add(payload)
            firsts.append(payload)
    assert firsts == expected
    return len(got) - len(firsts)


@pytest.mark.parametrize("how,durability", [("clean stop", "batch"), ("kill -9", "sync")])
def test_an_outage_loses_nothing_across_a_restart(start, remote, made, topic, tmp_path, how,
                                                  durability):
    sink = Sink(remote, f"{topic}/#", made)
    remote.terminate()
    args = ["--data-dir", str(tmp_path / "data")]
    config = {**bridge_config(remote, topic), "durability": durability}
    local = start(shards=2, args=args, config=config)
    pub = Client(local, "tcp")
    made.append(pub)
    pub.connect()
    for i in range(COUNT):
        pub.publish(f"{topic}/n", numbered(i), 1)
    wait_for_metric(local, "fanfare_bridge_queued_messages", lambda v: v == COUNT)
    assert (tmp_path / "data" / "bridge-up").is_dir()

    if how == "kill -9":
        local.kill()
    else:
        assert local.terminate() == 0
        local.wait_for_log(f"bridge up: stopped, {COUNT} messages queued")
    again = start(shards=2, args=args, config=config)
    again.wait_for_log(f"bridge up: queue in {tmp_path / 'data' / 'bridge-up'}, {COUNT} messages")
    assert totals(again)["fanfare_bridge_queued_messages"] == COUNT

    remote.start()
    wait_for_metric(again, "fanfare_bridge_connected", lambda v: v == 1)
    wait_for_metric(again, "fanfare_bridge_queued_messages", lambda v: v == 0)
    got = sink.collect(COUNT)
    duplicates = check_in_order(got, [numbered(i) for i in range(COUNT)])
    print(f"{how}: {COUNT} messages in order after the outage, {duplicates} duplicates")
    figures = totals(again)
    assert figures["fanfare_bridge_queue_dropped_total"] == 0
    assert figures["fanfare_bridge_queued_bytes"] == 0


def record_bytes(topic: str, payload: bytes, properties: bytes = b"") -> int:
    """What one message counts against queue_bytes_max (src/bridge/journal.rs): its MESSAGE
    record, with its expiry and its MQTT 5 property bytes."""
    return 8 + 1 + 8 + 2 + len(topic) + 1 + 1 + 8 + 4 + len(payload) + 4 + len(properties)


def test_drop_oldest_keeps_the_newest_within_the_bound(start, remote, made, topic, tmp_path):
    sink = Sink(remote, f"{topic}/#", made)
    remote.terminate()
    kept, sent = 10, 30
    bound = record_bytes(f"{topic}/n", numbered(0)) * kept
    local = start(shards=2, args=["--data-dir", str(tmp_path / "data")],
                  config=bridge_config(remote, topic, queue_bytes_max=bound,
                                       queue_segment_bytes_max=1024))
    pub = Client(local, "tcp")
    made.append(pub)
    pub.connect()
    for i in range(sent):
        pub.publish(f"{topic}/n", numbered(i), 1)
    wait_for_metric(local, "fanfare_bridge_queue_dropped_total", lambda v: v == sent - kept)
    figures = totals(local)
    assert figures["fanfare_bridge_queued_messages"] == kept
    assert figures["fanfare_bridge_queued_bytes"] == bound
    # Files whose messages were all dropped are gone: about the bound plus one file is left.
    files = list((tmp_path / "data" / "bridge-up").glob("*.queue"))
    assert sum(f.stat().st_size for f in files) <= bound + 2048

    remote.start()
    wait_for_metric(local, "fanfare_bridge_queued_messages", lambda v: v == 0)
    got = sink.collect(kept)
    check_in_order(got, [numbered(i) for i in range(sent - kept, sent)])


def test_refuse_stops_the_publishers_until_the_remote_takes_the_queue(start, remote, made,
                                                                       topic):
    sink = Sink(remote, f"{topic}/#", made)
    remote.terminate()
    kept = 10
    bound = record_bytes(f"{topic}/n", numbered(0)) * kept
    # No data directory: the queue is in memory, with the same bound and policy.
    local = start(shards=2, config=bridge_config(remote, topic, queue_bytes_max=bound,
                                                 queue_full_policy="refuse"))
    pub = Client5(local)
    made.append(pub)
    pub.connect()
    for i in range(kept):
        assert pub.publish5(f"{topic}/n", numbered(i), qos=1) in ACCEPTED
    wait_for_metric(local, "fanfare_bridge_queued_messages", lambda v: v == kept)
    assert pub.publish5(f"{topic}/n", numbered(kept), qos=1) == 0x97
    assert pub.publish5(f"{topic}/other", b"bridged too", qos=1) == 0x97
    local_only = Client5(local)
    made.append(local_only)
    local_only.connect()
    assert local_only.publish5("other/topic", b"not bridged", qos=1) in ACCEPTED, \
        "topics no bridge carries are served"
    # Shards publish their figures once a tick.
    wait_for_metric(local, "fanfare_bridge_publishes_refused_total", lambda v: v == 2)
    assert totals(local)["fanfare_bridge_queue_dropped_total"] == 0

    remote.start()
    wait_for_metric(local, "fanfare_bridge_queued_messages", lambda v: v == 0)
    assert pub.publish5(f"{topic}/n", numbered(kept), qos=1) in ACCEPTED, "room again"
    got = sink.collect(kept + 1)
    check_in_order(got, [numbered(i) for i in range(kept + 1)])


def test_mqtt5_properties_and_expiry_survive_a_kill(start, remote, made, topic, tmp_path):
    """An MQTT 5 message queued while the remote is down keeps its properties across a
    `kill -9`, with what remains of its expiry; one whose expiry passes while fanfare is down
    is dropped at load and counted."""
    sink_id = f"sink5-{topic.replace('/', '-')}"
    session = props(PacketTypes.CONNECT, SessionExpiryInterval=3600)

    def sink() -> Client5:
        client = Client5(remote.broker, "tcp", sink_id)
        made.append(client)
        client.connect(clean_start=False, properties=session)
        return client

    first = sink()
    first.subscribe(f"{topic}/#", 1)
    first.disconnect5()
    remote.terminate()
    args = ["--data-dir", str(tmp_path / "data")]
    config = {**bridge_config(remote, topic, protocol="5"), "durability": "sync"}
    local = start(shards=2, args=args, config=config)
    pub = Client5(local, "tcp")
    made.append(pub)
    pub.connect()
    expiry_s = 3600
    lasting = props(PacketTypes.PUBLISH, UserProperty=[("origin", "sensor"), ("origin", "again")],
                    ContentType="application/json", PayloadFormatIndicator=1,
                    ResponseTopic="replies/7", CorrelationData=b"\x00\x07",
                    MessageExpiryInterval=expiry_s)
    brief = props(PacketTypes.PUBLISH, MessageExpiryInterval=1)
    assert pub.publish5(f"{topic}/brief", b"brief", 1, properties=brief) in ACCEPTED
    assert pub.publish5(f"{topic}/x", b'{"out": 1}', 1, properties=lasting) in ACCEPTED
    wait_for_metric(local, "fanfare_bridge_queued_messages", lambda v: v == 2)
    local.kill()
    # Not a timing assert: the wait only makes sure the brief message's second has passed.
    time.sleep(1.5)

    again = start(shards=2, args=args, config=config)
    again.wait_for_log("bridge up: 1 queued messages expired while the broker was down")
    figures = totals(again)
    assert figures["fanfare_bridge_queued_messages"] == 1
    assert figures["fanfare_bridge_dropped_out_total"] == 1
    # The bound counts the property bytes: two user properties (17 + 16), content type (19),
    # payload format (2), response topic (12) and correlation data (5).
    property_bytes = 17 + 16 + 19 + 2 + 12 + 5
    assert figures["fanfare_bridge_queued_bytes"] == record_bytes(
        f"{topic}/x", b'{"out": 1}', b"." * property_bytes)
    remote.start()
    wait_for_metric(again, "fanfare_bridge_queued_messages", lambda v: v == 0)
    got = sink().wait_for_message()
    assert got.topic == f"{topic}/x"
    assert got.payload == b'{"out": 1}'
    check_properties(got, expiry_s)
