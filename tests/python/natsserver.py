"""A nats-server on a loopback port for the cluster tests, and a bare NATS client.

The NATS client protocol is text lines (`PUB subject size\\r\\npayload\\r\\n`), so a native
publisher needs no library: `NatsPublisher` speaks it over a socket, as any scores backend
with any NATS client would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from broker import HOST, free_port
from rawmqtt import assert_loopback

START_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0


def nats_server_bin() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)


class NatsServer:
    """A nats-server process on a free loopback port; `url` is what fanfare's --nats takes."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"nats://{HOST}:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / "nats.log"
        self.start()

    def start(self) -> None:
        """Starts the server on its port (again, after `stop`)."""
        binary = nats_server_bin()
        assert binary, "nats-server not installed (scripts/test.sh installs it)"
        workdir = self.workdir
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "-a", HOST, "-p", str(self.port), "-js", "-sd", str(workdir / "js")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, f"nats-server exited:\n{self.log()}"
                assert time.monotonic() < deadline, "nats-server did not listen in time"
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class NatsPublisher:
    """A native NATS client that publishes; every publish is confirmed with PING/PONG."""

    def __init__(self, server: NatsServer):
        assert_loopback(HOST)
        self.sock = socket.create_connection((HOST, server.port), timeout=READ_TIMEOUT_S)
        self.buf = b""
        info = self._line()
        assert info.startswith(b"INFO "), info
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "nats-server closed the connection"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def publish(self, subject: str, payload: bytes) -> None:
        self.sock.sendall(b"PUB %s %d\r\n%s\r\nPING\r\n" % (subject.encode(), len(payload), payload))
        while True:
            line = self._line()
            if line == b"PONG":
                return
            assert not line.startswith(b"-ERR"), line

    def close(self) -> None:
        self.sock.close()
