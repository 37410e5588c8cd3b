"""One broker per listening address: a second fanfare on the same address refuses to start,
instead of joining the first one's SO_REUSEPORT group and taking half of its new clients."""

import subprocess

import pytest

from broker import HOST, fanfare_bin, free_port
from client import unique_id

pytestmark = pytest.mark.fanfare_only


def second_start(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(fanfare_bin()), "--admin", "off", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=10)


def test_second_broker_on_the_same_address_is_refused(start, clients, topic):
    port = free_port()
    first = start(shards=2, args=["--tcp", f"{HOST}:{port}"])
    assert first.tcp_port == port
    subscriber = clients(first, "tcp")
    subscriber.subscribe(f"{topic}/live", 1)

    refused = second_start("--tcp", f"{HOST}:{port}", "--ws", "off")
    assert refused.returncode != 0
    assert "ready" not in refused.stdout
    assert f"{HOST}:{port}" in refused.stderr, refused.stderr
    assert f"pid {first.proc.pid}" in refused.stderr, refused.stderr

    # The first broker serves the client it had...
    publisher = clients(first, "tcp")
    publisher.publish(f"{topic}/live", b"still here", 1)
    assert subscriber.wait_for_message().payload == b"still here"
    # ...and every new client reaches it: a retained message meets each fresh subscriber.
    publisher.publish(f"{topic}/retained", b"kept", 1, retain=True)
    for _ in range(20):
        fresh = clients(first, "tcp", unique_id("fresh"))
        fresh.subscribe(f"{topic}/retained", 1)
        assert fresh.wait_for_message().payload == b"kept"
        fresh.close()


def test_address_is_free_again_once_the_holder_stops(start):
    port = free_port()
    first = start(args=["--tcp", f"{HOST}:{port}"])
    assert first.terminate() == 0
    # The kernel released the claim with the process: no lock file is left behind.
    second = start(args=["--tcp", f"{HOST}:{port}"])
    assert second.tcp_port == port


def test_port_zero_brokers_do_not_collide(start):
    one, two = start(), start()
    assert one.tcp_port != two.tcp_port
