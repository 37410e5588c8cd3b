"""SIGHUP: the configuration file is read again; live keys apply, a bad file is refused."""

import http.client
from pathlib import Path

import pytest

from broker import HOST, Broker, write_toml

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
                                     "limits": {"inflight_max": 5}})
    broker.reload()
    line = broker.wait_for_log("cannot change while the broker runs")
    assert "recv_buffer_bytes" in line and "limits.inflight_max" in line
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
