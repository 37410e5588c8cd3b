"""QoS 1 and 2 flows the broker must get right under retransmission and reconnects."""

import rawmqtt as m
from client import unique_id


def test_qos2_duplicate_publish_delivered_once(broker, clients, raw, transport, topic):
    sub = clients(broker, transport)
    sub.subscribe(topic, 2)
    pub = raw(broker, transport)
    pub.handshake(unique_id("q2dup"))

    pub.send(m.publish(topic, b"exactly once", qos=2, packet_id=7))
    assert pub.expect(m.PUBREC).packet_id == 7
    # The PUBREC "got lost": the client resends the PUBLISH with DUP before PUBREL.
    pub.send(m.publish(topic, b"exactly once", qos=2, packet_id=7, dup=True))
    assert pub.expect(m.PUBREC).packet_id == 7
    pub.send(m.ack(m.PUBREL, 7))
    assert pub.expect(m.PUBCOMP).packet_id == 7

    assert sub.wait_for_message().payload == b"exactly once"
    sub.expect_no_message(1.0)


def test_qos2_packet_id_reusable_after_pubcomp(broker, clients, raw, transport, topic):
    sub = clients(broker, transport)
    sub.subscribe(topic, 2)
    pub = raw(broker, transport)
    pub.handshake(unique_id("q2reuse"))

    for payload in (b"first", b"second"):
        pub.send(m.publish(topic, payload, qos=2, packet_id=9))
        pub.expect(m.PUBREC)
        pub.send(m.ack(m.PUBREL, 9))
        pub.expect(m.PUBCOMP)

    assert [sub.wait_for_message().payload for _ in range(2)] == [b"first", b"second"]


def test_pubrel_resent_after_reconnect(broker, clients, raw, transport, topic):
    cid = unique_id("pubrel")
    receiver = raw(broker, transport)
    receiver.handshake(cid, clean=False)
    receiver.send(m.subscribe(1, (topic, 2)))
    receiver.expect(m.SUBACK)
    pub = clients(broker, transport)

    pub.publish(topic, b"q2", 2)
    delivered = receiver.expect(m.PUBLISH)
    assert delivered.qos == 2
    receiver.send(m.ack(m.PUBREC, delivered.packet_id))
    first_pubrel = receiver.expect(m.PUBREL)
    assert first_pubrel.packet_id == delivered.packet_id
    # Drop the connection without PUBCOMP.
    receiver.abort()

    again = raw(broker, transport)
    connack = again.handshake(cid, clean=False)
    assert connack.body == b"\x01\x00", "session present"
    # [MQTT-4.4.0-1]: the unacknowledged PUBREL is resent on reconnect, not the PUBLISH.
    pkt = again.read()
    assert pkt.ptype == m.PUBREL
    assert pkt.flags == 0x02
    assert pkt.packet_id == delivered.packet_id
    again.send(m.ack(m.PUBCOMP, pkt.packet_id))
    assert again.is_open_after(0.5)


def test_unacked_qos1_redelivered_with_dup(broker, clients, raw, transport, topic):
    cid = unique_id("dup1")
    receiver = raw(broker, transport)
    receiver.handshake(cid, clean=False)
    receiver.send(m.subscribe(1, (topic, 1)))
    receiver.expect(m.SUBACK)
    pub = clients(broker, transport)

    pub.publish(topic, b"ack me", 1)
    first = receiver.expect(m.PUBLISH)
    assert not first.dup
    receiver.abort()  # no PUBACK

    again = raw(broker, transport)
    assert again.handshake(cid, clean=False).body == b"\x01\x00"
    redelivered = again.expect(m.PUBLISH)
    # [MQTT-4.4.0-1], [MQTT-3.3.1-1]: same message, same packet id, DUP set.
    assert redelivered.dup
    assert redelivered.qos == 1
    assert redelivered.packet_id == first.packet_id
    assert redelivered.payload == b"ack me"
    again.send(m.ack(m.PUBACK, redelivered.packet_id))
    assert again.is_open_after(0.5)


def test_puback_for_each_qos1_publish(broker, raw, transport, topic):
    c = raw(broker, transport)
    c.handshake(unique_id("puback"))
    for pid in (1, 2, 3):
        c.send(m.publish(topic, b"x", qos=1, packet_id=pid))
    assert [c.expect(m.PUBACK).packet_id for _ in range(3)] == [1, 2, 3]


def test_pingreq_answered(broker, raw, transport):
    c = raw(broker, transport)
    c.handshake(unique_id("ping"))
    c.send(m.pingreq())
    pkt = c.expect(m.PINGRESP)
    assert pkt.body == b""
