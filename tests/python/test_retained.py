"""Retained messages, MQTT 3.1.1 §3.3.1.3."""

import pytest


def test_retained_delivered_on_subscribe(broker, clients, transport, topic):
    pub = clients(broker, transport)
    pub.publish(topic, b"last known", 1, retain=True)

    late = clients(broker, transport)
    late.subscribe(topic, 1)
    msg = late.wait_for_message()
    assert (msg.topic, msg.payload) == (topic, b"last known")
    # [MQTT-3.3.1-8]: sent because of a new subscription → retain flag set.
    assert msg.retain
    late.expect_no_message(0.3)


@pytest.mark.parametrize("pattern", ["{t}/+", "{t}/#", "+/{leaf}/+", "#"])
def test_retained_matches_wildcards(broker, clients, transport, topic, pattern):
    pub = clients(broker, transport)
    pub.publish(topic + "/state", b"on", 1, retain=True)

    sub = clients(broker, transport)
    sub.subscribe(pattern.format(t=topic, leaf=topic.split("/", 1)[1]), 1)
    msg = sub.wait_for_message()
    assert (msg.topic, msg.payload, msg.retain) == (topic + "/state", b"on", True)


def test_retained_replaced(broker, clients, transport, topic):
    pub = clients(broker, transport)
    pub.publish(topic, b"old", 1, retain=True)
    pub.publish(topic, b"new", 1, retain=True)

    sub = clients(broker, transport)
    sub.subscribe(topic, 1)
    assert sub.wait_for_message().payload == b"new"
    sub.expect_no_message(0.3)


def test_empty_retained_payload_clears(broker, clients, transport, topic):
    pub = clients(broker, transport)
    pub.publish(topic, b"soon gone", 1, retain=True)
    pub.publish(topic, b"", 1, retain=True)

    sub = clients(broker, transport)
    sub.subscribe(topic, 1)
    # [MQTT-3.3.1-10], [MQTT-3.3.1-11]: nothing retained any more.
    sub.expect_no_message(0.5)


def test_live_forwarding_clears_retain_flag(broker, clients, transport, topic):
    sub = clients(broker, transport)
    sub.subscribe(topic, 1)
    pub = clients(broker, transport)

    pub.publish(topic, b"live and retained", 1, retain=True)

    msg = sub.wait_for_message()
    assert msg.payload == b"live and retained"
    # [MQTT-3.3.1-9]: established subscriptions get retain = 0.
    assert not msg.retain


def test_retained_qos_is_min_of_stored_and_subscription(broker, clients, transport, topic):
    clients(broker, transport).publish(topic, b"q2", 2, retain=True)

    sub = clients(broker, transport)
    sub.subscribe(topic, 1)
    msg = sub.wait_for_message()
    assert (msg.payload, msg.qos, msg.retain) == (b"q2", 1, True)


def test_retained_survives_publisher_disconnect(broker, clients, transport, topic):
    pub = clients(broker, transport)
    pub.publish(topic, b"kept", 0, retain=True)
    pub.publish(topic + "/sync", b"x", 1)
    pub.disconnect()

    sub = clients(broker, "ws" if transport == "tcp" else "tcp")
    sub.subscribe(topic, 0)
    assert sub.wait_for_message().payload == b"kept"


@pytest.mark.fanfare_only
def test_retained_bytes_are_bounded_and_a_stale_value_goes(start, clients, topic):
    """Past `retained_bytes_max` a retained publish is delivered but not stored, and the older
    value of its topic goes rather than stay behind as a stale one."""
    import time

    from scrape import fetch_metrics, parse

    # No $SYS topics: their retained messages would take part of the small store.
    broker = start(config={"sys_interval_s": 0, "limits": {"retained_bytes_max": 4096}})
    live = clients(broker, "tcp")
    live.subscribe(topic, 1)
    pub = clients(broker, "tcp")
    pub.publish(topic, b"1-0", 1, retain=True)
    pub.publish(topic, b"x" * 8192, 1, retain=True)
    assert live.wait_for_message().payload == b"1-0"
    assert len(live.wait_for_message().payload) == 8192, "delivered though not stored"

    late = clients(broker, "tcp")
    late.subscribe(topic, 1)
    late.expect_no_message(0.3)
    time.sleep(0.3)  # a metrics tick
    metrics = parse(fetch_metrics(broker)[2])
    # Every shard holds a replica, and each refused the large value once.
    assert set(metrics["fanfare_retained_rejected_total"].values()) == {1}
    assert set(metrics["fanfare_retained_bytes"].values()) == {0}
