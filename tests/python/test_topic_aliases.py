"""Outbound MQTT 5 Topic Aliases: a subscriber whose CONNECT carries a Topic Alias Maximum gets
each topic's name once per connection, then only its alias (§3.3.2.3.4). A topic has one number
on a shard, the same on every connection; a new connection starts with none.

The raw client checks what is on the wire; paho-mqtt, a third-party client's parser, checks that
the messages arrive in order, on topics their aliases resolve to.
"""

from __future__ import annotations

import struct

import pytest
from paho.mqtt.packettypes import PacketTypes

import rawmqtt as m
from client import unique_id
from client5 import Client5, props

pytestmark = pytest.mark.fanfare_only

TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
SCORE_TOPIC = "sport/tennis/wimbledon/2026/final/court-1/score"


def connect5(client_id: str, alias_max: int) -> bytes:
    """An MQTT 5 CONNECT (clean start) asking for `alias_max` outbound aliases (none if 0)."""
    properties = b""
    if alias_max:
        properties = bytes([TOPIC_ALIAS_MAXIMUM]) + struct.pack("!H", alias_max)
    body = (m.utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60)
            + m.varint(len(properties)) + properties + m.utf8(client_id))
    return m.packet(m.CONNECT, 0, body)


def subscribe5(packet_id: int, topic_filter: str) -> bytes:
    """SUBSCRIBE at QoS 0, no properties."""
    body = struct.pack("!H", packet_id) + b"\x00" + m.utf8(topic_filter) + b"\x00"
    return m.packet(m.SUBSCRIBE, 0x02, body)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def topic_and_alias(pkt: m.Packet) -> tuple[str, int | None, bytes]:
    """A QoS 0 MQTT 5 PUBLISH: its topic name, its Topic Alias (None without one), payload."""
    assert pkt.ptype == m.PUBLISH, pkt
    (n,) = struct.unpack_from("!H", pkt.body, 0)
    topic = pkt.body[2 : 2 + n].decode()
    length, pos = read_varint(pkt.body, 2 + n)
    end = pos + length
    alias = None
    while pos < end:
        prop = pkt.body[pos]
        pos += 1
        if prop == TOPIC_ALIAS:
            (alias,) = struct.unpack_from("!H", pkt.body, pos)
            pos += 2
        elif prop == 0x02:  # Message Expiry Interval
            pos += 4
        elif prop == 0x0B:  # Subscription Identifier
            _, pos = read_varint(pkt.body, pos)
        else:
            raise AssertionError(f"unexpected property {prop:#x} in {pkt}")
    return topic, alias, pkt.body[end:]


def raw_subscriber(raw, broker, transport: str, alias_max: int, topic_filter: str) -> m.Mqtt:
    c = raw(broker, transport)
    c.send(connect5(unique_id("alias"), alias_max))
    connack = c.expect(m.CONNACK)
    assert connack.body[1] == 0, connack
    c.send(subscribe5(1, topic_filter))
    suback = c.expect(m.SUBACK)
    assert suback.body[-1] == 0, suback
    return c


def test_a_topic_goes_by_name_once_then_by_alias(start, raw, clients, transport, topic):
    # One shard: numbers are per shard, so every connection here shares them.
    broker = start(shards=1)
    publisher = clients(broker)
    first = raw_subscriber(raw, broker, transport, 10, f"{topic}/#")
    second = raw_subscriber(raw, broker, transport, 10, f"{topic}/#")
    none = raw_subscriber(raw, broker, transport, 0, f"{topic}/#")
    score = f"{topic}/{SCORE_TOPIC}"
    other = f"{topic}/other"

    publisher.publish(score, b"15-0")
    wire = {id(c): topic_and_alias(c.expect(m.PUBLISH)) for c in (first, second, none)}
    name, alias, payload = wire[id(first)]
    assert (name, payload) == (score, b"15-0")
    assert alias is not None
    # The same number on every connection that takes aliases; none for the client that asked
    # for none.
    assert wire[id(second)] == (score, alias, b"15-0")
    assert wire[id(none)] == (score, None, b"15-0")

    publisher.publish(other, b"x")
    for c in (first, second):
        other_name, other_alias, _ = topic_and_alias(c.expect(m.PUBLISH))
        assert other_name == other
        assert other_alias not in (None, alias)
    assert topic_and_alias(none.expect(m.PUBLISH)) == (other, None, b"x")

    publisher.publish(score, b"30-0")
    for c in (first, second):
        assert topic_and_alias(c.expect(m.PUBLISH)) == ("", alias, b"30-0")
    assert topic_and_alias(none.expect(m.PUBLISH)) == (score, None, b"30-0")

    # A new connection is sent the name again, with the shard's number for it.
    third = raw_subscriber(raw, broker, transport, 10, f"{topic}/#")
    publisher.publish(score, b"40-0")
    assert topic_and_alias(third.expect(m.PUBLISH)) == (score, alias, b"40-0")
    assert topic_and_alias(first.expect(m.PUBLISH)) == ("", alias, b"40-0")


def test_paho_receives_aliased_messages_on_their_topics(broker, clients, transport, topic):
    """paho-mqtt 2.2 parses aliased publishes but leaves resolving them to the application (an
    empty topic with the alias in the properties), so the test resolves them as one would."""
    sub = Client5(broker, transport)
    try:
        sub.connect(properties=props(PacketTypes.CONNECT, TopicAliasMaximum=10))
        sub.subscribe(f"{topic}/#", 1)
        publisher = clients(broker)
        topics = [f"{topic}/{SCORE_TOPIC}", f"{topic}/b", f"{topic}/{SCORE_TOPIC}",
                  f"{topic}/b", f"{topic}/{SCORE_TOPIC}"]
        for n, name in enumerate(topics):
            publisher.publish(name, str(n).encode(), qos=n % 2)
        aliases: dict[int, str] = {}
        received = []
        for _ in topics:
            msg = sub.wait_for_message()
            alias = getattr(msg.properties, "TopicAlias", None)
            assert alias is not None, "every topic here has a number"
            if msg.topic:
                aliases[alias] = msg.topic
            received.append((aliases[alias], msg.payload))
        assert received == [(name, str(n).encode()) for n, name in enumerate(topics)]
        assert len(aliases) == 2
    finally:
        sub.close()
