"""The size of a message: a 1 MiB payload, the size client test suites send, goes through a
broker on its defaults with the longest topic and MQTT 5 properties, over TCP and WebSocket,
in 3.1.1 and 5; past the limits an MQTT 5 client hears DISCONNECT 0x95 Packet too large."""

from __future__ import annotations

import struct

import pytest
from paho.mqtt.packettypes import PacketTypes

import rawmqtt as m
from client import MQTTv311, unique_id
from client5 import Client5, props
from rawmqtt import WsConn

pytestmark = pytest.mark.fanfare_only

MIB = 1024 * 1024
TOPIC_BYTES_MAX = 1024
PACKET_TOO_LARGE = 0x95


def long_topic(prefix: str) -> str:
    """A topic of exactly the default `topic_bytes_max`, in levels of 64 bytes."""
    topic = prefix + "/"
    while len(topic) < TOPIC_BYTES_MAX:
        topic += "x" * min(63, TOPIC_BYTES_MAX - len(topic) - 1) + "/"
    return topic[:TOPIC_BYTES_MAX - 1] + "z"


def test_a_1_mib_payload_with_a_long_topic_v311(broker, clients, transport):
    topic = long_topic("big311" + transport)
    assert len(topic) == TOPIC_BYTES_MAX
    payload = bytes(range(256)) * (MIB // 256)
    sub = clients(broker, transport, protocol=MQTTv311)
    sub.subscribe(topic, 1)
    pub = clients(broker, transport, protocol=MQTTv311)
    pub.publish(topic, payload, qos=1)
    got = sub.wait_for_message(timeout=20)
    assert got.topic == topic
    assert got.payload == payload


def test_a_1_mib_payload_with_a_long_topic_and_properties_v5(broker, transport):
    topic = long_topic("big5" + transport)
    payload = bytes(range(251)) * (MIB // 251) + b"!" * (MIB % 251)
    assert len(payload) == MIB
    sub = Client5(broker, transport)
    pub = Client5(broker, transport)
    try:
        sub.connect()
        sub.subscribe(topic, 1)
        pub.connect()
        properties = props(
            PacketTypes.PUBLISH,
            ContentType="application/octet-stream",
            ResponseTopic="replies/" + "r" * 200,
            CorrelationData=b"c" * 200,
            MessageExpiryInterval=60,
            UserProperty=[("k" * 100, "v" * 1000)] * 8,
        )
        assert pub.publish5(topic, payload, qos=1, properties=properties) == 0
        got = sub.wait_for_message(timeout=20)
        assert got.topic == topic
        assert got.payload == payload
        assert got.properties.UserProperty == [("k" * 100, "v" * 1000)] * 8
        assert got.properties.CorrelationData == b"c" * 200
    finally:
        sub.close()
        pub.close()


def connect5(client_id: str) -> bytes:
    body = m.utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00" + m.utf8(client_id)
    return m.packet(m.CONNECT, 0, body)


def publish5(topic: str, payload: bytes) -> bytes:
    body = m.utf8(topic) + struct.pack("!H", 1) + b"\x00" + payload
    return m.packet(m.PUBLISH, 0x02, body)


def test_over_packet_bytes_max_v5_gets_0x95(start, raw, transport):
    broker = start(config={"limits": {"packet_bytes_max": 4096}})
    c = raw(broker, transport)
    c.send(connect5(unique_id("over")))
    assert c.expect(m.CONNACK).body[1] == 0
    c.send(publish5("t/over", b"x" * 5000))
    seen = c.wait_closed()
    assert all(p.ptype != m.PUBACK for p in seen)
    assert seen and seen[0].ptype == m.DISCONNECT and seen[0].body[0] == PACKET_TOO_LARGE, seen
    # One reason only: the rest of the oversize packet is dropped, not decoded as garbage.
    assert [p.ptype for p in seen].count(m.DISCONNECT) == 1, seen


def test_over_ws_frame_bytes_max_v5_gets_0x95_then_1009(start, raw):
    broker = start(config={"limits": {"packet_bytes_max": 2048, "ws_frame_bytes_max": 4096}})
    conn = WsConn(broker.host, broker.ws_port, broker.ws_path, "mqtt")
    try:
        conn.send_frame(m.OP_BINARY, connect5(unique_id("frame")))
        connack = conn.read_frame()
        assert connack.opcode == m.OP_BINARY and connack.payload[0] >> 4 == m.CONNACK
        conn.send_frame(m.OP_BINARY, publish5("t/frame", b"x" * 10000))
        disconnect = conn.read_frame()
        assert disconnect.opcode == m.OP_BINARY
        assert disconnect.payload[0] >> 4 == m.DISCONNECT
        assert disconnect.payload[2] == PACKET_TOO_LARGE
        close = conn.read_frame()
        assert close is not None and close.close_code == 1009
    finally:
        conn.close()
