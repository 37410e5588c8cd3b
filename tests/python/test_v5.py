"""MQTT 5 end to end with paho-mqtt (protocol=MQTTv5), over TCP and WebSocket: one test per
feature of the broker's MQTT 5 support, and 3.1 / 3.1.1 / 5 clients on one topic."""

from __future__ import annotations

import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes

import rawmqtt as m
from broker import owner_shard
from client import MQTTv31, MQTTv311, unique_id
from client5 import Client5, props

pytestmark = pytest.mark.fanfare_only

CONNECT = PacketTypes.CONNECT
PUBLISH = PacketTypes.PUBLISH
SUBSCRIBE = PacketTypes.SUBSCRIBE
DISCONNECT = PacketTypes.DISCONNECT
WILL = PacketTypes.WILLMESSAGE


@pytest.fixture
def v5(broker, clients, transport):
    """`v5(connect=True, **kw)`: an MQTT 5 client of this test's broker and transport."""
    made = []

    def _make(client_id=None, connect=True, **kw):
        c = Client5(broker, transport, client_id, **kw)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield _make
    for c in made:
        c.close()


def test_connack_properties_and_assigned_client_id(v5):
    c = v5(client_id="")
    p = c.connack_properties
    assert p.AssignedClientIdentifier.startswith("fanfare-")
    assert p.ReceiveMaximum >= 1
    assert p.TopicAliasMaximum >= 1
    assert p.SharedSubscriptionAvailable == 1
    assert p.SubscriptionIdentifierAvailable == 1
    assert p.WildcardSubscriptionAvailable == 1
    assert not hasattr(p, "MaximumQoS"), "QoS 2 is supported"


def test_session_expiry_keeps_the_session(v5, topic):
    sub = v5(connect=False)
    session = props(CONNECT, SessionExpiryInterval=30)
    assert sub.connect(properties=session) is False
    sub.subscribe(topic, 1)
    sub.disconnect5()
    pub = v5()
    pub.publish5(topic, b"while away", qos=1)
    again = v5(client_id=sub.client_id, connect=False)
    assert again.connect(clean_start=False, properties=session) is True
    assert again.wait_for_message().payload == b"while away"


def test_will_delay_and_will_properties(v5, topic):
    watcher = v5()
    watcher.subscribe(topic + "/will", 0)
    will_props = props(WILL, WillDelayInterval=1, ContentType="text/plain")
    c = v5(connect=False, will=(topic + "/will", b"gone", 0, False),
           will_properties=will_props)
    c.connect(properties=props(CONNECT, SessionExpiryInterval=10))
    c.drop()
    watcher.expect_no_message(0.5)
    msg = watcher.wait_for_message(timeout=3.0)
    assert msg.payload == b"gone"
    assert msg.properties.ContentType == "text/plain"


def test_disconnect_with_will_message(v5, topic):
    watcher = v5()
    watcher.subscribe(topic, 0)
    c = v5(connect=False, will=(topic, b"asked for", 0, False))
    c.connect()
    c.disconnect5(reason=0x04)
    assert watcher.wait_for_message().payload == b"asked for"


def test_topic_alias_and_unknown_alias_disconnects(v5, topic):
    sub = v5()
    sub.subscribe(topic, 0)
    pub = v5()
    pub.publish5(topic, b"one", properties=props(PUBLISH, TopicAlias=1))
    pub.publish5("", b"two", properties=props(PUBLISH, TopicAlias=1))
    assert [sub.wait_for_message().payload for _ in range(2)] == [b"one", b"two"]
    pub.publish5("", b"three", properties=props(PUBLISH, TopicAlias=9))
    assert pub.wait_for_disconnect_reason() == 0x94


def test_message_expiry_on_retained_messages(v5, topic):
    pub = v5()
    pub.publish5(topic, b"short", retain=True, qos=1,
                 properties=props(PUBLISH, MessageExpiryInterval=1))
    sub = v5()
    sub.subscribe(topic, 0)
    msg = sub.wait_for_message()
    assert msg.payload == b"short"
    assert msg.properties.MessageExpiryInterval == 1
    time.sleep(1.2)
    late = v5()
    late.subscribe(topic, 0)
    late.expect_no_message(0.5)


def test_maximum_packet_size_skips_that_subscriber(v5, topic):
    small = v5(connect=False)
    small.connect(properties=props(CONNECT, MaximumPacketSize=128))
    small.subscribe(topic, 1)
    big = v5()
    big.subscribe(topic, 1)
    pub = v5()
    pub.publish5(topic, b"x" * 500, qos=1)
    pub.publish5(topic, b"small", qos=1)
    assert big.wait_for_message().payload == b"x" * 500
    assert small.wait_for_message().payload == b"small"


def test_payload_format_invalid_gets_0x99(v5, topic):
    pub = v5()
    utf8 = props(PUBLISH, PayloadFormatIndicator=1)
    assert pub.publish5(topic, b"\xff\xfe", qos=1, properties=utf8) == 0x99
    assert pub.publish5(topic, "ok".encode(), qos=1, properties=utf8) == 0


def test_subscription_options_and_identifiers(v5, topic):
    c = v5()
    no_local = paho.SubscribeOptions(qos=0, noLocal=True)
    assert c.subscribe5(topic + "/own", no_local) == 0
    keep = paho.SubscribeOptions(qos=0, retainAsPublished=True)
    ids = props(SUBSCRIBE, SubscriptionIdentifier=42)
    assert c.subscribe5(topic + "/kept", keep, ids) == 0
    c.publish5(topic + "/own", b"mine")
    c.expect_no_message(0.3)
    other = v5()
    other.publish5(topic + "/kept", b"r", retain=True)
    msg = c.wait_for_message()
    assert msg.retain, "retain as published"
    assert msg.properties.SubscriptionIdentifier == [42]
    # Retain handling 2: no retained message at subscribe time.
    late = v5()
    late.subscribe5(topic + "/kept", paho.SubscribeOptions(qos=0, retainHandling=2))
    late.expect_no_message(0.3)
    late.subscribe5(topic + "/kept", paho.SubscribeOptions(qos=0, retainHandling=1))
    late.expect_no_message(0.3)


def test_invalid_share_names_and_unsuback_reasons(v5, topic):
    c = v5()
    assert c.subscribe5(f"$share//{topic}", paho.SubscribeOptions(qos=0)) == 0x8F
    assert c.subscribe5("$share/g", paho.SubscribeOptions(qos=0)) == 0x8F
    c.subscribe(topic, 0)
    assert c.unsubscribe5([topic, topic + "/never"]) == [0x00, 0x11]


def test_shared_subscription_across_shards(start, topic):
    broker = start(shards=2)
    made = []
    try:
        ids = iter(unique_id("member") for _ in range(1000))
        # Two members whose sessions live on each shard.
        member_ids = [next(i for i in ids if owner_shard(i, 2) == s) for s in (0, 0, 1, 1)]
        members = []
        for client_id in member_ids:
            c = Client5(broker, "tcp", client_id)
            made.append(c)
            c.connect()
            assert c.subscribe5(f"$share/workers/{topic}/+", paho.SubscribeOptions(qos=1)) == 1
            members.append(c)
        plain = Client5(broker, "tcp")
        publisher = Client5(broker, "tcp")
        made += [plain, publisher]
        for c in (plain, publisher):
            c.connect()
        plain.subscribe(f"{topic}/#", 1)
        count = 200
        for n in range(count):
            assert publisher.publish5(f"{topic}/jobs", str(n), qos=1) == 0
        assert sorted(int(plain.wait_for_message().payload) for _ in range(count)) == list(range(count))
        got = {i: [] for i in range(len(members))}
        deadline = time.monotonic() + 10
        while sum(map(len, got.values())) < count and time.monotonic() < deadline:
            for i, c in enumerate(members):
                while not c.messages.empty():
                    got[i].append(int(c.messages.get().payload))
            time.sleep(0.01)
        everything = sorted(n for payloads in got.values() for n in payloads)
        assert everything == list(range(count)), "each message reaches exactly one member"
        assert all(got.values()), f"every member gets some: {[len(g) for g in got.values()]}"
        for c in members:
            c.expect_no_message(0.2)
        plain.expect_no_message(0.2)
    finally:
        for c in made:
            c.close()


def test_takeover_disconnects_with_0x8e(v5):
    first = v5()
    v5(client_id=first.client_id)
    assert first.wait_for_disconnect_reason() == 0x8E


def test_authentication_method_without_hook_is_refused(v5):
    c = v5(connect=False)
    c.connect(properties=props(CONNECT, AuthenticationMethod="SCRAM-SHA-1"), expect=0x8C)


def test_mixed_versions_on_one_topic(broker, clients, v5, transport, topic):
    old = clients(broker, transport, protocol=MQTTv31)
    mid = clients(broker, transport, protocol=MQTTv311)
    new = v5()
    for c in (old, mid, new):
        c.subscribe(topic, 1)
    user = props(PUBLISH, UserProperty=[("team", "home")], ContentType="text/plain")
    new.publish5(topic, b"from v5", qos=1, properties=user)
    old.publish(topic, b"from v3.1", qos=1)
    mid.publish(topic, b"from v3.1.1", qos=1)
    for c in (old, mid, new):
        got = sorted(c.wait_for_message().payload for _ in range(3))
        assert got == [b"from v3.1", b"from v3.1.1", b"from v5"]
    new.expect_no_message(0.2)
    # What only MQTT 5 can express reaches only the MQTT 5 client.
    new.publish5(topic, b"again", qos=1, properties=user)
    msg = new.wait_for_message()
    assert msg.properties.ContentType == "text/plain"
    assert msg.properties.UserProperty == [("team", "home")]
    assert old.wait_for_message().payload == b"again"


def raw_connect5(client_id: str, properties: bytes = b"") -> bytes:
    """An MQTT 5 CONNECT with clean start, keep-alive 30 and the given property bytes."""
    body = m.utf8("MQTT") + bytes([5, 0x02, 0, 30]) + m.varint(len(properties)) + properties
    return m.packet(1, 0, body + m.utf8(client_id))


def reason_string(properties: bytes) -> str:
    """The Reason String (0x1F) of a property block that starts with its length."""
    length, at, shift = 0, 0, 0
    while True:
        byte = properties[at]
        length |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            break
    block = properties[at:at + length]
    assert block[:1] == b"\x1f", f"no Reason String in {block!r}"
    size = int.from_bytes(block[1:3], "big")
    return block[3:3 + size].decode()


def test_errors_answer_in_mqtt5(broker, raw, transport):
    # A CONNECT that fails validation once its level reads 5: an MQTT 5 CONNACK with the
    # reason code (two Session Expiry Intervals: Protocol Error).
    bad = raw(broker, transport)
    twice = bytes([0x11, 0, 0, 0, 1]) * 2
    bad.send(raw_connect5(unique_id("dup"), twice))
    connack = bad.expect(m.CONNACK)
    assert connack.body[:2] == bytes([0, 0x82])
    assert "appears again" in reason_string(connack.body[2:])
    bad.wait_closed()

    # After CONNECT: DISCONNECT with the reason code, then the close (PUBLISH with QoS 3 is a
    # Malformed Packet).
    c = raw(broker, transport)
    c.send(raw_connect5(unique_id("mal")))
    assert c.expect(m.CONNACK).body[1] == 0
    c.send(m.packet(3, 0b0110, m.utf8("t") + b"x"))
    seen = c.wait_closed()
    assert [(p.ptype, p.body[:1]) for p in seen] == [(14, bytes([0x81]))]
    # The Reason String tells the client's developer which rule was broken.
    assert "QoS" in reason_string(seen[0].body[1:])


def test_pubrel_for_an_unknown_id_gets_0x92(broker, raw, transport):
    c = raw(broker, transport)
    c.send(raw_connect5(unique_id("rel")))
    c.expect(m.CONNACK)
    c.send(m.packet(6, 0b0010, bytes([0, 9])))
    pubcomp = c.expect(7)
    assert pubcomp.body[:3] == bytes([0, 9, 0x92])


def raw_subscribe5(packet_id: int, topic_filter: str, qos: int) -> bytes:
    """An MQTT 5 SUBSCRIBE of one filter, no properties."""
    body = packet_id.to_bytes(2, "big") + b"\x00" + m.utf8(topic_filter) + bytes([qos])
    return m.packet(m.SUBSCRIBE, 0x02, body)


def raw_publish5(topic: str, payload: bytes, qos: int, packet_id: int) -> bytes:
    """An MQTT 5 PUBLISH with no properties."""
    body = m.utf8(topic) + packet_id.to_bytes(2, "big") + b"\x00" + payload
    return m.packet(m.PUBLISH, qos << 1, body)


def test_client_receive_maximum_bounds_what_is_in_flight(broker, raw, clients, transport, topic):
    # Receive Maximum 2 (property 0x21): the broker may have at most two unacknowledged
    # QoS 1 publishes out to this client [MQTT-3.3.4-7].
    slow = raw(broker, transport)
    slow.send(raw_connect5(unique_id("rm"), bytes([0x21, 0, 2])))
    assert slow.expect(m.CONNACK).body[1] == 0
    slow.send(raw_subscribe5(1, topic, 1))
    slow.expect(m.SUBACK)
    pub = clients(broker, transport)
    for n in range(5):
        pub.publish(topic, f"{n}".encode(), 1)
    first = [slow.expect(m.PUBLISH), slow.expect(m.PUBLISH)]
    assert slow.is_open_after(0.5), "a third publish arrived before any acknowledgement"
    # Each acknowledgement lets exactly one more through, in order.
    got = []
    for held in first:
        slow.send(m.ack(m.PUBACK, held.packet_id))
    for _ in range(3):
        nxt = slow.expect(m.PUBLISH)
        got.append(nxt)
        slow.send(m.ack(m.PUBACK, nxt.packet_id))
    # The raw reader parses the 3.1.1 layout: an MQTT 5 PUBLISH has a property length (0) first.
    assert all(p.payload[:1] == b"\x00" for p in first + got)
    payloads = [p.payload[1:] for p in first + got]
    assert payloads == [b"0", b"1", b"2", b"3", b"4"]


def test_exceeding_the_brokers_receive_maximum_disconnects_with_0x93(start, raw, transport):
    # The broker's Receive Maximum is inbound_qos2_max: QoS 2 publishes awaiting PUBREL.
    broker = start(config={"limits": {"inbound_qos2_max": 2}})
    c = raw(broker, transport)
    c.send(raw_connect5(unique_id("over")))
    connack = c.expect(m.CONNACK)
    assert connack.body[1] == 0
    for packet_id in (1, 2, 3):
        c.send(raw_publish5("t/over", b"x", 2, packet_id))
    seen = c.wait_closed()
    disconnects = [p for p in seen if p.ptype == 14]
    assert [d.body[:1] for d in disconnects] == [bytes([0x93])]
