"""SIGHUP: the configuration file is read again; live keys apply, a bad file is refused."""

import http.client
import struct
import subprocess
from pathlib import Path

import pytest

import rawmqtt as m
from broker import HOST, Broker, fanfare_bin, write_toml
from client import Client, unique_id
from client5 import Client5

pytestmark = pytest.mark.fanfare_only


def config_file(broker: Broker) -> Path:
    args = broker.proc.args
    return Path(args[args.index("--config") + 1])


def refused_http_path(broker: Broker) -> None:
    """A request whose path the broker refuses, which it logs at debug level."""
    conn = http.client.HTTPConnection(HOST, broker.ws_port, timeout=5)
    conn.request("GET", "/%zz")
    assert conn.getresponse().status == 400
    conn.close()


def test_sighup_applies_a_new_log_level(start):
    broker = start(config={"log_level": "info"})
    refused_http_path(broker)
    write_toml(config_file(broker), {"log_level": "debug"})
    broker.reload()
    broker.wait_for_log("reloaded, applied: log_level")
    refused_http_path(broker)
    broker.wait_for_log("refused HTTP path")
    # Only the request after the reload was logged.
    assert broker.log(tail=None).count("refused HTTP path") == 1


def test_sighup_names_keys_that_cannot_change_live(start):
    broker = start(config={"log_level": "info"})
    write_toml(config_file(broker), {"log_level": "info", "recv_buffer_bytes": 8192,
                                     "limits": {"connections_per_shard_max": 5,
                                                "topic_aliases_max": 3}})
    broker.reload()
    line = broker.wait_for_log("cannot change while the broker runs")
    assert "recv_buffer_bytes" in line, line
    assert "limits.connections_per_shard_max" in line and "limits.topic_aliases_max" in line
    broker.wait_for_log("reloaded, no live setting changed")


def test_sighup_refuses_a_bad_file_and_keeps_serving(start, clients):
    broker = start(config={"log_level": "info"})
    config_file(broker).write_text('log_level = "loud"\n')
    broker.reload()
    line = broker.wait_for_log("keeping the running configuration")
    assert "log_level" in line
    config_file(broker).write_text('[limits]\ninflight_max = "many"\n')
    broker.reload()
    broker.wait_for_log("line 2")
    c = clients(broker)
    c.subscribe("t/reload", 0)
    c.publish("t/reload", "still here")
    assert c.wait_for_message().payload == b"still here"
    refused_http_path(broker)
    assert "refused HTTP path" not in broker.log(tail=None)


PACKET_TOO_LARGE = 0x95


def connect5(client_id: str) -> bytes:
    body = m.utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00" + m.utf8(client_id)
    return m.packet(m.CONNECT, 0, body)


def publish5(topic: str, payload: bytes) -> bytes:
    body = m.utf8(topic) + struct.pack("!H", 1) + b"\x00" + payload
    return m.packet(m.PUBLISH, 0x02, body)


def test_sighup_applies_live_limits_to_new_connections(start, raw):
    broker = start(config={"limits": {"keep_alive_max_s": 60, "packet_bytes_max": 8192}})
    before = raw(broker, "tcp")
    before.send(connect5(unique_id("before")))
    assert before.expect(m.CONNACK).body[1] == 0

    write_toml(config_file(broker), {"limits": {"keep_alive_max_s": 5, "packet_bytes_max": 4096}})
    broker.reload()
    line = broker.wait_for_log("reloaded, applied:")
    assert "limits.keep_alive_max_s" in line and "limits.packet_bytes_max" in line, line

    # A new MQTT 5 client asking for more is told the new cap.
    c = Client5(broker, keepalive=600)
    try:
        c.connect()
        assert c.connack_properties.ServerKeepAlive == 5
        assert c.connack_properties.MaximumPacketSize == 4096
    finally:
        c.close()
    # A new connection past the new packet bound hears DISCONNECT 0x95 ...
    after = raw(broker, "tcp")
    after.send(connect5(unique_id("after")))
    assert after.expect(m.CONNACK).body[1] == 0
    after.send(publish5("t/reload", b"x" * 5000))
    seen = after.wait_closed()
    assert seen and seen[0].ptype == m.DISCONNECT and seen[0].body[0] == PACKET_TOO_LARGE, seen
    # ... while one connected before is held to the bound its CONNACK announced.
    before.send(publish5("t/reload", b"x" * 5000))
    before.expect(m.PUBACK)


def passwd(file: Path, user: str, password: str, create: bool = False) -> None:
    subprocess.run([str(fanfare_bin()), "passwd", *(["-c"] if create else []), "-b", str(file),
                    user, password], check=True, capture_output=True, timeout=30)


def connack(broker: Broker, username: str, password: str) -> int:
    c = Client(broker)
    c.paho.username_pw_set(username, password)
    try:
        c.paho.connect(broker.host, broker.tcp_port, 30)
        c._start_loop()
        return c.connacks.get(timeout=5)[1]
    finally:
        c.close()


def test_sighup_takes_a_new_password_file_path(start, tmp_path):
    old, new = tmp_path / "old-passwords", tmp_path / "new-passwords"
    passwd(old, "alice", "old-pass", create=True)
    passwd(new, "bob", "new-pass", create=True)
    broker = start(config={"auth": {"password_file": old}})
    assert connack(broker, "alice", "old-pass") == 0

    write_toml(config_file(broker), {"auth": {"password_file": new}})
    broker.reload()
    line = broker.wait_for_log("reloaded, applied:")
    assert "auth.password_file" in line, line
    assert connack(broker, "bob", "new-pass") == 0
    assert connack(broker, "alice", "old-pass") != 0

    # A path that does not load: nothing changes, the limits in the same file included.
    write_toml(config_file(broker), {"auth": {"password_file": tmp_path / "missing"},
                                     "limits": {"keep_alive_max_s": 7}})
    broker.reload()
    line = broker.wait_for_log("auth files not reloaded")
    assert "missing" in line, line
    assert connack(broker, "bob", "new-pass") == 0
    assert connack(broker, "alice", "old-pass") != 0
    c = Client5(broker, keepalive=0)
    c.paho.username_pw_set("bob", "new-pass")
    try:
        c.connect()
        assert c.connack_properties.ServerKeepAlive == 60
    finally:
        c.close()


def test_a_bad_file_leaves_the_live_limits_as_they_were(start):
    broker = start(config={"limits": {"keep_alive_max_s": 9}})
    config_file(broker).write_text("[limits]\nkeep_alive_max_s = 3\npacket_bytes_max = 1\n")
    broker.reload()
    line = broker.wait_for_log("keeping the running configuration")
    assert "packet_bytes_max" in line, line
    c = Client5(broker, keepalive=0)
    try:
        c.connect()
        assert c.connack_properties.ServerKeepAlive == 9
    finally:
        c.close()
