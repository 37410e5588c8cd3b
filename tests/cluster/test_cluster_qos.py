"""QoS 1 and 2 across three fanfare nodes on a NATS cluster of three servers with JetStream
(docs/scale-out.md, "QoS 1 and 2 across nodes"): every subscriber on every node gets every
QoS 1/2 publish, in order per publisher, a QoS 2 subscriber exactly once; a publisher's
acknowledgement means the message will arrive, also when a NATS server dies; without NATS,
QoS 1/2 publishes are not acknowledged while QoS 0 goes on locally.

Node i is given NATS server i only (as in test_cluster3.py). A node reads the QoS stream
through consumers it makes when its first subscriber of a filter comes; each test waits for
them, then sends QoS 1 probes until every path carries one, and counts its own messages on a
quiet cluster.
"""

from __future__ import annotations

import struct
import time

import pytest

import rawmqtt as m
from client import unique_id
from client5 import Client5
from natsserver import nats_server_bin
from nodes import start_nodes
from probe import drain, open_mesh, take_all
from scrape import totals, wait_for_metric

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(nats_server_bin() is None, reason="nats-server not installed"),
]

STREAM = "FANFARE_QOS"
MESSAGES_PER_PUBLISHER = 40
# A node moves to another NATS server, and JetStream elects new leaders, within seconds.
RECONNECT_TIMEOUT_S = 30.0
# How long a publish waits for its acknowledgement in the fault tests: JetStream answers or
# times out (5 s) well within it.
ACK_TIMEOUT_S = 15.0
# How long a subscriber may take to receive what was acknowledged, across a failover.
ARRIVAL_TIMEOUT_S = 60.0
QUOTA_EXCEEDED = 0x97


def connect5(client_id: str) -> bytes:
    body = m.utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00" + m.utf8(client_id)
    return m.packet(m.CONNECT, 0, body)


def publish5(topic: str, payload: bytes, qos: int, packet_id: int) -> bytes:
    body = m.utf8(topic) + struct.pack("!H", packet_id) + b"\x00" + payload
    return m.packet(m.PUBLISH, qos << 1, body)


def subscribe(broker, clients, transport: str, qos: int, filters: list[str]):
    sub = clients(broker, transport)
    for topic_filter in filters:
        sub.subscribe(topic_filter, qos)
    sub.qos = qos
    return sub


def wait_consumers(brokers, count: int) -> None:
    """Every node reads at least `count` consumers of the QoS stream."""
    for broker in brokers:
        wait_for_metric(broker, "fanfare_cluster_qos_consumers", lambda v: v >= count,
                        timeout_s=RECONNECT_TIMEOUT_S)


def qos1_probes(pubs: list, topic: str) -> list:
    return [lambda p, pub=pub: pub.publish(topic + "/probe", p, 1) for pub in pubs]


def in_order_once(got: list, want: list) -> bool:
    return got == want


def in_order_at_least_once(got: list, want: list) -> bool:
    """`got` is `want` with some messages repeated right after themselves (a redelivery)."""
    deduped = [m for k, m in enumerate(got) if k == 0 or got[k - 1] != m]
    return deduped == want


def test_every_qos_subscriber_on_every_node_gets_every_qos_publish(three, clients, topic):
    subs = [subscribe(broker, clients, transport, qos, [topic + "/#"])
            for broker in three for transport in ("tcp", "ws") for qos in (1, 2)]
    # Two filters that both match every publish: the node reads both consumers, and the
    # subscriber still gets each message once.
    subs.append(subscribe(three[2], clients, "ws", 2, [topic + "/#", topic + "/score/+"]))
    # Node 3 holds three consumers: `topic`, `topic.>` and `topic.score.*`.
    wait_consumers(three, 2)
    wait_for_metric(three[2], "fanfare_cluster_qos_consumers", lambda v: v >= 3)
    publishers = [(three[0], "tcp", 1), (three[1], "ws", 2), (three[2], "tcp", 2)]
    pubs = [clients(broker, transport) for broker, transport, _ in publishers]
    open_mesh(qos1_probes(pubs, topic), subs, "three nodes over JetStream")

    for n in range(MESSAGES_PER_PUBLISHER):
        for j, (pub, (_, _, qos)) in enumerate(zip(pubs, publishers)):
            # Acknowledged once JetStream stored it for the other nodes.
            pub.publish(f"{topic}/score/{j}", b"%d %d" % (j, n), qos)
    want = {f"{topic}/score/{j}": [b"%d %d" % (j, n) for n in range(MESSAGES_PER_PUBLISHER)]
            for j in range(len(pubs))}
    total = MESSAGES_PER_PUBLISHER * len(pubs)
    for sub in subs:
        got = {name: [] for name in want}
        # A QoS 1 subscriber may get a message again (a redelivery): read until it has every
        # message once, within twice as many reads.
        distinct = set()
        for _ in range(2 * total):
            if len(distinct) == total:
                break
            msg = sub.wait_for_message()
            assert msg.topic in got, (sub.client_id, msg.topic, msg.payload)
            got[msg.topic].append(msg.payload)
            distinct.add((msg.topic, msg.payload))
            j = int(msg.topic.rsplit("/", 1)[1])
            assert msg.qos == min(sub.qos, publishers[j][2]), (sub.client_id, msg.topic)
        where = f"{sub.client_id} ({sub.transport} QoS {sub.qos} on :{sub.broker.tcp_port})"
        in_order = in_order_once if sub.qos == 2 else in_order_at_least_once
        for name in want:
            assert in_order(got[name], want[name]), (where, name, got[name])
    # A QoS 2 subscriber got nothing more: its count above was exact.
    for sub in subs:
        if sub.qos == 2:
            sub.expect_no_message(timeout=0.1)
    for broker in three:
        figures = totals(broker)
        assert figures["fanfare_cluster_publishes_refused_total"] == 0, figures


def publish_counting_acks(pub: Client5, topic: str, before: int, after: int,
                          kill) -> tuple[list[bytes], int]:
    """Publishes QoS 1 messages numbered from 0 without waiting for each acknowledgement:
    `before` of them, then `kill()`, then more until `after` of those sent after the kill
    were acknowledged (JetStream took them on the servers left), within ARRIVAL_TIMEOUT_S.
    MQTT 5, so that a refused publish (0x97) frees its place in the client's window. Returns
    the payloads acknowledged with success, and how many of them came after the kill."""
    sent = []
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S

    def acked_after_kill() -> int:
        return sum(1 for n, info in sent[before:]
                   if info.is_published() and pub.publish_reasons.get(info.mid) == 0)

    n = 0
    while n < before or acked_after_kill() < after:
        assert time.monotonic() < deadline, \
            f"{acked_after_kill()} of {len(sent) - before} publishes acknowledged after the kill"
        sent.append((n, pub.paho.publish(topic, b"%d" % n, 1)))
        n += 1
        if n == before:
            kill()
        time.sleep(0.02)
    acked = []
    for n, info in sent:
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        if info.is_published() and pub.publish_reasons.get(info.mid) == 0:
            acked.append(b"%d" % n)
    return acked, acked_after_kill()


def test_no_acknowledged_message_is_lost_when_a_nats_server_is_killed(
        nats_cluster, three, clients, topic):
    subs = [subscribe(broker, clients, transport, qos, [topic + "/#"])
            for broker in three for transport, qos in (("tcp", 1), ("ws", 2))]
    wait_consumers(three, 2)
    pub = Client5(three[0], "tcp")
    pub.connect()
    try:
        open_mesh(qos1_probes([pub], topic), subs, "three nodes over JetStream")
        # Node 1's own NATS server dies while node 1's client publishes: traffic goes on
        # through the servers left, and what was acknowledged before, during and after the
        # failover reaches every subscriber.
        assert nats_cluster.wait_client("fanfare node1") == "n1"
        acked, after_kill = publish_counting_acks(pub, f"{topic}/live", 50, 50,
                                                  nats_cluster.servers[0].kill)
    finally:
        pub.close()
    assert after_kill >= 50 and len(acked) >= 50, (len(acked), after_kill)

    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    got = {sub.client_id: [] for sub in subs}
    missing = {sub.client_id for sub in subs}
    while missing and time.monotonic() < deadline:
        time.sleep(0.2)
        for sub in subs:
            got[sub.client_id] += [m.payload for m in take_all(sub) if m.topic == f"{topic}/live"]
            if set(acked) <= set(got[sub.client_id]):
                missing.discard(sub.client_id)
    for sub in subs:
        lost = sorted(set(acked) - set(got[sub.client_id]), key=int)
        assert not lost, f"{sub.client_id} (QoS {sub.qos}) lost acknowledged {lost[:10]}"
        if sub.qos == 2:
            payloads = got[sub.client_id]
            assert len(payloads) == len(set(payloads)), f"{sub.client_id} got duplicates"


def test_without_nats_qos_publishes_are_refused_then_acknowledged_again(
        nats_cluster, three, clients, raw, topic):
    a, b, _ = three
    local = subscribe(a, clients, "tcp", 0, [topic + "/#"])
    remote = subscribe(b, clients, "ws", 1, [topic + "/#"])
    wait_consumers([a, b], 2)
    v5 = Client5(a, "tcp")
    v5.connect()
    v3 = clients(a, "ws")
    try:
        open_mesh(qos1_probes([v3], topic), [remote], "node 1 to node 2")
        drain([local])

        for server in nats_cluster.servers:
            server.stop()
        wait_for_metric(a, "fanfare_cluster_connected", lambda v: v == 0)
        # MQTT 5: refused with 0x97 Quota exceeded, PUBACK and PUBREC alike (PUBREC's code
        # read from the bytes: paho reports the PUBCOMP's).
        assert v5.publish5(f"{topic}/x", b"q1", 1) == QUOTA_EXCEEDED
        raw5 = raw(a, "tcp")
        raw5.send(connect5(unique_id("raw5")))
        assert raw5.expect(m.CONNACK).body[1] == 0
        raw5.send(publish5(f"{topic}/x", b"q2", 2, 7))
        pubrec = raw5.expect(m.PUBREC)
        assert (pubrec.packet_id, pubrec.body[2]) == (7, QUOTA_EXCEEDED)
        # MQTT 3.1.1: no acknowledgement; the client keeps it to send again.
        info = v3.paho.publish(f"{topic}/x", b"unacknowledged", 1)
        info.wait_for_publish(1.0)
        assert not info.is_published()
        # QoS 0 goes on locally; the refused publishes were not delivered here either.
        v3.publish(f"{topic}/x", b"local", 0)
        assert local.wait_for_message().payload == b"local"
        local.expect_no_message()
        wait_for_metric(a, "fanfare_cluster_publishes_refused_total", lambda v: v >= 3)

        nats_cluster.restart_stopped(streams=(STREAM,))
        wait_for_metric(a, "fanfare_cluster_connected", lambda v: v == 1,
                        timeout_s=RECONNECT_TIMEOUT_S)
        # Acknowledged again once JetStream answers (its leaders are elected meanwhile).
        deadline = time.monotonic() + RECONNECT_TIMEOUT_S
        while v5.publish5(f"{topic}/probe", b"probe 0", 1) != 0:
            assert time.monotonic() < deadline, "QoS 1 never acknowledged again"
            time.sleep(0.5)
        # Node 2 reads its consumers again once it finds them silent.
        open_mesh(qos1_probes([v3], topic), [remote], "node 1 to node 2 again",
                  timeout_s=RECONNECT_TIMEOUT_S)
        drain([local, remote])
        for n in range(5):
            assert v5.publish5(f"{topic}/back", b"%d" % n, 2) == 0
        got = [remote.wait_for_message() for _ in range(5)]
        assert [(m.topic, m.payload) for m in got] == [
            (f"{topic}/back", b"%d" % n) for n in range(5)]
    finally:
        v5.close()


def test_without_a_jetstream_quorum_qos_publishes_are_not_acknowledged(
        nats_cluster, three, clients, raw, topic):
    """Node 1 keeps its NATS server, but JetStream lost its quorum and cannot store a QoS 1/2
    publish: its publisher is not told it was stored (0x97 for MQTT 5, no acknowledgement
    for 3.1.1), as the acknowledgement waits for JetStream's answer. Once the quorum is back,
    the publishes are acknowledged and cross again."""
    a, b, _ = three
    remote = subscribe(b, clients, "ws", 1, [topic + "/#"])
    wait_consumers([b], 1)
    v5 = Client5(a, "tcp")
    v5.connect()
    v3 = clients(a, "ws")
    try:
        open_mesh(qos1_probes([v3], topic), [remote], "node 1 to node 2")
        for server in nats_cluster.servers[1:]:
            server.stop()
        wait_for_metric(a, "fanfare_cluster_connected", lambda v: v == 1)
        # Off the subscriber's filter: JetStream may still store a publish after its answer
        # came too late, once the quorum is back (a refusal promises nothing either way).
        refused = f"{topic}_refused/x"
        assert v5.publish5(refused, b"q1", 1, timeout=ACK_TIMEOUT_S) == QUOTA_EXCEEDED
        raw5 = raw(a, "tcp")
        raw5.send(connect5(unique_id("raw5")))
        assert raw5.expect(m.CONNACK).body[1] == 0
        raw5.send(publish5(refused, b"q2", 2, 7))
        pubrec = raw5.expect(m.PUBREC, timeout=ACK_TIMEOUT_S)
        assert (pubrec.packet_id, pubrec.body[2]) == (7, QUOTA_EXCEEDED)
        info = v3.paho.publish(refused, b"unacknowledged", 1)
        info.wait_for_publish(ACK_TIMEOUT_S)
        assert not info.is_published()
        # Refused with node 1's NATS server there all along.
        wait_for_metric(a, "fanfare_cluster_connected", lambda v: v == 1)

        nats_cluster.restart_stopped(streams=(STREAM,))
        deadline = time.monotonic() + RECONNECT_TIMEOUT_S
        while v5.publish5(f"{topic}/probe", b"probe 0", 1, timeout=ACK_TIMEOUT_S) != 0:
            assert time.monotonic() < deadline, "QoS 1 never acknowledged again"
            time.sleep(0.5)
        open_mesh(qos1_probes([v3], topic), [remote], "node 1 to node 2 again",
                  timeout_s=RECONNECT_TIMEOUT_S)
    finally:
        v5.close()


def test_under_sync_durability_an_acknowledgement_waits_for_the_disk_and_jetstream(
        start, nats_cluster, clients, topic, tmp_path):
    """Both promises hold before the publisher hears one: the acknowledgement waits for
    JetStream (`cluster_acks.rs`), then for the disk (`held_acks.rs`)."""
    a, b = start_nodes(start, nats_cluster.servers[:2],
                       args=lambda i: ["--data-dir", str(tmp_path / f"data{i}")],
                       config=lambda i: {"durability": "sync"})
    subs = [subscribe(b, clients, "tcp", 2, [topic + "/#"]),
            subscribe(a, clients, "ws", 1, [topic + "/#"])]
    wait_consumers([b], 2)
    pub = clients(a, "tcp")
    open_mesh(qos1_probes([pub], topic), subs[:1], "node 1 to node 2")
    drain(subs)
    for n in range(20):
        pub.publish(f"{topic}/durable", b"%d" % n, 1 + n % 2)
    for sub in subs:
        got = [sub.wait_for_message() for _ in range(20)]
        # In order per QoS [MQTT-4.6.0-6]; paho hands a QoS 2 message over at its PUBREL, so
        # a QoS 1 message sent after it may come first.
        for qos in (1, 2):
            want = [b"%d" % n for n in range(20) if min(sub.qos, 1 + n % 2) == qos]
            assert [m.payload for m in got if m.qos == qos] == want, (sub.client_id, qos)
    wait_for_metric(a, "fanfare_cluster_qos_stored_total", lambda v: v >= 20)
