"""Start and stop a real broker process on loopback ports.

fanfare is started with port 0 and tells us its ports on stdout
(`listening tcp 127.0.0.1:P`, `listening ws 127.0.0.1:P/path`, then `ready`).
Setting FANFARE_TEST_BROKER=mosquitto runs the same suite against Mosquitto,
as a reference for what an established broker does.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from rawmqtt import assert_loopback

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def broker_kind() -> str:
    kind = os.environ.get("FANFARE_TEST_BROKER", "fanfare")
    assert kind in ("fanfare", "mosquitto"), f"unknown FANFARE_TEST_BROKER={kind}"
    return kind


def fanfare_bin() -> Path:
    path = Path(os.environ.get("FANFARE_BIN", "target/debug/fanfare"))
    return path if path.is_absolute() else REPO_ROOT / path


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(item) for item in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def is_tables(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, dict) for t in v)


def write_toml(path: Path, config: dict) -> None:
    """Top-level keys first (a list of values is an array), then one [section] per nested
    dict, then one [[section]] per dict of a list of dicts."""
    lines = [f"{k} = {toml_value(v)}" for k, v in config.items()
             if not isinstance(v, dict) and not is_tables(v)]
    for section, table in config.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for section, tables in config.items():
        if is_tables(tables):
            for table in tables:
                lines.append(f"\n[[{section}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")


class Broker:
    """A running broker: its ports, its process, and how to stop it."""

    def __init__(self, proc: subprocess.Popen, kind: str, log_path: Path):
        self.proc = proc
        self.kind = kind
        self.log_path = log_path
        self.host = HOST
        self.tcp_port = 0
        self.ws_port = 0
        self.ws_path = "/mqtt"
        self.stdout_lines: queue.Queue[str | None] = queue.Queue()
        self.expected_exit = False

    @property
    def is_fanfare(self) -> bool:
        return self.kind == "fanfare"

    def port(self, transport: str) -> int:
        return self.tcp_port if transport == "tcp" else self.ws_port

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; the exit code, or None if it had to be killed."""
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass


def _pump(stream, sink: queue.Queue) -> None:
    """Keep draining the child's stdout so it never blocks on a full pipe."""
    for line in iter(stream.readline, ""):
        sink.put(line.rstrip("\n"))
    sink.put(None)


def start_fanfare(workdir: Path, *, shards: int | None = None, config: dict | None = None,
                  ws_path: str = "/mqtt") -> Broker:
    binary = fanfare_bin()
    assert binary.exists(), f"{binary} not built; run cargo build first"
    args = [str(binary), "--tcp", f"{HOST}:0", "--ws", f"{HOST}:0", "--ws-path", ws_path]
    if shards is not None:
        args += ["--shards", str(shards)]
    if config:
        cfg = workdir / "fanfare.toml"
        write_toml(cfg, config)
        args += ["--config", str(cfg)]
    log_path = workdir / "broker.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True,
                            stdin=subprocess.DEVNULL)
    log.close()
    broker = Broker(proc, "fanfare", log_path)
    threading.Thread(target=_pump, args=(proc.stdout, broker.stdout_lines), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("broker did not print 'ready' in time")
            try:
                line = broker.stdout_lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"broker exited before 'ready' (code {proc.wait(1)})")
            words = line.split()
            if words == ["ready"]:
                break
            if len(words) == 3 and words[0] == "listening":
                addr, _, path = words[2].partition("/")
                host, _, port = addr.rpartition(":")
                assert_loopback(host)
                if words[1] == "tcp":
                    broker.tcp_port = int(port)
                elif words[1] == "ws":
                    broker.ws_port = int(port)
                    broker.ws_path = "/" + path
        assert broker.tcp_port and broker.ws_port, "broker did not report both listeners"
    except BaseException:
        broker.kill()
        raise
    return broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_mosquitto(workdir: Path, *, shards: int | None = None, config: dict | None = None,
                    ws_path: str = "/mqtt") -> Broker:
    """Mosquitto as a reference; only the limits it has an equivalent for are applied."""
    tcp_port, ws_port = free_port(), free_port()
    lines = [
        "allow_anonymous true",
        "persistence false",
        "max_queued_messages 100000",
        f"listener {tcp_port} {HOST}",
        "protocol mqtt",
        f"listener {ws_port} {HOST}",
        "protocol websockets",
    ]
    limits = (config or {}).get("limits", {})
    if "packet_bytes_max" in limits:
        lines.insert(0, f"max_packet_size {limits['packet_bytes_max']}")
    cfg = workdir / "mosquitto.conf"
    cfg.write_text("\n".join(lines) + "\n")
    log_path = workdir / "broker.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    log.close()
    broker = Broker(proc, "mosquitto", log_path)
    broker.tcp_port, broker.ws_port, broker.ws_path = tcp_port, ws_port, ws_path
    deadline = time.monotonic() + START_TIMEOUT_S
    for port in (tcp_port, ws_port):
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {broker.log()}")
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    broker.kill()
                    raise AssertionError("mosquitto did not start listening")
                time.sleep(0.02)
    return broker


def start_broker(workdir: Path, **kw) -> Broker:
    if broker_kind() == "mosquitto":
        return start_mosquitto(workdir, **kw)
    return start_fanfare(workdir, **kw)
