"""Misbehaving peers are disconnected; everyone else on the broker carries on."""

import itertools
import os

import pytest

import rawmqtt as m
from client import unique_id

RUN_ALL = os.environ.get("FANFARE_TEST_RUN_ALL") == "1"

_seq = itertools.count()


@pytest.fixture
def healthy(clients, topic):
    """A subscriber/publisher pair; `healthy(broker)` returns a check that traffic still flows."""

    def _make(broker):
        sub = clients(broker, "ws")
        sub.subscribe(topic + "/healthy", 1)
        pub = clients(broker, "tcp")

        def check():
            payload = f"still fine {next(_seq)}".encode()
            pub.publish(topic + "/healthy", payload, 1)
            assert sub.wait_for_message().payload == payload

        check()
        return check

    return _make


def test_publish_to_wildcard_topic_closes(broker, raw, healthy, transport):
    check = healthy(broker)
    bad = raw(broker, transport)
    bad.handshake(unique_id("wild-pub"))

    # [MQTT-3.3.2-2]: a topic name must not contain wildcards.
    bad.send(m.publish("a/+/b", b"nope"))

    bad.wait_closed()
    check()


def test_oversize_packet_closes(start, raw, healthy, transport):
    broker = start(config={"limits": {"packet_bytes_max": 1024}})
    if transport == "ws" and not broker.is_fanfare and not RUN_ALL:
        pytest.skip("fanfare-only: Mosquitto does not apply max_packet_size on WebSockets")
    check = healthy(broker)
    bad = raw(broker, transport)
    bad.handshake(unique_id("big"))

    bad.send(m.publish("t/big", b"x" * 2000, qos=1, packet_id=1))

    assert all(p.ptype != m.PUBACK for p in bad.wait_closed())
    check()


def test_packet_just_under_limit_accepted(start, clients, raw, transport):
    broker = start(config={"limits": {"packet_bytes_max": 1024}})
    sub = clients(broker, transport)
    sub.subscribe("t/fits", 1)
    c = raw(broker, transport)
    c.handshake(unique_id("fits"))

    c.send(m.publish("t/fits", b"y" * 900, qos=1, packet_id=1))

    assert c.expect(m.PUBACK).packet_id == 1
    assert sub.wait_for_message().payload == b"y" * 900


def test_garbage_bytes_close(broker, raw, healthy):
    check = healthy(broker)
    bad = raw(broker, "tcp")
    # Reserved packet type 15 with a length that cannot be a CONNECT.
    bad.send(b"\xff\xff\xff\xff\x7f" + b"\x00" * 59 + b"GET / HTTP/1.1\r\n\r\n")
    bad.wait_closed()
    check()


def test_garbage_after_connect_closes(broker, raw, healthy, transport):
    check = healthy(broker)
    bad = raw(broker, transport)
    bad.handshake(unique_id("garbage"))
    # Reserved packet type 0 [MQTT-2.2.1], then junk.
    bad.send(b"\x00\x05hello" + b"\xff" * 32)
    bad.wait_closed()
    check()


def test_malformed_remaining_length_closes(broker, raw, healthy, transport):
    check = healthy(broker)
    bad = raw(broker, transport)
    bad.handshake(unique_id("varint"))
    # Five continuation bytes: longer than the four §2.2.3 allows.
    bad.send(b"\x30\xff\xff\xff\xff\x01")
    bad.wait_closed()
    check()


def test_invalid_utf8_topic_closes(broker, raw, healthy, transport):
    check = healthy(broker)
    bad = raw(broker, transport)
    bad.handshake(unique_id("utf8"))
    # [MQTT-1.5.3-1]: ill-formed UTF-8 is a protocol violation.
    bad.send(m.publish(b"t/\xff\xfe", b"x"))
    bad.wait_closed()
    check()


def test_many_bad_clients_in_a_row(broker, raw, healthy):
    check = healthy(broker)
    for i in range(20):
        bad = raw(broker, "tcp")
        bad.send(os.urandom(64))
        bad.abort()
    check()


def test_half_a_packet_then_silence_does_not_block_others(broker, raw, healthy):
    check = healthy(broker)
    slow = raw(broker, "tcp")
    slow.handshake(unique_id("half"))
    slow.send(m.publish("t/half", b"z" * 100)[:20])  # the rest never comes
    check()
