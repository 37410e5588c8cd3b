"""Clients that send what no MQTT or WebSocket client should: random bytes, malformed packets,
broken frames and bad HTTP upgrades. Each then reads until the broker closes the connection and
records how long that took against the limit that bounds it:

- before CONNECT: `connect_timeout_ms` (input that is plainly wrong is closed at once; input
  that could still become a CONNECT waits for the timeout);
- before the upgrade completes: `ws_handshake_timeout_ms`;
- after CONNECT: 1.5 × keep-alive [MQTT-3.1.2-24], for garbage that is an unfinished packet.
"""

from __future__ import annotations

import asyncio
import random
import struct

import wire as w
from behaviours import Bag, Ctx, pick_protocol
from session import OP_TIMEOUT_S

KEEPALIVE_S = 2  # of the clients that CONNECT before their garbage


def malformed_packets(version: int) -> list[bytes]:
    """Packets that break a rule the broker must enforce by closing the connection."""
    return [
        w.packet(0, 0, b""),                                    # reserved type 0
        bytes([0xF0, 0x00]) if version != 5 else b"\xf0\x01\x00",  # reserved type / bad AUTH
        w.packet(w.PUBLISH, 0x06, w.utf8("soak/q/0") + b"\x00\x01x"),  # QoS 3 [MQTT-3.3.1-4]
        w.publish("soak/+/x", b"x", version=version),           # wildcard in a topic name
        w.packet(w.PUBLISH, 0, b"\x00\x02\xff\xfe" + (b"\x00" if version == 5 else b"") + b"x"),
        w.packet(w.SUBSCRIBE, 0x00, b"\x00\x01" + w.utf8("a") + b"\x00"),  # flags must be 2
        w.packet(w.SUBSCRIBE, 0x02, b"\x00\x01" + (b"\x00" if version == 5 else b"")),  # empty
        w.packet(w.PUBREL, 0x00, b"\x00\x01"),                  # flags must be 2
        b"\x30\xff\xff\xff\xff\x01",                            # length over four bytes
        b"\x30" + w.varint(200_000_000),                        # over packet_bytes_max
        w.packet(w.PUBLISH, 0, w.utf8("soak/q/1") + b"\x05\x7f\x00\x00\x00\x00x")
        if version == 5 else w.packet(w.UNSUBSCRIBE, 0x02, b"\x00\x01"),  # bad property / empty
        w.packet(w.PUBLISH, 0, w.utf8("") + (b"\x03\x23\x00\x00" if version == 5 else b"") + b"x"),
        b"\x30\x7f" + b"\x00",                                  # unfinished: needs 126 more
    ]


def bad_upgrades(ctx: Ctx, rng: random.Random) -> dict[str, bytes]:
    """HTTP requests the WebSocket listener must refuse (or wait out, for the unfinished)."""
    t = ctx.target
    good = w.upgrade_request(t.host, t.ws_port, t.ws_path)
    return {
        "wrong_path": w.upgrade_request(t.host, t.ws_port, "/nowhere"),
        "not_an_upgrade": f"GET {t.ws_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        "bad_subprotocol": w.upgrade_request(t.host, t.ws_port, t.ws_path, "chat,superchat"),
        "bad_version": good.replace(b"Version: 13", b"Version: 8"),
        "no_key": b"\r\n".join(line for line in good.split(b"\r\n")
                              if not line.startswith(b"Sec-WebSocket-Key")),
        "oversize_head": good[:-2] + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n",
        "junk_request_line": rng.randbytes(rng.randint(1, 200)) + b"\r\n\r\n",
        "tls_hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
        "unfinished": good[: rng.randint(1, len(good) - 3)],
    }


def bad_frames(rng: random.Random, connect: bytes) -> dict[str, bytes]:
    """Frames a server must refuse from a client, RFC 6455 §5.1-5.5."""
    return {
        "unmasked": w.ws_frame(w.OP_BINARY, connect, mask=False),
        "text": w.ws_frame(w.OP_TEXT, connect),
        "reserved_opcode": w.ws_frame(0x3, connect),
        "rsv_bits": w.ws_frame(w.OP_BINARY, connect, rsv=0b100),
        "huge_length": w.ws_frame(w.OP_BINARY, b"", length=1 << 62)[:14],
        "long_control": w.ws_frame(w.OP_PING, b"p" * 200),
        "fragmented_control": w.ws_frame(w.OP_PING, b"p", fin=False),
        "continuation_first": w.ws_frame(w.OP_CONT, connect),
        "random": rng.randbytes(rng.randint(1, 300)),
        "close": w.ws_frame(w.OP_CLOSE, struct.pack("!H", 1000)),
    }


async def _await_close(ctx: Ctx, link: w.Link, kind: str, limit_s: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    closed = await link.wait_eof_raw(ctx.close_wait_s(limit_s))
    ctx.deadline(f"garbage.{kind}", limit_s, start, loop.time() - start if closed else None)


async def _handshake(link: w.Link, client_id: str, version: int) -> None:
    """CONNECT with a short keep-alive and its CONNACK."""
    link.send(w.connect(client_id, version=version, keepalive=KEEPALIVE_S))
    if (await link.read_packet(OP_TIMEOUT_S)).ptype != w.CONNACK:
        raise w.Malformed("no CONNACK")


async def garbage(ctx: Ctx, rng: random.Random) -> None:
    """One kind of garbage at random, over TCP or WebSocket."""
    ws, version = pick_protocol(rng)
    async with Bag(ctx) as bag:
        if ws and rng.random() < 0.4:
            await _bad_upgrade(ctx, rng, bag)
        elif ws and rng.random() < 0.5:
            await _bad_frame(ctx, rng, bag, version)
        else:
            await _bad_mqtt(ctx, rng, bag, ws, version)


async def _bad_upgrade(ctx: Ctx, rng: random.Random, bag: Bag) -> None:
    name, request = rng.choice(list(bad_upgrades(ctx, rng).items()))
    link = await bag.open_raw(ws_port=True)
    link.send_raw(request)
    await _await_close(ctx, link, f"upgrade.{name}", ctx.ws_handshake_timeout_s)


async def _bad_frame(ctx: Ctx, rng: random.Random, bag: Bag, version: int) -> None:
    """A broken frame right after the upgrade, in place of the CONNECT."""
    link = await bag.open(ws=True, version=version)
    connect = w.connect(ctx.client_id("G"), version=version)
    name, frame = rng.choice(list(bad_frames(rng, connect).items()))
    link.send_raw(frame)
    await _await_close(ctx, link, f"frame.{name}", ctx.connect_timeout_s)
    ctx.stats[f"garbage.frame.{name}.close_code.{link.close_code}"] += 1


async def _bad_mqtt(ctx: Ctx, rng: random.Random, bag: Bag, ws: bool, version: int) -> None:
    """Random bytes or a malformed packet, before CONNECT or after it; one in five trickles a
    CONNECT a byte at a time and never finishes it (a slow-loris)."""
    link = await bag.open(ws=ws, version=version)
    roll = rng.random()
    if roll < 0.2:
        connect = w.connect(ctx.client_id("G"), version=version)
        await _trickle(ctx, rng, link, connect[: rng.randint(1, len(connect) - 1)])
        return
    after_connect = roll < 0.6
    if after_connect:
        await _handshake(link, ctx.client_id("G"), version)
    if rng.random() < 0.4:
        name, data = "random", rng.randbytes(rng.randint(1, 300))
    else:
        options = malformed_packets(version)
        if after_connect:
            options.append(w.connect("again", version=version))  # a second CONNECT
        index = rng.randrange(len(options))
        name, data = f"malformed{index}", options[index]
    link.send(data)
    if after_connect:
        await _await_close(ctx, link, f"after_connect.{name}", 1.5 * KEEPALIVE_S)
    else:
        await _await_close(ctx, link, f"before_connect.{name}", ctx.connect_timeout_s)


async def _trickle(ctx: Ctx, rng: random.Random, link: w.Link, partial: bytes) -> None:
    """Sends `partial` a byte at a time, slower than the CONNECT timeout allows."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    limit_s = ctx.connect_timeout_s

    async def eof_at() -> float | None:
        closed = await link.wait_eof_raw(ctx.close_wait_s(limit_s))
        return loop.time() if closed else None

    closing = asyncio.create_task(eof_at())
    gap_s = max(limit_s / max(len(partial), 1), 0.3)
    for byte in partial:
        if closing.done():
            break
        try:
            link.send(bytes([byte]))
            await link.flush(OP_TIMEOUT_S)
        except w.Closed:
            break
        await asyncio.sleep(gap_s)
    closed_at = await closing
    ctx.deadline("garbage.trickle_connect", limit_s, start,
                 None if closed_at is None else closed_at - start)
