"""Log output: with `log_format = "json"` every line of stderr is one JSON object."""

import json
import socket
import subprocess

import pytest

import rawmqtt as m
from broker import HOST, fanfare_bin
from client import unique_id

pytestmark = pytest.mark.fanfare_only  # fanfare's own log format

FIELDS = {"time", "level", "target", "message"}
RUN_TIMEOUT_S = 10


def records(text: str) -> list[dict]:
    """Every line of `text` parsed as a log record; fails on the first that is not one."""
    lines = text.splitlines()
    assert lines, "nothing was logged"
    parsed = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise AssertionError(f"not a JSON line: {line!r}") from e
        assert isinstance(record, dict) and set(record) == FIELDS, line
        assert all(isinstance(record[field], str) for field in FIELDS), line
        parsed.append(record)
    return parsed


def test_every_stderr_line_is_a_json_object(start, clients, raw):
    broker = start(config={"log_format": "json", "log_level": "debug"})
    # Traffic that debug logging reports: a client id with a quote and a backslash, a
    # subscription, a publish, and a connection that sends garbage.
    c = clients(broker, "tcp", unique_id('lo"g\\'))
    c.subscribe("t/log/#", 0)
    c.publish("t/log/a", b"x", 0)
    r = raw(broker, "tcp")
    r.send(b"\xff\x00 not mqtt")
    r.wait_closed()
    broker.wait_for_log("ready with")
    assert broker.terminate() == 0
    logged = records(broker.log(tail=None))
    assert any(r["message"].startswith("fanfare ") and "ready" in r["message"] for r in logged)
    assert any(r["message"] == "stopped" for r in logged)
    assert any(r["level"] == "INFO" for r in logged)
    assert all(r["target"].startswith("fanfare") for r in logged)


def test_log_format_flag(start):
    broker = start(args=["--log-format", "json"])
    broker.wait_for_log("ready with")
    assert broker.terminate() == 0
    assert records(broker.log(tail=None))


def test_a_fatal_error_is_a_json_record_too():
    # The TCP port is taken (without SO_REUSEPORT): start-up fails after the logger is set up.
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(fanfare_bin()), "--log-format", "json", "--tcp", f"{HOST}:{port}", "--ws", "off",
             "--admin", "off"],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    logged = records(done.stderr)
    assert any(r["level"] == "ERROR" and str(port) in r["message"] for r in logged), logged


def test_an_unknown_log_format_is_refused():
    done = subprocess.run([str(fanfare_bin()), "--log-format", "xml"], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "--log-format" in done.stderr
