"""What a persistent session holds besides its subscriptions and queue, across a `kill -9`
of the broker (`--data-dir`, durability "sync"): in-flight publishes come back with their
packet identifiers and DUP = 1, PUBREL state comes back as PUBREL, inbound QoS 2 state keeps a
publisher's exchange exactly once, a delayed will is published after the restart, and the
offline-session bound applies to the sessions loaded.

Raw packets (`rawmqtt.py`) where a library would hide the packet identifiers. One shard, so a
retained "barrier" written after a change is on disk only once that change is (one shard's
writes reach the store in order)."""

from __future__ import annotations

import struct

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes

import rawmqtt as m
from client import unique_id
from client5 import Client5, props
from scrape import wait_for_metric
from test_persistence import wait_on_disk

pytestmark = pytest.mark.fanfare_only


@pytest.fixture
def data_broker(start, tmp_path):
    """`data_broker(**config)`: a one-shard broker on the test's data directory, durability
    "sync"; called again after a kill, the same directory."""
    data = tmp_path / "data"

    def _start(**config):
        return start(shards=1, args=["--data-dir", str(data)],
                     config={"durability": "sync", **config})

    _start.data = data
    return _start


def barrier(clients, broker, data, topic: str) -> None:
    """Waits until every change the broker made before now is on disk: a retained message
    published after them is written after them."""
    marker = unique_id("barrier").encode()
    clients(broker, "tcp").publish(f"{topic}/barrier", marker, 1, retain=True)
    wait_on_disk(data, marker)


def nothing_more(conn: m.Mqtt, seconds: float = 0.5) -> None:
    try:
        pkt = conn.read(seconds)
    except TimeoutError:
        return
    raise AssertionError(f"nothing more expected, got {pkt}")


def test_an_unacknowledged_qos1_publish_comes_back_with_dup_and_its_identifier(
        data_broker, clients, raw, topic):
    first = data_broker()
    cid = unique_id("dup1")
    sub = raw(first)
    sub.handshake(cid, clean=False)
    sub.send(m.subscribe(1, (topic, 1)))
    sub.expect(m.SUBACK)
    pub = clients(first, "tcp")
    pub.publish(topic, b"one", 1)
    pub.publish(topic, b"two", 1)
    sent = [sub.expect(m.PUBLISH) for _ in range(2)]
    assert [p.payload for p in sent] == [b"one", b"two"]
    sub.abort()  # no PUBACK
    # Published once the broker saw the connection go: queued, not sent.
    wait_for_metric(first, "fanfare_offline_sessions", lambda n: n == 1)
    pub.publish(topic, b"queued", 1)
    barrier(clients, first, data_broker.data, topic)
    first.kill()

    second = data_broker()
    back = raw(second)
    assert back.handshake(cid, clean=False).body == b"\x01\x00", "session present"
    again = [back.expect(m.PUBLISH) for _ in range(3)]
    # [MQTT-4.4.0-1]: sent again with their identifiers and DUP, in order; then the queue.
    assert [(p.payload, p.packet_id, p.dup) for p in again[:2]] == [
        (p.payload, p.packet_id, True) for p in sent]
    assert again[2].payload == b"queued" and not again[2].dup
    assert again[2].packet_id not in {p.packet_id for p in sent}
    for p in again:
        back.send(m.ack(m.PUBACK, p.packet_id))
    nothing_more(back)


def test_a_qos2_subscriber_past_pubrec_gets_pubrel_not_the_message(
        data_broker, clients, raw, topic):
    first = data_broker()
    cid = unique_id("rel2")
    sub = raw(first)
    sub.handshake(cid, clean=False)
    sub.send(m.subscribe(1, (topic, 2)))
    sub.expect(m.SUBACK)
    clients(first, "tcp").publish(topic, b"exactly once", 2)
    delivered = sub.expect(m.PUBLISH)
    assert delivered.qos == 2
    sub.send(m.ack(m.PUBREC, delivered.packet_id))
    assert sub.expect(m.PUBREL).packet_id == delivered.packet_id
    barrier(clients, first, data_broker.data, topic)
    first.kill()

    second = data_broker()
    back = raw(second)
    assert back.handshake(cid, clean=False).body == b"\x01\x00", "session present"
    pubrel = back.expect(m.PUBREL)
    assert (pubrel.packet_id, pubrel.flags) == (delivered.packet_id, 0x02)
    back.send(m.ack(m.PUBCOMP, pubrel.packet_id))
    # The message itself is not delivered again; the next one is.
    clients(second, "tcp").publish(topic, b"next", 2)
    after = back.expect(m.PUBLISH)
    assert after.payload == b"next"


def connect5(client_id: str, *, clean_start: bool, expiry_s: int) -> bytes:
    """An MQTT 5 CONNECT with a Session Expiry Interval (§3.1.2.11.2)."""
    properties = bytes([0x11]) + struct.pack("!I", expiry_s)
    body = (m.utf8("MQTT") + bytes([5, 0x02 if clean_start else 0]) + struct.pack("!H", 60)
            + m.varint(len(properties)) + properties + m.utf8(client_id))
    return m.packet(m.CONNECT, 0, body)


def publish5(topic: str, payload: bytes, packet_id: int, *, qos: int, dup: bool = False
             ) -> bytes:
    """An MQTT 5 QoS 1 or 2 PUBLISH without properties."""
    body = m.utf8(topic) + struct.pack("!H", packet_id) + b"\x00" + payload
    return m.packet(m.PUBLISH, (0x08 if dup else 0) | (qos << 1), body)


def reason(ack: m.Packet) -> int:
    """The reason code of an MQTT 5 acknowledgement; absent is 0 (§3.4.2.1)."""
    return ack.body[2] if len(ack.body) > 2 else 0


@pytest.mark.parametrize("level", [4, 5])
def test_a_qos2_publisher_past_pubrec_is_answered_after_a_restart(
        data_broker, clients, raw, topic, level):
    first = data_broker()
    cid = unique_id("pub2")
    sub_id = unique_id("sub2")
    sub = raw(first)
    sub.handshake(sub_id, clean=False)
    sub.send(m.subscribe(1, (topic, 2)))
    sub.expect(m.SUBACK)

    def open_publisher(broker, present: bool) -> m.Mqtt:
        """The publisher's connection to its persistent session, `present` or new."""
        conn = raw(broker)
        if level == 5:
            conn.send(connect5(cid, clean_start=False, expiry_s=3600))
            connack = conn.expect(m.CONNACK)
        else:
            connack = conn.handshake(cid, clean=False)
        assert connack.body[0] == int(present), "session present"
        return conn

    def publish(conn: m.Mqtt, payload: bytes, packet_id: int, qos: int, dup: bool = False):
        if level == 5:
            conn.send(publish5(topic, payload, packet_id, qos=qos, dup=dup))
        else:
            conn.send(m.publish(topic, payload, qos=qos, packet_id=packet_id, dup=dup))

    pub = open_publisher(first, present=False)
    publish(pub, b"once", 5, 2)
    assert pub.expect(m.PUBREC).packet_id == 5
    delivered = sub.expect(m.PUBLISH)
    assert delivered.payload == b"once"
    sub.send(m.ack(m.PUBREC, delivered.packet_id))
    sub.expect(m.PUBREL)
    sub.send(m.ack(m.PUBCOMP, delivered.packet_id))
    sub.close()
    barrier(clients, first, data_broker.data, topic)
    first.kill()

    second = data_broker()
    pub = open_publisher(second, present=True)
    # The PUBREC "was lost": the PUBLISH again, with DUP, is recognised and not routed.
    publish(pub, b"once", 5, 2, dup=True)
    rec = pub.expect(m.PUBREC)
    assert (rec.packet_id, reason(rec) if level == 5 else 0) == (5, 0)
    pub.send(m.ack(m.PUBREL, 5))
    comp = pub.expect(m.PUBCOMP)
    # Known: 0x00 Success, not 0x92 Packet Identifier not found.
    assert (comp.packet_id, reason(comp) if level == 5 else 0) == (5, 0)
    publish(pub, b"after", 6, 1)
    pub.expect(m.PUBACK)
    back = raw(second)
    assert back.handshake(sub_id, clean=False).body == b"\x01\x00", "session present"
    while (pkt := back.read()).ptype == m.PUBREL:
        # The subscriber's own exchange, if its PUBCOMP did not reach the disk: finished.
        back.send(m.ack(m.PUBCOMP, pkt.packet_id))
    assert (pkt.ptype, pkt.payload) == (m.PUBLISH, b"after"), "the QoS 2 message came once"


def test_a_delayed_will_is_published_after_the_restart(data_broker, clients, topic):
    first = data_broker()
    watcher_id = unique_id("watch")
    watcher = clients(first, "tcp", watcher_id, clean_session=False)
    watcher.subscribe(f"{topic}/will", 1)
    watcher.disconnect()
    dying = Client5(first, will=(f"{topic}/will", b"gone", 1, False),
                    will_properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=2))
    dying.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=3600))
    dying.drop()
    wait_for_metric(first, "fanfare_offline_sessions", lambda n: n == 2)
    barrier(clients, first, data_broker.data, topic)
    first.kill()

    second = data_broker()
    # Published by this broker at its deadline, into the watcher's session.
    wait_for_metric(second, "fanfare_wills_published_total", lambda n: n == 1)
    back = clients(second, "tcp", watcher_id, clean_session=False, connect=False)
    assert back.connect() is True
    assert back.wait_for_message().payload == b"gone"


def test_a_will_comes_back_cancelled_when_its_client_does(data_broker, clients, topic):
    first = data_broker()
    cid = unique_id("dying")
    will_props = props(PacketTypes.WILLMESSAGE, WillDelayInterval=3600)
    connect_props = props(PacketTypes.CONNECT, SessionExpiryInterval=3600)
    dying = Client5(first, client_id=cid, will=(f"{topic}/will", b"gone", 1, False),
                    will_properties=will_props)
    dying.connect(properties=connect_props)
    dying.drop()
    wait_for_metric(first, "fanfare_offline_sessions", lambda n: n == 1)
    barrier(clients, first, data_broker.data, topic)
    first.kill()

    second = data_broker()
    assert "1 sessions loaded" in second.wait_for_log("sessions loaded")
    watcher = clients(second, "tcp")
    watcher.subscribe(f"{topic}/will", 1)
    back = Client5(second, client_id=cid)
    try:
        assert back.connect(clean_start=False, properties=connect_props) is True
    finally:
        back.close()
    # Its session ends now, and with it a will still waiting would be published
    # (§3.1.3.2.2): the reconnection cancelled it [MQTT-3.1.3-9].
    ender = Client5(second, client_id=cid)
    try:
        assert ender.connect(clean_start=True) is False
    finally:
        ender.close()
    clients(second, "tcp").publish(f"{topic}/will", b"marker", 1)
    assert watcher.wait_for_message().payload == b"marker"


def test_the_offline_bound_applies_at_load(data_broker, clients, topic):
    first = data_broker()
    ids = [unique_id("off") for _ in range(3)]
    for cid in ids:
        c = clients(first, "tcp", cid, clean_session=False)
        c.subscribe(topic, 1)
        c.disconnect()
        # Each offline from its own moment: kept in that order.
        barrier(clients, first, data_broker.data, f"{topic}/{cid}")
    first.kill()

    second = data_broker(limits={"offline_sessions_per_shard_max": 2})
    line = second.wait_for_log("past offline_sessions_per_shard_max")
    assert "1 of the 3 sessions loaded ended" in line
    present = []
    # The newest first: a session begun again for the oldest would go offline in turn.
    for cid in reversed(ids):
        c = clients(second, "tcp", cid, clean_session=False, connect=False)
        present.append(c.connect())
        c.disconnect()
    assert present == [True, True, False], "the longest offline ended"
