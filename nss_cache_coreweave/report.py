"""What a run did, for people and machines: the run record kept in the state
file (read by ``nsscache-coreweave status``), the one-line summary in the
log, and the Prometheus textfile for node_exporter."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

from . import state

__all__ = ["RunReport", "record", "summary", "metrics_text", "write_metrics"]

PREFIX = "nsscache_coreweave"


# What each cache counts, for the run record's "caches" and the metrics.
COUNTED = {"passwd": "users", "group": "groups", "shadow": "users", "sshkey": "keys"}


@dataclass(frozen=True)
class RunReport:
    started: float  # time.time()
    duration: float  # seconds (listing and policy)
    outcome: str  # "ok" (nsscache wrote every map it asked for), "incomplete" (it did not write
    # maps_not_written), "failed", "refused" (a whole-run guard said no); "decided" until then
    run: str = ""  # the run id, named on the first line of every cache this run wrote
    error_kind: str = ""  # e.g. "FetchError"
    error: str = ""  # the message (never holds the token)
    users: int = 0  # accepted by policy (handed to nsscache)
    groups: int = 0
    keys: int = 0
    maps_written: Tuple[str, ...] = ()
    maps_not_written: Tuple[str, ...] = ()
    drops: Dict[str, int] = field(default_factory=dict)  # "kind/code" -> count
    requests: Dict[str, int] = field(default_factory=dict)  # "Users/2xx" -> count
    retries: int = 0
    bytes: int = 0

    @staticmethod
    def count_drops(drops) -> Dict[str, int]:
        return dict(sorted(Counter(f"{d.kind}/{d.code}" for d in drops).items()))

    @staticmethod
    def count_requests(stats) -> Dict[str, int]:
        return {f"{endpoint}/{status}": n for (endpoint, status), n in sorted(stats.requests.items())}


def record(state_dir: str, scope: str, report: RunReport) -> dict:
    """Keep ``report`` as the scope's last run, and what is now in each cache
    nsscache wrote ("caches": run, time, count); for a run whose every map was
    written, its counts for the shrink guard and its time; for a refused one,
    the count of refusals. One write; returns the scope's whole entry.
    :raises OSError:"""
    saved: dict = {}
    now = time.time()

    def change(entry: dict) -> None:
        entry["last_run"] = asdict(report)
        caches = entry.get("caches")
        if not isinstance(caches, dict):
            caches = {}
        for name in report.maps_written:
            caches[name] = {"run": report.run, "time": now, "count": getattr(report, COUNTED[name])}
        entry["caches"] = caches
        if report.outcome == "ok":
            state.accept(entry, report.users, report.groups)
            entry["last_success"] = now
        if report.outcome == "refused":
            entry["shrink_refusals"] = int(entry.get("shrink_refusals", 0)) + 1
        saved.update(entry)

    state.update(state_dir, scope, change)
    return saved


def summary(report: RunReport) -> str:
    """The run's one log line."""
    requests = sum(report.requests.values())
    if report.outcome in ("ok", "incomplete"):
        dropped = ", ".join(f"{k} {n}" for k, n in report.drops.items()) or "none"
        written = ", ".join(report.maps_written) or "none"
        text = (
            f"run {report.outcome} in {report.duration:.2f} s: {report.users} users, {report.groups} groups, "
            f"{report.keys} SSH keys; dropped: {dropped}; {requests} requests, {report.retries} retries; "
            f"nsscache wrote: {written} (run {report.run})"
        )
        return text if report.outcome == "ok" else f"{text}; {report.error}"
    return (f"run {report.outcome} in {report.duration:.2f} s after {requests} requests: "
            f"{report.error_kind}: {report.error}")


def metrics_text(report: RunReport, entry: dict) -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: Tuple[Tuple[Dict[str, str], float], ...]) -> None:
        lines.append(f"# HELP {PREFIX}_{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}_{name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{PREFIX}_{name}{{{label_text}}} {value!r}" if labels else f"{PREFIX}_{name} {value!r}")

    last_success: Optional[float] = entry.get("last_success")
    metric("last_run_timestamp_seconds", "gauge", "When the last run started.", (({}, float(report.started)),))
    metric("last_run_success", "gauge", "1 if nsscache wrote every map of the last run, else 0.",
           (({}, 1.0 if report.outcome == "ok" else 0.0),))
    if last_success is not None:
        metric("last_success_timestamp_seconds", "gauge", "When the last successful run ended.",
               (({}, float(last_success)),))
    metric("run_duration_seconds", "gauge", "Duration of the last run (listing and policy).",
           (({}, float(report.duration)),))
    metric("http_requests", "gauge", "HTTP requests of the last run by endpoint and status class.",
           tuple(({"endpoint": k.split("/")[0], "status_class": k.split("/")[1]}, float(n))
                 for k, n in report.requests.items()))
    metric("http_retries", "gauge", "Retries in the last run.", (({}, float(report.retries)),))
    metric("http_response_bytes", "gauge", "Response bytes received in the last run.", (({}, float(report.bytes)),))
    caches = entry.get("caches")
    if not isinstance(caches, dict):
        caches = {}

    def in_cache(name: str) -> Tuple[Tuple[Dict[str, str], float], ...]:
        found = caches.get(name)
        return (({}, float(found["count"])),) if isinstance(found, dict) and "count" in found else ()

    metric("users", "gauge", "Users in passwd.cache as nsscache last wrote it.", in_cache("passwd"))
    metric("groups", "gauge", "Groups in group.cache as nsscache last wrote it.", in_cache("group"))
    metric("ssh_keys", "gauge", "SSH keys in sshkey.cache as nsscache last wrote it.", in_cache("sshkey"))
    metric("map_written", "gauge", "1 if nsscache wrote this map in the last run, else 0.",
           tuple(({"map": m}, 1.0 if m in report.maps_written else 0.0)
                 for m in report.maps_written + report.maps_not_written))
    metric("dropped_entries", "gauge", "Entries dropped by the last run, by kind and reason.",
           tuple(({"kind": k.split("/")[0], "reason": k.split("/")[1]}, float(n)) for k, n in report.drops.items()))
    metric("shrink_guard_refusals_total", "counter", "Runs refused by the shrink guard.",
           (({}, float(entry.get("shrink_refusals", 0))),))
    return "\n".join(lines) + "\n"


def write_metrics(path: str, report: RunReport, entry: dict) -> None:
    """Write the textfile atomically (node_exporter must never read half a file).
    :raises OSError:"""
    state.write_atomically(path, metrics_text(report, entry), 0o644)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

