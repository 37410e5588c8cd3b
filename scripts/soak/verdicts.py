"""The checks the soak prints as PASS or FAIL, one function each, over what the workers, the
oracles and the coordinator measured (`Evidence`); and the figures that go with them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import checks

RSS_TOLERANCE = 0.10

Check = tuple[str, bool, str]  # (name, passed, figures)


@dataclass
class Evidence:
    args: object  # the coordinator's argparse namespace
    results: list[dict]  # one per worker that wrote its results
    oracle_results: dict | None
    rss: dict
    fds: dict
    metrics: dict  # /metrics after the soak, summed over shards
    sockets: dict  # `ss` counts by state, per side
    peak: dict
    run_queue: checks.RunQueueWait
    broker_alive: bool
    broker_died_at: float | None
    broker_log: str
    worker_codes: list
    oracle_code: int | None
    retained_fresh: int  # retained messages of the fresh broker: its $SYS topics
    summary: dict = field(default_factory=dict)  # each check adds its details here

    @property
    def stats(self) -> Counter:
        total = Counter()
        for r in self.results:
            total.update(r["stats"])
        return total

    def each(self, key: str) -> list:
        """A list from every worker's results, concatenated."""
        return [item for r in self.results for item in r[key]]


def load(artifacts: Path, workers: int) -> tuple[list[dict], dict | None]:
    """The results the workers and the oracle process wrote (missing ones are left out)."""
    results = []
    for i in range(workers):
        path = artifacts / f"worker{i}-results.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
    path = artifacts / "oracle-results.json"
    return results, json.loads(path.read_text()) if path.exists() else None


def rss_back(e: Evidence) -> Check:
    rss, fds = e.rss, e.fds
    ratio = rss["after_kb"] / rss["fresh_kb"]
    return ("RSS back within 10 % of a fresh broker", ratio <= 1 + RSS_TOLERANCE,
            f"fresh {rss['fresh_kb']} KiB, after warm-up {rss['warm_kb']} KiB, peak "
            f"{rss['peak_kb']} KiB, after {rss['after_kb']} KiB = {ratio:.2f}× fresh, "
            f"{rss['after_kb'] / rss['warm_kb']:.2f}× warm; {rss['after_rewarm_kb']} KiB "
            f"after a second warm-up (descriptors {fds['fresh']} → {fds['after']})")


def no_half_open(e: Evidence) -> Check:
    sockets, metrics = e.sockets, e.metrics
    held = {side: sum(sockets[side][s] for s in ("ESTAB", "CLOSE-WAIT", "SYN-RECV"))
            for side in sockets}
    ok = (held["broker"] == 0 and held["client"] == 0
          and metrics["fanfare_connections"] == 0 and metrics["fanfare_sockets"] == 0)
    return ("no connection left half-open", ok,
            f"ss on the broker's ports: broker side {dict(sockets['broker']) or 'none'}, "
            f"client side {dict(sockets['client']) or 'none'}; /metrics sockets "
            f"{metrics['fanfare_sockets']}, connections {metrics['fanfare_connections']}")


def closes_in_time(e: Evidence) -> Check:
    slack_s = e.args.slack
    kinds = checks.deadline_summary(e.each("deadlines"), slack_s, e.run_queue.during)
    e.summary["deadlines"] = kinds
    late = sum(d["late_or_never"] for d in kinds.values())
    over_slack = sum(d["over_slack"] for d in kinds.values())
    watched = sum(d["watched"] for d in kinds.values())
    worst_lag = max((r["loop_lag"]["worst_s"] for r in e.results), default=0.0)
    starved = e.run_queue.worst_interval_s()
    e.summary["broker_run_queue_worst_s_per_s"] = round(starved, 3)
    return ("every watched connection closed within its deadline", late == 0 and watched > 0,
            f"{watched} watched, {late} late or never; {over_slack} past limit + {slack_s} s "
            f"before allowing for CPU starvation (workers' loops up to {worst_lag:.2f} s late, "
            f"a shard up to {starved:.2f} s runnable without a CPU in one second); "
            "worst/limit: " + ", ".join(
                f"{k} {d['watched']} ({d['worst_s']:.1f}/{d['limit_s']} s)"
                for k, d in sorted(kinds.items())))


def delivered(e: Evidence) -> Check:
    sent = e.each("sent")
    totals = checks.sent_totals(sent)
    if e.oracle_results is None:
        verdict = {"counts": {"no_oracle_results": 1}, "missing_examples": [],
                   "wrong_examples": []}
    else:
        verdict = checks.verify_deliveries(sent, e.oracle_results["oracles"])
    e.summary.update(sent=totals, delivery=verdict)
    c = Counter(verdict["counts"])
    lost_publishers = e.each("lost_well_behaved")
    ok = (e.oracle_results is not None and c["oracles_lost"] == 0
          and c["missing_qos1"] == 0 and c["missing_qos2"] == 0
          and c["duplicates_qos2"] == 0 and c["wrong_topic_or_qos"] == 0
          and c["unknown_messages"] == 0 and c["unparsable"] == 0
          and c["expected_qos1"] > 0 and c["expected_qos2"] > 0
          and not lost_publishers)
    return ("every accepted QoS 1/2 message reached every matching oracle", ok,
            f"sent QoS0/1/2 {totals.get('sent_qos0', 0)}/{totals.get('sent_qos1', 0)}/"
            f"{totals.get('sent_qos2', 0)}, accepted QoS1/2 {totals.get('accepted_qos1', 0)}/"
            f"{totals.get('accepted_qos2', 0)}; oracle deliveries expected at QoS1/2 "
            f"{c['expected_qos1']}/{c['expected_qos2']}, received {c['received_qos1']}/"
            f"{c['received_qos2']}, missing {c['missing_qos1']}/{c['missing_qos2']}, "
            f"duplicates {c['duplicates_qos1']}/{c['duplicates_qos2']}, wrong topic or QoS "
            f"{c['wrong_topic_or_qos']}, unknown {c['unknown_messages']}, oracles lost "
            f"{c['oracles_lost']}, well-behaved publishers lost {len(lost_publishers)}")


def told_why(e: Evidence) -> Check:
    told = Counter()
    for key, count in e.stats.items():
        if ".v5_disconnect_0x" in key:
            told[key.rsplit(".", 1)[1] == "True"] += count
    return ("MQTT 5 clients told why (DISCONNECT 0x8D keep-alive, 0x8E takeover)",
            told[False] == 0 and told[True] > 0,
            f"{told[True]} told, {told[False]} closed without it")


def session_present(e: Evidence) -> Check:
    sessions = Counter()
    for r in e.results:
        sessions.update(r["session_checks"])
    e.summary["session_checks"] = dict(sessions)
    return ("session present as earlier visits imply", sessions["mismatch"] == 0,
            f"{sessions['ok']} right, {sessions['mismatch']} wrong, "
            f"{sessions['skipped_near_expiry']} too near an expiry to call, "
            f"{sessions['unknown_after_error']} after an error, {sessions['not_in_mqtt31']} "
            f"MQTT 3.1 (no flag)")


def broker_healthy(e: Evidence) -> Check:
    left = {k: e.metrics[k] for k in ("fanfare_sessions", "fanfare_offline_sessions",
                                      "fanfare_subscriptions", "fanfare_retained_messages")}
    panics = e.broker_log.count("panicked")
    # A fresh broker already holds its $SYS topics as retained messages: those stay.
    own_retained = e.retained_fresh
    left["fanfare_retained_messages"] -= own_retained
    ok = (e.broker_alive and e.broker_died_at is None and panics == 0
          and all(v == 0 for v in left.values()))
    return ("broker alive, no panic, no state left", ok,
            f"alive {e.broker_alive}, panics {panics}, log lines "
            f"{e.broker_log.count(chr(10))}, left: {left} (retained: beyond the "
            f"{own_retained} $SYS messages of a fresh broker)")


def harness_clean(e: Evidence) -> Check:
    bugs = e.each("bugs")
    ok = (len(e.results) == e.args.workers and e.oracle_code == 0 and not bugs
          and all(code == 0 for code in e.worker_codes))
    return ("soak harness ran cleanly", ok,
            f"workers {e.worker_codes}, oracle exit {e.oracle_code}, soak bugs {len(bugs)}")


CHECKS = (rss_back, no_half_open, closes_in_time, delivered, told_why, session_present,
          broker_healthy, harness_clean)


def judge(e: Evidence) -> list[str]:
    """Every check as a `PASS  name: figures` or `FAIL  ...` line."""
    lines = []
    for check in CHECKS:
        name, ok, figures = check(e)
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}: {figures}")
    return lines


def figures(e: Evidence) -> dict:
    """What the clients did, for the report and summary.json."""
    stats = e.stats
    started = {k.rsplit(".", 1)[0]: v for k, v in stats.items() if k.endswith(".started")}
    return {
        "clients_started": sum(started.values()) + e.args.oracles,
        "by_behaviour": started,
        "client_errors": {k: v for k, v in stats.items() if ".error." in k},
        "peak": e.peak,
        "peak_clients_per_worker": [r["peak_clients"] for r in e.results],
        "broker_metrics_after": e.metrics,
        "stats": dict(stats),
    }


def examples(e: Evidence) -> list[str]:
    """What to look at first when a check fails."""
    out = []
    delivery = e.summary.get("delivery", {})
    out += delivery.get("missing_examples", []) + delivery.get("wrong_examples", [])
    for d in e.summary.get("deadlines", {}).values():
        out += d["examples"]
    out += [f"soak bug: {bug}" for bug in e.each("bugs")[:3]]
    return out
