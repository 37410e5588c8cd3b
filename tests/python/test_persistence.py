"""Retained messages and persistent sessions in a data directory (`--data-dir`): retained
messages survive a clean restart and a `kill -9` with their MQTT 5 properties and expiry, deleted
ones stay deleted; persistent sessions (3.1.1 clean session 0, MQTT 5 session expiry) survive a
`kill -9` with their subscriptions and queued messages, and one that expired while the broker
was down is gone; under `durability = "sync"` a QoS 1/2 publish is acknowledged once it is
durable on every shard; one broker per directory, a torn tail is cut, and corruption before the end
stops start-up unless `--recover`; a small `compaction_log_bytes_min` compacts the log; on a full
disk QoS 1/2 publishes are refused (MQTT 5 0x97, 3.1.1 unacknowledged) and QoS 0 served, until
the disk has room again."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes

from broker import HOST, fanfare_bin, owner_shard
from client import TIMEOUT_S, unique_id
from client5 import Client5, props
from scrape import totals, wait_for_metric

pytestmark = pytest.mark.fanfare_only

PUBLISH = PacketTypes.PUBLISH


@pytest.fixture
def v5():
    """`v5(broker)`: a connected MQTT 5 client; all closed at teardown."""
    made = []

    def _make(broker):
        c = Client5(broker)
        made.append(c)
        c.connect()
        return c

    yield _make
    for c in made:
        c.close()


def on_disk(data_dir: Path, needle: bytes) -> bool:
    return any(needle in f.read_bytes() for f in data_dir.glob("shard-*/retained.*"))


def wait_on_disk(data_dir: Path, needle: bytes) -> None:
    """Waits until the store wrote `needle` (the writer thread runs after the shard's turn)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not on_disk(data_dir, needle):
        assert time.monotonic() < deadline, f"{needle!r} never reached {data_dir}"
        time.sleep(0.02)


def retained(v5, broker, topic_filter: str, count: int) -> dict[str, object]:
    """The retained messages a fresh subscriber gets for `topic_filter`, by topic."""
    sub = v5(broker)
    sub.subscribe(topic_filter, 1)
    got = {}
    for _ in range(count):
        msg = sub.wait_for_message()
        got[msg.topic] = msg
    sub.expect_no_message(0.3)
    return got


def publish_set(v5, broker, topic: str) -> None:
    pub = v5(broker)
    user = [("team", "home"), ("period", "2")]
    pub.publish5(f"{topic}/score", b"3-1", qos=1, retain=True,
                 properties=props(PUBLISH, UserProperty=user, ContentType="text/plain",
                                  PayloadFormatIndicator=1, ResponseTopic="reply/here",
                                  MessageExpiryInterval=3600))
    pub.publish5(f"{topic}/plain", b"qos0", qos=0, retain=True)
    pub.publish5(f"{topic}/short", b"soon gone", qos=1, retain=True,
                 properties=props(PUBLISH, MessageExpiryInterval=1))
    pub.publish5(f"{topic}/deleted", b"old", qos=1, retain=True)
    pub.publish5(f"{topic}/deleted", b"", qos=1, retain=True)
    for n in range(50):
        pub.publish5(f"{topic}/feed", f"point {n}".encode(), qos=0, retain=True)
    # Last, so that once it is on disk everything before it is (one shard: one log, in order).
    pub.publish5(f"{topic}/marker", b"all-written", qos=1, retain=True)


def check_restored(v5, broker, topic: str) -> None:
    got = retained(v5, broker, f"{topic}/#", 4)
    assert sorted(got) == sorted(f"{topic}/{t}" for t in ("score", "plain", "feed", "marker"))
    score = got[f"{topic}/score"]
    assert score.payload == b"3-1" and score.qos == 1 and score.retain
    p = score.properties
    assert p.UserProperty == [("team", "home"), ("period", "2")]
    assert p.ContentType == "text/plain"
    assert p.PayloadFormatIndicator == 1
    assert p.ResponseTopic == "reply/here"
    assert 3500 < p.MessageExpiryInterval <= 3600
    assert got[f"{topic}/plain"].payload == b"qos0" and got[f"{topic}/plain"].qos == 0
    assert got[f"{topic}/feed"].payload == b"point 49"


@pytest.mark.parametrize("durability", ["sync", "batch"])
def test_retained_survive_kill_9(start, v5, topic, tmp_path, durability):
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    first = start(shards=1, args=args, config={"durability": durability})
    publish_set(v5, first, topic)
    wait_on_disk(data, b"all-written")
    first.kill()
    time.sleep(1.1)  # the message with a 1 s expiry runs out while the broker is down
    second = start(shards=1, args=args)
    check_restored(v5, second, topic)


def test_retained_survive_a_clean_restart_with_other_shard_counts(start, v5, topic, tmp_path):
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    first = start(shards=2, args=args)
    publish_set(v5, first, topic)
    assert first.terminate() == 0
    time.sleep(1.1)
    # Fewer shards: the topics of shard 1 move into shard 0's files.
    second = start(shards=1, args=args)
    check_restored(v5, second, topic)
    assert not (data / "shard-1").exists()
    assert second.terminate() == 0
    third = start(shards=3, args=args)
    check_restored(v5, third, topic)


def test_one_broker_per_data_directory(start, tmp_path):
    data = tmp_path / "data"
    first = start(args=["--data-dir", str(data)])
    refused = subprocess.run(
        [str(fanfare_bin()), "--tcp", f"{HOST}:0", "--ws", "off", "--admin", "off",
         "--data-dir", str(data)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=10)
    assert refused.returncode != 0
    assert "ready" not in refused.stdout
    assert str(data) in refused.stderr, refused.stderr
    assert f"pid {first.proc.pid}" in refused.stderr, refused.stderr
    # Free again once the holder is gone, however it went.
    first.kill()
    start(args=["--data-dir", str(data)])


def two_records(start, v5, topic: str, data: Path) -> Path:
    """A one-shard data directory whose log ends with the records of `a`, then `b`."""
    broker = start(shards=1, args=["--data-dir", str(data)], config={"durability": "sync"})
    pub = v5(broker)
    pub.publish5(f"{topic}/a", b"first-payload", qos=1, retain=True)
    wait_on_disk(data, b"first-payload")
    pub.publish5(f"{topic}/b", b"second-payload", qos=1, retain=True)
    wait_on_disk(data, b"second-payload")
    broker.kill()
    return data / "shard-0" / "retained.log"


def start_fails(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(fanfare_bin()), "--tcp", f"{HOST}:0", "--ws", "off", "--admin", "off", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=10)


def test_a_torn_tail_is_cut_and_logged(start, v5, topic, tmp_path):
    data = tmp_path / "data"
    log = two_records(start, v5, topic, data)
    log.write_bytes(log.read_bytes()[:-3])
    broker = start(shards=1, args=["--data-dir", str(data)])
    broker.wait_for_log("torn record")
    assert str(log) in broker.wait_for_log("torn record")
    got = retained(v5, broker, f"{topic}/#", 1)
    assert list(got) == [f"{topic}/a"]


def test_corruption_stops_start_up_and_recover_keeps_the_rest(start, v5, topic, tmp_path):
    data = tmp_path / "data"
    log = two_records(start, v5, topic, data)
    bytes_ = bytearray(log.read_bytes())
    at = bytes_.index(b"first-payload")
    bytes_[at] ^= 0xFF
    log.write_bytes(bytes(bytes_))
    refused = start_fails("--shards", "1", "--data-dir", str(data))
    assert refused.returncode != 0
    assert "ready" not in refused.stdout
    assert str(log) in refused.stderr, refused.stderr
    assert "--recover" in refused.stderr
    broker = start(shards=1, args=["--data-dir", str(data), "--recover"])
    assert str(log) in broker.wait_for_log("skipped (--recover)")
    got = retained(v5, broker, f"{topic}/#", 1)
    assert list(got) == [f"{topic}/b"]


def log_after_updates(start, v5, topic: str, data: Path, config: dict) -> Path:
    """A one-shard broker's log after 100 acknowledged updates of one retained topic, each
    written on its own (`sync` acknowledges a QoS 1 publish once it is on disk)."""
    broker = start(shards=1, args=["--data-dir", str(data)],
                   config={"durability": "sync", **config})
    pub = v5(broker)
    for n in range(100):
        payload = f"update-{n:03}-".encode() + b"x" * 200
        pub.publish5(f"{topic}/score", payload, qos=1, retain=True)
    return data / "shard-0" / "retained.log"


def test_a_small_compaction_trigger_compacts_the_log(start, v5, topic, tmp_path):
    # Without it the 4 MiB floor keeps all 100 records (about 28 KB) in the log...
    kept = log_after_updates(start, v5, topic, tmp_path / "default", {})
    assert kept.stat().st_size > 20_000
    # ... with a 4 KiB floor the log is compacted into the snapshot each time it passes it,
    # so it never holds much more than the floor, and the snapshot holds a late update (at
    # start-up it was written empty).
    floor = 4096
    data = tmp_path / "small"
    log = log_after_updates(start, v5, topic, data, {"compaction_log_bytes_min": floor})
    assert log.stat().st_size <= floor + 1024
    snapshot = (data / "shard-0" / "retained.snapshot").read_bytes()
    assert b"update-" in snapshot
    assert b"update-000-" not in snapshot


def session_props(expiry_s: int):
    return props(PacketTypes.CONNECT, SessionExpiryInterval=expiry_s)


@pytest.mark.parametrize("durability", ["sync", "batch"])
def test_persistent_sessions_survive_kill_9(start, clients, topic, tmp_path, durability):
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    first = start(shards=2, args=args, config={"durability": durability})
    v3_id, v5_id = unique_id("keep3"), unique_id("keep5")
    v3 = clients(first, "tcp", v3_id, clean_session=False)
    v3.subscribe(f"{topic}/a", 1)
    v3.disconnect()
    v5 = Client5(first, client_id=v5_id)
    v5.connect(properties=session_props(3600))
    options = paho.SubscribeOptions(qos=1, noLocal=True)
    v5.subscribe5(f"{topic}/b", options, props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    v5.disconnect5()
    v5.close()
    pub = clients(first, "tcp")
    for n in range(5):
        pub.publish(f"{topic}/a", f"a {n}", 1)
        pub.publish(f"{topic}/b", f"b {n}", 1)
    # A session is written whole: its last message on disk means all of them are.
    wait_on_disk(data, b"a 4")
    wait_on_disk(data, b"b 4")
    first.kill()

    second = start(shards=2, args=args)
    assert "2 sessions loaded" in second.wait_for_log("sessions loaded")
    back3 = clients(second, "tcp", v3_id, clean_session=False, connect=False)
    assert back3.connect() is True, "session present after the restart"
    got = [back3.wait_for_message() for _ in range(5)]
    assert [m.payload for m in got] == [f"a {n}".encode() for n in range(5)]
    assert all(m.qos == 1 for m in got)
    back5 = Client5(second, client_id=v5_id)
    try:
        assert back5.connect(clean_start=False, properties=session_props(3600)) is True
        got = [back5.wait_for_message() for _ in range(5)]
        assert [m.payload for m in got] == [f"b {n}".encode() for n in range(5)]
        assert all(m.properties.SubscriptionIdentifier == [7] for m in got)
        # The subscriptions work without subscribing again.
        pub = clients(second, "tcp")
        pub.publish(f"{topic}/a", b"live a", 1)
        pub.publish(f"{topic}/b", b"live b", 1)
        assert back3.wait_for_message().payload == b"live a"
        live = back5.wait_for_message()
        assert live.payload == b"live b" and live.properties.SubscriptionIdentifier == [7]
        # No Local came back with the subscription: its own publish is not delivered.
        back5.publish5(f"{topic}/b", b"own", qos=1)
        pub.publish(f"{topic}/b", b"after own", 1)
        assert back5.wait_for_message().payload == b"after own"
    finally:
        back5.close()


@pytest.mark.parametrize("qos", [1, 2])
def test_sync_acknowledges_once_durable_on_every_shard(start, clients, topic, tmp_path, qos):
    """Under `sync` the PUBACK (PUBREC) comes once what the publish changed is on disk, also
    where another shard writes it: killed right after the acknowledgement, the broker has the
    message in the queues of offline persistent sessions of both shards, and as a retained
    message on both shards' topics. Nothing waits for the disk here but the acknowledgement."""
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    first = start(shards=2, args=args, config={"durability": "sync"})
    names = iter(unique_id("dur") for _ in range(1000))
    offline = [next(i for i in names if owner_shard(i, 2) == s) for s in (0, 1)]
    for cid in offline:
        c = clients(first, "tcp", cid, clean_session=False)
        c.subscribe(f"{topic}/q", qos)
        c.disconnect()
    levels = iter(f"r{n}" for n in range(1000))
    kept = [f"{topic}/{next(r for r in levels if owner_shard(f'{topic}/{r}', 2) == s)}"
            for s in (0, 1)]
    # Publishers on both shards: the entry shard writes some changes, the other the rest.
    publishers = [next(i for i in names if owner_shard(i, 2) == s) for s in (0, 1)]
    for cid in publishers:
        pub = clients(first, "tcp", cid)
        for retained_topic in kept:
            pub.publish(retained_topic, f"{cid} {retained_topic}", qos, retain=True)
        pub.publish(f"{topic}/q", f"from {cid}", qos)
    first.kill()

    second = start(shards=2, args=args)
    for cid in offline:
        back = clients(second, "tcp", cid, clean_session=False, connect=False)
        assert back.connect() is True, "session present after the restart"
        got = [back.wait_for_message().payload for _ in offline]
        assert got == [f"from {p}".encode() for p in publishers]
    sub = clients(second, "tcp")
    sub.subscribe(f"{topic}/+", 1)
    got = {}
    for _ in kept:
        msg = sub.wait_for_message()
        got[msg.topic] = msg.payload
    assert got == {t: f"{publishers[-1]} {t}".encode() for t in kept}


def test_sync_holds_at_most_inbound_qos2_max_acknowledgements_per_connection(start, clients,
                                                                             topic, tmp_path):
    """A 3.1.1 publisher (no Receive Maximum) with more QoS 1 publishes in flight than
    `inbound_qos2_max`: the broker stops reading it while that many acknowledgements wait for
    the disk, and reads on once they are sent; every publish is acknowledged and delivered in
    order."""
    data = tmp_path / "data"
    broker = start(shards=2, args=["--data-dir", str(data)],
                   config={"durability": "sync", "limits": {"inbound_qos2_max": 2}})
    sub = clients(broker, "tcp", unique_id("held"), clean_session=False)
    sub.subscribe(f"{topic}/q", 1)
    pub = clients(broker, "tcp")
    infos = [pub.paho.publish(f"{topic}/q", f"{n}", 1) for n in range(60)]
    for info in infos:
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published(), "every publish is acknowledged in the end"
    got = [int(sub.wait_for_message().payload) for _ in range(60)]
    assert got == list(range(60))


def test_a_session_that_expired_while_down_is_gone(start, clients, topic, tmp_path):
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    first = start(shards=1, args=args, config={"durability": "sync"})
    cid = unique_id("brief")
    short = Client5(first, client_id=cid)
    short.connect(properties=session_props(1))
    short.subscribe5(f"{topic}/x", paho.SubscribeOptions(qos=1))
    short.disconnect5()
    short.close()
    clients(first, "tcp").publish(f"{topic}/x", b"offline-marker", 1)
    wait_on_disk(data, b"offline-marker")
    first.kill()
    time.sleep(1.2)  # past the session's expiry, while the broker is down

    second = start(shards=1, args=args)
    assert "0 sessions loaded" in second.wait_for_log("sessions loaded")
    back = Client5(second, client_id=cid)
    try:
        assert back.connect(clean_start=False, properties=session_props(60)) is False
        clients(second, "tcp").publish(f"{topic}/x", b"not subscribed", 1)
        back.expect_no_message(0.3)
    finally:
        back.close()


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs mounted on a fresh directory; unmounted at teardown (after the broker,
    which is stopped first: this fixture is set up before `start`)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs for the full-disk test "
                    f"(needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    yield mount_point
    if subprocess.run(["umount", str(mount_point)]).returncode != 0:
        subprocess.run(["umount", "-l", str(mount_point)])


def fill(path: Path) -> None:
    """Writes `path` until the file system has no room left."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return


def test_a_full_disk_refuses_qos1_and_serves_qos0_until_it_has_room(small_fs, start, clients,
                                                                    v5, topic):
    data = small_fs / "data"
    broker = start(shards=1, args=["--data-dir", str(data)])
    sub = clients(broker, "tcp")
    sub.subscribe(f"{topic}/#", 1)
    pub5 = v5(broker)
    pub3 = clients(broker, "tcp")
    assert pub5.publish5(f"{topic}/before", b"stored", qos=1, retain=True) == 0
    assert sub.wait_for_message().payload == b"stored"

    filler = small_fs / "filler"
    fill(filler)
    # A retained update larger than the log's last page: the store's next write fails.
    pub5.publish5(f"{topic}/big", b"x" * 16384, qos=0, retain=True)
    assert sub.wait_for_message().payload == b"x" * 16384
    wait_for_metric(broker, "fanfare_store_unwritable", lambda v: v == 1)
    assert "cannot write retained messages and sessions" in broker.wait_for_log("store: cannot")

    assert pub5.publish5(f"{topic}/q1", b"refused 5", qos=1) == 0x97
    info = pub3.paho.publish(f"{topic}/q1", b"refused 3", 1)
    info.wait_for_publish(1.0)
    assert not info.is_published(), "a 3.1.1 QoS 1 publish is not acknowledged on a full disk"
    pub5.publish5(f"{topic}/q0", b"served", qos=0)
    assert sub.wait_for_message().payload == b"served", "QoS 0 flows, refused QoS 1 does not"
    assert totals(broker)["fanfare_store_publishes_refused_total"] == 2

    os.remove(filler)
    wait_for_metric(broker, "fanfare_store_unwritable", lambda v: v == 0)
    broker.wait_for_log("store: writes succeed again")
    assert pub5.publish5(f"{topic}/q1", b"accepted 5", qos=1) == 0
    assert sub.wait_for_message().payload == b"accepted 5"
    pub3.publish(f"{topic}/q1", b"accepted 3", 1)
    assert sub.wait_for_message().payload == b"accepted 3"
    assert broker.log(tail=None).count("store: cannot write") == 1, "logged once"
    wait_on_disk(data, b"x" * 16384)
