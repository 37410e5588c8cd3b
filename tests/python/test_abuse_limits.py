"""Abuse limits: a publisher past `publish_rate_max` is slowed (or, MQTT 5 with
`disconnect_on_rate`, disconnected with 0x96) while everyone else goes on, and nothing it
published is lost; `connections_per_ip_max` and `connect_rate_per_ip_max` close accepts from
one address at once, counted, while other addresses connect as usual."""

from __future__ import annotations

import queue
import time

import pytest

import rawmqtt
from client5 import Client5
from scrape import totals, wait_for_metric

pytestmark = pytest.mark.skipif(
    __import__("broker").broker_kind() != "fanfare", reason="fanfare's own limits"
)


def test_an_abusive_publisher_is_slowed_and_loses_nothing(start, clients, topic):
    broker = start(config={"limits": {"publish_rate_max": 20}})
    watcher = clients(broker)
    watcher.subscribe(topic + "/flood")
    fan = clients(broker)
    fan.subscribe(topic + "/score")
    abuser = clients(broker)
    scorer = clients(broker)

    for n in range(60):  # three seconds' worth at once
        abuser.publish(topic + "/flood", f"{n}")
    for n in range(5):
        scorer.publish(topic + "/score", f"goal {n}", qos=1)
        assert fan.wait_for_message().payload == f"goal {n}".encode()

    got = [watcher.wait_for_message(timeout=10).payload for _ in range(60)]
    assert got == [f"{n}".encode() for n in range(60)]
    assert totals(broker)["fanfare_publish_rate_pauses_total"] > 0
    assert not abuser.disconnected.is_set()


def test_disconnect_on_rate_sends_0x96_to_mqtt5(start, topic):
    broker = start(config={"limits": {"publish_rate_max": 5, "disconnect_on_rate": True}})
    reasons: queue.Queue = queue.Queue()
    c = Client5(broker)
    c.paho.on_disconnect = lambda _c, _u, _f, rc, _p: reasons.put(rc.value)
    c.connect()
    try:
        for n in range(20):
            c.paho.publish(topic, f"{n}")
        assert reasons.get(timeout=5) == 0x96
    finally:
        c.close()
    wait_for_metric(broker, "fanfare_publish_rate_disconnects_total", lambda v: v == 1)


def connack_or_closed(conn: rawmqtt.TcpConn) -> bytes:
    """What the broker answers a CONNECT with: the CONNACK's bytes, or b'' when it closed."""
    try:
        conn.send(rawmqtt.connect(f"ip-{time.monotonic_ns()}"))
    except OSError:
        return b""
    try:
        return conn.recv_some(5)
    except TimeoutError:
        raise AssertionError("neither CONNACK nor close") from None


def test_connections_per_ip_are_bounded(start):
    broker = start(config={"limits": {"connections_per_ip_max": 3}})
    port = broker.port("tcp")
    held = [rawmqtt.TcpConn(broker.host, port, source="127.0.0.2") for _ in range(3)]
    try:
        assert all(connack_or_closed(c).startswith(b"\x20") for c in held)
        extra = rawmqtt.TcpConn(broker.host, port, source="127.0.0.2")
        assert connack_or_closed(extra) == b""
        other = rawmqtt.TcpConn(broker.host, port, source="127.0.0.3")
        assert connack_or_closed(other).startswith(b"\x20")
        held[0].close()
        # Its close is counted once the broker saw it.
        deadline = time.monotonic() + 5
        while True:
            again = rawmqtt.TcpConn(broker.host, port, source="127.0.0.2")
            if connack_or_closed(again).startswith(b"\x20"):
                break
            assert time.monotonic() < deadline, "the released slot never came back"
            time.sleep(0.05)
    finally:
        for c in held:
            c.close()
    wait_for_metric(broker, "fanfare_connections_refused_per_ip_total", lambda v: v >= 1)
    # One line a second at most, however many are refused.
    deadline = time.monotonic() + 5
    while "connections refused by connections_per_ip_max" not in broker.log():
        assert time.monotonic() < deadline, "no log line"
        time.sleep(0.1)


def test_new_connections_per_second_per_ip_are_bounded(start):
    broker = start(config={"limits": {"connect_rate_per_ip_max": 5}})
    port = broker.port("tcp")
    answers = []
    for _ in range(12):
        c = rawmqtt.TcpConn(broker.host, port, source="127.0.0.4")
        answers.append(connack_or_closed(c).startswith(b"\x20"))
        c.close()
    # A second's allowance at once, then refusals until the bucket refills.
    assert answers[:5] == [True] * 5
    assert not all(answers[5:])
    other = rawmqtt.TcpConn(broker.host, port, source="127.0.0.5")
    assert connack_or_closed(other).startswith(b"\x20")
    other.close()


def test_the_limits_count_the_client_a_trusted_proxy_names(start):
    broker = start(config={"limits": {"connections_per_ip_max": 2}, "tcp_proxy_protocol": True,
                           "trusted_proxies": ["127.0.0.2/32"]})
    port = broker.port("tcp")

    def through_proxy(client: str) -> bytes:
        conn = rawmqtt.TcpConn(broker.host, port, source="127.0.0.2")
        held.append(conn)
        conn.send(f"PROXY TCP4 {client} 127.0.0.1 40000 1883\r\n".encode())
        return connack_or_closed(conn)

    held: list[rawmqtt.TcpConn] = []
    try:
        # The proxy's own address is not counted: its clients are.
        assert through_proxy("203.0.113.7").startswith(b"\x20")
        assert through_proxy("203.0.113.7").startswith(b"\x20")
        assert through_proxy("203.0.113.7") == b""
        assert through_proxy("203.0.113.8").startswith(b"\x20")
    finally:
        for conn in held:
            conn.close()
    assert "the client 203.0.113.7:40000 is refused: connections_per_ip_max reached" in broker.log()
