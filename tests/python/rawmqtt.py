"""Hand-built MQTT 3.1/3.1.1 packets and byte-level connections (TCP and WebSocket).

Well-behaved clients cannot send duplicate QoS 2 publishes, unmasked frames or a
CONNECT with protocol level 9, so these tests speak the wire format themselves.
Every read takes a deadline; nothing here blocks forever.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

# Control packet types, MQTT 3.1.1 §2.2.1.
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

# WebSocket opcodes, RFC 6455 §5.2.
OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def assert_loopback(host: str) -> None:
    """Tests only ever talk to this machine."""
    assert ipaddress.ip_address(host).is_loopback, f"refusing non-loopback target {host}"


def connect_socket(host: str, port: int, timeout: float, source: str | None = None
                   ) -> socket.socket:
    """A TCP connection to `host`; from the loopback address `source` when given (the
    broker then sees a peer other than 127.0.0.1)."""
    assert_loopback(host)
    if source is not None:
        assert_loopback(source)
    return socket.create_connection((host, port), timeout=timeout,
                                    source_address=None if source is None else (source, 0))


# ---------------------------------------------------------------- encoding


def varint(n: int) -> bytes:
    """Remaining length, MQTT 3.1.1 §2.2.3."""
    assert 0 <= n <= 268_435_455
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect(
    client_id: str = "",
    *,
    clean: bool = True,
    keepalive: int = 60,
    level: int = 4,
    will: tuple[str, bytes, int, bool] | None = None,
    protocol_name: str | None = None,
) -> bytes:
    """CONNECT; level 3 uses the 3.1 name MQIsdp, level 4 uses MQTT."""
    name = protocol_name or ("MQIsdp" if level == 3 else "MQTT")
    flags = 0x02 if clean else 0
    payload = utf8(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += utf8(topic) + utf8(message)
    body = utf8(name) + bytes([level, flags]) + struct.pack("!H", keepalive) + payload
    return packet(CONNECT, 0, body)


def publish(
    topic: str | bytes,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int | None = None,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic)
    if qos:
        assert packet_id, "QoS > 0 needs a packet id"
        body += struct.pack("!H", packet_id)
    return packet(PUBLISH, flags, body + payload)


def ack(ptype: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010 per §3.6.1) or PUBCOMP."""
    flags = 0x02 if ptype == PUBREL else 0
    return packet(ptype, flags, struct.pack("!H", packet_id))


def subscribe(packet_id: int, *filters: tuple[str, int]) -> bytes:
    body = struct.pack("!H", packet_id)
    for topic_filter, qos in filters:
        body += utf8(topic_filter) + bytes([qos])
    return packet(SUBSCRIBE, 0x02, body)


def disconnect() -> bytes:
    return packet(DISCONNECT, 0, b"")


def pingreq() -> bytes:
    return packet(PINGREQ, 0, b"")


# ---------------------------------------------------------------- decoding


@dataclass
class Packet:
    ptype: int
    flags: int
    body: bytes

    @property
    def packet_id(self) -> int:
        if self.ptype == PUBLISH:
            (n,) = struct.unpack_from("!H", self.body, 0)
            return struct.unpack_from("!H", self.body, 2 + n)[0]
        return struct.unpack_from("!H", self.body, 0)[0]

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def topic(self) -> str:
        (n,) = struct.unpack_from("!H", self.body, 0)
        return self.body[2 : 2 + n].decode()

    @property
    def payload(self) -> bytes:
        (n,) = struct.unpack_from("!H", self.body, 0)
        return self.body[2 + n + (2 if self.qos else 0) :]


def split_packet(buf: bytes | bytearray) -> tuple[Packet, int] | None:
    """One packet from the front of buf, or None when more bytes are needed."""
    if len(buf) < 2:
        return None
    length = 0
    shift = 0
    pos = 1
    while True:
        if pos >= len(buf):
            return None
        byte = buf[pos]
        length |= (byte & 0x7F) << shift
        shift += 7
        pos += 1
        if not byte & 0x80:
            break
        assert shift < 28, "malformed remaining length from server"
    if len(buf) < pos + length:
        return None
    first = buf[0]
    return Packet(first >> 4, first & 0x0F, bytes(buf[pos : pos + length])), pos + length


# ---------------------------------------------------------------- connections


class Closed(Exception):
    """The peer closed the connection."""


class TcpConn:
    """A plain TCP byte stream to the broker."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, source: str | None = None):
        self.sock = connect_socket(host, port, timeout, source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_some(self, timeout: float) -> bytes:
        """Bytes that arrived within timeout; b'' on EOF; raises TimeoutError."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        except socket.timeout as e:
            raise TimeoutError from e

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Drop the connection with a RST, like a crashed client."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    rsv: int = 0

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack_from("!H", self.payload, 0)[0]


def ws_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """A client frame, RFC 6455 §5.2; clients must mask (§5.3) unless a test says otherwise."""
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + masked


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    raw: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def http_request(
    host: str, port: int, request: bytes, timeout: float = 5.0, source: str | None = None
) -> tuple[socket.socket, HttpResponse, bytes]:
    """Send a raw HTTP request; return the socket, the parsed head and bytes past it."""
    sock = connect_socket(host, port, timeout, source)
    sock.sendall(request)
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no HTTP response head, got {buf!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1.1 "), f"not an HTTP response: {buf!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return sock, HttpResponse(status, headers, buf), rest


def upgrade_request(
    host: str, port: int, path: str, subprotocols: str | None = "mqtt", extra: str = ""
) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocols}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


class WsConn:
    """MQTT over a hand-made WebSocket: binary frames out, data frames in.

    `recv_some` returns data-frame payloads as a byte stream (MQTT over WebSocket
    is a stream: one frame may hold several packets or part of one). Control
    frames are recorded; a close frame from the server reads as EOF.
    """

    def __init__(self, host: str, port: int, path: str, subprotocols: str | None = "mqtt",
                 timeout: float = 5.0, extra: str = "", source: str | None = None,
                 preamble: bytes = b""):
        """`preamble` goes before the request (a PROXY header); `source` as for TcpConn."""
        self.sock, self.response, self.pending = http_request(
            host, port, preamble + upgrade_request(host, port, path, subprotocols, extra),
            timeout, source
        )
        assert self.response.status == 101, f"upgrade refused: {self.response.raw!r}"
        self.close_frame: Frame | None = None
        self.pongs: list[bytes] = []
        self.eof = False

    # -- raw frames
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, **kw) -> None:
        self.sock.sendall(ws_frame(opcode, payload, **kw))

    def send(self, data: bytes) -> None:
        self.send_frame(OP_BINARY, data)

    def _fill(self, need: int, deadline: float) -> bool:
        while len(self.pending) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            except socket.timeout as e:
                raise TimeoutError from e
            if not chunk:
                self.eof = True
                return False
            self.pending += chunk
        return True

    def read_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame from the server, None on EOF, TimeoutError past the deadline."""
        deadline = time.monotonic() + timeout
        if not self._fill(2, deadline):
            return None
        b0, b1 = self.pending[0], self.pending[1]
        assert not b1 & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        n = b1 & 0x7F
        head = 2
        if n == 126:
            if not self._fill(4, deadline):
                return None
            n = struct.unpack_from("!H", self.pending, 2)[0]
            head = 4
        elif n == 127:
            if not self._fill(10, deadline):
                return None
            n = struct.unpack_from("!Q", self.pending, 2)[0]
            head = 10
        if not self._fill(head + n, deadline):
            return None
        payload = bytes(self.pending[head : head + n])
        self.pending = self.pending[head + n :]
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload, (b0 >> 4) & 0x07)

    def recv_some(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            if self.close_frame is not None or self.eof:
                return b""
            frame = self.read_frame(max(deadline - time.monotonic(), 0.001))
            if frame is None:
                return b""
            if frame.opcode == OP_CLOSE:
                self.close_frame = frame
                return b""
            if frame.opcode == OP_PONG:
                self.pongs.append(frame.payload)
                continue
            if frame.opcode == OP_PING:
                continue
            return frame.payload

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


class Mqtt:
    """Packet reader/writer over a TcpConn or WsConn."""

    def __init__(self, conn: TcpConn | WsConn):
        self.conn = conn
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.conn.send(data)

    def read(self, timeout: float = 5.0) -> Packet:
        """The next packet; raises Closed on EOF and TimeoutError past the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            got = split_packet(self.buf)
            if got is not None:
                pkt, used = got
                del self.buf[:used]
                return pkt
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet from the broker in time")
            chunk = self.conn.recv_some(remaining)
            if not chunk:
                raise Closed()
            self.buf += chunk

    def expect(self, ptype: int, timeout: float = 5.0) -> Packet:
        pkt = self.read(timeout)
        assert pkt.ptype == ptype, f"expected packet type {ptype}, got {pkt}"
        return pkt

    def wait_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Read until the broker closes the connection; return what came before."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"broker did not close the connection; got {seen}")
            try:
                seen.append(self.read(remaining))
            except Closed:
                return seen
            except TimeoutError:
                raise AssertionError(f"broker did not close the connection; got {seen}")

    def is_open_after(self, seconds: float) -> bool:
        """True when nothing closed the connection during `seconds`."""
        try:
            self.read(seconds)
        except TimeoutError:
            return True
        except Closed:
            return False
        return True

    def handshake(self, client_id: str, **kw) -> Packet:
        """CONNECT and the CONNACK it earns."""
        self.send(connect(client_id, **kw))
        return self.expect(CONNACK)

    def close(self) -> None:
        self.conn.close()

    def abort(self) -> None:
        self.conn.abort()
