"""Will messages, MQTT 3.1.1 §3.1.2.5: published when a client goes away uncleanly."""

import pytest

import rawmqtt as m
from client import unique_id


def will_watcher(broker, clients, topic, qos=1):
    w = clients(broker, "tcp")
    w.subscribe(topic, qos)
    return w


def test_will_on_abrupt_close(broker, clients, transport, topic):
    watcher = will_watcher(broker, clients, topic)
    dying = clients(broker, transport, will=(topic, b"gone", 1, False))

    dying.drop()

    msg = watcher.wait_for_message()
    assert (msg.topic, msg.payload) == (topic, b"gone")


@pytest.mark.fanfare_only  # Mosquitto 2.0 checks keep-alive on a ~5 s timer
def test_will_on_keepalive_timeout(broker, clients, raw, transport, topic):
    watcher = will_watcher(broker, clients, topic)
    silent = raw(broker, transport)
    silent.handshake(unique_id("silent"), keepalive=1, will=(topic, b"timed out", 1, False))

    # [MQTT-3.1.2-24]: no packet within 1.5 × keep-alive → the server disconnects.
    msg = watcher.wait_for_message(timeout=5)
    assert msg.payload == b"timed out"
    silent.wait_closed(timeout=3)


def test_will_on_protocol_violation(broker, clients, raw, transport, topic):
    watcher = will_watcher(broker, clients, topic)
    bad = raw(broker, transport)
    bad.handshake(unique_id("violator"), will=(topic, b"misbehaved", 1, False))

    # SUBSCRIBE must have flags 0b0010 [MQTT-3.8.1-1]; 0 is malformed.
    bad.send(m.packet(m.SUBSCRIBE, 0, b"\x00\x01" + m.utf8("x") + b"\x00"))

    bad.wait_closed()
    assert watcher.wait_for_message().payload == b"misbehaved"


def test_no_will_after_disconnect(broker, clients, transport, topic):
    watcher = will_watcher(broker, clients, topic)
    polite = clients(broker, transport, will=(topic, b"should not appear", 1, False))

    polite.disconnect()

    # [MQTT-3.14.4-3]: DISCONNECT discards the will.
    watcher.expect_no_message(1.0)


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_qos_honoured(broker, clients, transport, topic, will_qos):
    watcher = will_watcher(broker, clients, topic, qos=2)
    dying = clients(broker, transport, will=(topic, b"q", will_qos, False))

    dying.drop()

    msg = watcher.wait_for_message()
    assert msg.qos == will_qos


def test_will_retain_honoured(broker, clients, transport, topic):
    dying = clients(broker, transport, will=(topic, b"retained will", 1, True))
    dying.drop()
    will_watcher(broker, clients, topic + "/never")  # a round trip, so the drop was seen
    import time

    # A subscriber that was already there when the will went out gets it live, with the
    # retain flag clear [MQTT-3.3.1-9]; the one that follows must get the retained copy.
    deadline = time.monotonic() + 5
    while True:
        late = clients(broker, transport)
        late.subscribe(topic, 1)
        try:
            msg = late.wait_for_message(timeout=0.5)
            if msg.retain:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, "will was not retained"
        late.disconnect()
    assert (msg.payload, msg.retain) == (b"retained will", True)


def test_will_not_retained_unless_asked(broker, clients, transport, topic):
    watcher = will_watcher(broker, clients, topic)
    dying = clients(broker, transport, will=(topic, b"not retained", 1, False))
    dying.drop()
    assert watcher.wait_for_message().payload == b"not retained"

    late = clients(broker, transport)
    late.subscribe(topic, 1)
    late.expect_no_message(0.5)


def test_takeover_of_client_with_will(broker, clients, transport, topic):
    """A takeover closes the old connection; the new one keeps working either way."""
    cid = unique_id("will-take")
    clients(broker, transport, cid, will=(topic, b"taken over", 1, False))
    fresh = clients(broker, transport, cid)
    fresh.subscribe(topic + "/x", 1)
    fresh.publish(topic + "/x", b"still here", 1)
    assert fresh.wait_for_message().payload == b"still here"
