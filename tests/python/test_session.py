"""Persistent sessions (clean session 0) keep subscriptions and queue QoS 1/2 messages."""

from client import unique_id


def test_persistent_session_queues_messages(broker, clients, transport, topic):
    cid = unique_id("persist")
    sub = clients(broker, transport, cid, clean_session=False)
    sub.subscribe(topic, 1)
    sub.disconnect()

    pub = clients(broker, transport)
    for i in range(5):
        pub.publish(topic, f"queued {i}", 1)

    back = clients(broker, transport, cid, clean_session=False, connect=False)
    assert back.connect() is True, "session present"
    got = [back.wait_for_message() for _ in range(5)]
    assert [msg.payload for msg in got] == [f"queued {i}".encode() for i in range(5)]
    assert all(msg.qos == 1 for msg in got)

    # The subscription survived too: live messages still arrive.
    pub.publish(topic, b"live", 1)
    assert back.wait_for_message().payload == b"live"


def test_persistent_session_across_transports(broker, clients, topic):
    cid = unique_id("persist-x")
    sub = clients(broker, "tcp", cid, clean_session=False)
    sub.subscribe(topic, 1)
    sub.disconnect()
    clients(broker, "tcp").publish(topic, b"while away", 1)

    back = clients(broker, "ws", cid, clean_session=False, connect=False)
    assert back.connect() is True
    assert back.wait_for_message().payload == b"while away"


def test_first_persistent_connect_has_no_session(broker, clients, transport):
    c = clients(broker, transport, unique_id("fresh"), clean_session=False, connect=False)
    assert c.connect() is False


def test_clean_session_discards_state(broker, clients, transport, topic):
    cid = unique_id("clean")
    sub = clients(broker, transport, cid, clean_session=False)
    sub.subscribe(topic, 1)
    sub.disconnect()
    clients(broker, transport).publish(topic, b"dropped", 1)

    clean = clients(broker, transport, cid, clean_session=True, connect=False)
    assert clean.connect() is False, "clean session: session present = 0"
    clean.expect_no_message(0.5)
    clean.disconnect()

    # Coming back persistent after a clean session also starts from nothing.
    again = clients(broker, transport, cid, clean_session=False, connect=False)
    assert again.connect() is False
    clients(broker, transport).publish(topic, b"not subscribed", 1)
    again.expect_no_message(0.5)

