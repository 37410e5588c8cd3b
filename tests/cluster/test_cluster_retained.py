"""Retained messages in the JetStream stream across a node's cut from NATS, clearings that
leave nothing behind, and the stream's bound (docs/scale-out.md, "Retained messages across
nodes"). Two or three fanfare nodes on one nats-server with JetStream; stopping the server
cuts every node off at once, and its store keeps the stream for when it starts again.
"""

from __future__ import annotations

import time

import pytest

from natsserver import nats_server_bin
from nodes import late_messages, retained_until
from scrape import totals, wait_for_metric

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(nats_server_bin() is None, reason="nats-server not installed"),
]

STREAM = "FANFARE_RETAINED"
# A node reconnects, reads the stream again and writes what it holds within seconds.
RECONNECT_TIMEOUT_S = 30.0
# A clearing is purged 10 s after it was stored (PURGE_DELAY in src/cluster/retained.rs).
PURGE_TIMEOUT_S = 30.0
# The least `retained_stream_bytes_max` takes, and a payload of which twenty fit in it (and
# one in a subscriber's queue, `queue_bytes_max`).
STREAM_BYTES_MIN = 1 << 20
BIG_PAYLOAD_BYTES = 50_000


def retained_values(broker, clients, topic_filter: str,
                    transport: str = "tcp") -> list[tuple[str, bytes]]:
    """What a new subscriber to `topic_filter` on `broker` gets at once, sorted. In these tests
    every message it gets must be a retained one."""
    got = late_messages(broker, clients, topic_filter, transport)
    for msg in got:
        assert msg.retain, msg.topic
    return sorted((msg.topic, msg.payload) for msg in got)


def retained_values_until(broker, clients, topic_filter: str, want: list) -> list:
    """Sends late subscribers until one gets `want` (`retained_until`); returns what the last
    one got."""
    return retained_until(broker, clients, topic_filter, lambda got: got == want,
                          look=retained_values)


def stored_messages(nats) -> int:
    stream = nats.stream(STREAM)
    assert stream is not None, "no stream of retained messages"
    return stream["state"]["messages"]


def stored_bytes(nats) -> int:
    stream = nats.stream(STREAM)
    assert stream is not None, "no stream of retained messages"
    return stream["state"]["bytes"]


def wait_answered(broker, writes: int) -> dict:
    """Waits until JetStream answered `writes` retained writes of `broker`, stored or not."""
    deadline = time.monotonic() + RECONNECT_TIMEOUT_S
    while True:
        figures = totals(broker)
        answered = (figures["fanfare_cluster_retained_stored_total"]
                    + figures["fanfare_cluster_retained_store_failed_total"])
        if answered == writes:
            return figures
        assert time.monotonic() < deadline, figures
        time.sleep(0.1)


def cut_off(nats, brokers) -> None:
    nats.stop()
    for broker in brokers:
        wait_for_metric(broker, "fanfare_cluster_connected", lambda v: v == 0)


def back(nats, brokers) -> None:
    """NATS back: every node reconnects, reads the stream and writes what it held."""
    nats.start()
    for broker in brokers:
        wait_for_metric(broker, "fanfare_cluster_connected", lambda v: v == 1,
                        timeout_s=RECONNECT_TIMEOUT_S)
        wait_for_metric(broker, "fanfare_cluster_retained_unsent", lambda v: v == 0,
                        timeout_s=RECONNECT_TIMEOUT_S)


def test_values_set_while_cut_off_reach_the_stream_on_reconnect(nats, node, clients, topic):
    a, b = node("a"), node("b")
    pub = clients(a, "tcp")
    pub.publish(f"{topic}/kept", b"before", 1, retain=True)
    pub.publish(f"{topic}/cleared", b"before", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v == 2)
    before = [(f"{topic}/cleared", b"before"), (f"{topic}/kept", b"before")]
    assert retained_values_until(b, clients, topic + "/#", before) == before

    cut_off(nats, [a, b])
    # At QoS 0: a QoS 1/2 publish is refused while NATS is gone (test_cluster_qos.py).
    pub.publish(f"{topic}/cleared", b"", 0, retain=True)
    pub.publish(f"{topic}/new", b"set while cut off", 0, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_unsent", lambda v: v == 2)
    # Node b, cut off too, knows nothing of them yet.
    assert retained_values(b, clients, topic + "/#") == before

    back(nats, [a, b])
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v == 4)
    after = [(f"{topic}/kept", b"before"), (f"{topic}/new", b"set while cut off")]
    assert retained_values_until(b, clients, topic + "/#", after) == after
    assert retained_values(a, clients, topic + "/#") == after
    # A node started now loads them from the stream.
    assert retained_values(node("c"), clients, topic + "/#") == after


def test_of_two_values_set_during_a_cut_the_later_wins(nats, node, clients, topic):
    a, b = node("a"), node("b")
    cut_off(nats, [a, b])
    clients(a, "tcp").publish(f"{topic}/score", b"earlier", 0, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_unsent", lambda v: v == 1)
    clients(b, "tcp").publish(f"{topic}/score", b"later", 0, retain=True)
    wait_for_metric(b, "fanfare_cluster_retained_unsent", lambda v: v == 1)

    back(nats, [a, b])
    # Whichever node wrote first, the later value ends in the stream and on both nodes.
    want = [(f"{topic}/score", b"later")]
    for broker in (a, b):
        assert retained_values_until(broker, clients, topic + "/#", want) == want
    assert retained_values(node("c"), clients, topic + "/#") == want


def test_a_cleared_topic_leaves_nothing_in_the_stream(nats, node, clients, topic):
    a, b = node("a"), node("b")
    clients(a, "tcp").publish(f"{topic}/score", b"1-0", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v == 1)
    want = [(f"{topic}/score", b"1-0")]
    assert retained_values_until(b, clients, topic + "/#", want) == want

    clients(b, "tcp").publish(f"{topic}/score", b"", 1, retain=True)
    wait_for_metric(b, "fanfare_cluster_retained_stored_total", lambda v: v == 1)
    # Node a learns of the clearing from the stream, before it is purged.
    assert retained_values_until(a, clients, topic + "/#", []) == []
    deadline = time.monotonic() + PURGE_TIMEOUT_S
    while stored_messages(nats) != 0:
        assert time.monotonic() < deadline, nats.stream(STREAM)
        time.sleep(0.2)
    assert retained_values(node("c"), clients, topic + "/#") == []


def test_a_full_stream_refuses_new_values_and_clearing_makes_room(nats, node, clients, topic):
    bounded = {"retained_stream_bytes_max": STREAM_BYTES_MIN}
    a, b = node("a", **bounded), node("b", **bounded)
    config = nats.stream(STREAM)["config"]
    assert (config["max_bytes"], config["discard"]) == (STREAM_BYTES_MIN, "new")
    pub = clients(a, "tcp")
    big = bytes(BIG_PAYLOAD_BYTES)
    fits = STREAM_BYTES_MIN // BIG_PAYLOAD_BYTES
    for n in range(fits):
        pub.publish(f"{topic}/big/{n}", big, 1, retain=True)
        wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v, n=n: v == n + 1)
    # One more does not fit: set on node a, not stored, counted.
    pub.publish(f"{topic}/big/{fits}", big, 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_store_failed_total", lambda v: v == 1)
    assert totals(a)["fanfare_cluster_retained_stored_total"] == fits

    # Clearing still works on a full stream; once purged, the room is free for a new value.
    pub.publish(f"{topic}/big/0", b"", 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v == fits + 1)
    deadline = time.monotonic() + PURGE_TIMEOUT_S
    while stored_messages(nats) != fits - 1:
        assert time.monotonic() < deadline, nats.stream(STREAM)
        time.sleep(0.2)
    pub.publish(f"{topic}/after", big, 1, retain=True)
    wait_for_metric(a, "fanfare_cluster_retained_stored_total", lambda v: v == fits + 2)
    want = [(f"{topic}/after", big)]
    assert retained_values_until(b, clients, f"{topic}/after", want) == want
    assert retained_values(b, clients, f"{topic}/big/{fits}") == [], "never stored"
    assert stored_messages(nats) == fits



def test_a_clearing_refused_by_a_full_stream_is_written_after_a_purge(nats, node, clients,
                                                                       topic):
    bounded = {"retained_stream_bytes_max": STREAM_BYTES_MIN}
    a, b = node("a", **bounded), node("b", **bounded)
    pub = clients(a, "tcp")
    cleared = f"{topic}/cleared"
    pub.publish(cleared, b"1", 1, retain=True)
    wait_answered(a, 1)
    want = [(cleared, b"1")]
    assert retained_values_until(b, clients, cleared, want) == want

    # Fill the stream to its last byte, never past it (JetStream 2.9 would then drop its
    # oldest message, the value to clear): big values first, then one of one byte to learn
    # what a message costs beyond its payload on these topics, then one exactly that short
    # of the room left.
    writes = 1

    def write(payload: bytes) -> dict:
        nonlocal writes
        pub.publish(f"{topic}/f/{writes:04}", payload, 1, retain=True)
        writes += 1
        return wait_answered(a, writes)

    while (room := STREAM_BYTES_MIN - stored_bytes(nats)) > 2000:
        write(bytes(min(room - 1000, BIG_PAYLOAD_BYTES)))
    before = stored_bytes(nats)
    write(b"1")
    overhead = stored_bytes(nats) - before - 1
    write(bytes(STREAM_BYTES_MIN - stored_bytes(nats) - overhead))
    assert stored_bytes(nats) == STREAM_BYTES_MIN
    figures = write(b"1")
    assert figures["fanfare_cluster_retained_store_failed_total"] == 1, "the stream is full"
    stored = figures["fanfare_cluster_retained_stored_total"]

    # The clearing is refused too, then written once the value it clears is purged.
    pub.publish(cleared, b"", 1, retain=True)
    figures = wait_answered(a, writes + 1)
    assert (figures["fanfare_cluster_retained_stored_total"],
            figures["fanfare_cluster_retained_store_failed_total"]) == (stored + 1, 1)
    assert retained_values_until(b, clients, cleared, []) == []
