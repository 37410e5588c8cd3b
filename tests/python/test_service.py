"""Running under a service manager: systemd's readiness notifications (`Type=notify`),
received on a unix datagram socket the test binds and names in NOTIFY_SOCKET, as systemd does.
"""

import os
import socket

import pytest

RECEIVE_TIMEOUT_S = 5.0
# Notifications the test waits through before giving up on the one it expects (watchdog
# pings may come between the others).
MESSAGES_MAX = 50

pytestmark = pytest.mark.fanfare_only  # Mosquitto has no sd_notify support built in


class Manager:
    """The service manager's end: a datagram socket and what arrived on it."""

    def __init__(self, sock: socket.socket, name: str):
        self.sock = sock
        self.name = name

    def wait_for(self, message: str) -> None:
        self.sock.settimeout(RECEIVE_TIMEOUT_S)
        seen = []
        for _ in range(MESSAGES_MAX):
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            seen.append(data)
            if message in data.split("\n"):
                return
        raise AssertionError(f"no {message!r} from the broker; received {seen}")


@pytest.fixture(params=["path", "abstract"])
def manager(request, tmp_path):
    """A socket at a file path, or in the abstract namespace (`@name`, as systemd uses)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        name = path
    else:
        abstract = f"fanfare-test-notify-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + abstract)
        name = "@" + abstract
    yield Manager(sock, name)
    sock.close()


def test_ready_then_stopping(start, manager):
    broker = start(env={"NOTIFY_SOCKET": manager.name})
    manager.wait_for("READY=1")
    assert broker.terminate() == 0
    manager.wait_for("STOPPING=1")


def test_watchdog_pings_while_shards_turn(start, manager):
    # WATCHDOG_USEC as systemd sets it for WatchdogSec=1: a ping every half second.
    broker = start(shards=2, env={"NOTIFY_SOCKET": manager.name, "WATCHDOG_USEC": "1000000"})
    manager.wait_for("READY=1")
    manager.wait_for("WATCHDOG=1")
    manager.wait_for("WATCHDOG=1")
    assert broker.terminate() == 0


def test_watchdog_variables_for_another_process_are_ignored(start, manager):
    broker = start(env={"NOTIFY_SOCKET": manager.name, "WATCHDOG_USEC": "1000000",
                        "WATCHDOG_PID": "1"})
    manager.wait_for("READY=1")
    assert broker.terminate() == 0
    manager.wait_for("STOPPING=1")
    assert "watchdog" not in broker.log(tail=None)


def test_a_missing_notify_socket_does_not_stop_the_broker(start, tmp_path, clients):
    broker = start(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    broker.wait_for_log("cannot tell the service manager READY=1")
    clients(broker, "tcp").publish("t/service", b"still serving", 0)
    assert broker.terminate() == 0
