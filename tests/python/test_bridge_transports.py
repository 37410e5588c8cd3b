"""Bridges over TLS and WebSocket (`mqtts://`, `ws://`, `wss://`, docs/bridges.md): to a real
Mosquitto over TLS (with a client certificate) and WebSocket, and to a second fanfare over
`ws://` and `wss://`, bridged both ways on `#` with each message delivered once on each side.
Then the remotes that go wrong: refused credentials, a wrong WebSocket path, a certificate for
another name, and remotes that accept and then stall. Each gives one clear log line and
back-off, and the local broker goes on serving its clients.
"""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from broker import HOST, Broker, free_port
from probe import open_path
from scrape import wait_for_metric

MOSQUITTO = Path("/usr/sbin/mosquitto")
START_TIMEOUT_S = 10.0

pytestmark = pytest.mark.fanfare_only


def bridge_table(url: str, topics: list[dict], protocol: str = "3.1.1", **more) -> dict:
    return {"name": "up", "url": url, "protocol": protocol, "keep_alive_s": 5,
            "reconnect_initial_ms": 50, "reconnect_max_ms": 200, "topics": topics, **more}


def start_bridged(start, table: dict, connected: bool = True) -> Broker:
    broker = start(shards=2, config={"bridge": [table]})
    if connected:
        wait_for_metric(broker, "fanfare_bridge_connected", lambda v: v == 1)
    return broker


def tls_table(pki) -> dict:
    return {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file}


def port_below_ephemeral() -> int:
    """A port free on loopback, from 10000 to the start of the ephemeral range, where no
    outgoing connection takes its local port."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
                return port
            except OSError:
                continue
    return free_port()


class Mosquitto:
    """Mosquitto with a plain listener for the tests' clients (`broker.tcp_port`) and one
    more listener, configured by `lines`, on `port` for the bridge."""

    # Mosquitto's WebSocket listener (libwebsockets) cannot bind a port that a connection on
    # another loopback address holds as its local port, which a free port on 127.0.0.1 may
    # still be while a load test runs: its port is drawn below the kernel's ephemeral range,
    # and drawn again, a bounded number of times, if it is taken anyway.
    STARTS_MAX = 5

    def __init__(self, workdir: Path, lines: list[str]):
        for _ in range(self.STARTS_MAX):
            if self._start(workdir, lines):
                return
        raise AssertionError(f"mosquitto could not bind its listeners: {self.broker.log()}")

    def _start(self, workdir: Path, lines: list[str]) -> bool:
        self.port = port_below_ephemeral()
        plain = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text("\n".join([
            # Run as root, Mosquitto would drop to its own user, who cannot read the test
            # certificates under pytest's private temporary directory.
            "user root",
            "persistence false", "per_listener_settings false", "allow_anonymous true",
            f"listener {plain} {HOST}", f"listener {self.port} {HOST}", *lines]) + "\n")
        log_path = workdir / "mosquitto.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(MOSQUITTO), "-c", str(conf)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.broker = Broker(proc, "mosquitto", log_path)
        self.broker.tcp_port = plain
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in (plain, self.port):
            while True:
                if proc.poll() is not None:
                    text = self.broker.log()
                    if "Unable to create websockets listener" in text:
                        return False
                    if "Unable to start any listening sockets" in text and \
                            "websockets" in "\n".join(lines):
                        pytest.skip("this Mosquitto cannot open a WebSocket listener here")
                    raise AssertionError(f"mosquitto exited: {text}")
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "mosquitto did not listen in time"
                    time.sleep(0.02)
        return True

    def stop(self) -> None:
        self.broker.kill()


@pytest.fixture
def mosquitto(tmp_path_factory):
    """`mosquitto(lines)`: a Mosquitto (see `Mosquitto`), stopped at teardown."""
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto not installed")
    started: list[Mosquitto] = []

    def _start(lines: list[str]) -> Mosquitto:
        remote = Mosquitto(tmp_path_factory.mktemp("mosquitto"), lines)
        started.append(remote)
        return remote

    yield _start
    for remote in started:
        remote.stop()


def check_in_and_out(broker, remote: Broker, clients, topic: str) -> None:
    """`in` on `{topic}/in/#` from `origin/`, `out` on `edge/{topic}/out/#` to `site/`."""
    local_sub = clients(broker, "tcp")
    local_sub.subscribe(f"{topic}/in/#", 1)
    remote_pub = clients(remote, "tcp")
    open_path(local_sub, lambda p: remote_pub.publish(f"origin/{topic}/in/probe", p, 1),
              "the bridge in")
    remote_sub = clients(remote, "tcp")
    remote_sub.subscribe(f"site/{topic}/out/#", 1)
    local_pub = clients(broker, "tcp")
    open_path(remote_sub, lambda p: local_pub.publish(f"edge/{topic}/out/probe", p, 1),
              "the bridge out")

    for i in range(5):
        remote_pub.publish(f"origin/{topic}/in/score", b"in %d" % i, 1)
        local_pub.publish(f"edge/{topic}/out/score", b"out %d" % i, 1)
    got_in = [local_sub.wait_for_message() for _ in range(5)]
    assert [(m.topic, m.payload) for m in got_in] == [
        (f"{topic}/in/score", b"in %d" % i) for i in range(5)]
    got_out = [remote_sub.wait_for_message() for _ in range(5)]
    assert [(m.topic, m.payload) for m in got_out] == [
        (f"site/{topic}/out/score", b"out %d" % i) for i in range(5)]


def in_and_out(topic: str) -> list[dict]:
    return [{"filter": f"{topic}/in/#", "direction": "in", "qos": 1, "remote_prefix": "origin/"},
            {"filter": f"{topic}/out/#", "direction": "out", "qos": 1,
             "local_prefix": "edge/", "remote_prefix": "site/"}]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_mosquitto_over_tls_with_a_client_certificate(start, mosquitto, clients, pki, topic,
                                                      protocol):
    remote = mosquitto([f"cafile {pki.ca.cert_file}", f"certfile {pki.server.cert_file}",
                        f"keyfile {pki.server.key_file}", "require_certificate true"])
    broker = start_bridged(start, bridge_table(
        f"mqtts://{HOST}:{remote.port}", in_and_out(topic), protocol=protocol,
        ca_file=pki.ca.cert_file, cert_file=pki.client.cert_file,
        key_file=pki.client.key_file))
    check_in_and_out(broker, remote.broker, clients, topic)


def test_mosquitto_over_websocket(start, mosquitto, clients, topic):
    remote = mosquitto(["protocol websockets"])
    broker = start_bridged(start, bridge_table(f"ws://{HOST}:{remote.port}/mqtt",
                                               in_and_out(topic)))
    check_in_and_out(broker, remote.broker, clients, topic)


def drain(sub) -> None:
    while True:
        try:
            sub.wait_for_message(timeout=0.3)
        except AssertionError:
            return


@pytest.mark.parametrize("scheme,protocol",
                         [("ws", "3.1.1"), ("ws", "5"), ("wss", "3.1.1"), ("wss", "5")])
def test_two_fanfares_bridged_both_ways_on_everything_deliver_each_message_once(
        start, clients, pki, topic, scheme, protocol):
    remote = start(tls=tls_table(pki))
    port = remote.wss_port if scheme == "wss" else remote.ws_port
    broker = start_bridged(start, bridge_table(
        f"{scheme}://{HOST}:{port}/mqtt", [{"filter": "#", "direction": "both", "qos": 1}],
        protocol=protocol, **({"ca_file": pki.ca.cert_file} if scheme == "wss" else {})))
    local = clients(broker, "tcp")
    local.subscribe(f"{topic}/#", 1)
    far = clients(remote, "tcp")
    far.subscribe(f"{topic}/#", 1)
    local_pub = clients(broker, "tcp")
    far_pub = clients(remote, "ws")
    open_path(far, lambda p: local_pub.publish(f"{topic}/probe", p, 1), "the bridge out")
    open_path(local, lambda p: far_pub.publish(f"{topic}/probe", p, 1), "the bridge in")
    # The probes above reached the other side's subscriber too: drain them.
    for sub in (local, far):
        drain(sub)

    for i in range(20):
        local_pub.publish(f"{topic}/from-local", b"L%d" % i, 1)
        far_pub.publish(f"{topic}/from-remote", b"R%d" % i, 1)
    expected = sorted([(f"{topic}/from-local", b"L%d" % i) for i in range(20)]
                      + [(f"{topic}/from-remote", b"R%d" % i) for i in range(20)])
    for sub in (local, far):
        got = sorted((m.topic, m.payload) for m in (sub.wait_for_message() for _ in range(40)))
        assert got == expected
        sub.expect_no_message(timeout=1.0)


def check_local_service(broker, clients, topic: str) -> None:
    """The remote's failure leaves local delivery alone."""
    sub = clients(broker, "tcp")
    sub.subscribe(f"{topic}/local", 1)
    pub = clients(broker, "ws")
    pub.publish(f"{topic}/local", b"still here", 1)
    assert sub.wait_for_message().payload == b"still here"
    assert broker.alive()


def test_refused_credentials_are_logged_with_the_connack_code(start, mosquitto, clients,
                                                              topic, tmp_path):
    remote = mosquitto(["allow_anonymous false"])
    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    broker = start_bridged(start, bridge_table(
        f"mqtt://{HOST}:{remote.port}", [{"filter": f"{topic}/#", "direction": "both"}],
        username="edge", password_file=secret), connected=False)
    line = broker.wait_for_log("bridge up: cannot connect")
    # Mosquitto's 3.1.1 return code 5, as its MQTT 5 equivalent.
    assert "CONNACK refused with reason code 0x87 (Not authorized)" in line, line
    assert "retrying with back-off" in line
    check_local_service(broker, clients, topic)


def test_a_wrong_websocket_path_is_logged_with_the_http_status(start, clients, topic):
    remote = start()
    broker = start_bridged(start, bridge_table(
        f"ws://{HOST}:{remote.ws_port}/elsewhere", [{"filter": f"{topic}/#", "direction": "in"}]),
        connected=False)
    line = broker.wait_for_log("bridge up: cannot connect")
    assert "WebSocket upgrade refused with HTTP status 404" in line, line
    check_local_service(broker, clients, topic)


def test_a_certificate_for_another_name_is_logged_with_the_tls_error(start, clients, pki,
                                                                     topic):
    remote = start(tls=tls_table(pki))
    broker = start_bridged(start, bridge_table(
        f"wss://{HOST}:{remote.wss_port}/mqtt", [{"filter": f"{topic}/#", "direction": "in"}],
        ca_file=pki.ca.cert_file, server_name="elsewhere.test"), connected=False)
    line = broker.wait_for_log("bridge up: cannot connect")
    assert "TLS: invalid peer certificate" in line and "elsewhere.test" in line, line
    check_local_service(broker, clients, topic)


class Staller:
    """A remote that accepts connections and then says nothing; with `connack`, it first
    answers CONNECT with a CONNACK (MQTT 3.1.1: accepted), then ignores everything. What
    each connection sent first (its CONNECT) is kept in `first_reads`."""

    def __init__(self, connack: bool):
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.connack = connack
        self.held: list[socket.socket] = []
        self.first_reads: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            conn.settimeout(5)
            try:
                self.first_reads.append(conn.recv(1024))
                if self.connack:
                    conn.sendall(bytes([0x20, 0x02, 0x00, 0x00]))
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def staller():
    made: list[Staller] = []

    def _make(connack: bool) -> Staller:
        made.append(Staller(connack))
        return made[-1]

    yield _make
    for s in made:
        s.close()


def test_a_remote_that_never_answers_connect_times_out(start, clients, staller, topic):
    remote = staller(connack=False)
    broker = start_bridged(start, bridge_table(
        f"mqtt://{HOST}:{remote.port}", [{"filter": f"{topic}/#", "direction": "in"}],
        connect_timeout_ms=300), connected=False)
    line = broker.wait_for_log("bridge up: cannot connect")
    assert "no CONNACK within connect_timeout_ms (300 ms)" in line, line
    check_local_service(broker, clients, topic)


def test_a_remote_that_stalls_after_connack_fails_the_keep_alive(start, clients, staller,
                                                                  topic):
    remote = staller(connack=True)
    broker = start_bridged(start, bridge_table(
        f"mqtt://{HOST}:{remote.port}", [{"filter": f"{topic}/#", "direction": "in"}],
        keep_alive_s=1))
    line = broker.wait_for_log("bridge up: disconnected", timeout=10.0)
    assert "no PINGRESP within the keep alive" in line, line
    assert "reconnecting in" in line
    check_local_service(broker, clients, topic)


def test_an_mqtt5_bridge_asks_for_its_session_expiry(start, staller, topic):
    remote = staller(connack=False)
    start_bridged(start, bridge_table(
        f"mqtt://{HOST}:{remote.port}", [{"filter": f"{topic}/#", "direction": "in"}],
        protocol="5", clean_start=False, session_expiry_s=60), connected=False)
    deadline = time.monotonic() + 5.0
    while not remote.first_reads:
        assert time.monotonic() < deadline, "no CONNECT came"
        time.sleep(0.02)
    connect = remote.first_reads[0]
    at = connect.index(b"\x00\x04MQTT\x05") + 7
    assert connect[at] & 0x02 == 0, "clean start is off"
    # Session Expiry Interval (0x11), 60 s, among the CONNECT properties (MQTT 5.0 §3.1.2.11.2).
    assert b"\x11\x00\x00\x00\x3c" in connect[at:]


def test_insecure_accepts_any_certificate_and_says_so(start, clients, pki, topic):
    remote = start(tls=tls_table(pki))
    broker = start_bridged(start, bridge_table(
        f"wss://{HOST}:{remote.wss_port}/mqtt", [{"filter": f"{topic}/#", "direction": "in"}],
        server_name="elsewhere.test", insecure=True))
    assert "not checked; for tests only" in broker.wait_for_log("insecure = true")
    sub = clients(broker, "tcp")
    sub.subscribe(f"{topic}/#", 0)
    pub = clients(remote, "tcp")
    open_path(sub, lambda p: pub.publish(f"{topic}/probe", p, 0), "the bridge")
