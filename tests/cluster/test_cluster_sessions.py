"""Persistent sessions across a cluster of three fanfare nodes on three NATS servers with
JetStream (docs/scale-out.md, "Persistent sessions across nodes"): a session follows its
client to another node with its subscriptions and queued QoS 1 messages, and outlives a
node killed under it.

Delivery across nodes is QoS 0 (core NATS): a test that needs a node's subscription to be
heard on NATS sends probes until one arrives, rather than sleeping a guess.
"""

from __future__ import annotations

import base64
import json
import signal
import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from client import unique_id
from client5 import props
from natsserver import NatsSubscriber, nats_server_bin
from nodes import start_node, start_nodes
from probe import open_path
import rawmqtt
from scrape import wait_for_metric

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(nats_server_bin() is None, reason="nats-server not installed"),
]

QUEUED = 5
CONNECT = PacketTypes.CONNECT
BUCKET = "FANFARE_SESSIONS"
# A node writes a changed session within session_sync_interval_ms (100 ms); JetStream
# answers within milliseconds on loopback.
WRITTEN_TIMEOUT_S = 10.0


def bucket_value(server, client_id: str) -> bytes:
    """What the sessions bucket holds for `client_id` (letters, digits and `-` only, as
    `unique_id` makes them): the holder's name and the session's record; b"" for none."""
    inbox = "_INBOX.cluster_sessions_test"
    sub = NatsSubscriber(server, inbox)
    try:
        ask = json.dumps({"last_by_subj": f"$KV.{BUCKET}.{client_id}"}).encode()
        sub.sock.sendall(b"PUB $JS.API.STREAM.MSG.GET.KV_%s %s %d\r\n%s\r\n"
                         % (BUCKET.encode(), inbox.encode(), len(ask), ask))
        _, _, payload = sub.next_message()
    finally:
        sub.close()
    message = json.loads(payload).get("message", {})
    return base64.b64decode(message.get("data", ""))


def wait_written(nats_cluster, client_id: str, holder: str, *needles: bytes) -> None:
    """Until the bucket holds the session of `client_id`, held by `holder`, with each of
    `needles` in its record (a filter, a payload)."""
    deadline = time.monotonic() + WRITTEN_TIMEOUT_S
    while True:
        value = bucket_value(nats_cluster.servers[1], client_id)
        name = value[1:1 + value[0]] if value else b""
        if name == holder.encode() and all(n in value for n in needles):
            return
        assert time.monotonic() < deadline, f"{client_id} not written: {value!r}"
        time.sleep(0.05)


def queue_on(broker, clients, topic: str, name: str = "queued") -> list[bytes]:
    """Publishes QUEUED QoS 1 messages on `broker`, each acknowledged by it."""
    pub = clients(broker, "tcp")
    payloads = [b"%s %d" % (name.encode(), n) for n in range(QUEUED)]
    for payload in payloads:
        pub.publish(topic, payload, 1)
    return payloads


def away_with_queued(node1, nats_cluster, clients, cid: str, topic: str) -> list[bytes]:
    """`cid` subscribes to `topic` at QoS 1 on node 1 and goes away; QUEUED messages
    published on node 1 queue for it, and the bucket holds them. Returns their payloads."""
    sub = clients(node1, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    # Node 1 reads the QoS stream for the filter.
    wait_for_metric(node1, "fanfare_cluster_qos_consumers", lambda v: v >= 1)
    sub.disconnect()
    queued = queue_on(node1, clients, topic, "before")
    wait_written(nats_cluster, cid, "node1", topic.encode(), queued[-1])
    return queued


def live_from(broker, clients, sub, topic: str) -> None:
    """`sub`'s subscription to `topic` hears a publish on another node."""
    pub = clients(broker, "tcp")
    open_path(sub, lambda p: pub.publish(topic, p, 0), "the cluster")
    pub.publish(topic, b"live", 1)
    assert sub.wait_for_message().payload == b"live"


def test_a_persistent_session_moves_with_its_queued_messages(three, clients, topic):
    """Subscribed on node 1, away while QoS 1 messages published on nodes 1 and 2 queue
    there, back on node 3: session present, the queued messages in order, the subscription
    alive on node 3; and node 1 no longer holds the session (it comes back from node 3)."""
    a, b, c = three
    cid = unique_id("moving")
    sub = clients(a, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    # Node 1 reads the QoS stream for the filter: node 2's publishes reach the session.
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v >= 1)
    sub.disconnect()
    payloads = queue_on(a, clients, topic, "node1")
    payloads += queue_on(b, clients, topic, "node2")
    wait_for_metric(a, "fanfare_cluster_qos_received_total", lambda v: v >= QUEUED)

    moved = clients(c, "tcp", cid, clean_session=False, connect=False)
    assert moved.connect() is True, "session present on node 3"
    got = [moved.wait_for_message() for _ in payloads]
    assert [m.payload for m in got] == payloads
    assert all(m.qos == 1 for m in got)
    moved.expect_no_message()
    live_from(b, clients, moved, topic)
    wait_for_metric(c, "fanfare_cluster_sessions_fetched_total", lambda v: v == 1)
    moved.disconnect()

    back = clients(a, "tcp", cid, clean_session=False, connect=False)
    assert back.connect() is True, "node 1 got it back from node 3"
    back.expect_no_message()


def test_a_connected_client_moving_takes_its_session_along(three, clients, topic):
    """A client still connected to node 1 connects to node 2: node 1 ends its connection,
    and node 2 resumes the session, its subscription with it."""
    a, b, _ = three
    cid = unique_id("takeover")
    first = clients(a, "tcp", cid, clean_session=False)
    first.subscribe(topic, 1)
    second = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert second.connect() is True, "session present on node 2"
    first.wait_for_disconnect()
    live_from(a, clients, second, topic)


def test_a_session_is_taken_from_the_node_it_moved_to_before_that_node_wrote_it(
        start, nats_cluster, clients, topic):
    """Node 2 writes its sessions to the bucket once a minute only. A session moves from
    node 1 to node 2 and gets QoS 1 messages queued there; the bucket still names node 1.
    Its client then connects to node 3: node 1 says it handed the session to node 2, and
    node 3 takes it from there, queued messages and all, rather than the bucket's older
    image. Node 2 keeps no copy."""
    a, b, c = start_nodes(
        start, nats_cluster.servers,
        cluster=lambda i: {"session_sync_interval_ms": 60_000} if i == 1 else {})
    cid = unique_id("twice")
    sub = clients(a, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v >= 1)
    wait_written(nats_cluster, cid, "node1", topic.encode())
    sub.disconnect()

    on_b = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert on_b.connect() is True, "session present on node 2"
    on_b.disconnect()
    queued = queue_on(b, clients, topic, "on node 2")
    wait_written(nats_cluster, cid, "node1", topic.encode())

    on_c = clients(c, "tcp", cid, clean_session=False, connect=False)
    assert on_c.connect() is True, "session present on node 3"
    assert [on_c.wait_for_message().payload for _ in queued] == queued
    on_c.expect_no_message()
    wait_written(nats_cluster, cid, "node3", topic.encode())
    on_c.disconnect()

    back = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert back.connect() is True, "node 3's session, not a stale copy on node 2"
    back.expect_no_message()


def test_an_mqtt5_session_with_expiry_moves(three, clients, v5_clients, topic):
    """MQTT 5: Clean Start 0 and a Session Expiry Interval; the session moves from node 1 to
    node 2 with its queued messages."""
    a, b, c = three
    cid = unique_id("v5move")
    expiry = props(CONNECT, SessionExpiryInterval=300)
    first = v5_clients(a, cid, connect=False)
    assert first.connect(clean_start=False, properties=expiry) is False
    first.subscribe(topic, 1)
    first.disconnect5()
    first.wait_for_disconnect()
    payloads = queue_on(a, clients, topic)

    moved = v5_clients(b, cid, connect=False)
    assert moved.connect(clean_start=False, properties=expiry) is True
    assert [moved.wait_for_message().payload for _ in payloads] == payloads
    moved.expect_no_message()
    live_from(c, clients, moved, topic)


def test_a_node_killed_does_not_take_its_sessions_along(nats_cluster, three, clients, topic):
    """Node 1 dies with a persistent client connected: the client connects to node 2 and
    finds its session there (from the bucket), with its subscription."""
    a, b, c = three
    cid = unique_id("survivor")
    sub = clients(a, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    wait_written(nats_cluster, cid, "node1", topic.encode())

    a.kill()
    sub.wait_for_disconnect()
    again = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert again.connect() is True, "session present on node 2"
    live_from(c, clients, again, topic)


def test_a_node_that_stops_answering_does_not_keep_its_sessions(nats_cluster, three, clients,
                                                                topic):
    """Node 1 freezes (SIGSTOP): its NATS connection stays open, as when its machine dies
    without closing it, so NATS cannot tell it is gone. A client moving to node 2 still
    resumes its session, from the bucket, once node 1 did not answer in time."""
    a, b, c = three
    cid = unique_id("frozen")
    sub = clients(a, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    wait_written(nats_cluster, cid, "node1", topic.encode())
    a.proc.send_signal(signal.SIGSTOP)
    try:
        again = clients(b, "tcp", cid, clean_session=False, connect=False)
        assert again.connect() is True, "session present on node 2"
        live_from(c, clients, again, topic)
    finally:
        a.proc.send_signal(signal.SIGCONT)


def test_a_cluster_too_slow_to_answer_refuses_the_connect_and_keeps_the_session(
        start, nats_cluster, clients, topic):
    """Node 2's NATS server freezes (SIGSTOP): a CONNECT on node 2 that resumes a session held
    on node 1 waits session_fetch_timeout_ms, then is refused with return code 3 (Server
    unavailable) instead of starting without its session; with NATS back, the client's next
    CONNECT gets the session."""
    a, b, c = start_nodes(
        start, nats_cluster.servers,
        cluster=lambda i: {"session_fetch_timeout_ms": 1000} if i == 1 else {})
    cid = unique_id("slow")
    sub = clients(a, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    wait_written(nats_cluster, cid, "node1", topic.encode())
    sub.disconnect()

    frozen = nats_cluster.servers[1]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        conn = rawmqtt.TcpConn(b.host, b.port("tcp"), timeout=10)
        conn.send(rawmqtt.connect(cid, clean=False))
        buf = b""
        deadline = time.monotonic() + 10
        while (split := rawmqtt.split_packet(buf)) is None:
            assert time.monotonic() < deadline, "no CONNACK"
            buf += conn.recv_some(deadline - time.monotonic())
        connack, _ = split
        conn.close()
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    assert (connack.ptype, connack.body[1]) == (2, 3), connack
    wait_for_metric(b, "fanfare_cluster_session_fetches_failed_total", lambda v: v == 1)

    again = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert again.connect() is True, "the session, on the client's next CONNECT"
    live_from(c, clients, again, topic)


def test_an_offline_session_gets_what_was_published_after_its_node_died(
        nats_cluster, three, clients, topic):
    """Node 1 dies while a persistent session on it is offline with messages queued; QoS 1
    messages are published on node 2 after that; the client connects to node 3 and gets
    both, in order: the queued ones from the bucket, the later ones from the QoS stream."""
    a, b, c = three
    cid = unique_id("orphan")
    before = away_with_queued(a, nats_cluster, clients, cid, topic)

    a.kill()
    after = queue_on(b, clients, topic, "after")
    back = clients(c, "tcp", cid, clean_session=False, connect=False)
    assert back.connect() is True, "session present on node 3"
    got = [back.wait_for_message() for _ in before + after]
    assert [m.payload for m in got] == before + after
    back.expect_no_message()


def test_a_clean_stop_writes_the_sessions_last_changes(start, nats_cluster, clients, topic):
    """Node 1 writes its sessions to the bucket once a minute only, so its client's
    subscription and queued messages are not there yet; SIGTERM stops node 1, which writes
    them before it exits: the client resumes on node 2 with both."""
    a, b, c = start_nodes(
        start, nats_cluster.servers,
        cluster=lambda i: {"session_sync_interval_ms": 60_000} if i == 0 else {})
    cid = unique_id("stopped")
    sub = clients(a, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v >= 1)
    sub.disconnect()
    queued = queue_on(a, clients, topic, "before the stop")
    assert topic.encode() not in bucket_value(nats_cluster.servers[1], cid), "not written yet"

    assert a.terminate() == 0
    wait_written(nats_cluster, cid, "node1", topic.encode(), queued[-1])
    moved = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert moved.connect() is True, "session present on node 2"
    assert [moved.wait_for_message().payload for _ in queued] == queued
    moved.expect_no_message()
    live_from(c, clients, moved, topic)


def test_a_clean_session_ends_the_session_everywhere(three, clients, topic):
    """A clean CONNECT on node 1 ends the persistent session; a persistent CONNECT on node
    2 then starts a new one."""
    a, b, _ = three
    cid = unique_id("ended")
    sub = clients(a, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    sub.disconnect()
    clean = clients(a, "tcp", cid, clean_session=True, connect=False)
    assert clean.connect() is False
    clean.disconnect()
    fresh = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert fresh.connect() is False, "no session anywhere"


def test_with_a_data_directory_the_store_feeds_the_bucket(start, nats_cluster, clients,
                                                          topic, tmp_path):
    """Node 1 keeps its sessions in a data directory too: the images reach the bucket with
    the store's flushes, and its death still leaves the session to node 2."""
    a, b, c = start_nodes(
        start, nats_cluster.servers,
        args=lambda i: ["--data-dir", str(tmp_path / "data")] if i == 0 else [])
    cid = unique_id("stored")
    before = away_with_queued(a, nats_cluster, clients, cid, topic)

    a.kill()
    again = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert again.connect() is True, "session present on node 2"
    assert [again.wait_for_message().payload for _ in before] == before
    live_from(c, clients, again, topic)


def test_a_node_back_with_its_data_directory_ends_the_sessions_that_moved(
        start, nats_cluster, clients, topic, tmp_path):
    """Node 1, with a data directory, dies; its client resumes on node 2. Node 1 comes back
    with the same directory: the stale copy it loads ends there, and the client coming back
    to node 1 gets node 2's session."""
    data = ["--data-dir", str(tmp_path / "data")]
    a, b, c = start_nodes(start, nats_cluster.servers, args=lambda i: data if i == 0 else [])
    cid = unique_id("stale")
    sub = clients(a, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    wait_written(nats_cluster, cid, "node1", topic.encode())
    a.kill()
    moved = clients(b, "tcp", cid, clean_session=False, connect=False)
    assert moved.connect() is True, "session present on node 2"
    wait_written(nats_cluster, cid, "node2", topic.encode())
    moved.disconnect()
    queued = queue_on(b, clients, topic, "on node 2")

    again = start_node(start, nats_cluster.servers[0], "node1", data)
    wait_for_metric(again, "fanfare_cluster_connected", lambda v: v == 1)
    wait_for_metric(again, "fanfare_sessions", lambda v: v == 0)
    back = clients(again, "tcp", cid, clean_session=False, connect=False)
    assert back.connect() is True, "node 2's session"
    assert [back.wait_for_message().payload for _ in queued] == queued
    back.expect_no_message()


def test_without_nats_a_resuming_connect_gets_a_new_session(start, clients, topic):
    """A node whose NATS is unreachable answers a CONNECT that would resume a session held
    elsewhere with a new session at once, and counts it; the session then lives here."""
    alone = start(shards=2, args=["--nats", "nats://127.0.0.1:1"],
                  config={"cluster": {"node": "alone"}})
    cid = unique_id("alone")
    first = clients(alone, "tcp", cid, clean_session=False, connect=False)
    assert first.connect() is False, "a new session"
    wait_for_metric(alone, "fanfare_cluster_session_fetches_failed_total", lambda v: v == 1)
    first.subscribe(topic, 1)
    first.disconnect()
    back = clients(alone, "tcp", cid, clean_session=False, connect=False)
    assert back.connect() is True, "the session held here"
    # QoS 0: without NATS a QoS 1/2 publish is not acknowledged (no other node has it).
    clients(alone, "tcp").publish(topic, b"local", 0)
    assert back.wait_for_message().payload == b"local"
