"""Two fanfare nodes on one nats-server: publishes cross nodes once, native NATS publishers
reach MQTT subscribers, and nothing comes back to the node it left (docs/scale-out.md).

A NATS subscription is made in the background after SUBSCRIBE; each test first sends probes
until one arrives, so the path is known to be open, then checks what it is about.
"""

from __future__ import annotations

import json

import pytest

from natsserver import NatsPublisher, NatsServer, nats_server_bin
from probe import open_path
from scrape import fetch_metrics, wait_for_metric

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(nats_server_bin() is None, reason="nats-server not installed"),
]

@pytest.fixture
def nats(tmp_path_factory):
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture
def node(start, nats):
    """Start a fanfare node of the cluster: `node("a")`."""
    def _node(name: str, shards: int = 2):
        broker = start(shards=shards, args=["--nats", nats.url],
                       config={"cluster": {"node": name}})
        wait_for_metric(broker, "fanfare_cluster_connected", lambda v: v == 1)
        return broker
    return _node


def test_publish_on_one_node_reaches_the_other_once(node, clients, topic):
    a, b = node("a"), node("b")
    sub = clients(a, "ws")
    sub.subscribe(topic + "/#", 0)
    wait_for_metric(a, "fanfare_cluster_subjects", lambda v: v >= 1)
    pub = clients(b, "tcp")
    open_path(sub, lambda p: pub.publish(topic + "/probe", p, 0), f"the cluster on {topic}")

    for i in range(10):
        pub.publish(f"{topic}/score", b"goal %d" % i, 1)
    got = [sub.wait_for_message() for _ in range(10)]
    assert [(m.topic, m.payload) for m in got] == [
        (f"{topic}/score", b"goal %d" % i) for i in range(10)]
    assert all(m.qos == 0 for m in got), "across nodes: QoS 0 in this version"
    sub.expect_no_message()


def test_native_nats_publish_reaches_an_mqtt_subscriber(node, nats, clients, topic):
    a = node("a")
    sub = clients(a, "tcp")
    sub.subscribe(f"{topic}/+/live", 0)
    wait_for_metric(a, "fanfare_cluster_subjects", lambda v: v >= 1)
    native = NatsPublisher(nats)
    try:
        subject = "mqtt." + topic.replace("/", ".") + ".m1.live"
        open_path(sub, lambda p: native.publish(subject, p), f"the cluster on {topic}")
        native.publish(subject, b"1-0")
        msg = sub.wait_for_message()
        assert (msg.topic, msg.payload) == (f"{topic}/m1/live", b"1-0")
        sub.expect_no_message()
    finally:
        native.close()


def test_no_echo_a_local_publish_arrives_once(node, clients, topic):
    a, b = node("a"), node("b")
    sub_a = clients(a, "tcp")
    sub_a.subscribe(topic, 0)
    sub_b = clients(b, "tcp")
    sub_b.subscribe(topic, 0)
    wait_for_metric(a, "fanfare_cluster_subjects", lambda v: v >= 1)
    wait_for_metric(b, "fanfare_cluster_subjects", lambda v: v >= 1)
    # The path from a to b is open once b hears a's probe; a hears its own probes locally.
    pub_a = clients(a, "tcp")
    open_path(sub_b, lambda p: pub_a.publish(topic, p, 0), f"the cluster on {topic}")
    while True:
        try:
            sub_a.wait_for_message(timeout=0.3)
        except AssertionError:
            break

    pub_a.publish(topic, b"once", 0)
    assert sub_a.wait_for_message().payload == b"once"
    assert sub_b.wait_for_message().payload == b"once"
    sub_a.expect_no_message()
    sub_b.expect_no_message()


def test_interest_follows_the_last_subscriber(node, nats, clients, topic):
    a = node("a")
    first = clients(a, "tcp")
    second = clients(a, "ws")
    first.subscribe(topic + "/x", 0)
    second.subscribe(topic + "/x", 0)
    wait_for_metric(a, "fanfare_cluster_subjects", lambda v: v == 1)
    native = NatsPublisher(nats)
    try:
        subject = "mqtt." + topic.replace("/", ".") + ".x"
        open_path(second, lambda p: native.publish(subject, p), f"the cluster on {topic}")
        while True:
            try:
                first.wait_for_message(timeout=0.3)
            except AssertionError:
                break
        first.unsubscribe(topic + "/x")
        native.publish(subject, b"still heard")
        assert second.wait_for_message().payload == b"still heard"
        second.unsubscribe(topic + "/x")
        wait_for_metric(a, "fanfare_cluster_subjects", lambda v: v == 0)
    finally:
        native.close()


def test_without_nats_local_delivery_goes_on(start, clients, topic):
    """A node whose NATS server is not there serves its own clients and counts what it could
    not send."""
    from broker import free_port
    url = f"nats://127.0.0.1:{free_port()}"
    a = start(shards=2, args=["--nats", url],
              config={"cluster": {"node": "alone", "ready_needs_nats": False}})
    # Kept in rotation by `ready_needs_nats = false`, and saying why it may miss messages.
    status, _, body = fetch_metrics(a, "/readyz")
    assert (status, json.loads(body)["cluster"]) == (200, "disconnected"), body
    sub = clients(a, "tcp")
    sub.subscribe(topic, 1)
    pub = clients(a, "ws")
    pub.publish(topic, b"local", 1)
    msg = sub.wait_for_message()
    assert (msg.payload, msg.qos) == (b"local", 1)
    wait_for_metric(a, "fanfare_cluster_dropped_total", lambda v: v >= 1)
    assert a.alive()


def test_subscriptions_come_back_after_nats_restarts(node, nats, clients, topic):
    a, b = node("a"), node("b")
    sub = clients(a, "tcp")
    sub.subscribe(topic, 0)
    wait_for_metric(a, "fanfare_cluster_subjects", lambda v: v >= 1)
    pub = clients(b, "tcp")
    open_path(sub, lambda p: pub.publish(topic, p, 0), f"the cluster on {topic}")

    status, _, body = fetch_metrics(a, "/readyz")
    assert (status, json.loads(body)["cluster"]) == (200, "connected"), body

    nats.stop()
    wait_for_metric(a, "fanfare_cluster_connected", lambda v: v == 0)
    # Outside the cluster its clients would miss the other nodes' messages: not ready, so a
    # load balancer sends new clients elsewhere.
    status, _, body = fetch_metrics(a, "/readyz")
    assert (status, json.loads(body)["cluster"]) == (503, "disconnected"), body
    nats.start()
    wait_for_metric(a, "fanfare_cluster_connected", lambda v: v == 1, timeout_s=30)
    assert fetch_metrics(a, "/readyz")[0] == 200
    wait_for_metric(b, "fanfare_cluster_connected", lambda v: v == 1, timeout_s=30)
    open_path(sub, lambda p: pub.publish(topic, p, 0), f"the cluster on {topic}")
    pub.publish(topic, b"back", 0)
    assert sub.wait_for_message().payload == b"back"
