"""Bridges (`[[bridge]]`, docs/bridges.md) against a real Mosquitto on a loopback port: "in",
"out" and "both" with prefixes remapped, each message once, and a reconnection after the
remote restarts.

The bridge subscribes on the remote in the background after it connects; each test first
waits for `fanfare_bridge_connected`, then sends probes until one crosses, so the path is
known to be open before it checks what it is about.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from paho.mqtt.packettypes import PacketTypes

from broker import HOST, Broker, free_port
from client5 import Client5, props
from probe import open_path
from scrape import totals, wait_for_metric

MOSQUITTO = Path("/usr/sbin/mosquitto")
START_TIMEOUT_S = 10.0

pytestmark = [
    pytest.mark.fanfare_only,
    pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed"),
]


class Mosquitto:
    """Mosquitto on one loopback port, which it keeps across `stop` and `start`."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} {HOST}\nallow_anonymous true\n"
                             "persistence false\n")
        self.broker: Broker | None = None
        self.start()

    def start(self) -> None:
        log_path = self.workdir / "mosquitto.log"
        log = open(log_path, "ab")
        proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.broker = Broker(proc, "mosquitto", log_path)
        self.broker.tcp_port = self.port
        deadline = time.monotonic() + START_TIMEOUT_S
        import socket
        while True:
            assert proc.poll() is None, f"mosquitto exited: {self.broker.log()}"
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen in time"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.kill()


@pytest.fixture
def mosquitto(tmp_path_factory):
    remote = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield remote
    remote.stop()


@pytest.fixture
def bridged(start, mosquitto):
    """fanfare with one bridge named "up" to `mosquitto`: `bridged(topics, protocol="5")`;
    other keyword arguments are more keys of the bridge's table."""
    def _bridged(topics: list[dict], protocol: str = "3.1.1", **bridge):
        broker = start(shards=2, config={"bridge": [{
            "name": "up",
            "url": f"mqtt://{HOST}:{mosquitto.port}",
            "protocol": protocol,
            "keep_alive_s": 5,
            "reconnect_initial_ms": 50,
            "reconnect_max_ms": 200,
            "topics": topics,
            **bridge,
        }]})
        wait_for_metric(broker, "fanfare_bridge_connected", lambda v: v == 1)
        return broker
    return _bridged


def test_in_remaps_the_remote_prefix_to_the_local_one(bridged, mosquitto, clients, topic):
    broker = bridged([{"filter": f"{topic}/#", "direction": "in", "qos": 1,
                       "local_prefix": "edge/", "remote_prefix": "origin/"}])
    sub = clients(broker, "tcp")
    sub.subscribe(f"edge/{topic}/#", 1)
    pub = clients(mosquitto.broker, "tcp")
    open_path(sub, lambda p: pub.publish(f"origin/{topic}/probe", p, 1), "the bridge")

    for i in range(5):
        pub.publish(f"origin/{topic}/score", b"goal %d" % i, 1)
    got = [sub.wait_for_message() for _ in range(5)]
    assert [(m.topic, m.payload) for m in got] == [
        (f"edge/{topic}/score", b"goal %d" % i) for i in range(5)]
    assert all(m.qos == 1 for m in got)
    pub.publish(f"elsewhere/{topic}/score", b"not mapped", 1)
    sub.expect_no_message()


def test_a_full_in_queue_slows_the_remote_and_loses_nothing(bridged, mosquitto, clients,
                                                            topic):
    # Room for one of these messages: the burst outruns the shard that takes them, and
    # the bridge must stop reading the remote rather than drop what the remote was told it has.
    broker = bridged([{"filter": f"{topic}/#", "direction": "in", "qos": 1}],
                     in_queue_bytes_max=1200)
    sub = clients(broker, "tcp")
    sub.subscribe(f"{topic}/#", 1)
    pub = clients(mosquitto.broker, "tcp")
    open_path(sub, lambda p: pub.publish(f"{topic}/probe", p, 1), "the bridge")

    count, payload = 1000, b"x" * 1000
    for i in range(count):
        pub.publish(f"{topic}/burst", b"%04d" % i + payload, 1)
    got = [sub.wait_for_message() for _ in range(count)]
    assert [m.payload[:4] for m in got] == [b"%04d" % i for i in range(count)]
    assert totals(broker)["fanfare_bridge_dropped_in_total"] == 0


def test_out_remaps_the_local_prefix_to_the_remote_one(bridged, mosquitto, clients, topic):
    broker = bridged([{"filter": f"{topic}/#", "direction": "out", "qos": 1,
                       "local_prefix": "edge/", "remote_prefix": "origin/"}])
    sub = clients(mosquitto.broker, "tcp")
    sub.subscribe(f"origin/{topic}/#", 1)
    pub = clients(broker, "ws")
    open_path(sub, lambda p: pub.publish(f"edge/{topic}/probe", p, 1), "the bridge")

    for i in range(5):
        pub.publish(f"edge/{topic}/score", b"goal %d" % i, 1)
    got = [sub.wait_for_message() for _ in range(5)]
    assert [(m.topic, m.payload) for m in got] == [
        (f"origin/{topic}/score", b"goal %d" % i) for i in range(5)]
    pub.publish(f"{topic}/score", b"outside the local prefix", 1)
    sub.expect_no_message()
    assert totals(broker)["fanfare_bridge_forwarded_out_total"] >= 6


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_both_delivers_each_message_once(bridged, mosquitto, clients, topic, protocol):
    broker = bridged([{"filter": f"{topic}/#", "direction": "both", "qos": 1}],
                     protocol=protocol)
    local = clients(broker, "tcp")
    local.subscribe(f"{topic}/#", 1)
    remote = clients(mosquitto.broker, "tcp")
    remote.subscribe(f"{topic}/#", 1)
    local_pub = clients(broker, "tcp")
    remote_pub = clients(mosquitto.broker, "tcp")
    open_path(remote, lambda p: local_pub.publish(f"{topic}/probe", p, 1), "the bridge")
    open_path(local, lambda p: remote_pub.publish(f"{topic}/probe", p, 1), "the bridge")
    # The probes above reached the other side's subscriber too: drain them.
    for sub in (local, remote):
        while True:
            try:
                sub.wait_for_message(timeout=0.3)
            except AssertionError:
                break

    local_pub.publish(f"{topic}/from-local", b"L", 1)
    remote_pub.publish(f"{topic}/from-remote", b"R", 1)
    for sub in (local, remote):
        got = sorted((m.topic, m.payload) for m in
                     (sub.wait_for_message(), sub.wait_for_message()))
        assert got == [(f"{topic}/from-local", b"L"), (f"{topic}/from-remote", b"R")]
        sub.expect_no_message(timeout=1.0)
    # try_private (on by default): Mosquitto took the bridge's mark, and for 3.1.1 it is
    # what keeps the bridge's own publishes from coming back.
    assert "refused the bridge's CONNECT" not in broker.log(tail=None)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_qos2_in_and_out_arrives_exactly_once(bridged, mosquitto, clients, topic, protocol):
    # Mosquitto hands a QoS 2 publish on at PUBREL: what it delivers went through the whole
    # exchange (PUBLISH, PUBREC, PUBREL, PUBCOMP) with the bridge.
    broker = bridged([{"filter": f"{topic}/in/#", "direction": "in", "qos": 2,
                       "remote_prefix": "origin/"},
                      {"filter": f"{topic}/out/#", "direction": "out", "qos": 2,
                       "remote_prefix": "site/"}], protocol=protocol)
    local_sub = clients(broker, "tcp")
    local_sub.subscribe(f"{topic}/in/#", 2)
    remote_pub = clients(mosquitto.broker, "tcp")
    open_path(local_sub, lambda p: remote_pub.publish(f"origin/{topic}/in/probe", p, 2),
              "the bridge in")
    remote_sub = clients(mosquitto.broker, "tcp")
    remote_sub.subscribe(f"site/{topic}/out/#", 2)
    local_pub = clients(broker, "tcp")
    open_path(remote_sub, lambda p: local_pub.publish(f"{topic}/out/probe", p, 2),
              "the bridge out")

    count = 50
    for i in range(count):
        remote_pub.publish(f"origin/{topic}/in/n", b"in %d" % i, 2)
        local_pub.publish(f"{topic}/out/n", b"out %d" % i, 2)
    got_in = [local_sub.wait_for_message() for _ in range(count)]
    got_out = [remote_sub.wait_for_message() for _ in range(count)]
    assert [m.payload for m in got_in] == [b"in %d" % i for i in range(count)]
    assert [m.payload for m in got_out] == [b"out %d" % i for i in range(count)]
    assert all(m.qos == 2 for m in got_in + got_out)
    for sub in (local_sub, remote_sub):
        sub.expect_no_message(timeout=1.0)
    wait_for_metric(broker, "fanfare_bridge_queued_messages", lambda v: v == 0)
    assert totals(broker)["fanfare_bridge_forwarded_out_total"] >= count


def check_properties(msg, expiry_max_s: int) -> None:
    p = msg.properties
    assert p.UserProperty == [("origin", "sensor"), ("origin", "again")]
    assert p.ContentType == "application/json"
    assert p.PayloadFormatIndicator == 1
    assert p.ResponseTopic == "replies/7"
    assert p.CorrelationData == b"\x00\x07"
    # What remains of the interval: counted down across the bridge, never up.
    assert 0 < p.MessageExpiryInterval <= expiry_max_s


def test_mqtt5_properties_cross_both_ways(bridged, mosquitto, topic):
    broker = bridged([{"filter": f"{topic}/in/#", "direction": "in", "qos": 1},
                      {"filter": f"{topic}/out/#", "direction": "out", "qos": 1}],
                     protocol="5")
    made = [Client5(broker, "tcp"), Client5(broker, "tcp"),
            Client5(mosquitto.broker, "tcp"), Client5(mosquitto.broker, "tcp")]
    try:
        for c in made:
            c.connect()
        local_sub, local_pub, remote_sub, remote_pub = made
        local_sub.subscribe(f"{topic}/in/#", 1)
        remote_sub.subscribe(f"{topic}/out/#", 1)
        open_path(local_sub, lambda p: remote_pub.publish(f"{topic}/in/probe", p, 1),
                  "the bridge in")
        open_path(remote_sub, lambda p: local_pub.publish(f"{topic}/out/probe", p, 1),
                  "the bridge out")
        expiry_s = 3600
        given = props(PacketTypes.PUBLISH, UserProperty=[("origin", "sensor"),
                                                         ("origin", "again")],
                      ContentType="application/json", PayloadFormatIndicator=1,
                      ResponseTopic="replies/7", CorrelationData=b"\x00\x07",
                      MessageExpiryInterval=expiry_s)
        remote_pub.publish5(f"{topic}/in/x", b'{"in": 1}', qos=1, properties=given)
        local_pub.publish5(f"{topic}/out/x", b'{"out": 1}', qos=1, properties=given)
        got_in = local_sub.wait_for_message()
        assert got_in.payload == b'{"in": 1}'
        check_properties(got_in, expiry_s)
        got_out = remote_sub.wait_for_message()
        assert got_out.payload == b'{"out": 1}'
        check_properties(got_out, expiry_s)
    finally:
        for c in made:
            c.close()


def test_reconnects_after_the_remote_restarts(bridged, mosquitto, clients, topic):
    broker = bridged([{"filter": f"{topic}/#", "direction": "in", "qos": 1}])
    mosquitto.stop()
    wait_for_metric(broker, "fanfare_bridge_connected", lambda v: v == 0)
    broker.wait_for_log("bridge up: disconnected")
    mosquitto.start()
    wait_for_metric(broker, "fanfare_bridge_connected", lambda v: v == 1)
    assert totals(broker)["fanfare_bridge_reconnects_total"] >= 1

    sub = clients(broker, "tcp")
    sub.subscribe(f"{topic}/#", 1)
    state = clients(broker, "tcp")
    state.subscribe("$SYS/broker/connection/up/state", 0)
    assert state.wait_for_message().payload == b"1"
    pub = clients(mosquitto.broker, "tcp")
    open_path(sub, lambda p: pub.publish(f"{topic}/probe", p, 1), "the bridge")
    pub.publish(f"{topic}/after", b"back", 1)
    assert sub.wait_for_message().payload == b"back"
