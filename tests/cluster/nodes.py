"""Fanfare nodes of a cluster, and what a late subscriber on one of them gets: the helpers the
cluster tests share (their fixtures, `nats`, `nats_cluster`, `node` and `three`, are in
conftest.py).

A node is given one NATS server only (`--nats`); on a cluster of servers it learns the others
from the cluster and moves to one of them when its own is lost.
"""

from __future__ import annotations

from broker import Broker
from scrape import wait_for_metric

# The first node to ask makes the QoS stream; JetStream may take a few tries to settle on a
# cluster started a moment ago.
QOS_STREAM_READY_TIMEOUT_S = 30.0
# Late subscribers sent to see whether a node's replica has a value yet, 0.5 s each.
RETAINED_PROBES_MAX = 40
# A late subscriber has had every retained message once none came for this long.
LATE_QUIET_S = 0.5


def start_node(start, server, name: str, args=(), cluster: dict | None = None,
               config: dict | None = None) -> Broker:
    """Starts fanfare node `name` on NATS server `server`, not waiting for it (see
    `wait_in_cluster`). `args` adds flags, `cluster` keys to its [cluster] table, `config`
    other keys and tables."""
    config = {**(config or {}), "cluster": {"node": name, **(cluster or {})}}
    return start(shards=2, args=["--nats", server.url, *args], config=config)


def wait_in_cluster(broker: Broker) -> None:
    """Until `broker` is connected to NATS, its replica of the retained messages holds what
    the stream held, and it can store QoS 1/2 publishes in the QoS stream."""
    wait_for_metric(broker, "fanfare_cluster_connected", lambda v: v == 1)
    wait_for_metric(broker, "fanfare_cluster_retained_caught_up", lambda v: v == 1)
    wait_for_metric(broker, "fanfare_cluster_qos_stream_ready", lambda v: v == 1,
                    timeout_s=QOS_STREAM_READY_TIMEOUT_S)


def start_nodes(start, servers, args=lambda i: [], cluster=lambda i: {},
                config=lambda i: {}) -> list[Broker]:
    """One node per server in `servers`, node i (named `node{i + 1}`) on servers[i], all in the
    cluster. `args(i)` adds flags to node i, `cluster(i)` keys to its [cluster] table,
    `config(i)` other keys and tables. One after the other, each in the cluster before the
    next starts: node 1 makes the streams, the others find them. The servers are those of
    a NATS cluster of three: the streams and the bucket get three replicas, said outright,
    since a server that just joined may not name the others to its clients yet."""
    brokers = []
    for i, server in enumerate(servers):
        keys = {"retained_replicas": 3, **cluster(i)}
        brokers.append(start_node(start, server, f"node{i + 1}", args(i), keys, config(i)))
        wait_in_cluster(brokers[-1])
    return brokers


def late_messages(broker: Broker, clients, topic_filter: str, transport: str = "tcp") -> list:
    """Every message a new subscriber to `topic_filter` on `broker` gets at once, in order: up
    to the first LATE_QUIET_S without one."""
    late = clients(broker, transport)
    late.subscribe(topic_filter, 0)
    got = []
    while True:
        try:
            got.append(late.wait_for_message(timeout=LATE_QUIET_S))
        except AssertionError:
            return got


def retained_on(broker: Broker, clients, topic_filter: str, transport: str = "tcp") -> list:
    """What a new subscriber to `topic_filter` on `broker` gets at once: its retained values
    (RETAIN set). A live publish that reaches the node after the subscription (a clearing
    through the QoS stream, which may come after the retained stream's copy) is not one."""
    return [msg for msg in late_messages(broker, clients, topic_filter, transport)
            if msg.retain]


def retained_until(broker: Broker, clients, topic_filter: str, done,
                   probes: int = RETAINED_PROBES_MAX, transport: str = "tcp",
                   look=retained_on) -> list:
    """Sends late subscribers (at most `probes`) until what one gets, `look(broker, clients,
    topic_filter, transport)`, is `done(got)`, for a value that reaches the node through the
    stream at a moment the test cannot see; returns the last `got`."""
    for _ in range(probes):
        got = look(broker, clients, topic_filter, transport)
        if done(got):
            break
    return got
