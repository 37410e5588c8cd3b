"""Client id takeover, MQTT 3.1.1 §3.1.4: a second CONNECT with the same id wins."""

from client import unique_id


def test_second_client_same_id_disconnects_first(broker, clients, transport, topic):
    cid = unique_id("take")
    first = clients(broker, transport, cid)
    second = clients(broker, "tcp" if transport == "ws" else "ws", cid)

    # [MQTT-3.1.4-2]: the existing client is disconnected.
    first.wait_for_disconnect()
    second.subscribe(topic, 1)
    second.publish(topic, b"still mine", 1)
    assert second.wait_for_message().payload == b"still mine"


def test_takeover_keeps_persistent_session(broker, clients, transport, topic):
    cid = unique_id("take-s")
    first = clients(broker, transport, cid, clean_session=False)
    first.subscribe(topic, 1)

    second = clients(broker, transport, cid, clean_session=False, connect=False)
    assert second.connect() is True, "session present after takeover"
    first.wait_for_disconnect()

    clients(broker, transport).publish(topic, b"to the new owner", 1)
    assert second.wait_for_message().payload == b"to the new owner"


def test_takeover_across_shards(start, clients, topic):
    """With two shards, ids hash to both; takeover must work wherever the session lives."""
    broker = start(shards=2)
    pairs = []
    for i in range(16):
        cid = f"shard-take-{i}"
        first = clients(broker, "tcp" if i % 2 else "ws", cid, clean_session=False)
        first.subscribe(f"{topic}/{i}", 1)
        pairs.append((cid, first))

    seconds = []
    for i, (cid, first) in enumerate(pairs):
        second = clients(broker, "ws" if i % 2 else "tcp", cid, clean_session=False, connect=False)
        assert second.connect() is True, f"{cid}: session present"
        seconds.append(second)
    for cid, first in pairs:
        first.wait_for_disconnect()

    pub = clients(broker, "tcp")
    for i in range(len(pairs)):
        pub.publish(f"{topic}/{i}", f"for {i}", 1)
    for i, second in enumerate(seconds):
        msg = second.wait_for_message()
        assert (msg.topic, msg.payload) == (f"{topic}/{i}", f"for {i}".encode())
        second.expect_no_message(0.05)
    for cid, first in pairs:
        first.expect_no_message(0.01)
