"""`GET /metrics` on the operations listener: every shard's counters in Prometheus text format,
as a monitoring system scrapes them. The WebSocket listener serves them only when
`http_metrics` asks it to."""

from __future__ import annotations

import pytest

from scrape import fetch_metrics, parse, totals, wait_for_metric

pytestmark = pytest.mark.fanfare_only


def test_metrics_are_prometheus_text_with_one_sample_per_shard(start):
    broker = start(shards=2)
    status, content_type, body = fetch_metrics(broker)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = parse(body)
    assert samples["fanfare_connections"] == {"0": 0, "1": 0}
    assert "# TYPE fanfare_deliveries_total counter" in body
    assert "# TYPE fanfare_connections gauge" in body
    # A scraper's query string does not change the answer.
    assert fetch_metrics(broker, "/metrics?format=text")[0] == 200


def test_metrics_count_connections_subscriptions_and_deliveries(start, clients, topic):
    broker = start(shards=2)
    subs = [clients(broker, transport) for transport in ("tcp", "ws", "tcp")]
    for sub in subs:
        sub.subscribe(topic, 0)
    pub = clients(broker, "ws")
    for i in range(10):
        pub.publish(topic, str(i), 1)
    for sub in subs:
        assert [int(sub.wait_for_message().payload) for _ in range(10)] == list(range(10))

    wait_for_metric(broker, "fanfare_deliveries_total", lambda n: n >= 30)
    seen = totals(broker)
    assert seen["fanfare_connections"] == 4
    assert seen["fanfare_subscriptions"] >= 3
    assert seen["fanfare_publishes_received_total"] == 10

    pub.close()
    wait_for_metric(broker, "fanfare_connections", lambda n: n == 3)


def test_the_websocket_listener_serves_metrics_only_when_asked(start):
    broker = start()
    assert fetch_metrics(broker, port="ws")[0] == 404
    assert fetch_metrics(broker)[0] == 200
    broker = start(config={"http_metrics": True})
    status, _, body = fetch_metrics(broker, port="ws")
    assert status == 200
    assert "fanfare_connections" in body
