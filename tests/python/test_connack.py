"""CONNACK return codes, MQTT 3.1.1 §3.2.2.3."""

import pytest

import rawmqtt as m
from client import unique_id


def test_unacceptable_protocol_level(broker, raw, transport):
    c = raw(broker, transport)
    c.send(m.connect("lvl9", level=9))

    # [MQTT-3.1.2-2]: CONNACK 0x01, then the server closes the connection.
    before_close = c.wait_closed()
    assert [(p.ptype, p.body) for p in before_close] == [(m.CONNACK, b"\x00\x01")]


def test_unacceptable_protocol_level_exact_bytes(broker, raw):
    c = raw(broker, "tcp")
    c.send(m.connect("lvl9-bytes", level=9))
    pkt = c.expect(m.CONNACK)
    assert m.packet(pkt.ptype, pkt.flags, pkt.body) == bytes([0x20, 0x02, 0x00, 0x01])


def test_empty_client_id_without_clean_session_rejected(broker, raw, transport):
    c = raw(broker, transport)
    c.send(m.connect("", clean=False))

    # [MQTT-3.1.3-8]: identifier rejected (0x02), then closed.
    before_close = c.wait_closed()
    assert [(p.ptype, p.body) for p in before_close] == [(m.CONNACK, b"\x00\x02")]


def test_empty_client_id_with_clean_session_accepted(broker, raw, transport):
    c = raw(broker, transport)
    connack = c.handshake("", clean=True)
    assert connack.body == b"\x00\x00"

    # The server assigned an identity: the session works.
    c.send(m.subscribe(1, ("t/empty-id", 1)))
    assert c.expect(m.SUBACK).body == b"\x00\x01\x01"
    c.send(m.publish("t/empty-id", b"self", qos=1, packet_id=2))
    got = {c.read().ptype, c.read().ptype}
    assert got == {m.PUBACK, m.PUBLISH}


@pytest.mark.parametrize("level", [3, 4])
def test_accepted_connack_bytes(broker, raw, level):
    c = raw(broker, "tcp")
    connack = c.handshake(unique_id("ok"), level=level)
    assert (connack.flags, connack.body) == (0, b"\x00\x00")


def test_second_connect_is_a_protocol_violation(broker, raw, transport):
    c = raw(broker, transport)
    c.handshake(unique_id("twice"))
    c.send(m.connect(unique_id("twice")))
    # [MQTT-3.1.0-2]: a second CONNECT is a violation; the connection is closed.
    c.wait_closed()


def test_packet_before_connect_closes(broker, raw, transport):
    c = raw(broker, transport)
    c.send(m.publish("t/early", b"x"))
    # [MQTT-3.1.0-1]: the first packet must be CONNECT.
    assert all(p.ptype != m.CONNACK for p in c.wait_closed())
