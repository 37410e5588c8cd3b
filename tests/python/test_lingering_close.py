"""A reason must reach the client: after its last packet the broker shuts its write side and
reads what the client still sends until the client closes (`close_linger_ms`), so a client
that is still writing reads the DISCONNECT instead of a reset.

The reproduction: an MQTT 5 client sends Receive Maximum + 1 QoS 2 publishes at once and
answers each PUBREC with PUBREL. The broker answers the extra publish with DISCONNECT 0x93;
closing at once, the PUBRELs arriving after it would make the kernel reset the connection and
the client would lose the DISCONNECT waiting in its buffer.
"""

from __future__ import annotations

import struct
import time

import pytest

import rawmqtt
from rawmqtt import packet, utf8
from scrape import wait_for_metric

pytestmark = pytest.mark.skipif(
    __import__("broker").broker_kind() != "fanfare", reason="fanfare's Receive Maximum of 64"
)

RECEIVE_MAXIMUM = 64  # inbound_qos2_max, announced in CONNACK
PUBREC, PUBREL, DISCONNECT = 5, 6, 14


def connect_v5(client_id: str) -> bytes:
    return packet(1, 0, utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00"
                  + utf8(client_id))


def publish_qos2_v5(topic: str, packet_id: int) -> bytes:
    return packet(3, 0x04, utf8(topic) + struct.pack("!H", packet_id) + b"\x00" + b"goal")


def pubrel(packet_id: int) -> bytes:
    return packet(PUBREL, 0x02, struct.pack("!H", packet_id))


def packets(buffer: bytearray):
    """Complete packets at the front of `buffer`, removed from it."""
    while (split := rawmqtt.split_packet(buffer)) is not None:
        got, used = split
        del buffer[:used]
        yield got


def run_exchange(conn, topic: str) -> tuple[int | None, bool]:
    """Sends the publishes, answers every PUBREC; returns the DISCONNECT's reason code (None if
    none was read) and whether the connection ended with a reset."""
    conn.send(connect_v5(f"linger-{time.monotonic_ns() % 10**9}"))
    conn.send(b"".join(publish_qos2_v5(topic, n) for n in range(1, RECEIVE_MAXIMUM + 2)))
    buffer = bytearray()
    reason = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = conn.recv_some(1.0)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return reason, True
        if not chunk:
            return reason, False
        buffer += chunk
        for got in packets(buffer):
            if got.ptype == PUBREC:
                try:
                    conn.send(pubrel(got.packet_id))
                except (BrokenPipeError, ConnectionResetError):
                    return reason, True
            elif got.ptype == DISCONNECT:
                reason = got.body[0]
    raise AssertionError("the broker neither closed nor reset the connection")


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_the_disconnect_reaches_a_client_that_is_still_writing(broker, transport, topic):
    if transport == "tcp":
        conn = rawmqtt.TcpConn(broker.host, broker.port("tcp"))
    else:
        conn = rawmqtt.WsConn(broker.host, broker.port("ws"), broker.ws_path)
    try:
        reason, reset = run_exchange(conn, topic)
    finally:
        conn.close()
    assert (reason, reset) == (0x93, False)
    wait_for_metric(broker, "fanfare_lingering_closes_total", lambda v: v >= 1)


def test_a_peer_that_never_closes_is_closed_after_close_linger_ms(start, topic):
    broker = start(config={"limits": {"close_linger_ms": 300}})
    conn = rawmqtt.TcpConn(broker.host, broker.port("tcp"))
    try:
        conn.send(rawmqtt.connect("linger-silent"))
        conn.send(b"\xf0\x00")  # a reserved packet type: the broker closes
        buffer = b""
        deadline = time.monotonic() + 5
        while True:
            assert time.monotonic() < deadline, "never closed"
            chunk = conn.recv_some(1.0)
            if not chunk:
                break
            buffer += chunk
        # The write side is shut at once; the socket itself goes after the linger: writing
        # keeps working until then, and the broker is down to its own listeners after it.
        conn.send(b"\xc0\x00")
        wait_for_metric(broker, "fanfare_lingering_closes_total", lambda v: v >= 1)
    finally:
        conn.close()
