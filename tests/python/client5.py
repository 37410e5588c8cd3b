"""An MQTT 5 paho-mqtt client for the tests: the 3.x `Client` with clean start, properties
and reason codes.

Every wait has a timeout, as in `client.py`; the network loop is the same thread.
"""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker import Broker
from client import TIMEOUT_S, Client, unique_id

MQTTv5 = paho.MQTTv5


def props(packet_type: int, **values) -> Properties:
    """`props(PacketTypes.CONNECT, SessionExpiryInterval=30)`."""
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


class Client5(Client):
    def __init__(self, broker: Broker, transport: str = "tcp", client_id: str | None = None,
                 *, keepalive: int = 30, will: tuple[str, bytes, int, bool] | None = None,
                 will_properties: Properties | None = None):
        self.broker = broker
        self.transport = transport
        self.client_id = unique_id("v5") if client_id is None else client_id
        self.keepalive = keepalive
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[tuple[bool, int]] = queue.Queue()
        self.connack_properties: Properties | None = None
        self.disconnect_reasons: queue.Queue[int] = queue.Queue()
        self.publish_reasons: dict[int, int] = {}
        self.disconnected = threading.Event()
        self._suback_cv = threading.Condition()
        self._subacks: dict[int, list[int]] = {}
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTv5,
            transport="websockets" if transport == "ws" else "tcp",
            reconnect_on_failure=False,
        )
        if transport == "ws":
            self.paho.ws_set_options(path=broker.ws_path)
        if will is not None:
            topic, payload, qos, retain = will
            self.paho.will_set(topic, payload, qos, retain, will_properties)
        self.paho.max_inflight_messages_set(100)
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_unsubscribe = self._on_unsubscribe
        self.paho.on_publish = self._on_publish

    def _on_connect(self, _c, _u, flags, reason_code, properties):
        self.connack_properties = properties
        self.connacks.put((bool(flags.session_present), reason_code.value))

    def _on_disconnect(self, _c, _u, _flags, reason_code, _p):
        self.disconnect_reasons.put(reason_code.value)
        self.disconnected.set()

    def _on_unsubscribe(self, _c, _u, mid, reason_codes, _p):
        with self._suback_cv:
            self._subacks[mid] = [rc.value for rc in reason_codes]
            self._suback_cv.notify_all()

    def _on_publish(self, _c, _u, mid, reason_code, _p):
        self.publish_reasons[mid] = reason_code.value

    def connect(self, timeout: float = TIMEOUT_S, *, clean_start: bool = True,
                properties: Properties | None = None, expect: int = 0) -> bool:
        """Connect; waits for the CONNACK and checks its reason code (`expect`)."""
        self.disconnected.clear()
        self.paho.connect(self.broker.host, self.broker.port(self.transport), self.keepalive,
                          clean_start=clean_start, properties=properties)
        self._start_loop()
        try:
            session_present, code = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s") from None
        assert code == expect, f"{self.client_id}: CONNACK {code:#x}, expected {expect:#x}"
        return session_present

    def subscribe5(self, topic_filter: str, options: paho.SubscribeOptions,
                   properties: Properties | None = None, timeout: float = TIMEOUT_S) -> int:
        """Subscribe with MQTT 5 options; returns the SUBACK reason code."""
        rc, mid = self.paho.subscribe(topic_filter, options=options, properties=properties)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe failed to send: {rc}"
        (code,) = self._wait_ack(mid, timeout)
        return code

    def unsubscribe5(self, filters: list[str], timeout: float = TIMEOUT_S) -> list[int]:
        """Unsubscribe; returns the UNSUBACK reason codes."""
        rc, mid = self.paho.unsubscribe(filters)
        assert rc == paho.MQTT_ERR_SUCCESS, f"unsubscribe failed to send: {rc}"
        return self._wait_ack(mid, timeout)

    def publish5(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                 properties: Properties | None = None, timeout: float = TIMEOUT_S) -> int:
        """Publish with properties; for QoS > 0 waits for the ack and returns its reason."""
        info = self.paho.publish(topic, payload, qos, retain, properties)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish failed to send: {info.rc}"
        if not qos:
            return 0
        info.wait_for_publish(timeout)
        assert info.is_published(), f"no acknowledgement for {topic} within {timeout}s"
        return self.publish_reasons.get(info.mid, 0)

    def disconnect5(self, reason: int = 0, properties: Properties | None = None) -> None:
        """DISCONNECT with a reason code, then stop the network thread."""
        self.paho.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=reason), properties)
        self.disconnected.wait(TIMEOUT_S)
        self.close()

    def wait_for_disconnect_reason(self, timeout: float = TIMEOUT_S) -> int:
        try:
            return self.disconnect_reasons.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no disconnect within {timeout}s") from None
