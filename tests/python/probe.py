"""Waiting for a path between brokers (a bridge, a cluster) to carry messages.

A link comes up, and its subscriptions reach the other side, a moment after the broker says
it is connected; a test probes until one message crosses, rather than sleeping a guess."""

from __future__ import annotations

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
