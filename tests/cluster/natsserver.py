"""nats-servers on loopback ports for the cluster tests, alone or clustered, and a bare NATS
client.

The NATS client protocol is text lines (`PUB subject size\\r\\npayload\\r\\n`), so a native
client needs no library: `NatsPublisher` and `NatsSubscriber` speak it over a socket, as any
scores backend with any NATS client would.

`NatsCluster` starts servers that form one NATS cluster (routes between all of them, JetStream
with a store and a `server_name` each) and waits until it is formed: every server routed to
every other and JetStream's meta group with a leader, read from each server's monitoring port.
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from broker import HOST, free_port
from rawmqtt import assert_loopback

START_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0
# A NATS cluster forms in about a second, and a JetStream leader after a server is lost in a
# few.
FORM_TIMEOUT_S = 30.0
# After the whole cluster restarted, the meta group elects its leader in rounds of 4 to 9 s
# each, and votes split: 5 to 17 s on this machine idle, past 30 s under a loaded test run.
# Each stream's group then elects its own the same way.
RESTART_FORM_TIMEOUT_S = 90.0
CLUSTER_NAME = "fanfare-test"
# Lowest port `fixed_ports` picks.
FIXED_PORT_MIN = 20000


def nats_server_bin() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)


class NatsServer:
    """A nats-server process on a free loopback port; `url` is what fanfare's --nats takes.
    `monitor_port` serves nats-server's monitoring endpoints (`/varz`, `/routez`, `/jsz`).

    For a member of a cluster, `name` is its `server_name`, `cluster_port` the port it takes
    routes on and `routes` the cluster ports of every member (its own among them is ignored)."""

    def __init__(self, workdir: Path, *, name: str | None = None,
                 cluster_port: int | None = None, routes: list[int] | None = None,
                 ports: tuple[int, int] | None = None, start: bool = True):
        """`ports`: the client and monitoring ports, when the caller chose them."""
        self.port, self.monitor_port = ports or (free_port(), free_port())
        self.url = f"nats://{HOST}:{self.port}"
        self.workdir = workdir
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.log_path = workdir / "nats.log"
        if start:
            self.start()

    def args(self) -> list[str]:
        args = ["-a", HOST, "-p", str(self.port), "-m", str(self.monitor_port),
                "-js", "-sd", str(self.workdir / "js")]
        if self.name is not None:
            args += ["-n", self.name]
        if self.cluster_port is not None:
            args += ["--cluster_name", CLUSTER_NAME,
                     "--cluster", f"nats://{HOST}:{self.cluster_port}",
                     "--routes", ",".join(f"nats://{HOST}:{port}" for port in self.routes)]
        return args

    def start(self) -> None:
        """Starts the server on its ports (again, after `stop` or `kill`)."""
        binary = nats_server_bin()
        assert binary, "nats-server not installed (scripts/test.sh installs it)"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, *self.args()],
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

    def jetstream_log(self, lines: int = 12) -> str:
        """The last lines of the log about JetStream's leaders and RAFT, to show why a
        cluster did not form."""
        about = ("leader", "RAFT", "Starting nats-server", "quorum")
        kept = [line for line in self.log_path.read_text(errors="replace").splitlines()
                if any(word in line for word in about)]
        return "\n  ".join(["", *kept[-lines:]])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stream(self, name: str) -> dict | None:
        """The JetStream stream `name` as this server reports it, if it holds a replica."""
        answer = self.monitor("/jsz?accounts=true&streams=true&config=true")
        for account in answer.get("account_details", []):
            for stream in account.get("stream_detail", []):
                if stream.get("name") == name:
                    return stream
        return None

    def consumers(self, stream: str) -> int:
        """How many consumers of the stream this server holds a replica of."""
        answer = self.monitor("/jsz?accounts=true&streams=true&consumers=true")
        return sum(len(detail.get("consumer_detail") or [])
                   for account in answer.get("account_details", [])
                   for detail in account.get("stream_detail", [])
                   if detail.get("name") == stream)

    def consumer_configs(self, stream: str) -> dict[str, dict]:
        """The configuration of each consumer of the stream this server holds, by name."""
        answer = self.monitor("/jsz?accounts=true&streams=true&consumers=true&config=true")
        return {consumer["name"]: consumer.get("config", {})
                for account in answer.get("account_details", [])
                for detail in account.get("stream_detail", [])
                if detail.get("name") == stream
                for consumer in detail.get("consumer_detail") or []}

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything, as in a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def monitor(self, path: str) -> dict:
        """A monitoring endpoint's JSON answer (`/routez`, `/jsz?streams=true`, ...)."""
        assert_loopback(HOST)
        conn = http.client.HTTPConnection(HOST, self.monitor_port, timeout=READ_TIMEOUT_S)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, f"GET {path}: {response.status} {body[:200]!r}"
            return json.loads(body)
        finally:
            conn.close()


def fixed_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports below the kernel's range of ephemeral ports. A
    server started after another holds its ports already, and the routes of servers started
    before it connect from ephemeral ports, which could take a port picked with port 0 in the
    meantime; these cannot be taken so. Each is bound while the next is picked."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert low > FIXED_PORT_MIN + 1000, f"no room below the ephemeral ports ({low})"
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            s = socket.socket()
            try:
                s.bind((HOST, random.randrange(FIXED_PORT_MIN, low)))
            except OSError:
                s.close()
                continue
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


class NatsCluster:
    """`size` nats-servers (named n1, n2, ...) clustered on loopback, with JetStream;
    `servers[i].url` is the i-th server's client URL."""

    def __init__(self, workdir: Path, size: int = 3):
        ports = fixed_ports(3 * size)
        cluster_ports = ports[:size]
        self.servers = []
        for i, port in enumerate(cluster_ports):
            home = workdir / f"n{i + 1}"
            home.mkdir()
            client_ports = (ports[size + 2 * i], ports[size + 2 * i + 1])
            self.servers.append(NatsServer(home, name=f"n{i + 1}", cluster_port=port,
                                           routes=cluster_ports, ports=client_ports,
                                           start=False))
        try:
            for server in self.servers:
                server.start()
            self.wait_formed()
        except BaseException:
            # No fixture owns the cluster yet: stop what started.
            self.stop()
            raise

    def alive(self) -> list[NatsServer]:
        return [server for server in self.servers if server.alive()]

    def restart_stopped(self, streams: tuple[str, ...] = ()) -> None:
        """Starts every server that is not running and waits until the cluster is formed
        again, and each of `streams` has a leader."""
        for server in self.servers:
            if not server.alive():
                server.start()
        self.wait_formed(timeout_s=RESTART_FORM_TIMEOUT_S)
        for name in streams:
            self.wait_stream_led(name, timeout_s=RESTART_FORM_TIMEOUT_S)

    def wait_formed(self, timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Waits until every running server has a route to every other running server and
        sees a leader of JetStream's meta group among them."""
        deadline = time.monotonic() + timeout_s
        while True:
            why = self._not_formed()
            if why is None:
                return
            assert time.monotonic() < deadline, (
                f"the NATS cluster did not form in {timeout_s} s: {why}\n"
                + "\n".join(f"{server.name}: {server.jetstream_log()}"
                            for server in self.servers))
            time.sleep(0.1)

    def _not_formed(self) -> str | None:
        alive = self.alive()
        names = {server.name for server in alive}
        try:
            # A server's id is new at every start; routes name their peers by it.
            ids = {server.name: server.monitor("/varz")["server_id"] for server in alive}
        except (OSError, AssertionError) as e:
            return f"no answer: {e}"
        for server in alive:
            try:
                routes = server.monitor("/routez")
                meta = server.monitor("/jsz").get("meta_cluster", {})
            except (OSError, AssertionError) as e:
                return f"{server.name}: {e}"
            routed = {route.get("remote_id") for route in routes.get("routes", [])}
            missing = [name for name, id in ids.items() if name != server.name and id not in routed]
            if missing:
                return f"{server.name} has no route to {missing}"
            if meta.get("leader") not in names:
                return f"{server.name} sees meta leader {meta.get('leader')!r}"
        return None

    def wait_client(self, name: str, timeout_s: float = FORM_TIMEOUT_S) -> str:
        """Waits until a running server has a client connection named `name`; returns that
        server's name."""
        deadline = time.monotonic() + timeout_s
        while True:
            for server in self.alive():
                try:
                    conns = server.monitor("/connz").get("connections", [])
                except (OSError, AssertionError):
                    continue
                if any(conn.get("name") == name for conn in conns):
                    return server.name
            assert time.monotonic() < deadline, f"no NATS server has the client {name!r}"
            time.sleep(0.1)

    def stream(self, name: str) -> dict:
        """A JetStream stream's state as a running server reports it: `config`
        (`num_replicas`, ...) and `cluster` (`leader`, `replicas`)."""
        for server in self.alive():
            stream = server.stream(name)
            if stream is not None:
                return stream
        raise AssertionError(f"no stream {name} in the NATS cluster")

    def stream_holders(self, name: str) -> set[str]:
        """The running servers that hold a replica of the stream."""
        return {server.name for server in self.alive() if server.stream(name) is not None}

    def wait_stream_led(self, name: str, timeout_s: float = FORM_TIMEOUT_S) -> dict:
        """Waits until the stream has a leader among the running servers (after its leader
        was lost a new one is elected), and returns its state."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                stream = self.stream(name)
            except (OSError, AssertionError):
                stream = {}
            leader = stream.get("cluster", {}).get("leader")
            if leader in {server.name for server in self.alive()}:
                return stream
            if time.monotonic() >= deadline:
                logs = "\n".join(f"{server.name}:\n{server.jetstream_log()}"
                                 for server in self.alive())
                raise AssertionError(f"stream {name} has no leader: {stream}\n{logs}")
            time.sleep(0.1)

    def stop(self) -> None:
        for server in self.servers:
            if hasattr(server, "proc"):
                server.stop()


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


class NatsSubscriber:
    """A native NATS client subscribed to one subject (wildcards allowed); `next_message`
    returns (subject, headers block, payload) of each message in turn."""

    def __init__(self, server: NatsServer, subject: str):
        assert_loopback(HOST)
        self.sock = socket.create_connection((HOST, server.port), timeout=READ_TIMEOUT_S)
        self.buf = b""
        info = self._line()
        assert info.startswith(b"INFO "), info
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
                          b"SUB %s 1\r\nPING\r\n" % subject.encode())
        # The server has the subscription once it answers the PING sent after it.
        while self._line() != b"PONG":
            pass

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "nats-server closed the connection"
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _take(self, size: int) -> bytes:
        """`size` bytes and the CRLF that ends them."""
        while len(self.buf) < size + 2:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size + 2:]
        return data

    def next_message(self, timeout: float = READ_TIMEOUT_S) -> tuple[str, bytes, bytes]:
        """The next message; answers the server's PINGs meanwhile. A socket timeout fails."""
        self.sock.settimeout(timeout)
        while True:
            words = self._line().split()
            if words == [b"PING"]:
                self.sock.sendall(b"PONG\r\n")
            elif words and words[0] == b"MSG":
                # MSG <subject> <sid> [reply-to] <size>
                return words[1].decode(), b"", self._take(int(words[-1]))
            elif words and words[0] == b"HMSG":
                # HMSG <subject> <sid> [reply-to] <header size> <total size>
                header_size, total = int(words[-2]), int(words[-1])
                data = self._take(total)
                return words[1].decode(), data[:header_size], data[header_size:]
            else:
                assert not words or words[0] != b"-ERR", words

    def close(self) -> None:
        self.sock.close()
