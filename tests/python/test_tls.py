"""The TLS listeners, mqtts and wss, as their users meet them.

Clients: paho-mqtt, `mosquitto_pub`/`mosquitto_sub` (Debian's mosquitto-clients),
`openssl s_client`, Python's `http.client` over `ssl`, and `rawtls.TlsConn` for what no
well-behaved client sends. The certificates are made for the run (`certs.py`, the `pki`
fixture). Each refused or broken connection must close alone, with its one log line
`PEER: closing: TLS: REASON`, while a healthy TLS subscriber keeps receiving.
"""

from __future__ import annotations

import base64
import http.client
import os
import queue
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

import rawmqtt as m
import rawtls
from certs import CLIENT_NAME, SNI_NAME
from rawtls import TlsConn, client_context
from scrape import totals, wait_for_metric

pytestmark = pytest.mark.fanfare_only  # Mosquitto mode starts no TLS listeners

TOOL_TIMEOUT_S = 10.0
FAILURES = "fanfare_tls_failures_total"
# Short opening deadlines, so the stalled-handshake tests end quickly.
SHORT_DEADLINES = {"limits": {"connect_timeout_ms": 1000, "ws_handshake_timeout_ms": 1000}}


def tls_table(pki, **more) -> dict:
    """`[tls]` with the test server certificate, and `more` settings."""
    return {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, **more}


def mutual_table(pki, **more) -> dict:
    """`[tls]` that requires a client certificate from the test CA."""
    return tls_table(pki, client_ca_file=pki.ca.cert_file, client_auth="required", **more)


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` not found: install Debian's {package} "
                    f"(scripts/test.sh does when it can)")
    return path


def run_tool(args: list, timeout: float = TOOL_TIMEOUT_S) -> subprocess.CompletedProcess:
    """A command-line client run to completion, stdin closed, with a deadline."""
    return subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


class Watcher:
    """A healthy TLS subscriber and a plain publisher: `check()` proves it still receives."""

    def __init__(self, broker, clients, pki, topic: str, cert=None):
        self.topic = topic + "/watch"
        self.sub = clients(broker, "mqtts", tls_context=client_context(pki.ca.cert_file, cert))
        assert self.sub.subscribe(self.topic, 1) == 1
        self.pub = clients(broker, "tcp")
        self.count = 0

    def check(self) -> None:
        self.count += 1
        payload = f"still-{self.count}".encode()
        self.pub.publish(self.topic, payload, qos=1)
        msg = self.sub.wait_for_message()
        assert (msg.topic, msg.payload) == (self.topic, payload)
        assert not self.sub.disconnected.is_set()


def failures(broker) -> int:
    return totals(broker).get(FAILURES, 0)


def wait_for_log_count(broker, needle: str, count: int, timeout: float = 5.0) -> list[str]:
    """Waits until `count` log lines hold `needle`; returns those lines."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in broker.log(tail=None).splitlines() if needle in line]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"{len(lines)} of {count} {needle!r}:\n{broker.log()}"
        time.sleep(0.02)


def expect_failure_logged(broker, peer: str, reason: str, before: int) -> str:
    """The connection's one line names it and the TLS reason; the counter moved."""
    line = broker.wait_for_log(f"{peer}: closing: TLS: ")
    assert reason in line, line
    assert " INFO " in line, line
    assert broker.log(tail=None).count(f"{peer}: closing:") == 1
    wait_for_metric(broker, FAILURES, lambda n: n > before)
    return line


# ------------------------------------------------------------------ clients that work


@pytest.mark.parametrize("transport", ["mqtts", "wss"])
def test_paho_publish_subscribe_qos1(start, clients, pki, topic, transport):
    broker = start(tls=tls_table(pki))
    ctx = client_context(pki.ca.cert_file)
    sub = clients(broker, transport, tls_context=ctx)
    assert sub.subscribe(topic + "/#", 1) == 1
    pub = clients(broker, transport, tls_context=client_context(pki.ca.cert_file))
    pub.publish(topic + "/goal", b"1-0", qos=1)
    msg = sub.wait_for_message()
    assert (msg.topic, msg.payload, msg.qos) == (topic + "/goal", b"1-0", 1)
    # Plain and TLS clients share one broker: a plain publisher reaches the TLS subscriber.
    plain = clients(broker, "tcp")
    plain.publish(topic + "/goal", b"2-0", qos=1)
    assert sub.wait_for_message().payload == b"2-0"


@pytest.mark.parametrize("ktls", ["auto", "off"])
def test_each_tls_listener_logs_whether_it_uses_kernel_tls(start, clients, pki, topic, ktls):
    """The start-up line per TLS listener says kernel TLS or user-space TLS and why; either
    way clients work, and the hand-over counter agrees with the line. On a kernel without
    CONFIG_TLS (or with ktls = "off") that is user-space TLS."""
    broker = start(tls=tls_table(pki, ktls=ktls))
    modes = {}
    for kind, port in (("mqtts", broker.mqtts_port), ("wss", broker.wss_port)):
        lines = wait_for_log_count(broker, f"listening {kind} 127.0.0.1:{port}", 2)
        line = next(line for line in lines if "TLS" in line)
        assert ": kernel TLS (kTLS) after the handshake for " in line or ": user-space TLS: " in line, line
        modes[kind] = "kernel" if "(kTLS)" in line else "user"
    assert modes["mqtts"] == modes["wss"], modes
    if ktls == "off":
        assert modes["mqtts"] == "user"
        assert "kernel TLS is off" in broker.log(tail=None)
    sub = clients(broker, "mqtts", tls_context=client_context(pki.ca.cert_file))
    assert sub.subscribe(topic, 1) == 1
    pub = clients(broker, "mqtts", tls_context=client_context(pki.ca.cert_file))
    pub.publish(topic, b"x" * 40000, qos=1)
    assert sub.wait_for_message().payload == b"x" * 40000
    if modes["mqtts"] == "kernel":
        wait_for_metric(broker, "fanfare_tls_kernel_handovers_total", lambda n: n >= 2)
    else:
        assert totals(broker).get("fanfare_tls_kernel_handovers_total", 0) == 0


def test_tls_cert_and_key_flags_without_a_config_file(start, clients, pki, topic):
    broker = start(args=["--mqtts", "127.0.0.1:0", "--wss", "127.0.0.1:0",
                         "--tls-cert", pki.server.cert_file, "--tls-key", pki.server.key_file])
    assert broker.mqtts_port and broker.wss_port
    sub = clients(broker, "wss", tls_context=client_context(pki.ca.cert_file))
    sub.subscribe(topic, 1)
    pub = clients(broker, "mqtts", tls_context=client_context(pki.ca.cert_file))
    pub.publish(topic, b"flags", qos=1)
    assert sub.wait_for_message().payload == b"flags"


class Subscriber:
    """`mosquitto_sub -d` for one message, read line by line; ready once subscribed."""

    def __init__(self, args: list):
        # Line-buffered, or its debug lines sit in stdio's buffer while it waits.
        stdbuf = shutil.which("stdbuf")
        args = ([stdbuf, "-oL"] if stdbuf else []) + args
        self.proc = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, needle: str, timeout: float = TOOL_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"mosquitto_sub: no {needle!r}; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"mosquitto_sub exited before {needle!r}; saw {self.seen}")
            self.seen.append(line)
            if needle in line:
                return

    def finish(self) -> int:
        try:
            return self.proc.wait(TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"mosquitto_sub did not exit; saw {self.seen}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TOOL_TIMEOUT_S)


@pytest.fixture
def mosquitto_sub():
    """Start `mosquitto_sub` processes; all killed at teardown."""
    started: list[Subscriber] = []

    def _start(args: list) -> Subscriber:
        sub = Subscriber([require_tool("mosquitto_sub", "mosquitto-clients"), *args])
        started.append(sub)
        return sub

    yield _start
    for sub in started:
        sub.kill()


def mosquitto_args(broker, pki, cert=None) -> list:
    args = ["-h", broker.host, "-p", broker.mqtts_port, "--cafile", pki.ca.cert_file]
    if cert is not None:
        args += ["--cert", cert.cert_file, "--key", cert.key_file]
    return args


def mosquitto_round_trip(broker, pki, mosquitto_sub, topic: str, cert=None) -> None:
    sub = mosquitto_sub([*mosquitto_args(broker, pki, cert), "-d", "-q", "1", "-C", "1",
                         "-W", int(TOOL_TIMEOUT_S), "-t", topic])
    sub.wait_for("received SUBACK")
    pub = run_tool([require_tool("mosquitto_pub", "mosquitto-clients"),
                    *mosquitto_args(broker, pki, cert), "-q", "1", "-t", topic, "-m", "kick-off"])
    assert pub.returncode == 0, pub.stdout + pub.stderr
    sub.wait_for("kick-off")
    assert sub.finish() == 0, sub.seen


def test_mosquitto_clients_with_cafile(start, pki, mosquitto_sub, topic):
    broker = start(tls=tls_table(pki))
    mosquitto_round_trip(broker, pki, mosquitto_sub, topic)


def test_mosquitto_clients_with_client_certificate(start, clients, pki, mosquitto_sub, topic):
    broker = start(tls=mutual_table(pki))
    watcher = Watcher(broker, clients, pki, topic, cert=pki.client)
    mosquitto_round_trip(broker, pki, mosquitto_sub, topic, cert=pki.client)
    mosquitto_pub = require_tool("mosquitto_pub", "mosquitto-clients")
    for cert, reason in [
        (None, "no client certificate, and one is required"),
        (pki.other_client, "the client certificate is not valid"),
        (pki.expired_client, "the client certificate is not valid"),
    ]:
        before = failures(broker)
        needle = "closing: TLS: " + reason
        logged = len(wait_for_log_count(broker, needle, 0))
        refused = run_tool([mosquitto_pub, *mosquitto_args(broker, pki, cert), "-q", "1",
                            "-t", topic, "-m", "should not pass"])
        assert refused.returncode != 0, (cert, refused.stdout, refused.stderr)
        line = wait_for_log_count(broker, needle, logged + 1)[-1]
        assert re.search(r"127\.0\.0\.1:\d+: " + re.escape(needle), line), line
        wait_for_metric(broker, FAILURES, lambda n, before=before: n > before)
        watcher.check()
    watcher.sub.expect_no_message(0.3)  # "should not pass" never got through


@pytest.mark.parametrize("port", ["mqtts", "wss"])
@pytest.mark.parametrize("presented,reason", [
    (None, "no client certificate, and one is required"),
    ("other_client", "the client certificate is not valid"),
    ("expired_client", "the client certificate is not valid"),
], ids=["none", "other-ca", "expired"])
def test_required_client_auth_refuses_a_bad_client_certificate(start, clients, pki, topic, port,
                                                               presented, reason):
    broker = start(tls=mutual_table(pki))
    watcher = Watcher(broker, clients, pki, topic, cert=pki.client)
    before = failures(broker)
    cert = None if presented is None else getattr(pki, presented)
    conn = TlsConn(broker.host, broker.port(port), client_context(pki.ca.cert_file, cert))
    try:
        # Over TLS 1.3 the client's side of the handshake ends before the broker has checked
        # its certificate: the broker's alert comes after.
        try:
            conn.handshake()
        except ssl.SSLError:
            pass
        conn.wait_closed()
        expect_failure_logged(broker, conn.local, reason, before)
    finally:
        conn.close()
    watcher.check()


def test_optional_client_auth_takes_clients_with_or_without_a_certificate(start, clients, pki,
                                                                          topic):
    broker = start(tls=tls_table(pki, client_ca_file=pki.ca.cert_file, client_auth="optional"))
    anonymous = clients(broker, "mqtts", tls_context=client_context(pki.ca.cert_file))
    anonymous.subscribe(topic, 1)
    holder = clients(broker, "wss", tls_context=client_context(pki.ca.cert_file, pki.client))
    holder.publish(topic, b"both", qos=1)
    assert anonymous.wait_for_message().payload == b"both"
    # A certificate, when presented, must still chain to client_ca_file.
    intruder = TlsConn(broker.host, broker.mqtts_port,
                       client_context(pki.ca.cert_file, pki.other_client))
    try:
        # Over TLS 1.3 the client finishes its handshake before the broker checks its
        # certificate: the refusal may come at the CONNECT.
        with pytest.raises((ssl.SSLError, OSError, m.Closed)):
            intruder.handshake()
            m.Mqtt(intruder).handshake("intruder")
        broker.wait_for_log(f"{intruder.local}: closing: TLS: the client certificate is not")
    finally:
        intruder.close()


def test_identity_as_username_takes_the_certificate_common_name(start, clients, pki, topic):
    """The certificate's CN (`backend-1`) becomes the user name of the connection, in place of
    the one the CONNECT carries. fanfare has no authentication to check it against yet, so the
    name shows in the debug log only; clients with it work on both TLS listeners."""
    broker = start(tls=mutual_table(pki, identity_as_username=True), args=["--log-level", "debug"])
    sub = clients(broker, "mqtts", tls_context=client_context(pki.ca.cert_file, pki.client))
    sub.subscribe(topic, 1)
    conn = TlsConn(broker.host, broker.wss_port,
                   client_context(pki.ca.cert_file, pki.client, alpn=["http/1.1"]))
    try:
        conn.handshake()
        # The name is taken once the handshake is verified, on the first bytes after it.
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert conn.recv_some(5.0).startswith(b"HTTP/1.1 200")
        line = broker.wait_for_log(f"{conn.local}: the client certificate names the user")
        assert line.endswith(f'"{CLIENT_NAME}"'), line
    finally:
        conn.close()
    pub = clients(broker, "wss", tls_context=client_context(pki.ca.cert_file, pki.client))
    pub.publish(topic, CLIENT_NAME, qos=1)
    assert sub.wait_for_message().payload == CLIENT_NAME.encode()
    assert len(wait_for_log_count(broker, f'names the user "{CLIENT_NAME}"', 3)) == 3


# ------------------------------------------------------------------ openssl s_client


def s_client(port: int, *args) -> subprocess.CompletedProcess:
    openssl = require_tool("openssl", "openssl")
    return run_tool([openssl, "s_client", "-connect", f"127.0.0.1:{port}", *args])


def shown(result: subprocess.CompletedProcess, field: str) -> str:
    """What `openssl s_client` printed after `field` (e.g. "subject=")."""
    for line in result.stdout.splitlines():
        if line.startswith(field):
            return line[len(field):].strip()
    raise AssertionError(f"s_client showed no {field!r}:\n{result.stdout}\n{result.stderr}")


def test_alpn_is_mqtt_on_mqtts_and_http11_on_wss(start, pki):
    broker = start(tls=tls_table(pki))
    ca = ["-CAfile", pki.ca.cert_file, "-verify_return_error"]
    mqtts = s_client(broker.mqtts_port, *ca, "-alpn", "mqtt")
    assert mqtts.returncode == 0, mqtts.stderr
    assert shown(mqtts, "ALPN protocol:") == "mqtt"
    wss = s_client(broker.wss_port, *ca, "-alpn", "h2,http/1.1")
    assert wss.returncode == 0, wss.stderr
    assert shown(wss, "ALPN protocol:") == "http/1.1"
    # A client that offers only protocols the listener does not speak is refused.
    before = failures(broker)
    refused = s_client(broker.wss_port, *ca, "-alpn", "mqtt")
    assert refused.returncode != 0
    assert "no application protocol" in refused.stderr, refused.stderr
    broker.wait_for_log("closing: TLS: no ALPN protocol in common")
    wait_for_metric(broker, FAILURES, lambda n: n > before)


def test_sni_picks_the_certificate_of_the_name(start, pki):
    broker = start(tls=tls_table(pki, sni=[{"server_name": SNI_NAME,
                                             "cert_file": pki.sni.cert_file,
                                             "key_file": pki.sni.key_file}]))
    ca = ["-CAfile", pki.ca.cert_file, "-verify_return_error"]
    for port in (broker.mqtts_port, broker.wss_port):
        named = s_client(port, *ca, "-servername", SNI_NAME, "-verify_hostname", SNI_NAME)
        assert named.returncode == 0, named.stdout + named.stderr
        assert shown(named, "subject=").endswith(f"CN = {SNI_NAME}")
        assert shown(named, "issuer=").endswith("CN = fanfare test CA")
        assert "Verification: OK" in named.stdout
        for other in (["-noservername"], ["-servername", "unknown.test"]):
            default = s_client(port, *ca, *other)
            assert default.returncode == 0, default.stdout + default.stderr
            assert shown(default, "subject=").endswith("CN = localhost")
            assert shown(default, "issuer=").endswith("CN = fanfare test CA")


@pytest.mark.parametrize("allowed,refused", [("1.3", "1.2"), ("1.2", "1.3")])
def test_versions_refuse_the_other_tls_version(start, pki, allowed, refused):
    broker = start(tls=tls_table(pki, versions=[allowed]))
    flag = {"1.2": "-tls1_2", "1.3": "-tls1_3"}
    ca = ["-CAfile", pki.ca.cert_file, "-verify_return_error"]
    ok = s_client(broker.mqtts_port, *ca, flag[allowed])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(rf"Protocol\s*: TLSv{allowed}|New, TLSv{allowed}", ok.stdout), ok.stdout
    before = failures(broker)
    no = s_client(broker.mqtts_port, *ca, flag[refused])
    assert no.returncode != 0, no.stdout
    assert "alert protocol version" in no.stderr, no.stderr
    broker.wait_for_log("closing: TLS: no TLS version or cipher suite in common")
    wait_for_metric(broker, FAILURES, lambda n: n > before)


# ------------------------------------------------------------------ https on the wss listener


def https_get(broker, pki, path: str) -> tuple[int, str, bytes]:
    ctx = client_context(pki.ca.cert_file, alpn=["http/1.1"])
    conn = http.client.HTTPSConnection(broker.host, broker.wss_port, context=ctx, timeout=5)
    try:
        conn.request("GET", path)
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def test_https_serves_the_demo_page_and_metrics(start, pki):
    # Metrics on the internet-facing listener only when asked (`http_metrics`).
    broker = start(tls=tls_table(pki), config={"http_metrics": True})
    status, content_type, body = https_get(broker, pki, "/")
    assert status == 200
    assert content_type.startswith("text/html")
    assert b"<title>fanfare" in body
    status, content_type, body = https_get(broker, pki, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert FAILURES.encode() in body


# ------------------------------------------------------------------ bad input


def test_plain_mqtt_on_the_mqtts_port(start, clients, pki, topic):
    broker = start(tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    before = failures(broker)
    sock, peer = plain_socket(broker, broker.mqtts_port)
    try:
        sock.sendall(m.connect("plain-on-tls"))
        reply = read_until_closed(sock)
        # At most a TLS alert record comes back, never a CONNACK.
        assert not reply or reply[0] == rawtls.ALERT, reply
        expect_failure_logged(broker, peer, "not TLS", before)
    finally:
        sock.close()
    watcher.check()


def test_plain_http_on_the_wss_port(start, clients, pki, topic):
    broker = start(tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    before = failures(broker)
    sock, peer = plain_socket(broker, broker.wss_port)
    try:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = read_until_closed(sock)
        assert not reply or reply[0] == rawtls.ALERT, reply
        expect_failure_logged(broker, peer, "not TLS", before)
    finally:
        sock.close()
    watcher.check()


def plain_socket(broker, port: int) -> tuple[socket.socket, str]:
    sock = socket.create_connection((broker.host, port), timeout=5)
    return sock, "%s:%d" % sock.getsockname()


def read_until_closed(sock, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the broker kept the connection open; got {got!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        except TimeoutError:
            continue
        if not chunk:
            return got
        got += chunk


def truncated_client_hello(hello: bytes) -> bytes:
    """The first record of `hello`, its handshake message cut in half, with the record and
    handshake lengths rewritten to match: well framed, but a ClientHello that ends early."""
    assert hello[0] == rawtls.HANDSHAKE and hello[5] == 1, "not a ClientHello record"
    body = hello[5:5 + int.from_bytes(hello[3:5], "big")]
    cut = body[4:4 + (len(body) - 4) // 2]
    message = bytes([1]) + len(cut).to_bytes(3, "big") + cut
    return rawtls.record(rawtls.HANDSHAKE, message, version=int.from_bytes(hello[1:3], "big"))


@pytest.mark.parametrize("port", ["mqtts", "wss"])
def test_truncated_client_hello(start, clients, pki, topic, port):
    broker = start(tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    before = failures(broker)
    conn = TlsConn(broker.host, broker.port(port), client_context(pki.ca.cert_file))
    try:
        conn.send_raw(truncated_client_hello(conn.client_hello()))
        conn.wait_closed()
        expect_failure_logged(broker, conn.local, "TLS protocol violation", before)
    finally:
        conn.close()
    watcher.check()


def connected_over_tls(broker, pki, client_id: str, **connect) -> tuple[TlsConn, m.Mqtt]:
    """A hand-driven TLS connection on mqtts with MQTT CONNECT/CONNACK done."""
    conn = TlsConn(broker.host, broker.mqtts_port, client_context(pki.ca.cert_file))
    conn.handshake()
    mqtt = m.Mqtt(conn)
    assert mqtt.handshake(client_id, **connect).body[1] == 0
    return conn, mqtt


@pytest.mark.parametrize("garbage,reason", [
    (rawtls.record(rawtls.APPLICATION_DATA, os.urandom(64)), "a TLS record failed to decrypt"),
    (bytes(range(0xF0, 0x100)) * 4, "TLS protocol violation"),
], ids=["bogus-record", "not-a-record"])
def test_garbage_after_the_handshake(start, clients, pki, topic, garbage, reason):
    broker = start(tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    before = failures(broker)
    conn, mqtt = connected_over_tls(broker, pki, "garbage")
    try:
        mqtt.send(m.subscribe(1, (topic + "/watch", 0)))
        mqtt.expect(m.SUBACK)
        conn.send_raw(garbage)  # past the TLS layer, straight onto the socket
        conn.wait_closed()
        expect_failure_logged(broker, conn.local, reason, before)
    finally:
        conn.close()
    watcher.check()


def test_close_notify_mid_stream_ends_the_connection_and_publishes_the_will(start, clients,
                                                                            pki, topic):
    broker = start(tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    will_topic = topic + "/will"
    watcher.sub.subscribe(will_topic, 1)
    conn, mqtt = connected_over_tls(broker, pki, "leaver", will=(will_topic, b"gone", 1, False))
    try:
        conn.unwrap()  # close_notify, with no DISCONNECT: the will is due
        conn.wait_closed()
    finally:
        conn.close()
    msg = watcher.sub.wait_for_message()
    assert (msg.topic, msg.payload) == (will_topic, b"gone")
    # close_notify is a clean end, not a failure to log.
    assert f"{conn.local}: closing: TLS" not in broker.log(tail=None)
    watcher.check()


@pytest.mark.parametrize("port", ["mqtts", "wss"])
def test_fatal_alert_mid_stream(start, clients, pki, topic, tmp_path, port):
    """An encrypted fatal alert after the handshake: on mqtts once the session works, on wss
    before the upgrade request."""
    broker = start(tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    before = failures(broker)
    conn = TlsConn(broker.host, broker.port(port),
                   client_context(pki.ca.cert_file, keylog=tmp_path / "keys.log"))
    try:
        conn.handshake()
        if port == "mqtts":
            mqtt = m.Mqtt(conn)
            assert mqtt.handshake("alerting").body[1] == 0
            mqtt.send(m.subscribe(1, (topic + "/watch", 0)))
            mqtt.expect(m.SUBACK)
        conn.send_raw(conn.sealed_alert(rawtls.FATAL, rawtls.INTERNAL_ERROR))
        conn.wait_closed()
        expect_failure_logged(broker, conn.local, "the peer sent the TLS alert InternalError",
                              before)
    finally:
        conn.close()
    watcher.check()


def test_fatal_alert_mid_handshake(start, clients, pki, topic):
    broker = start(tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    before = failures(broker)
    conn = TlsConn(broker.host, broker.mqtts_port, client_context(pki.ca.cert_file))
    try:
        conn.send_raw(conn.client_hello())
        # The ServerHello arrives; the client gives up instead of answering.
        assert conn.recv_raw()[:1] == bytes([rawtls.HANDSHAKE])
        conn.send_raw(rawtls.alert_record(rawtls.FATAL, rawtls.HANDSHAKE_FAILURE))
        conn.wait_closed()
        expect_failure_logged(broker, conn.local, "the peer sent the TLS alert HandshakeFailure",
                              before)
    finally:
        conn.close()
    watcher.check()


@pytest.mark.parametrize("port", ["mqtts", "wss"])
def test_client_that_distrusts_the_server_certificate(start, clients, pki, topic, port):
    """A real client whose CA is another sends its own fatal alert (unknown CA)."""
    broker = start(tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    before = failures(broker)
    conn = TlsConn(broker.host, broker.port(port), client_context(pki.other_ca.cert_file))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.handshake()
        conn.wait_closed()
        expect_failure_logged(broker, conn.local, "the peer sent the TLS alert", before)
    finally:
        conn.close()
    watcher.check()


@pytest.mark.parametrize("port,sent,reason", [
    ("mqtts", "nothing", "no CONNECT in time"),
    ("mqtts", "half", "no CONNECT in time"),
    ("wss", "nothing", "no complete WebSocket upgrade request in time"),
    ("wss", "half", "no complete WebSocket upgrade request in time"),
])
def test_stalled_handshake_is_closed_by_the_opening_deadline(start, clients, pki, topic, port,
                                                             sent, reason):
    broker = start(config=SHORT_DEADLINES, tls=tls_table(pki))
    watcher = Watcher(broker, clients, pki, topic)
    conn = TlsConn(broker.host, broker.port(port), client_context(pki.ca.cert_file))
    try:
        if sent == "half":
            hello = conn.client_hello()
            conn.send_raw(hello[: len(hello) // 2])
        conn.wait_closed(timeout=5.0)
        line = broker.wait_for_log(f"{conn.local}: closing: ")
        assert reason in line, line
    finally:
        conn.close()
    watcher.check()


# ------------------------------------------------------------------ SIGHUP


def install(issued, cert_file, key_file) -> None:
    cert_file.write_bytes(issued.cert_file.read_bytes())
    key_file.write_bytes(issued.key_file.read_bytes())


def pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


def served_certificate(broker, port: int) -> bytes:
    """The DER certificate a new connection is given (not verified)."""
    conn = TlsConn(broker.host, port, client_context(verify=False))
    try:
        conn.handshake()
        return conn.tls.getpeercert(binary_form=True)
    finally:
        conn.close()


def test_sighup_reloads_the_certificate_files(start, clients, pki, topic, tmp_path):
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    install(pki.server, cert_file, key_file)  # A, from the test CA
    broker = start(tls={"cert_file": cert_file, "key_file": key_file})
    sub = clients(broker, "mqtts", tls_context=client_context(pki.ca.cert_file))
    sub.subscribe(topic, 1)
    plain = clients(broker, "tcp")
    for port in (broker.mqtts_port, broker.wss_port):
        assert served_certificate(broker, port) == pki.server.der

    install(pki.other_server, cert_file, key_file)  # B: another key, another CA
    broker.reload()
    broker.wait_for_log("SIGHUP received: TLS certificates reloaded")
    for port in (broker.mqtts_port, broker.wss_port):
        assert served_certificate(broker, port) == pki.other_server.der
    # A client of the new CA connects; the subscriber from before still receives.
    pub = clients(broker, "wss", tls_context=client_context(pki.other_ca.cert_file))
    pub.publish(topic, b"after B", qos=1)
    assert sub.wait_for_message().payload == b"after B"
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsConn(broker.host, broker.mqtts_port, client_context(pki.ca.cert_file)).handshake()

    # A broken file: named in the log, and B stays.
    cert_file.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                         "-----END CERTIFICATE-----\n")
    broker.reload()
    line = broker.wait_for_log("TLS certificates not reloaded")
    assert str(cert_file) in line, line
    assert " ERROR " in line, line
    assert served_certificate(broker, broker.mqtts_port) == pki.other_server.der
    # Well-formed PEM around bytes that are no certificate; a key that does not match its
    # certificate; no key file at all: each refusal names its file, and B stays.
    refusals = 1
    for cert_pem, key_pem, named in [
        (pem("CERTIFICATE", os.urandom(300)), pki.other_server.key_file.read_bytes(), cert_file),
        (pki.other_server.cert_file.read_bytes(), pki.server.key_file.read_bytes(), key_file),
        (pki.other_server.cert_file.read_bytes(), None, key_file),
    ]:
        cert_file.write_bytes(cert_pem)
        if key_pem is None:
            key_file.unlink()
        else:
            key_file.write_bytes(key_pem)
        broker.reload()
        refusals += 1
        line = wait_for_log_count(broker, "TLS certificates not reloaded", refusals)[-1]
        assert str(named) in line, line
        for port in (broker.mqtts_port, broker.wss_port):
            assert served_certificate(broker, port) == pki.other_server.der
    plain.publish(topic, b"still B", qos=1)
    assert sub.wait_for_message().payload == b"still B"
    assert broker.alive()
