"""Two fanfare nodes on one nats-server: publishes cross nodes once, whole (RETAIN and the
MQTT 5 properties), native NATS publishers reach MQTT subscribers, nothing comes back to the
node it left, retained messages live in JetStream for every node, and a client id connected
on one node is taken over by a CONNECT on another (docs/scale-out.md).

A NATS subscription is made in the background after SUBSCRIBE; each test first sends probes
until one arrives, so the path is known to be open, then checks what it is about.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes

from client import unique_id
from client5 import Client5, props
from natsserver import NatsPublisher, nats_server_bin
from nodes import retained_on
from probe import open_path
from scrape import fetch_metrics, wait_for_metric

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(nats_server_bin() is None, reason="nats-server not installed"),
]


def test_publish_on_one_node_reaches_the_other_once(node, clients, topic):
    a, b = node("a"), node("b")
    sub = clients(a, "ws")
    sub.subscribe(topic + "/#", 1)
    wait_for_metric(a, "fanfare_cluster_subjects", lambda v: v >= 1)
    # `topic` and `topic.>` in the QoS stream.
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v >= 2)
    pub = clients(b, "tcp")
    open_path(sub, lambda p: pub.publish(topic + "/probe", p, 1), f"the cluster on {topic}")

    for i in range(10):
        pub.publish(f"{topic}/score", b"goal %d" % i, 1)
    got = [sub.wait_for_message() for _ in range(10)]
    assert [(m.topic, m.payload) for m in got] == [
        (f"{topic}/score", b"goal %d" % i) for i in range(10)]
    assert all(m.qos == 1 for m in got), "across nodes: QoS 1 over JetStream"
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
        assert (msg.topic, msg.payload, msg.retain) == (f"{topic}/m1/live", b"1-0", False)
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
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v == 1)
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
        # Its consumer of the QoS stream goes with it, from JetStream too.
        wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v == 0)
        deadline = time.monotonic() + 10
        while nats.consumers("FANFARE_QOS") != 0:
            assert time.monotonic() < deadline, "the consumer was not deleted"
            time.sleep(0.1)
    finally:
        native.close()


def test_without_nats_local_delivery_goes_on(start, clients, topic):
    """A node whose NATS server is not there serves its own clients at QoS 0, refuses QoS 1/2
    publishes (the other nodes could not be promised them), and counts what it could not
    send."""
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
    refused = pub.paho.publish(topic, b"refused", 1)
    pub.publish(topic, b"local", 0)
    msg = sub.wait_for_message()
    assert (msg.payload, msg.qos) == (b"local", 0)
    assert not refused.is_published()
    wait_for_metric(a, "fanfare_cluster_publishes_refused_total", lambda v: v == 1)
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
    assert json.loads(body)["retained"] == "loaded", body

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


def test_retained_on_one_node_reaches_late_subscribers_everywhere(node, clients, topic):
    a, b = node("a"), node("b")
    pub = clients(a, "tcp")
    pub.publish(f"{topic}/score", b"2-1", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v == 1)
    # b has no subscriber for it: it learns of it from the stream, not from a live publish.
    wait_for_metric(b, "fanfare_cluster_retained_loaded_total", lambda v: v == 1)
    [msg] = retained_on(b, clients, topic + "/#")
    assert (msg.topic, msg.payload, msg.retain) == (f"{topic}/score", b"2-1", True)

    # A node started after the publish loads it at start-up.
    c = node("c")
    [msg] = retained_on(c, clients, topic + "/+")
    assert (msg.topic, msg.payload, msg.retain) == (f"{topic}/score", b"2-1", True)

    # Cleared from b: gone on a, and on c.
    clear = clients(b, "ws")
    clear.publish(f"{topic}/score", b"", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_loaded_total", lambda v: v == 2)
    wait_for_metric(c, "fanfare_cluster_retained_loaded_total", lambda v: v == 2)
    assert retained_on(a, clients, topic + "/#") == []
    assert retained_on(c, clients, topic + "/#") == []


def test_the_last_retained_value_wins_and_a_restarted_node_has_it(node, clients, topic):
    a, b = node("a"), node("b")
    pub_a, pub_b = clients(a, "tcp"), clients(b, "tcp")
    pub_a.publish(f"{topic}/x", b"1", 1, retain=True)
    wait_for_metric(b, "fanfare_cluster_retained_loaded_total", lambda v: v == 1)
    pub_b.publish(f"{topic}/x", b"2", 1, retain=True)
    pub_b.publish(f"{topic}/y", b"3", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_loaded_total", lambda v: v == 3)
    got = retained_on(a, clients, topic + "/#")
    assert sorted((m.topic, m.payload) for m in got) == [
        (f"{topic}/x", b"2"), (f"{topic}/y", b"3")]
    a.kill()
    again = node("a")
    got = retained_on(again, clients, topic + "/#")
    assert sorted((m.topic, m.payload) for m in got) == [
        (f"{topic}/x", b"2"), (f"{topic}/y", b"3")]


def test_in_cluster_mode_jetstream_wins_over_the_data_directory(node, clients, topic, tmp_path):
    """A value cleared on another node while this one was down stays cleared, though this
    node's store still holds it."""
    data = tmp_path / "data"
    a, b = node("a", data_dir=data), node("b")
    clients(a, "tcp").publish(f"{topic}/x", b"value-before-the-restart", 1, retain=True)
    wait_for_metric(b, "fanfare_cluster_retained_loaded_total", lambda v: v == 1)
    assert a.terminate() == 0
    on_disk = [f.read_bytes() for f in data.glob("shard-*/retained.*")]
    assert any(b"value-before-the-restart" in kept for kept in on_disk)
    clients(b, "tcp").publish(f"{topic}/x", b"", 1, retain=True)
    wait_for_metric(b, "fanfare_cluster_retained_loaded_total", lambda v: v == 2)
    again = node("a", data_dir=data)
    assert retained_on(again, clients, topic + "/#") == []


def test_the_retain_flag_across_nodes_as_mqtt_prescribes(node, clients, topic):
    """A live subscriber gets RETAIN=0 [MQTT-3.3.1-9], unless it asked for Retain As
    Published [MQTT-3.3.1-12]; a late one gets RETAIN=1 [MQTT-3.3.1-6]."""
    a, b = node("a"), node("b")
    plain = Client5(b)
    plain.connect()
    kept = Client5(b, "ws")
    kept.connect()
    try:
        plain.subscribe5(topic, paho.SubscribeOptions(qos=0))
        kept.subscribe5(topic, paho.SubscribeOptions(qos=0, retainAsPublished=True))
        wait_for_metric(b, "fanfare_cluster_subjects", lambda v: v >= 1)
        pub = Client5(a)
        pub.connect()
        try:
            open_path(plain, lambda p: pub.publish5(topic, p, 0), f"the cluster on {topic}")
            while True:
                try:
                    kept.wait_for_message(timeout=0.3)
                except AssertionError:
                    break
            pub.publish5(topic, b"live", 1, retain=True)
            msg = plain.wait_for_message()
            assert (msg.payload, msg.retain) == (b"live", False)
            msg = kept.wait_for_message()
            assert (msg.payload, msg.retain) == (b"live", True)
        finally:
            pub.close()
    finally:
        plain.close()
        kept.close()
    wait_for_metric(b, "fanfare_cluster_retained_loaded_total", lambda v: v == 1)
    [msg] = retained_on(b, clients, topic)
    assert (msg.payload, msg.retain) == (b"live", True)


def test_mqtt5_properties_arrive_on_the_other_node(node, clients, topic):
    a, b = node("a"), node("b")
    sub = Client5(b, "ws")
    sub.connect()
    pub = Client5(a)
    pub.connect()
    try:
        sub.subscribe5(topic, paho.SubscribeOptions(qos=0))
        wait_for_metric(b, "fanfare_cluster_subjects", lambda v: v >= 1)
        open_path(sub, lambda p: pub.publish5(topic, p, 0), f"the cluster on {topic}")
        sent = props(PacketTypes.PUBLISH, ContentType="application/json; charset=utf-8",
                     UserProperty=[("team", "home"), ("note", "a=b %20 é"), ("team", "away")],
                     ResponseTopic=f"{topic}/reply", CorrelationData=b"\x00\x01%",
                     PayloadFormatIndicator=1, MessageExpiryInterval=600)
        pub.publish5(topic, b'{"score": "1-0"}', 1, properties=sent)
        msg = sub.wait_for_message()
        got = msg.properties
        assert msg.payload == b'{"score": "1-0"}'
        assert got.ContentType == "application/json; charset=utf-8"
        assert got.UserProperty == [("team", "home"), ("note", "a=b %20 é"), ("team", "away")]
        assert got.ResponseTopic == f"{topic}/reply"
        assert got.CorrelationData == b"\x00\x01%"
        assert got.PayloadFormatIndicator == 1
        assert 0 < got.MessageExpiryInterval <= 600
    finally:
        pub.close()
        sub.close()


def still_serves(client, topic: str) -> None:
    """`client` is connected: a publish to itself comes back, and it was never disconnected."""
    client.subscribe(topic, 0)
    client.publish(topic, b"still here", 0)
    assert client.wait_for_message().payload == b"still here"
    assert not client.disconnected.is_set(), f"{client.client_id} was disconnected"


def test_mqtt5_connect_on_another_node_takes_over_the_client_id(node, clients, v5_clients, topic):
    a, b = node("a"), node("b")
    watcher = clients(a, "tcp")
    watcher.subscribe(topic + "/will", 1)
    other = v5_clients(a)
    first = v5_clients(a, unique_id("moving"), will=(topic + "/will", b"gone", 1, False))

    second = v5_clients(b, first.client_id)
    assert first.wait_for_disconnect_reason() == 0x8E
    # A takeover ends the first connection without a DISCONNECT from its client: its will.
    assert watcher.wait_for_message().payload == b"gone"
    still_serves(second, topic + "/second")
    still_serves(other, topic + "/other")
    wait_for_metric(a, "fanfare_takeovers_total", lambda v: v == 1)


def test_mqtt311_connect_on_another_node_closes_the_first(node, clients, topic):
    a, b = node("a"), node("b")
    other = clients(a, "tcp")
    first = clients(a, "tcp", unique_id("moving"))

    second = clients(b, "ws", first.client_id)
    first.wait_for_disconnect()
    still_serves(second, topic + "/second")
    still_serves(other, topic + "/other")


def test_without_nats_a_takeover_on_the_node_still_works(start, v5_clients, topic):
    from broker import free_port
    url = f"nats://127.0.0.1:{free_port()}"
    a = start(shards=2, args=["--nats", url],
              config={"cluster": {"node": "alone", "ready_needs_nats": False}})
    first = v5_clients(a, unique_id("local"))
    second = v5_clients(a, first.client_id)
    assert first.wait_for_disconnect_reason() == 0x8E
    still_serves(second, topic)
    assert a.alive()
