"""What a run did, for people and machines: its report kept in the state
file (state.ScopeRecord, read by ``nsscache-coreweave status``), the
one-line summary in the log, and the Prometheus textfile for node_exporter."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Dict, List, Tuple

from . import state
from .state import CacheRecord, Counts, RunReport, ScopeRecord

__all__ = ["recorded", "record", "summary", "metrics_text", "write_metrics"]

PREFIX = "nsscache_coreweave"


# What each cache counts, for the record of the caches and the metrics.
COUNTED = {"passwd": "users", "group": "groups", "shadow": "users", "sshkey": "keys"}


def recorded(previous: ScopeRecord, report: RunReport, now: float) -> ScopeRecord:
    """The scope's record once ``report`` is kept as its last run, with what is
    now in each cache nsscache wrote; a run whose every map was written also
    becomes the accepted counts (for the shrink guard) and the last success; a
    refused one is counted."""
    caches = dict(previous.caches)
    for name in report.maps_written:
        caches[name] = CacheRecord(report.run, now, getattr(report, COUNTED[name]))
    done = replace(previous, last_run=report, caches=caches)
    if report.outcome == "ok":
        done = replace(done, accepted=Counts(report.users, report.groups, now), last_success=now)
    if report.outcome == "refused":
        done = replace(done, shrink_refusals=previous.shrink_refusals + 1)
    return done


def record(state_dir: str, scope: str, report: RunReport) -> ScopeRecord:
    """Keep ``report`` in the state file (see ``recorded``): one write; returns
    the scope's new record. :raises OSError:"""
    done = recorded(state.read(state_dir, scope), report, time.time())
    state.write(state_dir, scope, done)
    return done


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
        ) + (f"; mirror generation {report.generation}" if report.mirror else "") + (
            "; only the members' users fetched" if report.fetch == "members" else "")
        return text if report.outcome == "ok" else f"{text}; {report.error}"
    return (f"run {report.outcome} in {report.duration:.2f} s after {requests} requests: "
            f"{report.error_kind}: {report.error}")


Samples = Tuple[Tuple[Dict[str, str], float], ...]  # (labels, value) of each sample of a metric


def metrics_text(report: RunReport, record: ScopeRecord) -> str:
    """Prometheus text exposition format (version 0.0.4): the last run's
    ``report`` and its scope's ``record`` (what the caches hold)."""
    families: List[Tuple[str, str, str, Samples]] = [
        ("last_run_timestamp_seconds", "gauge", "When the last run started.", (({}, float(report.started)),)),
        ("last_run_success", "gauge", "1 if nsscache wrote every map of the last run, else 0.",
         (({}, 1.0 if report.outcome == "ok" else 0.0),)),
    ]
    if record.last_success is not None:
        families.append(("last_success_timestamp_seconds", "gauge", "When the last successful run ended.",
                         (({}, float(record.last_success)),)))
    families += [
        ("run_duration_seconds", "gauge", "Duration of the last run (listing and policy).",
         (({}, float(report.duration)),)),
        ("http_requests", "gauge", "HTTP requests of the last run by endpoint and status class.",
         tuple(({"endpoint": k.split("/")[0], "status_class": k.split("/")[1]}, float(n))
               for k, n in report.requests.items())),
        ("http_retries", "gauge", "Retries in the last run.", (({}, float(report.retries)),)),
        ("http_response_bytes", "gauge", "Response bytes received in the last run.", (({}, float(report.bytes)),)),
        ("users", "gauge", "Users in passwd.cache as nsscache last wrote it.", _in_cache(record, "passwd")),
        ("groups", "gauge", "Groups in group.cache as nsscache last wrote it.", _in_cache(record, "group")),
        ("ssh_keys", "gauge", "SSH keys in sshkey.cache as nsscache last wrote it.", _in_cache(record, "sshkey")),
        ("map_written", "gauge", "1 if nsscache wrote this map in the last run, else 0.",
         tuple(({"map": m}, 1.0 if m in report.maps_written else 0.0)
               for m in report.maps_written + report.maps_not_written)),
        ("dropped_entries", "gauge", "Entries dropped by the last run, by kind and reason.",
         tuple(({"kind": k.split("/")[0], "reason": k.split("/")[1]}, float(n)) for k, n in report.drops.items())),
        ("shrink_guard_refusals_total", "counter", "Runs refused by the shrink guard.",
         (({}, float(record.shrink_refusals)),)),
    ]
    if report.fetch:
        families.append(("users_fetched_by_id", "gauge", "1 if the last run fetched only the allowed groups' "
                         "members by id (coreweave_fetch), 0 if it listed every user.",
                         (({}, 1.0 if report.fetch == "members" else 0.0),)))
    if report.mirror:
        mirror = {"mirror": report.mirror}
        families += [
            ("mirror_generation", "gauge", "Generation of the bundle the last run read from the mirror (0: none "
             "accepted).", ((mirror, float(report.generation)),)),
            ("mirror_published_timestamp_seconds", "gauge", "When the bundle the last run read was published "
             "(0: none accepted).", ((mirror, float(report.published)),)),
        ]
    return "".join(_metric(*family) for family in families)


def write_metrics(path: str, report: RunReport, record: ScopeRecord) -> None:
    """Write the textfile atomically (node_exporter must never read half a file).
    :raises OSError:"""
    state.write_atomically(path, metrics_text(report, record), 0o644)


def _metric(name: str, kind: str, help_text: str, samples: Samples) -> str:
    lines = [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{PREFIX}_{name}{{{label_text}}} {value!r}" if labels else f"{PREFIX}_{name} {value!r}")
    return "".join(line + "\n" for line in lines)


def _in_cache(record: ScopeRecord, name: str) -> Samples:
    found = record.caches.get(name)
    return (({}, float(found.count)),) if found is not None else ()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
