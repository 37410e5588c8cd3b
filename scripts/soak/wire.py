"""MQTT 3.1, 3.1.1 and 5 packets, and an asyncio byte link to the broker over TCP or WebSocket.

The soak judges the broker as an outside client would, so it has its own small codec rather
than the broker's. Only what the soak sends and reads is here. Every read takes a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import random
import socket
import struct
from dataclasses import dataclass

# Control packet types, MQTT 3.1.1 §2.2.1 / MQTT 5 §2.1.2.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

# WebSocket opcodes, RFC 6455 §5.2.
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Linux: let connect() pick the source port, so one source address serves ~28 k connections to
# each broker port instead of ~28 k in all (bind() alone would reserve the port for any peer).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# Asyncio's reader stops taking bytes from the kernel past twice this: a client that stops
# reading really stalls, with little held in this process.
READ_LIMIT_BYTES = 16 * 1024

_MASK_KEYS = random.Random(os.urandom(8))


def assert_loopback(host: str) -> None:
    """The soak only ever talks to this machine."""
    assert ipaddress.ip_address(host).is_loopback, f"refusing non-loopback target {host}"


# ---------------------------------------------------------------- encoding


def varint(n: int) -> bytes:
    """Variable byte integer, MQTT 3.1.1 §2.2.3 / MQTT 5 §1.5.5."""
    assert 0 <= n <= 268_435_455
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def properties(props: list[tuple[int, bytes]]) -> bytes:
    """MQTT 5 property block: each (identifier, encoded value)."""
    body = b"".join(bytes([ident]) + value for ident, value in props)
    return varint(len(body)) + body


def connect(client_id: str, *, version: int, clean: bool = True, keepalive: int = 30,
            session_expiry_s: int | None = None) -> bytes:
    """CONNECT; version 3 is MQTT 3.1 (`MQIsdp`), 4 is 3.1.1, 5 is MQTT 5."""
    name = "MQIsdp" if version == 3 else "MQTT"
    head = utf8(name) + bytes([version, 0x02 if clean else 0]) + struct.pack("!H", keepalive)
    if version == 5:
        props = []
        if session_expiry_s:
            props.append((0x11, struct.pack("!I", session_expiry_s)))
        head += properties(props)
    return packet(CONNECT, 0, head + utf8(client_id))


def subscribe(packet_id: int, filters: list[tuple[str, int]], *, version: int) -> bytes:
    body = struct.pack("!H", packet_id) + (b"\x00" if version == 5 else b"")
    for topic_filter, qos in filters:
        body += utf8(topic_filter) + bytes([qos])
    return packet(SUBSCRIBE, 0x02, body)


def publish(topic: str, payload: bytes, *, version: int, qos: int = 0, packet_id: int = 0,
            retain: bool = False, alias: int | None = None, dup: bool = False) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic)
    if qos:
        assert packet_id, "QoS > 0 needs a packet id"
        body += struct.pack("!H", packet_id)
    if version == 5:
        body += properties([(0x23, struct.pack("!H", alias))] if alias else [])
    return packet(PUBLISH, flags, body + payload)


def ack(ptype: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP; the two-byte form is valid in every version."""
    return packet(ptype, 0x02 if ptype == PUBREL else 0, struct.pack("!H", packet_id))


def disconnect() -> bytes:
    """Normal disconnection; an empty body is reason 0x00 in MQTT 5 (§3.14.2.1)."""
    return packet(DISCONNECT, 0, b"")


PINGREQ_BYTES = packet(PINGREQ, 0, b"")


# ---------------------------------------------------------------- decoding


class Malformed(Exception):
    """The broker sent bytes that are not MQTT."""


def read_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None when the buffer ends inside it."""
    value = 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise Malformed("variable byte integer longer than 4 bytes")


# MQTT 5 §2.2.2.2: the encoding of each property identifier, to skip the ones we do not use.
_PROP_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_PROP_U16 = {0x13, 0x21, 0x22, 0x23}
_PROP_U32 = {0x02, 0x11, 0x18, 0x27}
_PROP_VARINT = {0x0B}
_PROP_LEN_PREFIXED = {0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F}


def read_properties(body: bytes, pos: int) -> tuple[dict[int, int | bytes], int]:
    """Numeric and string properties by identifier (user properties skipped), and the end."""
    got = read_varint(body, pos)
    if got is None:
        raise Malformed("truncated property length")
    length, pos = got
    end = pos + length
    props: dict[int, int | bytes] = {}
    while pos < end:
        ident = body[pos]
        pos += 1
        if ident in _PROP_BYTE:
            props[ident], pos = body[pos], pos + 1
        elif ident in _PROP_U16:
            props[ident], pos = struct.unpack_from("!H", body, pos)[0], pos + 2
        elif ident in _PROP_U32:
            props[ident], pos = struct.unpack_from("!I", body, pos)[0], pos + 4
        elif ident in _PROP_VARINT:
            got = read_varint(body, pos)
            if got is None:
                raise Malformed("truncated property")
            props[ident], pos = got
        elif ident in _PROP_LEN_PREFIXED:
            (n,) = struct.unpack_from("!H", body, pos)
            props[ident], pos = body[pos + 2:pos + 2 + n], pos + 2 + n
        elif ident == 0x26:  # user property: a string pair
            for _ in range(2):
                (n,) = struct.unpack_from("!H", body, pos)
                pos += 2 + n
        else:
            raise Malformed(f"unknown property 0x{ident:02x}")
    if pos != end:
        raise Malformed("property block overran its length")
    return props, end


@dataclass
class Packet:
    ptype: int
    flags: int
    body: bytes

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def packet_id(self) -> int:
        """Of an acknowledgement, SUBACK or UNSUBACK (PUBLISH: see `publish_fields`)."""
        return struct.unpack_from("!H", self.body, 0)[0]

    def reason(self, version: int) -> int:
        """Reason code of a PUBACK/PUBREC/PUBREL/PUBCOMP or DISCONNECT (0 when absent)."""
        at = 0 if self.ptype == DISCONNECT else 2
        return self.body[at] if version == 5 and len(self.body) > at else 0

    def connack(self, version: int) -> tuple[bool, int, dict]:
        """(session present, return or reason code, MQTT 5 properties)."""
        props = read_properties(self.body, 2)[0] if version == 5 and len(self.body) > 2 else {}
        return bool(self.body[0] & 0x01), self.body[1], props

    def suback_codes(self, version: int) -> list[int]:
        pos = 2
        if version == 5:
            pos = read_properties(self.body, pos)[1]
        return list(self.body[pos:])

    def publish_fields(self, version: int) -> tuple[str, int, bytes]:
        """(topic, packet id or 0, payload)."""
        (n,) = struct.unpack_from("!H", self.body, 0)
        topic = self.body[2:2 + n].decode("utf-8", "replace")
        pos = 2 + n
        packet_id = 0
        if self.qos:
            (packet_id,) = struct.unpack_from("!H", self.body, pos)
            pos += 2
        if version == 5:
            pos = read_properties(self.body, pos)[1]
        return topic, packet_id, self.body[pos:]


def split_packet(buf: bytearray) -> Packet | None:
    """Takes one whole packet off the front of buf, or None (nothing taken) for more bytes."""
    got = read_varint(buf, 1) if len(buf) >= 2 else None
    if got is None:
        return None
    length, start = got
    if len(buf) < start + length:
        return None
    first = buf[0]
    pkt = Packet(first >> 4, first & 0x0F, bytes(buf[start:start + length]))
    del buf[:start + length]
    return pkt


# ---------------------------------------------------------------- WebSocket


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR with the repeated key (RFC 6455 §5.3) as one big-integer operation, which is
    many times faster in Python than a byte loop."""
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
             rsv: int = 0, length: int | None = None) -> bytes:
    """A client frame; `mask=False`, `rsv` and a lying `length` make broken ones."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    # The key needs to be unpredictable to a browser's scripts (§10.3), not to this test; a
    # getrandom system call per frame would cost more than the frame.
    key = _MASK_KEYS.randbytes(4)
    return bytes(head) + key + mask_bytes(payload, key)


def upgrade_request(host: str, port: int, path: str, subprotocol: str | None = "mqtt",
                    extra_headers: str = "") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n" + extra_headers + "\r\n").encode()


# ---------------------------------------------------------------- links


@dataclass(frozen=True)
class Target:
    host: str
    tcp_port: int
    ws_port: int
    ws_path: str


class Closed(Exception):
    """The broker closed the connection (EOF, reset, or a WebSocket close frame)."""


class UpgradeRefused(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class Sources:
    """Source addresses handed out round-robin, so no one address runs out of ports."""

    def __init__(self, addresses: list[str]):
        for a in addresses:
            assert_loopback(a)
        self.addresses = addresses
        self.next = 0

    def pick(self) -> str | None:
        if not self.addresses:
            return None
        self.next = (self.next + 1) % len(self.addresses)
        return self.addresses[self.next]


async def open_socket(host: str, port: int, source: str | None, timeout_s: float):
    """A connected non-blocking TCP socket from `source`."""
    assert_loopback(host)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout_s)
    except BaseException:
        sock.close()
        raise
    return sock


class Link:
    """One client connection: raw bytes out, MQTT packets in, over TCP or WebSocket.

    Over WebSocket, `send` wraps bytes in one masked binary frame and the reader turns the
    server's data frames back into a byte stream (a frame may hold several packets or part of
    one, MQTT 5 §6); pings are answered, a close frame reads as `Closed`.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: bool,
                 version: int):
        self.reader = reader
        self.writer = writer
        self.ws = ws
        self.version = version
        self.stream = bytearray()  # MQTT bytes not yet split into packets
        self.frames = bytearray()  # WebSocket bytes not yet split into frames
        self.close_code: int | None = None
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.corked: list[bytes] | None = None

    @classmethod
    async def open_raw(cls, target: Target, *, ws_port: bool, source: str | None,
                       timeout_s: float, version: int = 4) -> "Link":
        """A TCP connection to the MQTT or WebSocket port, nothing sent yet."""
        port = target.ws_port if ws_port else target.tcp_port
        sock = await open_socket(target.host, port, source, timeout_s)
        reader, writer = await asyncio.open_connection(sock=sock, limit=READ_LIMIT_BYTES)
        return cls(reader, writer, False, version)

    @classmethod
    async def open(cls, target: Target, *, ws: bool, source: str | None, timeout_s: float,
                   version: int = 4) -> "Link":
        """A connection ready for CONNECT: over WebSocket, the upgrade is done."""
        link = await cls.open_raw(target, ws_port=ws, source=source, timeout_s=timeout_s,
                                  version=version)
        if ws:
            try:
                status = await link.upgrade(target, timeout_s)
            except BaseException:
                link.abort()
                raise
            if status != 101:
                link.abort()
                raise UpgradeRefused(status)
            link.ws = True
        return link

    async def upgrade(self, target: Target, timeout_s: float, request: bytes | None = None) -> int:
        """Sends an upgrade request and returns the response's status (0 if not HTTP)."""
        self.writer.write(request or upgrade_request(target.host, target.ws_port, target.ws_path))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout_s)
        words = head.split(b" ", 2)
        if len(words) < 2 or not words[0].startswith(b"HTTP/1.1"):
            return 0
        return int(words[1]) if words[1].isdigit() else 0

    # -- sending

    def send(self, data: bytes) -> None:
        """Queues bytes; over WebSocket as one masked binary frame."""
        self.send_raw(ws_frame(OP_BINARY, data) if self.ws else data)

    def send_raw(self, data: bytes) -> None:
        """Bytes exactly as given, whatever the transport (broken frames, garbage)."""
        if self.closed or self.writer.transport.is_closing():
            raise Closed()
        if self.corked is not None:
            self.corked.append(data)
        else:
            self.writer.write(data)

    def cork(self) -> None:
        """Holds what is sent until `uncork`, to write it with one system call."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked, self.corked = self.corked, None
        if corked and not self.closed and not self.writer.transport.is_closing():
            self.writer.write(b"".join(corked))

    async def flush(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), timeout_s)
        except (ConnectionError, OSError) as e:
            raise Closed() from e

    # -- receiving

    async def _more(self, deadline: float) -> None:
        """Reads what arrives before the deadline into the MQTT stream."""
        while True:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError()
            try:
                if remaining > 600:
                    # A read loop's wait, ended by cancelling it: wait_for's task per read
                    # would cost more than the read.
                    chunk = await self.reader.read(65536)
                else:
                    chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except (ConnectionError, OSError) as e:
                self.closed = True
                raise Closed() from e
            if not chunk:
                self.closed = True
                raise Closed()
            if not self.ws:
                self.stream += chunk
                return
            self.frames += chunk
            if self._split_frames():
                return
            if self.closed:
                raise Closed()

    def _split_frames(self) -> bool:
        """Moves whole frames' data into the stream; True when any data arrived. Data before
        a close frame stays readable (a DISCONNECT often shares a read with the close)."""
        got = False
        while len(self.frames) >= 2 and not self.closed:
            b0, b1 = self.frames[0], self.frames[1]
            if b1 & 0x80:
                raise Malformed("server frame is masked (RFC 6455 §5.1)")
            n, head = b1 & 0x7F, 2
            if n == 126:
                if len(self.frames) < 4:
                    break
                n, head = struct.unpack_from("!H", self.frames, 2)[0], 4
            elif n == 127:
                if len(self.frames) < 10:
                    break
                n, head = struct.unpack_from("!Q", self.frames, 2)[0], 10
            if len(self.frames) < head + n:
                break
            payload = bytes(self.frames[head:head + n])
            del self.frames[:head + n]
            opcode = b0 & 0x0F
            if opcode in (OP_BINARY, OP_CONT):
                self.stream += payload
                got = True
            elif opcode == OP_PING:
                self.writer.write(ws_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                if len(payload) >= 2:
                    self.close_code = struct.unpack_from("!H", payload, 0)[0]
                self.closed = True
        return got

    def has_packet(self) -> bool:
        """Whether a whole packet is already buffered (read_packet would not wait)."""
        got = read_varint(self.stream, 1) if len(self.stream) >= 2 else None
        return got is not None and len(self.stream) >= got[1] + got[0]

    async def read_packet(self, timeout_s: float) -> Packet:
        """The next packet; `Closed` at EOF, `asyncio.TimeoutError` past the deadline."""
        pkt = split_packet(self.stream)
        if pkt is not None:
            return pkt
        deadline = self.loop.time() + timeout_s
        while True:
            pkt = split_packet(self.stream)
            if pkt is not None:
                return pkt
            if self.closed:
                raise Closed()
            await self._more(deadline)

    async def wait_closed(self, timeout_s: float) -> tuple[bool, list[Packet]]:
        """Reads until the broker closes; (closed in time, packets seen on the way)."""
        seen: list[Packet] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                seen.append(await self.read_packet(remaining))
        except Closed:
            return True, seen
        except Malformed:
            # Garbage may leave the broker answering with HTTP after a broken upgrade: keep
            # reading raw bytes until EOF.
            return await self._wait_eof(deadline), seen
        except asyncio.TimeoutError:
            return False, seen

    async def _wait_eof(self, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except (ConnectionError, OSError):
                return True
            except asyncio.TimeoutError:
                return False
            if not chunk:
                return True

    async def wait_eof_raw(self, timeout_s: float) -> bool:
        """Discards whatever arrives until EOF; True when the broker closed in time."""
        return await self._wait_eof(asyncio.get_running_loop().time() + timeout_s)

    # -- ending

    def close(self) -> None:
        """An orderly TCP close (FIN) without any DISCONNECT."""
        self.closed = True
        self.writer.transport.close()

    def abort(self) -> None:
        """A reset: SO_LINGER 0 makes close() send RST, like a crashed host's peer sees."""
        self.closed = True
        try:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.writer.transport.abort()
