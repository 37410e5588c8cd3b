"""What the broker grants and answers an MQTT 5 client, with paho-mqtt over TCP and WebSocket:
the keep-alive cap (`keep_alive_max_s`) as Server Keep Alive, Response Information under
`response_topic_prefix`, PUBACK / PUBREC 0x10 No matching subscribers, and Request Problem
Information = 0. And what 3.1.1 clients get from the same settings."""

from __future__ import annotations

import struct

import pytest
from paho.mqtt.packettypes import PacketTypes

import rawmqtt as m
from client import MQTTv311, unique_id
from client5 import Client5, props

pytestmark = pytest.mark.fanfare_only

CONNECT = PacketTypes.CONNECT
PUBLISH = PacketTypes.PUBLISH

NO_MATCHING_SUBSCRIBERS = 0x10
KEEP_ALIVE_TIMEOUT = 0x8D


@pytest.fixture
def v5(clients, transport):
    """`v5(broker, connect=True, **kw)`: an MQTT 5 client of this test's transport."""
    made = []

    def _make(broker, client_id=None, connect=True, properties=None, **kw):
        c = Client5(broker, transport, client_id, **kw)
        made.append(c)
        if connect:
            c.connect(properties=properties)
        return c

    yield _make
    for c in made:
        c.close()


@pytest.mark.parametrize("asked_s", [0, 3600])
def test_keep_alive_over_the_cap_gets_the_cap(start, v5, raw, transport, topic, asked_s):
    broker = start(config={"limits": {"keep_alive_max_s": 1}})
    c = v5(broker, keepalive=asked_s)
    assert c.connack_properties.ServerKeepAlive == 1
    # paho takes the Server Keep Alive and pings every second: it stays connected.
    c.expect_no_message(timeout=2.5)
    assert not c.disconnected.is_set()
    assert c.subscribe(topic, 1) == 1
    # A client that does not ping as told is held to the cap: closed after 1.5 s of silence.
    silent = raw(broker, transport)
    silent.send(connect5(unique_id("silent"), b"", keepalive=asked_s))
    assert silent.expect(m.CONNACK).body[1] == 0
    goodbye = [p for p in silent.wait_closed(timeout=10) if p.ptype == m.DISCONNECT]
    assert [p.body[0] for p in goodbye] == [KEEP_ALIVE_TIMEOUT]


def test_keep_alive_within_the_cap_is_not_told(start, v5):
    broker = start(config={"limits": {"keep_alive_max_s": 60}})
    c = v5(broker, keepalive=30)
    assert not hasattr(c.connack_properties, "ServerKeepAlive")


def test_default_cap_is_60_s(broker, v5):
    c = v5(broker, keepalive=0)
    assert c.connack_properties.ServerKeepAlive == 60


def test_v311_keeps_the_keep_alive_it_asked_for(start, clients, transport, topic):
    """3.1.1 has no way to tell a client another keep-alive: the cap does not apply."""
    broker = start(config={"limits": {"keep_alive_max_s": 1}})
    c = clients(broker, transport, keepalive=3600, protocol=MQTTv311)
    # Well past 1.5 × the cap, the silent client is still served.
    c.expect_no_message(timeout=2.5)
    assert c.subscribe(topic, 1) == 1
    assert not c.disconnected.is_set()


def test_response_information_when_asked(broker, v5):
    asked = props(CONNECT, RequestResponseInformation=1)
    c = v5(broker, client_id=unique_id("ri"), properties=asked)
    assert c.connack_properties.ResponseInformation == "response/" + c.client_id
    plain = v5(broker)
    assert not hasattr(plain.connack_properties, "ResponseInformation")


def test_response_topic_prefix_is_configurable(start, v5, topic):
    broker = start(config={"response_topic_prefix": "replies/to/"})
    asked = props(CONNECT, RequestResponseInformation=1)
    requester = v5(broker, client_id=unique_id("req"), properties=asked)
    response_topic = requester.connack_properties.ResponseInformation
    assert response_topic == "replies/to/" + requester.client_id
    # It is a topic like any other: a responder's publish reaches the requester there.
    requester.subscribe(response_topic + "/#", 1)
    responder = v5(broker)
    responder.publish5(response_topic + "/1", b"answer", qos=1)
    assert requester.wait_for_message().payload == b"answer"


def test_bad_response_topic_prefix_is_named(start):
    with pytest.raises(AssertionError):
        start(config={"response_topic_prefix": "a/+/"})


def test_puback_and_pubrec_say_no_matching_subscribers(start, v5, topic):
    broker = start(shards=1)
    pub = v5(broker)
    # (paho reports a QoS 2 publish's PUBCOMP code; PUBREC's is checked in raw bytes below.)
    assert pub.publish5(topic + "/nobody", b"x", qos=1) == NO_MATCHING_SUBSCRIBERS
    sub = v5(broker)
    sub.subscribe(topic + "/+", 1)
    assert pub.publish5(topic + "/someone", b"y", qos=1) == 0
    assert sub.wait_for_message().payload == b"y"
    shared = v5(broker)
    shared.subscribe("$share/g/" + topic + "/shared", 1)
    assert pub.publish5(topic + "/shared", b"z", qos=1) == 0


def test_several_shards_answer_success(start, v5, topic):
    """A shard does not know the subscribers of the others when it acknowledges."""
    broker = start(shards=2)
    pub = v5(broker)
    assert pub.publish5(topic + "/nobody", b"x", qos=1) == 0


def test_v311_puback_is_plain(start, raw, transport, topic):
    broker = start(shards=1)
    c = raw(broker, transport)
    c.handshake(unique_id("plain"))
    c.send(m.publish(topic + "/nobody", b"x", qos=1, packet_id=1))
    assert c.expect(m.PUBACK).packet_id == 1


def connect5(client_id: str, properties: bytes, keepalive: int = 60) -> bytes:
    body = (m.utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", keepalive)
            + m.varint(len(properties)) + properties + m.utf8(client_id))
    return m.packet(m.CONNECT, 0, body)


def publish5(topic: str, payload: bytes, qos: int, packet_id: int) -> bytes:
    body = m.utf8(topic) + struct.pack("!H", packet_id) + b"\x00" + payload
    return m.packet(m.PUBLISH, qos << 1, body)


def subscribe5(packet_id: int, *filters: str) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00"
    for topic_filter in filters:
        body += m.utf8(topic_filter) + b"\x01"
    return m.packet(m.SUBSCRIBE, 0x02, body)


def test_no_problem_information_means_no_reason_strings(start, raw, transport, topic):
    """[MQTT-3.1.2-29]: with Request Problem Information = 0 nothing but CONNACK, PUBLISH
    and DISCONNECT may carry a Reason String or User Property. The acknowledgements here,
    of successes and of a refusal (a filter past `subscriptions_per_session_max`), carry no
    property at all."""
    broker = start(shards=1, config={"limits": {"subscriptions_per_session_max": 1}})
    c = raw(broker, transport)
    request_problem_information_0 = b"\x17\x00"
    c.send(connect5(unique_id("quiet"), request_problem_information_0))
    assert c.expect(m.CONNACK).body[1] == 0
    c.send(publish5(topic + "/nobody", b"x", 1, 1))
    puback = c.expect(m.PUBACK)
    # Packet id, reason 0x10, then no properties: the length is left out or 0.
    assert puback.body[2] == NO_MATCHING_SUBSCRIBERS
    assert puback.body[3:] in (b"", b"\x00")
    c.send(subscribe5(2, topic + "/a"))
    c.send(subscribe5(5, topic + "/b"))
    for granted in (True, False):
        suback = c.expect(m.SUBACK)
        assert suback.body[2] == 0, "property length 0"
        assert (suback.body[3] == 1) == granted, suback.body
    c.send(publish5(topic + "/nobody", b"x", 2, 3))
    pubrec = c.expect(m.PUBREC)
    assert pubrec.body[2] == NO_MATCHING_SUBSCRIBERS
    assert pubrec.body[3:] in (b"", b"\x00")
    c.send(publish5(topic + "/a", b"x", 2, 4))
    # The client subscribes to it itself: its copy may come first.
    replies = [c.read() for _ in range(2)]
    (pubrec,) = [p for p in replies if p.ptype == m.PUBREC]
    assert pubrec.body[2:3] in (b"", b"\x00"), "a subscriber: success"
