"""Behind proxies and load balancers: the PROXY protocol (v1 and v2, in front of plain TCP,
WebSocket and TLS), Forwarded / X-Forwarded-For on the WebSocket upgrade, and who may say
who the client is (`trusted_proxies`).

Trusted and untrusted sources are two loopback addresses: the client socket is bound to
127.0.0.2 (listed in `trusted_proxies`) or 127.0.0.3 (not listed) before it connects to the
broker on 127.0.0.1. The broker's close line ("ADDRESS: closing: REASON", logged at info for
every close that is an error) shows which address it holds for the connection: each test
ends a connection with a malformed packet and reads that line.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct

import pytest

import rawmqtt as m
from broker import Broker
from rawmqtt import TcpConn, WsConn, http_request, upgrade_request
from scrape import wait_for_metric

pytestmark = pytest.mark.fanfare_only  # Mosquitto has no PROXY protocol or trusted proxies

TRUSTED = "127.0.0.2"
UNTRUSTED = "127.0.0.3"
PROXIES = {"trusted_proxies": [f"{TRUSTED}/32"]}

# Packet type 0 is reserved: a malformed packet, which closes with an info line.
RESERVED = b"\x00\x00"

def closing_line(broker: Broker, address: str) -> str:
    return broker.wait_for_log(f"{address}: closing: ")


def own_address(sock: socket.socket) -> str:
    """The client end's address, as the broker writes the peer's."""
    return "{}:{}".format(*sock.getsockname()[:2])


def mqtt_from(source: str, port: int, preamble: bytes = b"") -> tuple[m.Mqtt, str]:
    """MQTT from `source`, after `preamble` (a PROXY header); and the client end's address."""
    conn = TcpConn("127.0.0.1", port, source=source)
    conn.send(preamble)
    return m.Mqtt(conn), own_address(conn.sock)


class ProxiedTlsConn(TcpConn):
    """rawmqtt's TCP stream inside TLS, after a PROXY header sent in the clear."""

    def __init__(self, source: str, port: int, preamble: bytes, context: ssl.SSLContext):
        super().__init__("127.0.0.1", port, source=source)
        self.own = own_address(self.sock)
        self.sock.sendall(preamble)
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")


def v1(source: str, sport: int, dport: int = 1883) -> bytes:
    family = "TCP4" if ipaddress.ip_address(source).version == 4 else "TCP6"
    dest = "127.0.0.1" if family == "TCP4" else "::1"
    return f"PROXY {family} {source} {dest} {sport} {dport}\r\n".encode()


V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(source: str, sport: int, tlvs: bytes = b"", command: int = 0x21) -> bytes:
    """A version 2 header (`command` 0x21: PROXY, 0x20: LOCAL) for TCP from `source`."""
    ip = ipaddress.ip_address(source)
    if ip.version == 4:
        family, dest = 0x11, ipaddress.ip_address("127.0.0.1")
    else:
        family, dest = 0x21, ipaddress.ip_address("::1")
    body = ip.packed + dest.packed + struct.pack("!HH", sport, 1883) + tlvs
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def refused(mqtt: m.Mqtt) -> None:
    """The broker closes without a word."""
    assert mqtt.wait_closed() == []


def served_then_ended(mqtt: m.Mqtt, client_id: str) -> None:
    """CONNECT is answered, then a malformed packet ends the connection."""
    assert mqtt.handshake(client_id).body == b"\x00\x00"
    mqtt.send(RESERVED)
    mqtt.wait_closed()


# ------------------------------------------------------------ PROXY protocol, plain TCP


@pytest.fixture
def proxied(start) -> Broker:
    return start(config={**PROXIES, "tcp_proxy_protocol": True})


def test_v1_header_names_the_client(proxied):
    mqtt, _ = mqtt_from(TRUSTED, proxied.tcp_port, v1("203.0.113.7", 4711))
    served_then_ended(mqtt, "proxy-v1")
    assert "malformed MQTT packet" in closing_line(proxied, "203.0.113.7:4711")


def test_v2_header_names_the_client(proxied):
    header = v2("2001:db8::7", 4712, tlv(0x02, b"scores.example") + tlv(0x04, b"\0" * 4))
    mqtt, _ = mqtt_from(TRUSTED, proxied.tcp_port, header)
    served_then_ended(mqtt, "proxy-v2")
    assert "malformed MQTT packet" in closing_line(proxied, "[2001:db8::7]:4712")


def test_v2_ipv4_header_with_the_connect_in_the_same_segment(proxied):
    mqtt, _ = mqtt_from(TRUSTED, proxied.tcp_port, v2("198.51.100.4", 1) + m.connect("same"))
    assert mqtt.expect(m.CONNACK).body == b"\x00\x00"
    mqtt.send(RESERVED)
    mqtt.wait_closed()
    closing_line(proxied, "198.51.100.4:1")


def test_local_header_keeps_the_proxys_address(proxied):
    # A health check of the proxy itself: LOCAL, no client.
    mqtt, own = mqtt_from(TRUSTED, proxied.tcp_port, v2("192.0.2.1", 9, command=0x20))
    served_then_ended(mqtt, "proxy-local")
    closing_line(proxied, own)


def test_header_from_an_untrusted_source_is_refused(proxied):
    for header in (v1("203.0.113.8", 4711), v2("203.0.113.8", 4711)):
        mqtt, own = mqtt_from(UNTRUSTED, proxied.tcp_port, header + m.connect("spoof"))
        refused(mqtt)
        line = closing_line(proxied, own)
        assert "PROXY header from a source that is not in trusted_proxies" in line, line
    assert "203.0.113.8" not in proxied.log()


def test_an_untrusted_source_without_a_header_is_served_as_it_comes(proxied):
    mqtt, own = mqtt_from(UNTRUSTED, proxied.tcp_port)
    served_then_ended(mqtt, "direct")
    closing_line(proxied, own)


def test_a_trusted_proxy_must_send_the_header(proxied):
    mqtt, own = mqtt_from(TRUSTED, proxied.tcp_port, m.connect("no-header"))
    refused(mqtt)
    assert "no PROXY protocol header" in closing_line(proxied, own)


def test_malformed_headers_are_refused(proxied):
    for header, reason in [
        (b"PROXY TCP4 203.0.113.300 127.0.0.1 1 2\r\n", "invalid address in PROXY v1 line"),
        (b"PROXY TCP4 203.0.113.9 127.0.0.1 1 2\n", "malformed PROXY v1 line"),
        (b"PROXY UNKNOWN " + b"x" * 100, "PROXY header too long"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "PROXY header too long"),
        (V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\0" * 12, "PROXY v2 header of another version"),
    ]:
        mqtt, own = mqtt_from(TRUSTED, proxied.tcp_port, header)
        refused(mqtt)
        line = closing_line(proxied, own)
        assert reason in line, line
    wait_for_metric(proxied, "fanfare_proxy_refused_total", lambda n: n == 5)


def test_an_incomplete_header_meets_the_opening_deadline(start):
    broker = start(config={**PROXIES, "proxy_protocol": True,
                           "limits": {"connect_timeout_ms": 200}})
    mqtt, own = mqtt_from(TRUSTED, broker.tcp_port, b"PROXY TCP4 203.0.113.7")
    refused(mqtt)
    assert "no CONNECT in time" in closing_line(broker, own)


def test_a_listener_without_proxy_protocol_reads_no_header(start):
    broker = start(config=PROXIES)
    mqtt, own = mqtt_from(TRUSTED, broker.tcp_port, v1("203.0.113.7", 4711))
    refused(mqtt)
    assert "malformed MQTT packet" in closing_line(broker, own)


# ------------------------------------------------------------ PROXY protocol, TLS


@pytest.fixture
def tls_proxied(start, pki) -> tuple[Broker, ssl.SSLContext]:
    """A broker with the PROXY protocol on its mqtts and wss listeners, and a client context
    that trusts its certificate."""
    broker = start(
        config={**PROXIES, "mqtts_proxy_protocol": True, "wss_proxy_protocol": True},
        tls={"cert_file": pki.server.cert_file, "key_file": pki.server.key_file},
    )
    return broker, ssl.create_default_context(cafile=str(pki.ca.cert_file))


def test_proxy_header_before_tls(tls_proxied):
    broker, context = tls_proxied
    mqtts = broker.mqtts_port
    conn = ProxiedTlsConn(TRUSTED, mqtts, v1("203.0.113.7", 4711, 8883), context)
    served_then_ended(m.Mqtt(conn), "proxy-mqtts")
    assert "malformed MQTT packet" in closing_line(broker, "203.0.113.7:4711")


def test_proxy_v2_header_before_tls_websocket(tls_proxied):
    broker, context = tls_proxied
    wss = broker.wss_port
    tls = ProxiedTlsConn(TRUSTED, wss, v2("2001:db8::9", 4713), context).sock
    tls.sendall(upgrade_request("127.0.0.1", wss, broker.ws_path))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        assert chunk, f"closed during the upgrade: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    # A text frame is refused (1003), with the close line.
    tls.sendall(m.ws_frame(m.OP_TEXT, b"hello"))
    assert "WebSocket error 1003" in closing_line(broker, "[2001:db8::9]:4713")


def test_tls_listener_refuses_a_trusted_proxy_without_a_header(tls_proxied):
    broker, context = tls_proxied
    mqtts = broker.mqtts_port
    conn = TcpConn("127.0.0.1", mqtts, source=TRUSTED)
    own = own_address(conn.sock)
    with pytest.raises((ssl.SSLError, OSError)):
        context.wrap_socket(conn.sock, server_hostname="localhost")
    assert "no PROXY protocol header" in closing_line(broker, own)


def test_tls_listener_refuses_a_header_from_an_untrusted_source(tls_proxied):
    broker, context = tls_proxied
    mqtts = broker.mqtts_port
    conn = TcpConn("127.0.0.1", mqtts, source=UNTRUSTED)
    own = own_address(conn.sock)
    conn.send(v1("203.0.113.7", 4711, 8883))
    with pytest.raises((ssl.SSLError, OSError)):
        context.wrap_socket(conn.sock, server_hostname="localhost")
    assert "not in trusted_proxies" in closing_line(broker, own)


# ------------------------------------------------------------ Forwarded, X-Forwarded-For


def ws_from(source: str, broker: Broker, extra: str, preamble: bytes = b"") -> tuple[m.Mqtt, str]:
    """An upgraded WebSocket from `source`, the request carrying `extra` header lines."""
    conn = WsConn("127.0.0.1", broker.ws_port, broker.ws_path, extra=extra, source=source,
                  preamble=preamble)
    return m.Mqtt(conn), own_address(conn.sock)


@pytest.mark.parametrize("field", [
    "X-Forwarded-For: 198.51.100.9\r\n",
    "X-Forwarded-For: 192.0.2.66, 198.51.100.9\r\n",
    "Forwarded: for=198.51.100.9;proto=https\r\n",
    'Forwarded: for="[2001:db8::5]:4711", for=198.51.100.9\r\n',
])
def test_forwarded_fields_from_a_trusted_proxy(start, field):
    broker = start(config=PROXIES)
    mqtt, _ = ws_from(TRUSTED, broker, field)
    served_then_ended(mqtt, "xff")
    assert "malformed MQTT packet" in closing_line(broker, "198.51.100.9:0")


def test_forwarded_fields_from_anyone_else_are_ignored(start):
    broker = start(config=PROXIES)
    mqtt, own = ws_from(UNTRUSTED, broker, "X-Forwarded-For: 198.51.100.9\r\n"
                                           "Forwarded: for=198.51.100.9\r\n")
    served_then_ended(mqtt, "xff-untrusted")
    closing_line(broker, own)
    assert "198.51.100.9" not in broker.log()


def test_forwarded_fields_behind_a_proxy_protocol_header(start):
    # A TCP load balancer (127.0.0.2) in front of an HTTP proxy (10.1.2.3), both trusted.
    broker = start(config={"trusted_proxies": [f"{TRUSTED}/32", "10.0.0.0/8"],
                           "ws_proxy_protocol": True})
    xff = "X-Forwarded-For: 198.51.100.9\r\n"
    mqtt, _ = ws_from(TRUSTED, broker, xff, v1("10.1.2.3", 5000))
    served_then_ended(mqtt, "lb-then-proxy")
    closing_line(broker, "198.51.100.9:0")
    # The header names a client that is no proxy: its fields are its own invention.
    mqtt, _ = ws_from(TRUSTED, broker, "X-Forwarded-For: 198.51.100.10\r\n",
                      v1("203.0.113.7", 4711))
    served_then_ended(mqtt, "lb-only")
    closing_line(broker, "203.0.113.7:4711")
    assert "198.51.100.10" not in broker.log()


def test_origin_refused_behind_a_proxy(start):
    broker = start(config={**PROXIES, "ws_proxy_protocol": True,
                           "ws_allowed_origins": ["https://scores.example"]})
    request = upgrade_request("127.0.0.1", broker.ws_port, broker.ws_path, "mqtt",
                              "Origin: https://evil.example\r\n")
    _, response, _ = http_request("127.0.0.1", broker.ws_port, v1("203.0.113.7", 4711) + request,
                                  source=TRUSTED)
    assert response.status == 403
    line = closing_line(broker, "203.0.113.7:4711")
    assert "refused with 403" in line, line
