"""Fixtures of the Python suites (tests/python, tests/cluster): a fresh broker per test,
clients that are always cleaned up.

FANFARE_BIN       broker binary (default target/debug/fanfare from the repo root)
FANFARE_TEST_BROKER=mosquitto   run against Mosquitto instead, as a reference;
                  tests marked `fanfare_only` are then skipped, unless
FANFARE_TEST_RUN_ALL=1          which runs them anyway (to see where they differ).
"""

from __future__ import annotations

import os
import re

import pytest

from broker import Broker, broker_kind, start_broker
from client import Client
from rawmqtt import Mqtt, TcpConn, WsConn


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fanfare_only: checks behaviour fanfare promises beyond what Mosquitto does"
    )


def pytest_collection_modifyitems(config, items):
    if broker_kind() == "fanfare" or os.environ.get("FANFARE_TEST_RUN_ALL") == "1":
        return
    skip = pytest.mark.skip(reason="fanfare-only behaviour")
    for item in items:
        if "fanfare_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def start(tmp_path_factory):
    """Start brokers on demand (`start(shards=2, config={...})`); all stopped at teardown."""
    started: list[Broker] = []

    def _start(**kw) -> Broker:
        broker = start_broker(tmp_path_factory.mktemp("broker"), **kw)
        started.append(broker)
        return broker

    yield _start
    died = [b for b in started if not b.alive() and not b.expected_exit]
    logs = [b.log() for b in died]
    for b in started:
        b.kill()
    assert not died, "broker exited during the test:\n" + "\n".join(logs)


@pytest.fixture
def broker(start) -> Broker:
    return start()


@pytest.fixture
def clients():
    """Make clients with `clients(broker, ...)`; each one's thread is stopped at teardown."""
    made: list[Client] = []

    def _make(broker: Broker, transport: str = "tcp", client_id: str | None = None,
              connect: bool = True, **kw) -> Client:
        c = Client(broker, transport, client_id, **kw)
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


@pytest.fixture
def raw():
    """Open raw MQTT connections with `raw(broker, "tcp"|"ws")`; all closed at teardown."""
    opened: list[Mqtt] = []

    def _open(broker: Broker, transport: str = "tcp", subprotocols: str | None = "mqtt") -> Mqtt:
        if transport == "tcp":
            conn = TcpConn(broker.host, broker.tcp_port)
        else:
            conn = WsConn(broker.host, broker.ws_port, broker.ws_path, subprotocols)
        m = Mqtt(conn)
        opened.append(m)
        return m

    yield _open
    for m in opened:
        m.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The TLS tests' CAs, certificates and keys, made once per run (`certs.py`)."""
    from certs import make_pki  # needs `cryptography`, which only the TLS tests use

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=["tcp", "ws"])
def transport(request) -> str:
    return request.param


@pytest.fixture
def topic(request) -> str:
    """A topic prefix private to this test."""
    return "t/" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
