"""Three fanfare nodes on a NATS cluster of three servers (docs/scale-out.md): delivery from
publishers on every node to WebSocket and TCP subscribers on every node, native NATS clients
both ways, retained messages in a stream replicated three times, and the faults a cluster
lives through: a NATS server killed, a fanfare node killed, NATS gone altogether and back.

Node i is given only NATS server i; it learns the other servers from the cluster and moves to
one of them when its own is lost. The tests publish at QoS 1, which crosses nodes on
JetStream (test_cluster_qos.py has the QoS tests): each test first sends QoS 1 probes until
every path it uses carries them, then counts its own messages on a quiet cluster, so a count
that is off is a broker's fault, not a path still opening.
"""

from __future__ import annotations

import json

import pytest

from client5 import Client5
from natsserver import NatsPublisher, NatsSubscriber, nats_server_bin
from nodes import retained_on, retained_until
from probe import drain, open_mesh
from scrape import fetch_metrics, totals, wait_for_metric

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(nats_server_bin() is None, reason="nats-server not installed"),
]

STREAM = "FANFARE_RETAINED"
MESSAGES_PER_PUBLISHER = 50
# A node moves to another NATS server, and JetStream elects new leaders, within seconds.
RECONNECT_TIMEOUT_S = 30.0
# Late subscribers sent to each node after a NATS server is lost (RETAINED_PROBES_MAX
# otherwise, nodes.py): a node whose consumer was on it notices within two heartbeats of 2 s
# and reads the stream again, after a few tries while JetStream still places some new
# consumers on the lost server: within seconds.
FOLLOW_PROBES_MAX = 30


def subscribe_everywhere(brokers, clients, topic_filter: str) -> list:
    """A TCP and a WebSocket subscriber on every node, and every node's interest on NATS."""
    subs = []
    for broker in brokers:
        for transport in ("tcp", "ws"):
            sub = clients(broker, transport)
            sub.subscribe(topic_filter, 0)
            subs.append(sub)
    for broker in brokers:
        wait_for_metric(broker, "fanfare_cluster_subjects", lambda v: v >= 1)
        wait_for_metric(broker, "fanfare_cluster_qos_consumers", lambda v: v >= 1)
    return subs


@pytest.fixture
def probes():
    """`probes(pubs, topic)`: for each publisher, a function that sends a QoS 1 probe from an
    MQTT 5 client on the same node and transport, the path the tests' QoS 1 messages take.
    Not waited for: a node refuses them (0x97) while its NATS connection or JetStream is not
    there yet, and MQTT 5 gets that answer, where a 3.1.1 client would keep them unanswered
    until its window of unacknowledged publishes is full."""
    made = []

    def _probes(pubs, topic: str) -> list:
        sends = []
        for pub in pubs:
            prober = Client5(pub.broker, pub.transport)
            prober.connect()
            made.append(prober)
            sends.append(lambda p, prober=prober: prober.paho.publish(topic + "/probe", p, 1))
        return sends

    yield _probes
    for prober in made:
        prober.close()


def publish_and_count(pubs, subs, topic: str) -> None:
    """Each publisher j sends MESSAGES_PER_PUBLISHER messages on `topic/score/j`; every
    subscriber gets each one once, in order per publisher, and nothing else."""
    for n in range(MESSAGES_PER_PUBLISHER):
        for j, pub in enumerate(pubs):
            # QoS 1 to its own node: sent only once that node has taken the message.
            pub.publish(f"{topic}/score/{j}", b"%d %d" % (j, n), 1)
    want = {f"{topic}/score/{j}": [b"%d %d" % (j, n) for n in range(MESSAGES_PER_PUBLISHER)]
            for j in range(len(pubs))}
    for sub in subs:
        got = {name: [] for name in want}
        for _ in range(MESSAGES_PER_PUBLISHER * len(pubs)):
            msg = sub.wait_for_message()
            assert msg.topic in got, (sub.client_id, msg.topic, msg.payload)
            got[msg.topic].append(msg.payload)
        assert got == want, f"{sub.client_id} ({sub.transport} on :{sub.broker.tcp_port})"
    subs[0].expect_no_message()
    for sub in subs[1:]:
        sub.expect_no_message(timeout=0.05)


def readyz(broker) -> tuple[int, dict]:
    status, _, body = fetch_metrics(broker, "/readyz")
    return status, json.loads(body)


def test_every_subscriber_on_every_node_gets_every_publish(three, clients, topic, probes):
    subs = subscribe_everywhere(three, clients, topic + "/#")
    pubs = [clients(broker, transport) for broker, transport in zip(three, ("tcp", "ws", "tcp"))]
    open_mesh(probes(pubs, topic), subs, "three nodes")
    publish_and_count(pubs, subs, topic)


def test_native_nats_clients_and_fanfare_interoperate(nats_cluster, three, clients, topic):
    subject = "mqtt." + topic.replace("/", ".")
    subs = []
    for broker in three:
        sub = clients(broker, "ws")
        sub.subscribe(topic + "/+", 0)
        subs.append(sub)
    for broker in three:
        wait_for_metric(broker, "fanfare_cluster_subjects", lambda v: v >= 1)
    native = NatsPublisher(nats_cluster.servers[1])
    try:
        open_mesh([lambda p: native.publish(subject + ".probe", p)], subs, "NATS to fanfare")
        native.publish(subject + ".live", b"1-0")
        for sub in subs:
            msg = sub.wait_for_message()
            assert (msg.topic, msg.payload, msg.retain) == (f"{topic}/live", b"1-0", False)
        for sub in subs:
            sub.expect_no_message(timeout=0.1)
    finally:
        native.close()

    # The other way: a fanfare publish on any node reaches a native NATS subscriber.
    listener = NatsSubscriber(nats_cluster.servers[2], subject + ".>")
    try:
        for i, broker in enumerate(three):
            pub = clients(broker, "ws")
            # The subscription reaches the other NATS servers a moment after this one has it.
            for _ in range(100):
                pub.publish(f"{topic}/probe", b"probe", 0)
                try:
                    seen, _, _ = listener.next_message(timeout=0.05)
                except TimeoutError:
                    continue
                assert seen == subject + ".probe"
                break
            else:
                raise AssertionError(f"no probe from node {i + 1} reached NATS")
            pub.publish(f"{topic}/from/{i}", b"2-%d" % i, 1)
            while True:
                seen, headers, payload = listener.next_message()
                if seen != subject + ".probe":
                    break
            assert (seen, payload) == (f"{subject}.from.{i}", b"2-%d" % i)
            assert b"Fanfare-Origin: node%d" % (i + 1) in headers, headers
    finally:
        listener.close()


def test_retained_set_on_one_node_is_served_on_another_and_cleared_from_a_third(
        nats_cluster, three, clients, topic):
    a, b, c = three
    clients(a, "tcp").publish(f"{topic}/score", b"2-1", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v == 1)
    # c learns of it from the stream: it has no subscriber that took it live.
    wait_for_metric(c, "fanfare_cluster_retained_loaded_total", lambda v: v >= 1)
    [msg] = retained_on(c, clients, topic + "/#", "ws")
    assert (msg.topic, msg.payload, msg.retain) == (f"{topic}/score", b"2-1", True)

    # On a cluster of three servers the stream keeps three copies, one on each.
    stream = nats_cluster.stream(STREAM)
    assert stream["config"]["num_replicas"] == 3, stream["config"]
    assert nats_cluster.stream_holders(STREAM) == {"n1", "n2", "n3"}

    loaded = totals(c)["fanfare_cluster_retained_loaded_total"]
    clients(b, "ws").publish(f"{topic}/score", b"", 1, retain=True)
    wait_for_metric(b, "fanfare_cluster_retained_stored_total", lambda v: v == 1)
    wait_for_metric(c, "fanfare_cluster_retained_loaded_total", lambda v: v > loaded)
    wait_for_metric(a, "fanfare_cluster_retained_loaded_total", lambda v: v >= 2)
    assert retained_on(c, clients, topic + "/#", "ws") == []
    assert retained_on(a, clients, topic + "/#", "ws") == []


def test_a_nats_server_killed(nats_cluster, three, clients, topic, probes):
    """Node 1's NATS server dies: node 1 moves to another server, delivery between all nodes
    goes on, and the stream (two of three replicas left) still serves and stores values."""
    a, b, c = three
    # Retained values on topics the subscribers below do not match, so they count only live
    # messages.
    kept = f"{topic}_retained"
    clients(b, "tcp").publish(f"{kept}/before", b"kept", 1, retain=True)
    wait_for_metric(b, "fanfare_cluster_retained_stored_total", lambda v: v == 1)
    subs = subscribe_everywhere(three, clients, topic + "/#")
    pubs = [clients(broker, "tcp") for broker in three]
    sends = probes(pubs, topic)
    open_mesh(sends, subs, "three nodes")

    assert nats_cluster.wait_client("fanfare node1") == "n1"
    nats_cluster.servers[0].kill()
    nats_cluster.wait_formed(timeout_s=RECONNECT_TIMEOUT_S)
    # Node 1 was given n1 alone: it found the others in the cluster's INFO.
    assert nats_cluster.wait_client("fanfare node1", RECONNECT_TIMEOUT_S) in ("n2", "n3")
    wait_for_metric(a, "fanfare_cluster_connected", lambda v: v == 1,
                    timeout_s=RECONNECT_TIMEOUT_S)
    open_mesh(sends, subs, "three nodes, one NATS server down", timeout_s=RECONNECT_TIMEOUT_S)
    publish_and_count(pubs, subs, topic)

    # Every node still serves the value set before, from its replica.
    for broker in three:
        [msg] = retained_on(broker, clients, kept + "/#", "ws")
        assert (msg.topic, msg.payload, msg.retain) == (f"{kept}/before", b"kept", True)
    # And a value can still be set: JetStream stores it on the two servers left.
    nats_cluster.wait_stream_led(STREAM)
    clients(a, "tcp").publish(f"{kept}/after", b"set", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v == 1,
                    timeout_s=RECONNECT_TIMEOUT_S)
    assert nats_cluster.stream(STREAM)["state"]["num_subjects"] == 2


def test_every_node_follows_the_stream_after_a_nats_server_is_killed(
        nats_cluster, three, clients, topic):
    # The server holding the most of the nodes' consumers holds one at least.
    hosts = {server.name: server.consumers(STREAM) for server in nats_cluster.servers}
    victim = max(nats_cluster.servers, key=lambda server: hosts[server.name])
    assert hosts[victim.name] >= 1, hosts
    victim.kill()
    nats_cluster.wait_formed(timeout_s=RECONNECT_TIMEOUT_S)
    nats_cluster.wait_stream_led(STREAM)
    # A QoS 1 publish is acknowledged once the QoS stream stored it.
    nats_cluster.wait_stream_led("FANFARE_QOS")
    # Set from a node whose own NATS server is still there.
    setter = three[(nats_cluster.servers.index(victim) + 1) % 3]
    clients(setter, "tcp").publish(f"{topic}/late", b"set", 1, retain=True,
                                   timeout=RECONNECT_TIMEOUT_S)
    wait_for_metric(setter, "fanfare_cluster_retained_stored_total", lambda v: v == 1,
                    timeout_s=RECONNECT_TIMEOUT_S)
    # No node has a subscriber for it: each learns of it from the stream alone.
    for broker in three:
        got = retained_until(broker, clients, f"{topic}/late", lambda got: len(got) == 1,
                             probes=FOLLOW_PROBES_MAX, transport="ws")
        assert [(m.topic, m.payload) for m in got] == [(f"{topic}/late", b"set")]


def test_a_fanfare_node_killed(three, clients, topic, probes):
    """Node 1 dies: its clients connect to node 2 with the same ids and receive again; the
    other nodes' subscribers never stop receiving."""
    a, b, c = three
    stay = subscribe_everywhere([b, c], clients, topic + "/#")
    moving = [clients(a, transport) for transport in ("tcp", "ws")]
    for sub in moving:
        sub.subscribe(topic + "/#", 0)
    wait_for_metric(a, "fanfare_cluster_subjects", lambda v: v >= 1)
    pubs = [clients(c, "tcp"), clients(b, "ws")]
    sends = probes(pubs, topic)
    open_mesh(sends, stay + moving, "three nodes")

    a.kill()
    for sub in moving:
        sub.wait_for_disconnect()
    moved = []
    for sub in moving:
        again = clients(b, sub.transport, client_id=sub.client_id)
        again.subscribe(topic + "/#", 0)
        moved.append(again)
    open_mesh(sends, stay + moved, "two nodes")
    publish_and_count(pubs, stay + moved, topic)


def test_nats_gone_and_back(nats_cluster, three, clients, topic, probes):
    """With every NATS server stopped each node serves its own clients and says it is not
    ready; once NATS is back the nodes' subscriptions are restored and delivery crosses again,
    retained values included."""
    subs = subscribe_everywhere(three, clients, topic + "/#")
    pubs = [clients(broker, "ws") for broker in three]
    sends = probes(pubs, topic)
    open_mesh(sends, subs, "three nodes")
    for broker in three:
        status, body = readyz(broker)
        assert (status, body["cluster"], body["retained"]) == (200, "connected", "loaded"), body

    for server in nats_cluster.servers:
        server.stop()
    for broker in three:
        wait_for_metric(broker, "fanfare_cluster_connected", lambda v: v == 0)
        status, body = readyz(broker)
        assert (status, body["cluster"]) == (503, "disconnected"), body
    # Local delivery goes on at QoS 0 (QoS 1/2 are refused, test_cluster_qos.py): each
    # node's subscribers get that node's publishes, and only those (nothing crosses).
    for i, pub in enumerate(pubs):
        pub.publish(f"{topic}/alone", b"local %d" % i, 0)
    for k, sub in enumerate(subs):
        msg = sub.wait_for_message()
        assert (msg.topic, msg.payload) == (f"{topic}/alone", b"local %d" % (k // 2))
    drain(subs)

    nats_cluster.restart_stopped(streams=("FANFARE_QOS",))
    for broker in three:
        wait_for_metric(broker, "fanfare_cluster_connected", lambda v: v == 1,
                        timeout_s=RECONNECT_TIMEOUT_S)
        assert readyz(broker)[0] == 200
    open_mesh(sends, subs, "three nodes after NATS came back", timeout_s=RECONNECT_TIMEOUT_S)
    publish_and_count(pubs, subs, topic)

    # The stream is followed again: a value set on node 1, on a topic node 3 has no
    # subscriber for, reaches node 3's replica through the stream alone.
    a, b, c = three
    nats_cluster.wait_stream_led(STREAM)
    elsewhere = f"{topic}_retained/back"
    clients(a, "tcp").publish(elsewhere, b"stored", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v >= 1,
                    timeout_s=RECONNECT_TIMEOUT_S)
    got = retained_until(c, clients, elsewhere, lambda got: len(got) > 0, transport="ws")
    assert [(m.topic, m.payload) for m in got] == [(elsewhere, b"stored")]
