"""Reads fanfare's `GET /metrics` (Prometheus text format) from the operations listener
(`admin`), or from the WebSocket listener where `http_metrics` turns it on there."""

from __future__ import annotations

import http.client
import time

from rawmqtt import assert_loopback


def fetch_metrics(broker, path: str = "/metrics", port: str = "admin") -> tuple[int, str, str]:
    """(status, content type, body) of a plain GET on the `port` listener ("admin" or "ws")."""
    assert_loopback(broker.host)
    conn = http.client.HTTPConnection(broker.host, broker.port(port), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def parse(text: str) -> dict[str, dict[str, int]]:
    """metric name → shard label → value."""
    samples: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, labels = series.split("{", 1)
        shard = labels.removeprefix('shard="').removesuffix('"}')
        samples.setdefault(name, {})[shard] = int(value)
    return samples


def totals(broker) -> dict[str, int]:
    """Each metric summed over the shards."""
    status, _, body = fetch_metrics(broker)
    assert status == 200, f"GET /metrics answered {status}"
    return {name: sum(per_shard.values()) for name, per_shard in parse(body).items()}


def wait_for_metric(broker, name: str, done, timeout_s: float = 10.0) -> int:
    """Scrapes until `done(total of name)`; shards publish their figures every 100 ms."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = totals(broker).get(name)
        assert value is not None, f"no metric {name}"
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{name} stayed at {value}"
        time.sleep(0.05)
