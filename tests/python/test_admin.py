"""The operations listener (`admin`): health, metrics, the admin API (clients, kick,
subscriptions, stats) and the publish API, with a bearer token from `admin_token_file`; bad
requests get their HTTP error as JSON, and the broker carries on serving MQTT."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time

import paho.mqtt.client as paho
import pytest

from client5 import Client5
from rawmqtt import assert_loopback

pytestmark = pytest.mark.fanfare_only

TOKEN = "s3cret-admin-token"


def request(broker, method: str, path: str, body=None, token: str | None = TOKEN,
            raw: bytes | None = None):
    """(status, JSON body or text, headers) of one request to the operations listener."""
    assert_loopback(broker.host)
    conn = http.client.HTTPConnection(broker.host, broker.port("admin"), timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        content_type = response.getheader("Content-Type", "")
        value = json.loads(text) if content_type == "application/json" else text
        return response.status, value, dict(response.getheaders())
    finally:
        conn.close()


@pytest.fixture
def admin(start, tmp_path):
    """`admin(**kw)`: a broker whose admin API takes TOKEN."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")

    def _start(config: dict | None = None, **kw):
        return start(config={"admin_token_file": token_file, **(config or {})}, **kw)

    return _start


def mqtt_still_serves(broker, clients, topic: str) -> None:
    sub = clients(broker, "tcp")
    sub.subscribe(topic, 1)
    pub = clients(broker, "ws")
    pub.publish(topic, "still here", 1)
    assert sub.wait_for_message().payload == b"still here"


def test_health_ready_and_metrics_need_no_token(start):
    broker = start(shards=2)
    assert request(broker, "GET", "/healthz", token=None)[:2] == (200, {"status": "ok"})
    status, ready, _ = request(broker, "GET", "/readyz", token=None)
    assert (status, ready) == (200, {"status": "ready", "shards": 2})
    status, text, headers = request(broker, "GET", "/metrics", token=None)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'fanfare_connections{shard="1"}' in text
    status, error, _ = request(broker, "GET", "/nothing/here", token=None)
    assert status == 404 and "error" in error
    status, error, headers = request(broker, "POST", "/healthz", token=None, raw=b"{}")
    assert status == 405 and headers["Allow"] == "GET" and "error" in error


def test_metrics_may_need_the_token(admin):
    broker = admin(config={"admin_metrics_public": False})
    assert request(broker, "GET", "/metrics", token=None)[0] == 401
    assert request(broker, "GET", "/metrics")[0] == 200


def test_the_api_is_off_without_a_token_file(start, clients, topic):
    broker = start()
    for token in (None, "anything"):
        status, error, _ = request(broker, "GET", "/api/v1/stats", token=token)
        assert status == 403
        assert "admin_token_file" in error["error"]
    status, _, _ = request(broker, "POST", "/api/v1/publish", {"topic": topic, "payload": "x"})
    assert status == 403
    mqtt_still_serves(broker, clients, topic)


def test_no_token_or_a_wrong_one_is_401(admin, clients, topic):
    broker = admin()
    for token in (None, "wrong", TOKEN + "x", ""):
        status, error, headers = request(broker, "GET", "/api/v1/clients", token=token)
        assert status == 401, token
        assert "error" in error and headers["WWW-Authenticate"] == "Bearer"
    mqtt_still_serves(broker, clients, topic)


def test_clients_are_listed_filtered_paged_and_detailed(admin, clients, topic):
    broker = admin(shards=2)
    for client_id in ("adm-a-1", "adm-a-2", "adm-a-3", "adm-b-1"):
        clients(broker, "tcp", client_id)
    watcher = clients(broker, "ws", "adm-a-ws")
    watcher.subscribe(f"{topic}/+", 1)

    status, listing, _ = request(broker, "GET", "/api/v1/clients?prefix=adm-a-")
    assert status == 200
    ids = [c["client_id"] for c in listing["clients"]]
    assert ids == ["adm-a-1", "adm-a-2", "adm-a-3", "adm-a-ws"]
    assert listing["next_cursor"] is None
    assert all(c["connected"] and c["address"].startswith("127.0.0.1:") for c in listing["clients"])

    seen, cursor = [], None
    while True:
        path = "/api/v1/clients?prefix=adm-&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = request(broker, "GET", path)[1]
        assert len(page["clients"]) <= 2
        seen += [c["client_id"] for c in page["clients"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["adm-a-1", "adm-a-2", "adm-a-3", "adm-a-ws", "adm-b-1"]

    assert request(broker, "GET", "/api/v1/clients?address=10.9.8.7")[1]["clients"] == []
    by_address = request(broker, "GET", "/api/v1/clients?prefix=adm-b&address=127.0.0.1")[1]
    assert [c["client_id"] for c in by_address["clients"]] == ["adm-b-1"]
    assert request(broker, "GET", "/api/v1/clients?limit=0")[0] == 400

    status, detail, _ = request(broker, "GET", "/api/v1/clients/adm-a-ws")
    assert status == 200
    assert detail["protocol"] == "3.1.1" and detail["transport"] == "ws"
    assert detail["subscriptions"] == [{"filter": f"{topic}/+", "qos": 1, "no_local": False,
                                        "retain_as_published": False, "subscription_id": None}]
    assert detail["inflight"] == 0 and detail["queued_bytes"] == 0
    status, error, _ = request(broker, "GET", "/api/v1/clients/nobody-at-all")
    assert status == 404 and "error" in error


def test_kick_tells_an_mqtt5_client_0x98_and_closes_a_311_one(admin, clients):
    broker = admin(shards=2)
    v5 = Client5(broker, "tcp", "adm-kick-v5")
    try:
        v5.connect()
        status, answer, _ = request(broker, "DELETE", "/api/v1/clients/adm-kick-v5")
        assert (status, answer) == (200, {"kicked": "adm-kick-v5"})
        assert v5.wait_for_disconnect_reason() == 0x98
    finally:
        v5.close()
    old = clients(broker, "ws", "adm-kick-311")
    assert request(broker, "DELETE", "/api/v1/clients/adm-kick-311")[0] == 200
    old.wait_for_disconnect()
    status, error, _ = request(broker, "DELETE", "/api/v1/clients/adm-kick-311")
    assert status == 404 and "error" in error


def test_subscriptions_say_who_receives_a_topic(admin, clients, topic):
    broker = admin(shards=2)
    clients(broker, "tcp", "adm-sub-plus").subscribe(f"{topic}/+", 0)
    clients(broker, "ws", "adm-sub-hash").subscribe(f"{topic}/#", 2)
    clients(broker, "tcp", "adm-sub-other").subscribe("elsewhere/#", 1)
    status, answer, _ = request(broker, "GET", f"/api/v1/subscriptions?topic={topic}/1")
    assert status == 200
    found = [(s["client_id"], s["filter"], s["qos"]) for s in answer["subscribers"]]
    assert found == [("adm-sub-hash", f"{topic}/#", 2), ("adm-sub-plus", f"{topic}/+", 0)]
    assert answer["truncated"] is False
    status, error, _ = request(broker, "GET", "/api/v1/subscriptions?topic=a/%2B")
    assert status == 400 and "topic" in error["error"]
    assert request(broker, "GET", "/api/v1/subscriptions")[0] == 400


def test_stats_sum_the_shards(admin, clients):
    broker = admin(shards=2)
    status, stats, _ = request(broker, "GET", "/api/v1/stats")
    assert status == 200
    assert stats["shards"] == 2
    assert "fanfare_connections" in stats["totals"]
    assert "fanfare_deliveries_total" in stats["totals"]


def test_publish_reaches_subscribers_in_order(admin, clients, topic):
    broker = admin(shards=2)
    subs = [clients(broker, transport) for transport in ("tcp", "ws")]
    for sub in subs:
        sub.subscribe(f"{topic}/#", 1)
    status, answer, _ = request(broker, "POST", "/api/v1/publish",
                                {"topic": f"{topic}/text", "payload": "héllo", "qos": 1})
    assert (status, answer) == (200, {"published": 1})
    raw = bytes([0, 1, 2, 255])
    request(broker, "POST", "/api/v1/publish",
            {"topic": f"{topic}/bin", "payload_base64": base64.b64encode(raw).decode()})
    batch = [{"topic": f"{topic}/seq/{i}", "payload": str(i), "qos": i % 3} for i in range(20)]
    assert request(broker, "POST", "/api/v1/publish", batch)[:2] == (200, {"published": 20})
    for sub in subs:
        first, second = sub.wait_for_message(), sub.wait_for_message()
        assert (first.topic, first.payload, first.qos) == (f"{topic}/text", "héllo".encode(), 1)
        assert (second.topic, second.payload) == (f"{topic}/bin", raw)
        got = [sub.wait_for_message() for _ in range(20)]
        assert [m.payload.decode() for m in got] == [str(i) for i in range(20)]


def test_a_retained_publish_is_kept(admin, clients, topic):
    # One shard: the publish is stored by the time the API answers.
    broker = admin(shards=1)
    request(broker, "POST", "/api/v1/publish",
            {"topic": f"{topic}/score", "payload": "2-1", "retain": True})
    late = clients(broker, "ws")
    late.subscribe(f"{topic}/score", 0)
    message = late.wait_for_message()
    assert (message.payload, message.retain) == (b"2-1", True)


def test_publish_properties_reach_an_mqtt5_subscriber(admin, topic):
    broker = admin(shards=2)
    sub = Client5(broker, "ws")
    try:
        sub.connect()
        sub.subscribe5(f"{topic}/rpc", paho.SubscribeOptions(qos=1))
        properties = {"content_type": "application/json", "response_topic": f"{topic}/reply",
                      "correlation_data": "req-7", "payload_format_indicator": 1,
                      "message_expiry_interval": 3600,
                      "user_properties": [["source", "feed"], ["source", "backup"]]}
        status, _, _ = request(broker, "POST", "/api/v1/publish",
                               {"topic": f"{topic}/rpc", "payload": "{}", "qos": 1,
                                "properties": properties})
        assert status == 200
        message = sub.wait_for_message()
        got = message.properties
        assert message.payload == b"{}"
        assert got.ContentType == "application/json"
        assert got.ResponseTopic == f"{topic}/reply"
        assert got.CorrelationData == b"req-7"
        assert got.PayloadFormatIndicator == 1
        assert 3590 <= got.MessageExpiryInterval <= 3600
        assert got.UserProperty == [("source", "feed"), ("source", "backup")]
    finally:
        sub.close()


def test_bad_requests_get_their_error_and_the_broker_carries_on(admin, clients, topic):
    broker = admin(config={"admin_body_bytes_max": 1024})
    publish = "/api/v1/publish"
    status, error, _ = request(broker, "POST", publish, raw=b"x" * 2048)
    assert status == 413 and "admin_body_bytes_max" in error["error"]
    status, error, _ = request(broker, "POST", publish, raw=b'{"topic": ')
    assert status == 400 and "JSON" in error["error"]
    status, error, _ = request(broker, "POST", publish, [{"topic": "ok"}, {"topic": "bad/#"}])
    assert (status, error["index"], error["field"]) == (400, 1, "topic")
    status, error, _ = request(broker, "POST", publish, {"topic": ""})
    assert (status, error["field"]) == (400, "topic")
    status, error, _ = request(broker, "POST", publish, {"topic": "t", "qos": 7})
    assert (status, error["field"]) == (400, "qos")
    status, error, _ = request(broker, "POST", publish, {"topic": "t", "payload_base64": "@@"})
    assert (status, error["field"]) == (400, "payload_base64")
    status, error, _ = request(broker, "POST", publish, {"topic": "t", "colour": "red"})
    assert status == 400 and "colour" in error["error"]
    assert request(broker, "POST", publish, {"topic": "t"}, token="nope")[0] == 401
    assert request(broker, "GET", "/api/v1/clients/nobody")[0] == 404
    assert request(broker, "GET", publish)[0] == 405
    assert request(broker, "GET", "/readyz", token=None)[0] == 200
    mqtt_still_serves(broker, clients, topic)


def test_connections_past_the_limit_get_503(admin, clients, topic):
    broker = admin(config={"admin_connections_max": 2})
    idle = [socket.create_connection((broker.host, broker.port("admin")), timeout=5)
            for _ in range(2)]
    try:
        status, error, _ = request(broker, "GET", "/healthz", token=None)
        assert status == 503 and "admin connections" in error["error"]
    finally:
        for sock in idle:
            sock.close()
    # Their threads see the close and end; then requests are served again.
    deadline = time.monotonic() + 10
    while request(broker, "GET", "/healthz", token=None)[0] != 200:
        assert time.monotonic() < deadline, "the admin listener stayed busy"
        time.sleep(0.05)
    mqtt_still_serves(broker, clients, topic)


def test_sighup_reads_the_token_file_again(start, tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    broker = start(config={"admin_token_file": token_file})
    assert request(broker, "GET", "/api/v1/stats")[0] == 200

    token_file.write_text("the-next-token\n")
    broker.reload()
    broker.wait_for_log("admin token file reloaded")
    assert request(broker, "GET", "/api/v1/stats")[0] == 401
    assert request(broker, "GET", "/api/v1/stats", token="the-next-token")[0] == 200

    # A token file that cannot be used is refused, and the token in force stays.
    token_file.write_text("two words\n")
    broker.reload()
    broker.wait_for_log("admin token not reloaded")
    assert request(broker, "GET", "/api/v1/stats", token="the-next-token")[0] == 200
