"""Topic filters, MQTT 3.1.1 §4.7: wildcards, $-topics, overlapping subscriptions."""

import pytest


@pytest.mark.parametrize(
    "topic_filter,matches,misses",
    [
        ("{t}/+/temp", ["{t}/kitchen/temp", "{t}//temp"], ["{t}/kitchen/hall/temp", "{t}/temp"]),
        ("{t}/#", ["{t}", "{t}/a", "{t}/a/b/c"], ["{t}x/a"]),
        ("{t}/+", ["{t}/a", "{t}/"], ["{t}", "{t}/a/b"]),
        ("{t}/a/#", ["{t}/a", "{t}/a/b"], ["{t}/b"]),
        ("+/+/+", ["{t}/x"], ["{t}/x/y"]),
    ],
)
def test_wildcards(broker, clients, transport, topic, topic_filter, matches, misses):
    # topic is "t/<name>", so "+/+/+" matches "t/<name>/x" exactly.
    sub = clients(broker, transport)
    sub.subscribe(topic_filter.format(t=topic), 1)
    pub = clients(broker, transport)

    for name in misses + matches:  # misses first: a stray one would arrive before a match
        pub.publish(name.format(t=topic), name.encode(), 1)

    got = sorted(sub.wait_for_message().topic for _ in matches)
    assert got == sorted(name.format(t=topic) for name in matches)
    sub.expect_no_message(0.3)


def test_dollar_topics_not_matched_by_leading_wildcards(broker, clients, transport, topic):
    dollar = "$fanfare-test/" + topic.split("/", 1)[1] + "/x"
    hash_sub = clients(broker, transport)
    hash_sub.subscribe("#", 1)
    plus_sub = clients(broker, transport)
    plus_sub.subscribe("+/" + dollar.split("/", 1)[1].rsplit("/", 1)[0] + "/x", 1)
    exact = clients(broker, transport)
    exact.subscribe(dollar.rsplit("/", 2)[0] + "/#", 1)

    clients(broker, transport).publish(dollar, b"dollar", 1)

    # [MQTT-4.7.2-1]: '#' and '+' at the first level do not match '$' topics...
    assert exact.wait_for_message().topic == dollar
    hash_sub.expect_no_message(0.3)
    plus_sub.expect_no_message(0.1)


def test_sys_like_topic_needs_explicit_prefix(broker, clients, transport):
    hash_sub = clients(broker, transport)
    hash_sub.subscribe("#", 0)
    plus_sub = clients(broker, transport)
    plus_sub.subscribe("+/fanfare-test/#", 0)

    clients(broker, transport).publish("plain/fanfare-test/ok", b"plain", 1)

    # ...but they do match ordinary topics.
    assert hash_sub.wait_for_message().topic == "plain/fanfare-test/ok"
    assert plus_sub.wait_for_message().topic == "plain/fanfare-test/ok"


def test_overlapping_subscriptions_deliver_once(broker, clients, transport, topic):
    sub = clients(broker, transport)
    sub.subscribe(topic + "/#", 1)
    sub.subscribe(topic + "/+", 1)
    sub.subscribe(topic + "/x", 1)

    clients(broker, transport).publish(topic + "/x", b"once", 1)

    assert sub.wait_for_message().payload == b"once"
    sub.expect_no_message(0.5)


# Mosquitto also delivers once, but at the QoS of one matching subscription, not the highest.
@pytest.mark.fanfare_only
def test_overlapping_subscriptions_deliver_once_at_highest_qos(broker, clients, transport, topic):
    sub = clients(broker, transport)
    sub.subscribe(topic + "/#", 0)
    sub.subscribe(topic + "/+", 2)
    sub.subscribe(topic + "/x", 1)

    clients(broker, transport).publish(topic + "/x", b"once", 2)

    msg = sub.wait_for_message()
    assert msg.payload == b"once"
    # [MQTT-3.3.5-1]: one copy, at the maximum QoS of the matching subscriptions.
    assert msg.qos == 2
    sub.expect_no_message(0.5)


def test_resubscribe_replaces_qos(broker, clients, transport, topic):
    sub = clients(broker, transport)
    sub.subscribe(topic, 2)
    sub.subscribe(topic, 0)  # [MQTT-3.8.4-3]: replaces, does not add

    clients(broker, transport).publish(topic, b"replaced", 2)

    msg = sub.wait_for_message()
    assert msg.qos == 0
    sub.expect_no_message(0.3)


def test_topics_are_case_sensitive(broker, clients, transport, topic):
    sub = clients(broker, transport)
    sub.subscribe(topic + "/Case", 1)
    pub = clients(broker, transport)
    pub.publish(topic + "/case", b"lower", 1)
    pub.publish(topic + "/Case", b"upper", 1)
    assert sub.wait_for_message().payload == b"upper"
    sub.expect_no_message(0.3)
