"""A small MQTT client on a `Link`: handshake, subscribe, pipelined QoS 0/1/2 publishes, and a
read loop that answers the broker's publishes. The behaviours in `behaviours.py` build on it,
and break it on purpose where they need to.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable

import wire as w

OP_TIMEOUT_S = 15.0  # CONNACK, SUBACK, a flush: generous, the machine is shared and busy


class Refused(Exception):
    """CONNACK or SUBACK said no."""


def _retrieve(fut: asyncio.Future) -> None:
    """Marks a future's exception as seen: a publish whose connection broke need not be
    awaited, and asyncio would otherwise log it."""
    if not fut.cancelled():
        fut.exception()


class Client:
    """An MQTT session over one link. `on_message(topic, payload, qos, dup)` sees deliveries."""

    def __init__(self, link: w.Link, version: int,
                 on_message: Callable[[str, bytes, int, bool], None] | None = None):
        self.link = link
        self.version = version
        self.on_message = on_message
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future] = {}  # packet id → PUBACK/PUBCOMP/SUBACK
        self.pubrec_seen: dict[int, asyncio.Event] = {}
        self.hold_pubrel = False  # QoS 2 abandoners stop after PUBREC
        self.disconnect_reason: int | None = None
        self.lost = asyncio.Event()
        self.alias_max = 0
        self.reader_task: asyncio.Task | None = None
        self.ping_task: asyncio.Task | None = None

    def packet_id(self) -> int:
        """The next packet id not in use (MQTT ids are 1..65535)."""
        for _ in range(65535):
            self.next_id = self.next_id % 65535 + 1
            if self.next_id not in self.waiting:
                return self.next_id
        raise RuntimeError("all packet ids in use")

    async def handshake(self, client_id: str, *, clean: bool = True, keepalive: int = 30,
                        session_expiry_s: int | None = None) -> bool:
        """CONNECT and CONNACK; returns session present. Starts the read loop."""
        self.link.send(w.connect(client_id, version=self.version, clean=clean,
                                 keepalive=keepalive, session_expiry_s=session_expiry_s))
        pkt = await self.link.read_packet(OP_TIMEOUT_S)
        if pkt.ptype != w.CONNACK:
            raise w.Malformed(f"expected CONNACK, got type {pkt.ptype}")
        present, code, props = pkt.connack(self.version)
        if code != 0:
            raise Refused(f"CONNACK 0x{code:02x}")
        self.alias_max = int(props.get(0x22, 0))
        self.reader_task = asyncio.create_task(self._read_loop())
        if keepalive:
            self.ping_task = asyncio.create_task(self._ping_loop(keepalive))
        return present

    async def _ping_loop(self, keepalive: int) -> None:
        """PINGREQ at half the keep-alive, so a healthy client is never timed out."""
        try:
            while not self.lost.is_set():
                await asyncio.sleep(keepalive / 2)
                self.link.send(w.PINGREQ_BYTES)
        except w.Closed:
            pass

    async def _read_loop(self) -> None:
        """Answers the broker until the connection ends (`lost`) or the loop is cancelled
        (`stop`, or a stalling client that stops reading)."""
        link = self.link
        try:
            while True:
                pkt = await link.read_packet(3600.0)
                # Acknowledgements of everything already buffered leave in one write.
                link.cork()
                try:
                    self._handle(pkt)
                    while link.has_packet():
                        self._handle(await link.read_packet(0.0))
                finally:
                    link.uncork()
        except (w.Closed, w.Malformed, asyncio.TimeoutError, ConnectionError, OSError):
            self.lost.set()
        finally:
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(w.Closed())
            for ev in self.pubrec_seen.values():
                ev.set()

    def _handle(self, pkt: w.Packet) -> None:
        kind = pkt.ptype
        if kind == w.PUBLISH:
            topic, packet_id, payload = pkt.publish_fields(self.version)
            if self.on_message:
                self.on_message(topic, payload, pkt.qos, pkt.dup)
            if pkt.qos == 1:
                self.link.send(w.ack(w.PUBACK, packet_id))
            elif pkt.qos == 2:
                self.link.send(w.ack(w.PUBREC, packet_id))
        elif kind == w.PUBREL:
            self.link.send(w.ack(w.PUBCOMP, pkt.packet_id))
        elif kind == w.PUBREC:
            packet_id, reason = pkt.packet_id, pkt.reason(self.version)
            if packet_id in self.pubrec_seen:
                self.pubrec_seen[packet_id].set()
            if reason >= 0x80:
                self._resolve(packet_id, reason)
            elif not self.hold_pubrel:
                self.link.send(w.ack(w.PUBREL, packet_id))
        elif kind in (w.PUBACK, w.PUBCOMP):
            self._resolve(pkt.packet_id, pkt.reason(self.version))
        elif kind == w.SUBACK:
            self._resolve(pkt.packet_id, pkt.suback_codes(self.version))
        elif kind == w.DISCONNECT:
            self.disconnect_reason = pkt.reason(self.version)

    def _resolve(self, packet_id: int, value) -> None:
        self.pubrec_seen.pop(packet_id, None)
        fut = self.waiting.pop(packet_id, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    async def subscribe(self, filters: list[tuple[str, int]]) -> list[int]:
        packet_id = self.packet_id()
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        self.waiting[packet_id] = fut
        self.link.send(w.subscribe(packet_id, filters, version=self.version))
        return await asyncio.wait_for(fut, OP_TIMEOUT_S)

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False,
                alias: int | None = None, topic_known: bool = False) -> asyncio.Future | None:
        """Sends a PUBLISH; for QoS 1/2 the future resolves with the PUBACK/PUBCOMP reason.

        With an alias, the first use carries the topic and later ones an empty topic
        (`topic_known`), MQTT 5 §3.3.2.3.4.
        """
        wire_topic = "" if (alias and topic_known) else topic
        if qos == 0:
            self.link.send(w.publish(wire_topic, payload, version=self.version, retain=retain,
                                     alias=alias))
            return None
        packet_id = self.packet_id()
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        self.waiting[packet_id] = fut
        if qos == 2:
            self.pubrec_seen[packet_id] = asyncio.Event()
        self.link.send(w.publish(wire_topic, payload, version=self.version, qos=qos,
                                 packet_id=packet_id, retain=retain, alias=alias))
        fut.packet_id = packet_id  # type: ignore[attr-defined]
        return fut

    def disconnect(self) -> None:
        """DISCONNECT, then an orderly close."""
        try:
            self.link.send(w.disconnect())
        except w.Closed:
            pass
        self.stop()
        self.link.close()

    def stop(self) -> None:
        """Stops the read and ping loops (the socket stays as it is)."""
        for task in (self.reader_task, self.ping_task):
            if task is not None and not task.done():
                task.cancel()

    async def stop_reading(self) -> None:
        """Stops the read loop and waits until it has really stopped. Python 3.11's wait_for
        can lose a cancel that lands as its read completes, and a second reader on the same
        stream is an error, so cancel until the task is done."""
        task = self.reader_task
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)


class LagWatch:
    """How late this process's event loop runs its timers: a loop that is a second late makes
    every time it measures a second too long. The spikes are kept with their times, so a wait
    the loop was late during can be allowed that lateness (`worst_during`)."""

    SPIKE_S = 0.05  # lateness below this is noise
    SPIKES_MAX = 100_000

    def __init__(self):
        self.worst_s = 0.0
        self.late_counts = {"0.1": 0, "0.5": 0, "1.0": 0}
        self.spikes: list[tuple[float, float]] = []  # (loop time it woke, lateness), in order

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.1)
            now = loop.time()
            lag = now - before - 0.1
            self.worst_s = max(self.worst_s, lag)
            for bound in self.late_counts:
                if lag > float(bound):
                    self.late_counts[bound] += 1
            if lag > self.SPIKE_S and len(self.spikes) < self.SPIKES_MAX:
                self.spikes.append((now, lag))

    def worst_during(self, start: float, end: float) -> float:
        """The worst lateness of a stall of the loop that overlapped [start, end]."""
        first = bisect.bisect_left(self.spikes, (start,))
        worst = 0.0
        for woke, lag in self.spikes[first:]:
            if woke - lag > end:
                break
            worst = max(worst, lag)
        return worst

    def result(self) -> dict:
        return {"worst_s": round(self.worst_s, 3), "late_over_s": self.late_counts}
