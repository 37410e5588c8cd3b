"""Start and stop a real broker process on loopback ports.

fanfare is started with port 0 and tells us its ports on stdout
(`listening tcp 127.0.0.1:P`, `listening ws 127.0.0.1:P/path`, `listening admin 127.0.0.1:P`
(the operations listener: metrics, health, admin API), then `ready`); with
`tls={...}` (the `[tls]` table) it also opens the mqtts and wss listeners, and reads their
ports from `listening mqtts 127.0.0.1:P` and `listening wss 127.0.0.1:P/path`.
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
    if isinstance(v, Path):
        v = str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(item) for item in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(item)}" for k, item in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


def _is_table_list(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, dict) for t in v)


def _toml_tables(prefix: str, table: dict) -> list[str]:
    """A table's own keys, then one [[prefix.key]] per dict of its lists of dicts."""
    lines = [f"{k} = {toml_value(v)}" for k, v in table.items() if not _is_table_list(v)]
    for key, tables in table.items():
        if _is_table_list(tables):
            for sub in tables:
                lines.append(f"\n[[{prefix}{key}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in sub.items()]
    return lines


def write_toml(path: Path, config: dict) -> None:
    """Top-level keys first, then one [section] per nested dict (with [[section.key]] for its
    lists of dicts), then one [[section]] per dict of a top-level list of dicts. Lists of
    plain values are inline arrays."""
    lines = [f"{k} = {toml_value(v)}" for k, v in config.items()
             if not isinstance(v, dict) and not _is_table_list(v)]
    for section, table in config.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            lines += _toml_tables(f"{section}.", table)
    for section, tables in config.items():
        if _is_table_list(tables):
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
        # The TLS listeners, when started with `tls=...` (0 otherwise).
        self.mqtts_port = 0
        self.wss_port = 0
        # The operations listener (fanfare only; 0 when off).
        self.admin_port = 0
        self.stdout_lines: queue.Queue[str | None] = queue.Queue()
        self.expected_exit = False

    @property
    def is_fanfare(self) -> bool:
        return self.kind == "fanfare"

    def port(self, transport: str) -> int:
        """The port of "tcp", "ws", "mqtts", "wss" or "admin"."""
        port = {"tcp": self.tcp_port, "ws": self.ws_port,
                "mqtts": self.mqtts_port, "wss": self.wss_port,
                "admin": self.admin_port}[transport]
        assert port, f"no {transport} listener"
        return port

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, tail: int | None = 4000) -> str:
        """The end of the broker's log (stderr), or all of it with `tail=None`."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text if tail is None else text[-tail:]

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> str:
        """Waits until the log holds `needle` (logging is asynchronous); returns that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log(tail=None).splitlines():
                if needle in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in the broker's log:\n{self.log()}")
            time.sleep(0.02)

    def reload(self) -> None:
        """SIGHUP: fanfare reads its configuration file, certificates and auth files again."""
        assert self.alive(), "broker is not running"
        self.proc.send_signal(signal.SIGHUP)

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
                  ws_path: str = "/mqtt", tls: dict | None = None,
                  args: list[str] | None = None, env: dict[str, str] | None = None) -> Broker:
    """`tls`: the `[tls]` table, which also opens the mqtts and wss listeners on port 0;
    `args`: more command-line flags; `env`: variables added to the broker's environment."""
    binary = fanfare_bin()
    assert binary.exists(), f"{binary} not built; run cargo build first"
    extra = list(args or [])
    args = [str(binary), "--tcp", f"{HOST}:0", "--ws", f"{HOST}:0", "--ws-path", ws_path,
            "--admin", f"{HOST}:0"]
    if shards is not None:
        args += ["--shards", str(shards)]
    if tls is not None:
        args += ["--mqtts", f"{HOST}:0", "--wss", f"{HOST}:0"]
        config = {**(config or {}), "tls": tls}
    args += extra
    if config:
        cfg = workdir / "fanfare.toml"
        write_toml(cfg, config)
        args += ["--config", str(cfg)]
    log_path = workdir / "broker.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
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
                elif words[1] == "mqtts":
                    broker.mqtts_port = int(port)
                elif words[1] == "wss":
                    broker.wss_port = int(port)
                elif words[1] == "admin":
                    broker.admin_port = int(port)
        assert broker.tcp_port and broker.ws_port, "broker did not report both listeners"
        if tls is not None:
            assert broker.mqtts_port and broker.wss_port, "broker did not report its TLS listeners"
    except BaseException:
        broker.kill()
        raise
    return broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_mosquitto(workdir: Path, *, shards: int | None = None, config: dict | None = None,
                    ws_path: str = "/mqtt", tls: dict | None = None) -> Broker:
    """Mosquitto as a reference; only the limits it has an equivalent for are applied."""
    assert tls is None, "no TLS listeners in Mosquitto mode: mark the test fanfare_only"
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


def owner_shard(name: str, shards: int) -> int:
    """fanfare's placement of a session (by client identifier) or of a retained topic's
    files: FNV-1a 64 of the name, modulo the shard count."""
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h = ((h ^ byte) * 0x100000001B3) % (1 << 64)
    return h % shards
