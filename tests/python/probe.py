"""Waiting for a path between brokers (a bridge, a cluster) to carry messages.

A link comes up, and its subscriptions reach the other side, a moment after the broker says
it is connected; a test probes until one message crosses, rather than sleeping a guess."""

from __future__ import annotations

import time

PROBES_MAX = 200
PROBE_WAIT_S = 0.05


def open_path(sub, send, across: str) -> None:
    """Sends probes with `send(payload)` until `sub` receives one, then drains the probes still
    in flight, so the test's own messages come next. `across` names the path for the error."""
    for _ in range(PROBES_MAX):
        send(b"probe")
        try:
            msg = sub.wait_for_message(timeout=PROBE_WAIT_S)
        except AssertionError:
            continue
        assert msg.payload == b"probe"
        while True:
            try:
                sub.wait_for_message(timeout=0.3)
            except AssertionError:
                return
    raise AssertionError(f"no probe crossed {across}")


def open_mesh(sends: list, subs: list, across: str, timeout_s: float = 30.0) -> None:
    """Like `open_path` for many publishers and subscribers at once: `sends[j](payload)`
    publishes for publisher j. Probes go out from every publisher until every subscriber has
    received one from each (a path may take seconds to open, after a NATS server is lost, say),
    then the probes still in flight are drained from all subscribers."""
    missing = {(i, j) for i in range(len(subs)) for j in range(len(sends))}
    deadline = time.monotonic() + timeout_s
    while missing:
        assert time.monotonic() < deadline, \
            f"no probe crossed {across} for (subscriber, publisher) {sorted(missing)}"
        for j, send in enumerate(sends):
            send(b"probe %d" % j)
        time.sleep(PROBE_WAIT_S)
        for i, sub in enumerate(subs):
            for msg in take_all(sub):
                assert msg.payload.startswith(b"probe "), msg.payload
                missing.discard((i, int(msg.payload.split()[1])))
    drain(subs)


def take_all(sub) -> list:
    """What `sub` has received and not yet taken, without waiting."""
    got = []
    while True:
        try:
            got.append(sub.wait_for_message(timeout=0))
        except AssertionError:
            return got


def drain(subs: list, quiet_s: float = 0.3, timeout_s: float = 10.0) -> None:
    """Takes what the subscribers receive until none of them has received anything for
    `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < deadline, "the subscribers never fell quiet"
        time.sleep(quiet_s)
        if not any([take_all(sub) for sub in subs]):
            return
