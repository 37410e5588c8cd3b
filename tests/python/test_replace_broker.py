"""Replacing a running broker with `fanfare --takeover`: the new process takes the old one's
listening sockets, so no connection attempt is refused or reset meanwhile; the old one then
ends its clients' connections with a reason (DISCONNECT 0x8B, WebSocket close 1001) spread
over `drain_s`, and exits 0."""

from __future__ import annotations

import signal
import subprocess
import threading

import pytest

from broker import HOST, fanfare_bin, free_port
from client import unique_id
from client5 import Client5
from rawmqtt import OP_CLOSE, Closed, Mqtt, TcpConn, WsConn

pytestmark = pytest.mark.fanfare_only

SERVER_SHUTTING_DOWN = 0x8B
GOING_AWAY = 1001


class Attempts:
    """Connects again and again, alternating TCP and WebSocket, until stopped; each attempt
    must get its CONNACK, from whichever broker accepted it."""

    def __init__(self, tcp_port: int, ws_port: int):
        self.ports = (tcp_port, ws_port)
        self.succeeded = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            over_ws = n % 2 == 0
            try:
                if over_ws:
                    conn = WsConn(HOST, self.ports[1], "/mqtt")
                else:
                    conn = TcpConn(HOST, self.ports[0])
                mqtt = Mqtt(conn)
                try:
                    ack = mqtt.handshake(unique_id("attempt"))
                    assert ack.body[1] == 0, f"CONNACK {ack.body!r}"
                    self.succeeded += 1
                finally:
                    mqtt.close()
            except (OSError, Closed, TimeoutError, AssertionError) as e:
                self.failures.append(f"{'ws' if over_ws else 'tcp'} attempt {n}: {e!r}")
            self.stopping.wait(0.01)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


def close_code(conn: WsConn, timeout: float = 15.0) -> int | None:
    """Reads frames until the close frame; its code (None: the connection ended without one)."""
    while True:
        frame = conn.read_frame(timeout)
        if frame is None:
            return None
        if frame.opcode == OP_CLOSE:
            return frame.close_code


def test_takeover_refuses_no_one_and_drains_with_reasons(start, clients, topic):
    tcp_port, ws_port = free_port(), free_port()
    addresses = ["--tcp", f"{HOST}:{tcp_port}", "--ws", f"{HOST}:{ws_port}"]
    old = start(shards=2, config={"drain_s": 2}, args=addresses)

    v5 = Client5(old, "tcp")
    v5.connect()
    over_ws = Mqtt(WsConn(HOST, ws_port, "/mqtt"))
    over_ws.handshake(unique_id("ws"))
    v311 = Mqtt(TcpConn(HOST, tcp_port))
    v311.handshake(unique_id("v311"))
    attempts = Attempts(tcp_port, ws_port)
    try:
        # Three shards where the old broker had two: one more socket joins the group.
        new = start(shards=3, config={"drain_s": 2}, args=[*addresses, "--takeover"])
        assert (new.tcp_port, new.ws_port) == (tcp_port, ws_port)
        old.expected_exit = True
        new.wait_for_log(f"took over from pid {old.proc.pid}")

        assert v5.disconnect_reasons.get(timeout=15) == SERVER_SHUTTING_DOWN
        assert close_code(over_ws.conn) == GOING_AWAY
        assert v311.wait_closed(timeout=15) == []
        assert old.proc.wait(timeout=15) == 0
        # A few more attempts, all on the new broker now.
        reached = attempts.succeeded
        while attempts.succeeded < reached + 10 and not attempts.failures:
            attempts.stopping.wait(0.05)
    finally:
        attempts.stop()
        v5.close()
        over_ws.close()
        v311.close()
    assert attempts.failures == [], attempts.failures
    old.wait_for_log("drained and stopped")

    # The clients reconnect to the new broker, and it routes between them.
    subscriber = clients(new, "ws")
    subscriber.subscribe(f"{topic}/after", 1)
    publisher = Client5(new, "tcp")
    publisher.connect()
    try:
        publisher.publish(f"{topic}/after", b"served by the new one", 1)
        assert subscriber.wait_for_message().payload == b"served by the new one"
    finally:
        publisher.close()


def test_takeover_with_nothing_running_starts_normally(start):
    port = free_port()
    broker = start(args=["--tcp", f"{HOST}:{port}", "--takeover"])
    assert broker.tcp_port == port
    broker.wait_for_log("starting normally")


def takeover_start(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(fanfare_bin()), "--admin", "off", "--takeover", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=20)


def test_a_silent_broker_is_not_taken_over(start, clients, topic):
    port = free_port()
    old = start(args=["--tcp", f"{HOST}:{port}"])
    subscriber = clients(old, "tcp")
    subscriber.subscribe(topic, 1)
    old.proc.send_signal(signal.SIGSTOP)
    try:
        refused = takeover_start("--tcp", f"{HOST}:{port}", "--ws", "off")
    finally:
        old.proc.send_signal(signal.SIGCONT)
    assert refused.returncode != 0
    assert "ready" not in refused.stdout
    assert f"{HOST}:{port}" in refused.stderr, refused.stderr
    # The old broker serves on, with the sockets it was about to hand over.
    publisher = clients(old, "tcp")
    publisher.publish(topic, b"still here", 1)
    assert subscriber.wait_for_message().payload == b"still here"


def test_a_listener_of_another_kind_is_not_taken_over(start, clients, topic):
    port = free_port()
    old = start(args=["--tcp", f"{HOST}:{port}"])
    refused = takeover_start("--tcp", "off", "--ws", f"{HOST}:{port}")
    assert refused.returncode != 0
    assert "ready" not in refused.stdout
    assert f"{HOST}:{port}" in refused.stderr, refused.stderr
    assert "listens there for tcp" in refused.stderr, refused.stderr
    subscriber = clients(old, "tcp")
    subscriber.subscribe(topic, 1)
    clients(old, "tcp").publish(topic, b"still mine", 1)
    assert subscriber.wait_for_message().payload == b"still mine"
