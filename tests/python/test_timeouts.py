"""Connections that never finish their opening are closed, so idle sockets cannot pile up.

Only broad bounds: the test checks that the close happens, not how fast.
"""

import socket
import time

import pytest

import rawmqtt as m

pytestmark = pytest.mark.fanfare_only  # the limits are fanfare's own configuration keys


def test_no_connect_within_connect_timeout_is_closed(start, raw):
    broker = start(config={"limits": {"connect_timeout_ms": 500}})
    silent = raw(broker, "tcp")
    # Nothing sent at all: the broker gives up on the CONNECT and closes.
    silent.wait_closed(timeout=5.0)
    # The broker keeps serving: a client that does connect is accepted.
    healthy = raw(broker, "tcp")
    assert healthy.handshake("after-timeout").body[1] == 0


def test_no_connect_after_upgrade_is_closed(start, raw):
    broker = start(config={"limits": {"connect_timeout_ms": 500}})
    upgraded = raw(broker, "ws")  # the upgrade completes, then nothing
    upgraded.wait_closed(timeout=5.0)


def test_incomplete_upgrade_request_is_closed(start):
    broker = start(config={"limits": {"ws_handshake_timeout_ms": 500}})
    sock = socket.create_connection((broker.host, broker.ws_port), timeout=5.0)
    try:
        sock.sendall(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n")  # never finished
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if sock.recv(4096) == b"":
                return
        pytest.fail("the broker kept an unfinished upgrade request open")
    finally:
        sock.close()


def test_partial_connect_is_not_closed_early(start, raw):
    broker = start(config={"limits": {"connect_timeout_ms": 3000}})
    c = raw(broker, "tcp")
    whole = m.connect("slow-writer")
    c.send(whole[:3])
    assert c.is_open_after(1.0)
    c.send(whole[3:])
    assert c.read(5.0).body[1] == 0
