"""Keep-alive, MQTT 3.1.1 §3.1.2.10. Only broad bounds: timing is not what we test."""

import time

import pytest

import rawmqtt as m
from client import unique_id


@pytest.mark.fanfare_only  # Mosquitto 2.0 checks keep-alive on a ~5 s timer
def test_silent_client_disconnected(broker, raw, transport):
    c = raw(broker, transport)
    c.handshake(unique_id("ka"), keepalive=2)
    start = time.monotonic()

    # Well inside the keep-alive the connection stays up...
    assert c.is_open_after(1.0)
    # ...and within 1.5 × 2 s plus slack it is closed [MQTT-3.1.2-24].
    c.wait_closed(timeout=6.0 - (time.monotonic() - start))


def test_pinging_client_stays_connected(broker, raw, transport):
    c = raw(broker, transport)
    c.handshake(unique_id("ka-ping"), keepalive=1)
    for _ in range(5):
        time.sleep(0.5)
        c.send(m.pingreq())
        c.expect(m.PINGRESP, timeout=2)


def test_keepalive_zero_means_no_timeout(broker, raw, transport):
    c = raw(broker, transport)
    c.handshake(unique_id("ka0"), keepalive=0)
    assert c.is_open_after(2.0)
