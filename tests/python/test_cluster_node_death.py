"""A fanfare node killed while QoS 1 messages stream to its persistent sessions
(docs/scale-out.md, "A node that dies"): every message its publisher had acknowledged reaches
each session where it resumes, the one that was offline in order and once, the one that was
connected at least once. The messages on their way to the node when it last wrote a session
are the ones at risk: published before that write, read from JetStream after it.
"""

from __future__ import annotations

import threading
import time

import pytest

from client import unique_id
from natsserver import NatsCluster, nats_server_bin
from scrape import wait_for_metric

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(nats_server_bin() is None, reason="nats-server not installed"),
]

STREAM_READY_TIMEOUT_S = 30.0
# Messages the connected subscriber gets before the node is killed, and for how long the
# publisher goes on after: the kill falls in a steady stream.
BEFORE_KILL = 60
AFTER_KILL_S = 0.5
# How long the resumed sessions may take to get everything.
RESUME_TIMEOUT_S = 15.0


@pytest.fixture
def nats(tmp_path_factory):
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), size=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def three(start, nats):
    brokers = []
    for i, server in enumerate(nats.servers):
        brokers.append(start(shards=2, args=["--nats", server.url],
                             config={"cluster": {"node": f"node{i + 1}"}}))
    for broker in brokers:
        wait_for_metric(broker, "fanfare_cluster_connected", lambda v: v == 1)
        wait_for_metric(broker, "fanfare_cluster_qos_stream_ready", lambda v: v == 1,
                        timeout_s=STREAM_READY_TIMEOUT_S)
    return brokers


def drain(client, until, timeout_s: float) -> list[bytes]:
    """Payloads `client` got, until `until(got)` holds or the time is out."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while not until(got) and time.monotonic() < deadline:
        try:
            got.append(client.wait_for_message(timeout=0.2).payload)
        except AssertionError:
            pass
    return got


def test_no_acknowledged_message_is_lost_when_the_node_holding_the_session_dies(
        three, clients, topic):
    a, b, c = three
    away_id, here_id = unique_id("away"), unique_id("here")
    away = clients(a, "tcp", away_id, clean_session=False)
    away.subscribe(topic, 1)
    away.disconnect()
    here = clients(a, "tcp", here_id, clean_session=False)
    here.subscribe(topic, 1)
    wait_for_metric(a, "fanfare_cluster_qos_consumers", lambda v: v >= 1)

    pub = clients(b, "tcp")
    acked: list[bytes] = []
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.is_set():
            payload = b"%d" % n
            pub.publish(topic, payload, 1)
            acked.append(payload)
            n += 1

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        before = drain(here, lambda got: len(got) >= BEFORE_KILL, RESUME_TIMEOUT_S)
        assert len(before) >= BEFORE_KILL, "the stream reaches node 1"
        a.kill()
        stop.wait(AFTER_KILL_S)
    finally:
        stop.set()
        publisher.join()
    here.wait_for_disconnect()
    # What the connected client had not read yet when its node died.
    before += drain(here, lambda got: False, 0.3)

    back = clients(c, "tcp", away_id, clean_session=False, connect=False)
    assert back.connect() is True, "session present on node 3"
    got = drain(back, lambda got: len(got) >= len(acked), RESUME_TIMEOUT_S)
    assert got == acked, "the offline session: every acknowledged message, in order, once"
    back.expect_no_message()

    again = clients(c, "tcp", here_id, clean_session=False, connect=False)
    assert again.connect() is True, "session present on node 3"
    want = set(acked)
    after = drain(again, lambda got: want <= set(before) | set(got), RESUME_TIMEOUT_S)
    missing = want - set(before) - set(after)
    assert not missing, f"the connected session lost {sorted(missing, key=int)[:10]}"
