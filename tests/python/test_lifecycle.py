"""Process lifecycle: start-up output, graceful stop on signals."""

import signal

import pytest

import rawmqtt as m
from client import unique_id


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop(start, clients, raw, sig):
    broker = start(shards=2)
    tcp = clients(broker, "tcp")
    ws = clients(broker, "ws")
    r = raw(broker, "tcp")
    r.handshake(unique_id("stop"))

    broker.expected_exit = True
    broker.proc.send_signal(sig)

    # Clients see the connection closed...
    tcp.wait_for_disconnect()
    ws.wait_for_disconnect()
    r.wait_closed()
    # ...and the process exits 0 within a few seconds.
    assert broker.proc.wait(5) == 0


def test_stop_when_idle(start):
    broker = start()
    assert broker.terminate() == 0


def test_stop_with_persistent_sessions_and_retained(start, clients):
    broker = start()
    c = clients(broker, "tcp", unique_id("stop-p"), clean_session=False)
    c.subscribe("t/stop/#", 1)
    c.publish("t/stop/r", b"retained", 1, retain=True)
    c.drop()
    clients(broker, "ws").publish("t/stop/q", b"queued", 1)
    assert broker.terminate() == 0


@pytest.mark.fanfare_only  # the printed-ports contract is fanfare's
def test_startup_output(start):
    broker = start()
    assert broker.tcp_port != broker.ws_port
    assert broker.ws_path == "/mqtt"
    r = m.Mqtt(m.TcpConn(broker.host, broker.tcp_port))
    try:
        assert r.handshake(unique_id("up")).body == b"\x00\x00"
    finally:
        r.close()


@pytest.mark.fanfare_only
def test_custom_ws_path(start, clients):
    broker = start(ws_path="/custom/ws")
    assert broker.ws_path == "/custom/ws"
    c = clients(broker, "ws")
    c.subscribe("t/path", 0)
    c.publish("t/path", b"ok", 1)
    assert c.wait_for_message().payload == b"ok"


def test_broker_survives_many_connects(broker, raw):
    for i in range(50):
        c = raw(broker, "tcp" if i % 2 else "ws")
        c.handshake(unique_id("many"))
        if i % 3:
            c.send(m.disconnect())
        c.close()
    assert broker.alive()
