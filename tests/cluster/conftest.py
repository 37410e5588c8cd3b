"""Fixtures of the cluster tests: nats-servers, alone or clustered, fanfare nodes on them and
MQTT 5 clients. Brokers and MQTT 3.1.1 clients (`start`, `clients`, `raw`, `topic`) are
tests/conftest.py's; helpers that are not fixtures are in nodes.py.
"""

from __future__ import annotations

import pytest

from broker import Broker
from client5 import Client5
from natsserver import NatsCluster, NatsServer
from nodes import start_node, start_nodes, wait_in_cluster


@pytest.fixture
def nats(tmp_path_factory) -> NatsServer:
    """One nats-server with JetStream, stopped at teardown."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture
def nats_cluster(tmp_path_factory) -> NatsCluster:
    """Three nats-servers in one NATS cluster with JetStream, formed; stopped at teardown."""
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), size=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def node(start, nats):
    """Starts a fanfare node on `nats` and waits until it is in the cluster: `node("a")`,
    `node("a", data_dir=path)` with a data directory, `node("a", key=value)` with keys of its
    [cluster] table."""
    def _node(name: str, data_dir=None, **cluster) -> Broker:
        args = [] if data_dir is None else ["--data-dir", str(data_dir)]
        broker = start_node(start, nats, name, args, cluster)
        wait_in_cluster(broker)
        return broker
    return _node


@pytest.fixture
def three(start, nats_cluster) -> list[Broker]:
    """Three fanfare nodes, node i given only NATS server i of `nats_cluster`, all in the
    cluster."""
    return start_nodes(start, nats_cluster.servers)


@pytest.fixture
def v5_clients():
    """MQTT 5 clients on any node: `v5_clients(broker, client_id=..., will=...)`, connected
    unless `connect=False`; each one's thread is stopped at teardown."""
    made: list[Client5] = []

    def _make(broker: Broker, client_id: str | None = None, connect: bool = True,
              **kw) -> Client5:
        c = Client5(broker, "tcp", client_id, **kw)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield _make
    for c in made:
        try:
            c.close()
        except Exception:
            pass
