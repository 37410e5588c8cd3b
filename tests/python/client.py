"""A paho-mqtt client with queues and deadlines, as a test would use one.

The network loop runs in paho's thread; every wait here has a timeout, and the
client never reconnects by itself (a takeover test must see the disconnect).
"""

from __future__ import annotations

import itertools
import queue
import ssl
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from broker import Broker

MQTTv31 = paho.MQTTv31
MQTTv311 = paho.MQTTv311
VERSIONS = {"3.1": MQTTv31, "3.1.1": MQTTv311}
TIMEOUT_S = 5.0

_ids = itertools.count()


def unique_id(prefix: str = "c") -> str:
    """Client ids unique within a test run, short enough for MQTT 3.1's 23-char cap."""
    return f"{prefix[:12]}-{next(_ids)}"


class Client:
    def __init__(self, broker: Broker, transport: str = "tcp", client_id: str | None = None,
                 *, clean_session: bool = True, protocol: int = MQTTv311, keepalive: int = 30,
                 will: tuple[str, bytes, int, bool] | None = None,
                 tls_context: ssl.SSLContext | None = None):
        """`transport`: "tcp", "ws", or over TLS "mqtts" and "wss", which need `tls_context`."""
        self.broker = broker
        self.transport = transport
        self.client_id = unique_id() if client_id is None else client_id
        self.keepalive = keepalive
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[tuple[bool, int]] = queue.Queue()
        self.disconnected = threading.Event()
        self._suback_cv = threading.Condition()
        self._subacks: dict[int, list[int]] = {}
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean_session,
            protocol=protocol,
            transport="websockets" if transport in ("ws", "wss") else "tcp",
            reconnect_on_failure=False,
        )
        if transport in ("ws", "wss"):
            self.paho.ws_set_options(path=broker.ws_path)
        assert (tls_context is not None) == (transport in ("mqtts", "wss")), \
            "mqtts and wss, and only they, take a tls_context"
        if tls_context is not None:
            self.paho.tls_set_context(tls_context)
        if will is not None:
            topic, payload, qos, retain = will
            self.paho.will_set(topic, payload, qos, retain)
        # Queue deliveries generously: multi-publisher tests keep hundreds in flight.
        self.paho.max_inflight_messages_set(100)
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_unsubscribe = self._on_unsubscribe

    # -- callbacks (paho's thread)
    def _on_connect(self, _c, _u, flags, reason_code, _p):
        self.connacks.put((bool(flags.session_present), reason_code.value))

    def _on_disconnect(self, _c, _u, _flags, _rc, _p):
        self.disconnected.set()

    def _on_message(self, _c, _u, msg):
        self.messages.put(msg)

    def _on_subscribe(self, _c, _u, mid, reason_codes, _p):
        with self._suback_cv:
            self._subacks[mid] = [rc.value for rc in reason_codes]
            self._suback_cv.notify_all()

    def _on_unsubscribe(self, _c, _u, mid, _reason_codes, _p):
        with self._suback_cv:
            self._subacks[mid] = []
            self._suback_cv.notify_all()

    # -- actions
    def connect(self, timeout: float = TIMEOUT_S) -> bool:
        """Connect and wait for an accepting CONNACK; returns session present."""
        self.disconnected.clear()
        self.paho.connect(self.broker.host, self.broker.port(self.transport), self.keepalive)
        self._start_loop()
        try:
            session_present, code = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s") from None
        assert code == 0, f"{self.client_id}: connection refused, code {code}"
        return session_present

    def subscribe(self, topic_filter: str, qos: int = 0, timeout: float = TIMEOUT_S) -> int:
        """Subscribe and wait for the SUBACK; returns the granted QoS."""
        rc, mid = self.paho.subscribe(topic_filter, qos)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe failed to send: {rc}"
        (granted,) = self._wait_ack(mid, timeout)
        return granted

    def unsubscribe(self, topic_filter: str, timeout: float = TIMEOUT_S) -> None:
        """Unsubscribe and wait for the UNSUBACK."""
        rc, mid = self.paho.unsubscribe(topic_filter)
        assert rc == paho.MQTT_ERR_SUCCESS, f"unsubscribe failed to send: {rc}"
        self._wait_ack(mid, timeout)

    def _wait_ack(self, mid: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        with self._suback_cv:
            while mid not in self._subacks:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{self.client_id}: no acknowledgement within {timeout}s"
                self._suback_cv.wait(remaining)
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                timeout: float = TIMEOUT_S) -> None:
        """Publish and, for QoS > 0, wait until the broker acknowledged it."""
        info = self.paho.publish(topic, payload, qos, retain)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish failed to send: {info.rc}"
        if qos:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"no acknowledgement for {topic} within {timeout}s"

    def wait_for_message(self, timeout: float = TIMEOUT_S) -> paho.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def expect_no_message(self, timeout: float = 0.5) -> None:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message on {msg.topic}: {msg.payload!r}")

    def wait_for_disconnect(self, timeout: float = TIMEOUT_S) -> None:
        assert self.disconnected.wait(timeout), f"{self.client_id}: still connected after {timeout}s"

    def disconnect(self) -> None:
        """A clean DISCONNECT, then stop the network thread."""
        self.paho.disconnect()
        self.disconnected.wait(TIMEOUT_S)
        self.close()

    def _start_loop(self) -> None:
        """Our own network thread: paho's loop_start sleeps up to 1 s on stop."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # Tell paho a network thread owns the socket, as loop_start() would: otherwise
        # publish() writes from the caller's thread and races with ours.
        self.paho._thread = self._thread
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.paho.loop(timeout=0.02) != paho.MQTT_ERR_SUCCESS:
                self._stop.wait(0.02)

    def close(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            self._stop.set()
            thread.join(TIMEOUT_S)
            self._thread = None
            self.paho._thread = None
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def drop(self) -> None:
        """Vanish without DISCONNECT, as a crashed client would."""
        sock = self.paho.socket()
        self.close()
        if sock is not None:
            import socket as _socket
            import struct as _struct
            try:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _struct.pack("ii", 1, 0))
            except (OSError, AttributeError):
                pass
            sock.close()
