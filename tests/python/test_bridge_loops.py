"""Loops between bridged brokers (docs/bridges.md, Loops): two fanfares that each hold a bridge
to the other, both ways on `#`, deliver every message once on each side and send nothing
round; a remote that refuses the bridge's mark (`try_private`) is asked again without it.

Counting: after the probes, each side publishes a numbered series; each subscriber must get
the whole of both series, and then nothing more while the brokers go quiet (a message going
round would arrive again and again)."""

from __future__ import annotations

import socket
import threading

import pytest

from broker import HOST, free_port
from probe import open_path
from scrape import totals, wait_for_metric

pytestmark = pytest.mark.fanfare_only

COUNT = 20


def peer_table(port: int, protocol: str) -> dict:
    return {"name": "peer", "url": f"mqtt://{HOST}:{port}", "protocol": protocol,
            "keep_alive_s": 5, "reconnect_initial_ms": 50, "reconnect_max_ms": 200,
            "topics": [{"filter": "#", "direction": "both", "qos": 1}]}


def drain(sub) -> None:
    while True:
        try:
            sub.wait_for_message(timeout=0.3)
        except AssertionError:
            return


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_two_fanfares_each_bridged_to_the_other_deliver_each_message_once(
        start, clients, topic, protocol):
    # The second broker's port is chosen first: the first broker's bridge names it, and
    # retries until that broker is up.
    second_port = free_port()
    first = start(shards=2, config={"bridge": [peer_table(second_port, protocol)]})
    second = start(shards=2, args=["--tcp", f"{HOST}:{second_port}"],
                   config={"bridge": [peer_table(first.tcp_port, protocol)]})
    for broker in (first, second):
        wait_for_metric(broker, "fanfare_bridge_connected", lambda v: v == 1)
    sub_first = clients(first, "tcp")
    sub_first.subscribe(f"{topic}/#", 1)
    sub_second = clients(second, "tcp")
    sub_second.subscribe(f"{topic}/#", 1)
    pub_first = clients(first, "tcp")
    pub_second = clients(second, "tcp")
    open_path(sub_second, lambda p: pub_first.publish(f"{topic}/probe", p, 1), "first to second")
    open_path(sub_first, lambda p: pub_second.publish(f"{topic}/probe", p, 1), "second to first")
    for sub in (sub_first, sub_second):
        drain(sub)

    for i in range(COUNT):
        pub_first.publish(f"{topic}/from-first", b"F%d" % i, 1)
        pub_second.publish(f"{topic}/from-second", b"S%d" % i, 1)
    expected = sorted([(f"{topic}/from-first", b"F%d" % i) for i in range(COUNT)]
                      + [(f"{topic}/from-second", b"S%d" % i) for i in range(COUNT)])
    for sub in (sub_first, sub_second):
        got = sorted((m.topic, m.payload)
                     for m in (sub.wait_for_message() for _ in range(2 * COUNT)))
        assert got == expected
        sub.expect_no_message(timeout=1.0)
    # Each message reached the other side over both bridges; one copy was dropped.
    for broker in (first, second):
        assert totals(broker)["fanfare_bridge_second_copies_total"] >= COUNT


class MarkRefuser:
    """A 3.1.1 remote that refuses protocol level 0x84 with return code 1 and accepts
    level 4; it then ignores everything. Keeps the level byte of each CONNECT."""

    def __init__(self):
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.levels: list[int] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            conn.settimeout(5)
            try:
                connect = conn.recv(1024)
                at = connect.index(b"\x00\x04MQTT") + 6
                level = connect[at]
                self.levels.append(level)
                conn.sendall(bytes([0x20, 0x02, 0x00, 0x01 if level & 0x80 else 0x00]))
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def test_a_remote_that_refuses_the_mark_is_asked_again_without_it(start, topic):
    remote = MarkRefuser()
    try:
        table = peer_table(remote.port, "3.1.1")
        broker = start(config={"bridge": [table]})
        line = broker.wait_for_log("refused the bridge's CONNECT with protocol level 0x84")
        assert "connecting as an ordinary 3.1.1 client" in line, line
        wait_for_metric(broker, "fanfare_bridge_connected", lambda v: v == 1)
        assert remote.levels[:2] == [0x84, 0x04]
    finally:
        remote.close()


def test_try_private_off_sends_the_plain_level(start, topic):
    remote = MarkRefuser()
    try:
        broker = start(config={"bridge": [{**peer_table(remote.port, "3.1.1"),
                                           "try_private": False}]})
        wait_for_metric(broker, "fanfare_bridge_connected", lambda v: v == 1)
        assert remote.levels[0] == 0x04
    finally:
        remote.close()
