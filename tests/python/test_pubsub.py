"""Connect, subscribe and publish at every QoS, over both transports and both 3.x versions."""

import pytest

from client import VERSIONS


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_reaches_subscriber(broker, clients, transport, version, qos, topic):
    proto = VERSIONS[version]
    sub = clients(broker, transport, protocol=proto)
    pub = clients(broker, transport, protocol=proto)
    assert sub.subscribe(topic, qos) == qos

    pub.publish(topic, b"hello %d" % qos, qos)

    msg = sub.wait_for_message()
    assert msg.topic == topic
    assert msg.payload == b"hello %d" % qos
    assert msg.qos == qos
    assert not msg.retain
    sub.expect_no_message()


@pytest.mark.parametrize("sub_transport,pub_transport", [("ws", "tcp"), ("tcp", "ws")])
def test_cross_transport(broker, clients, sub_transport, pub_transport, topic):
    sub = clients(broker, sub_transport)
    pub = clients(broker, pub_transport)
    sub.subscribe(topic, 1)

    pub.publish(topic, b"across", 1)

    msg = sub.wait_for_message()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"across", 1)


@pytest.mark.parametrize("sub_version,pub_version", [("3.1", "3.1.1"), ("3.1.1", "3.1")])
def test_cross_version(broker, clients, transport, sub_version, pub_version, topic):
    sub = clients(broker, transport, protocol=VERSIONS[sub_version])
    pub = clients(broker, transport, protocol=VERSIONS[pub_version])
    sub.subscribe(topic, 2)

    pub.publish(topic, b"between versions", 2)

    msg = sub.wait_for_message()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"between versions", 2)


def test_delivery_qos_is_min_of_publish_and_subscription(broker, clients, transport, topic):
    sub = clients(broker, transport)
    pub = clients(broker, transport)
    sub.subscribe(topic, 1)

    pub.publish(topic, b"downgraded", 2)

    msg = sub.wait_for_message()
    assert msg.payload == b"downgraded"
    assert msg.qos == 1


def test_many_messages_arrive_in_order(broker, clients, transport, topic):
    sub = clients(broker, transport)
    pub = clients(broker, transport)
    sub.subscribe(topic, 1)

    for i in range(100):
        pub.publish(topic, str(i), 1)

    got = [int(sub.wait_for_message().payload) for _ in range(100)]
    assert got == list(range(100))


def test_unsubscribe_stops_delivery(broker, clients, transport, topic):
    sub = clients(broker, transport)
    pub = clients(broker, transport)
    sub.subscribe(topic, 0)
    pub.publish(topic, b"before", 1)
    assert sub.wait_for_message().payload == b"before"

    sub.unsubscribe(topic)
    pub.publish(topic, b"after", 1)

    sub.expect_no_message(0.5)
