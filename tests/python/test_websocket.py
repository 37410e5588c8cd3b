"""MQTT over WebSocket: the HTTP upgrade (RFC 6455 §4) and framing (§5)."""

import struct

import pytest

import rawmqtt as m
from client import unique_id
from rawmqtt import WsConn, http_request, upgrade_request


def upgrade(broker, path=None, subprotocols="mqtt", extra=""):
    path = broker.ws_path if path is None else path
    sock, resp, _ = http_request(
        broker.host, broker.ws_port, upgrade_request(broker.host, broker.ws_port, path, subprotocols, extra)
    )
    sock.close()
    return resp


def ws(broker, raw_conns, subprotocols="mqtt"):
    c = WsConn(broker.host, broker.ws_port, broker.ws_path, subprotocols)
    raw_conns.append(c)
    return c


@pytest.fixture
def wsconns():
    opened = []
    yield opened
    for c in opened:
        c.close()


def read_close(conn, timeout=5.0):
    """The server's close frame (or None if it just dropped the connection)."""
    while True:
        frame = conn.read_frame(timeout)
        if frame is None or frame.opcode == m.OP_CLOSE:
            return frame


# ------------------------------------------------------------------ handshake


@pytest.mark.parametrize("offered,chosen", [("mqtt", "mqtt"), ("mqttv3.1", "mqttv3.1"), ("foo, mqtt", "mqtt")])
def test_subprotocol_echoed(broker, offered, chosen):
    resp = upgrade(broker, subprotocols=offered)
    assert resp.status == 101
    assert resp.header("sec-websocket-protocol") == chosen
    assert resp.header("upgrade").lower() == "websocket"


@pytest.mark.fanfare_only  # Mosquitto's listener answers on any path
def test_wrong_path_404(broker):
    assert upgrade(broker, path="/not-mqtt").status == 404


@pytest.mark.fanfare_only  # Mosquitto accepts the upgrade and drops the unknown protocol
def test_unsupported_subprotocol_400(broker):
    assert upgrade(broker, subprotocols="foo").status == 400


@pytest.mark.fanfare_only
def test_plain_get_without_upgrade_refused(broker):
    req = f"GET {broker.ws_path} HTTP/1.1\r\nHost: {broker.host}\r\n\r\n".encode()
    sock, resp, _ = http_request(broker.host, broker.ws_port, req)
    sock.close()
    assert resp.status in (400, 426)


@pytest.mark.fanfare_only
def test_no_subprotocol_accepted(start, clients):
    broker = start(config={"ws_allow_no_subprotocol": True})
    resp = upgrade(broker, subprotocols=None)
    assert resp.status == 101
    assert resp.header("sec-websocket-protocol") is None
    conn = WsConn(broker.host, broker.ws_port, broker.ws_path, None)
    try:
        c = m.Mqtt(conn)
        assert c.handshake(unique_id("noproto")).body == b"\x00\x00"
    finally:
        conn.close()


@pytest.mark.fanfare_only  # Mosquitto has no origin allow-list
def test_origin_allow_list(start):
    broker = start(config={"ws_allowed_origins": ["https://scores.example"]})
    assert upgrade(broker, extra="Origin: https://scores.example\r\n").status == 101
    refused = upgrade(broker, extra="Origin: https://evil.example\r\n")
    assert refused.status == 403
    assert upgrade(broker, extra="Origin: https://scores.example.evil.example\r\n").status == 403
    # Without Origin the client is not a browser, which is what the list keeps out.
    assert upgrade(broker).status == 101
    # An allowed page speaks MQTT as usual.
    conn = WsConn(broker.host, broker.ws_port, broker.ws_path, extra="Origin: https://scores.example\r\n")
    try:
        assert m.Mqtt(conn).handshake(unique_id("origin")).body == b"\x00\x00"
    finally:
        conn.close()


def test_any_origin_by_default(broker):
    assert upgrade(broker, extra="Origin: https://evil.example\r\n").status == 101


def test_accept_key(broker):
    import base64
    import hashlib

    key = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3 example
    req = (
        f"GET {broker.ws_path} HTTP/1.1\r\nHost: {broker.host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    ).encode()
    sock, resp, _ = http_request(broker.host, broker.ws_port, req)
    sock.close()
    assert resp.status == 101
    expected = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()
    assert resp.header("sec-websocket-accept") == expected == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# ------------------------------------------------------------------ framing


def test_several_packets_in_one_frame(broker, wsconns):
    conn = ws(broker, wsconns)
    c = m.Mqtt(conn)
    conn.send_frame(m.OP_BINARY, m.connect(unique_id("multi")) + m.subscribe(1, ("t/multi", 1))
                    + m.pingreq())
    assert c.expect(m.CONNACK).body == b"\x00\x00"
    assert c.expect(m.SUBACK).body == b"\x00\x01\x01"
    c.expect(m.PINGRESP)


def test_packet_split_across_frames(broker, wsconns):
    conn = ws(broker, wsconns)
    c = m.Mqtt(conn)
    data = m.connect(unique_id("split")) + m.subscribe(1, ("t/split", 0))
    for i in range(0, len(data), 3):
        conn.send_frame(m.OP_BINARY, data[i : i + 3])
    c.expect(m.CONNACK)
    c.expect(m.SUBACK)


def test_packet_in_fragmented_message(broker, wsconns):
    conn = ws(broker, wsconns)
    c = m.Mqtt(conn)
    data = m.connect(unique_id("frag"))
    conn.send_frame(m.OP_BINARY, data[:4], fin=False)
    conn.send_frame(m.OP_CONT, data[4:9], fin=False)
    conn.send_frame(m.OP_PING, b"between fragments")  # control frames may interleave (§5.4)
    conn.send_frame(m.OP_CONT, data[9:], fin=True)
    assert c.expect(m.CONNACK).body == b"\x00\x00"
    assert conn.pongs == [b"between fragments"]


def test_ping_pong(broker, wsconns):
    conn = ws(broker, wsconns)
    conn.send_frame(m.OP_PING, b"are you there")
    frame = conn.read_frame()
    assert (frame.opcode, frame.payload) == (m.OP_PONG, b"are you there")


def test_close_handshake(broker, wsconns):
    conn = ws(broker, wsconns)
    c = m.Mqtt(conn)
    c.handshake(unique_id("bye"))
    conn.send_frame(m.OP_CLOSE, struct.pack("!H", 1000) + b"done")
    frame = read_close(conn)
    assert frame is not None, "server answers a close with a close (§5.5.1)"
    assert frame.close_code in (None, 1000)
    assert conn.read_frame() is None, "then the TCP connection ends"


def test_large_publish_over_ws(broker, clients, wsconns):
    sub = clients(broker, "tcp")
    sub.subscribe("t/ws-large", 1)
    conn = ws(broker, wsconns)
    c = m.Mqtt(conn)
    c.handshake(unique_id("large"))
    payload = bytes(range(256)) * 256  # 64 KiB: a 64-bit length frame header
    conn.send_frame(m.OP_BINARY, m.publish("t/ws-large", payload, qos=1, packet_id=1))
    c.expect(m.PUBACK)
    assert sub.wait_for_message().payload == payload


# ------------------------------------------------------------------ bad frames


@pytest.fixture
def healthy_ws(clients):
    def _make(broker):
        sub = clients(broker, "tcp")
        sub.subscribe("t/ws-healthy", 1)
        pub = clients(broker, "ws")

        def check():
            pub.publish("t/ws-healthy", b"ok", 1)
            assert sub.wait_for_message().payload == b"ok"

        check()
        return check

    return _make


def test_garbage_after_handshake(broker, wsconns, healthy_ws):
    check = healthy_ws(broker)
    conn = ws(broker, wsconns)
    # RSV bits and a reserved opcode: not a frame any extension was negotiated for.
    conn.send_raw(b"\xff\xff" + b"\x00" * 30)
    frame = read_close(conn)
    assert frame is None or frame.close_code in (None, 1002)
    check()


def test_garbage_mqtt_in_binary_frame(broker, wsconns, healthy_ws):
    check = healthy_ws(broker)
    conn = ws(broker, wsconns)
    conn.send_frame(m.OP_BINARY, b"\xf0\x00garbage")
    m.Mqtt(conn).wait_closed()
    check()


@pytest.mark.fanfare_only
def test_text_frame_closes_1003(broker, wsconns, healthy_ws):
    check = healthy_ws(broker)
    conn = ws(broker, wsconns)
    m.Mqtt(conn).handshake(unique_id("text"))
    # MQTT over WebSocket is binary only [MQTT-6.0.0-1].
    conn.send_frame(m.OP_TEXT, b"hello")
    frame = read_close(conn)
    assert frame is not None and frame.close_code == 1003
    check()


@pytest.mark.fanfare_only
def test_unmasked_frame_closes_1002(broker, wsconns, healthy_ws):
    check = healthy_ws(broker)
    conn = ws(broker, wsconns)
    # RFC 6455 §5.1: the server closes on an unmasked client frame.
    conn.send_frame(m.OP_BINARY, m.connect(unique_id("unmasked")), mask=False)
    frame = read_close(conn)
    assert frame is not None and frame.close_code == 1002
    check()


@pytest.mark.fanfare_only
def test_oversize_frame_closes_1009(start, wsconns, healthy_ws):
    broker = start(config={"limits": {"packet_bytes_max": 2048, "ws_frame_bytes_max": 4096}})
    check = healthy_ws(broker)
    conn = ws(broker, wsconns)
    m.Mqtt(conn).handshake(unique_id("bigframe"))
    conn.send_frame(m.OP_BINARY, m.publish("t/bigframe", b"x" * 10000))
    frame = read_close(conn)
    assert frame is not None and frame.close_code == 1009
    check()


@pytest.mark.fanfare_only
def test_missing_file_is_logged_as_an_http_404(start):
    broker = start(args=["--log-level", "debug"])
    sock, resp, _ = http_request(broker.host, broker.ws_port,
                                 b"GET /no-such-file.html HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.close()
    assert resp.status == 404
    line = broker.wait_for_log("HTTP request answered 404")
    assert "upgrade refused" not in line
    assert "upgrade refused" not in broker.log()
