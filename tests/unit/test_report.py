"""report: what a run did, for people and machines.

* ``summary``: the run's one log line;
* ``recorded`` / ``record``: the run kept as its scope's ``last_run`` in
  the state file (state.ScopeRecord), with what is now in each cache nsscache
  wrote; an ok run also becomes the shrink guard's accepted counts and the
  last success; a refused run is counted;
* ``metrics_text`` / ``write_metrics``: the Prometheus textfile for
  node_exporter, read back here with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections import Counter
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nss_cache_coreweave import report, state
from nss_cache_coreweave.errors import InternalError
from nss_cache_coreweave.policy import Drop
from nss_cache_coreweave.run import count_drops, report_of
from nss_cache_coreweave.scim import Stats
from nss_cache_coreweave.state import STATE_FILE, CacheRecord, Counts, RunReport, ScopeRecord

NOW = 1_780_000_000.5
LATER = NOW + 3600
SCOPE = "https://api.coreweave.test/scim/cw-test groups=slurm-users,slurm-admins"
OTHER = "https://api.coreweave.test/scim/cw-test groups=*"
MAPS = ("passwd", "group", "shadow", "sshkey")
RUN = "20260528T202638Z-0123456789ab"
LATER_RUN = "20260528T212638Z-ba9876543210"

# The demo org's good run: 4 users (shadow: 4), 2 groups, 4 keys; frank's garbage key and dave dropped.
OK = RunReport(
    started=NOW - 2.0, duration=1.234, outcome="ok", run=RUN, users=4, groups=2, keys=4, maps_written=MAPS,
    drops={"key/key": 1, "user/inactive": 1}, requests={"Groups/2xx": 1, "Users/2xx": 2}, retries=1, bytes=9229,
)
FAILED = RunReport(
    started=LATER - 1.0, duration=0.5, outcome="failed", run=LATER_RUN, error_kind="AuthError",
    error="Groups page 1: HTTP 401", requests={"Groups/4xx": 1},
)
REFUSED = RunReport(
    started=LATER - 1.0, duration=0.75, outcome="refused", run=LATER_RUN, error_kind="GuardError",
    error="refusing to shrink users from 4 to 1", requests={"Groups/2xx": 1, "Users/2xx": 1},
)
INCOMPLETE = replace(
    OK, started=LATER - 2.0, run=LATER_RUN, outcome="incomplete", error_kind="NotWritten",
    error="nsscache did not write shadow, sshkey (see its log)", users=3, maps_written=("passwd", "group"),
    maps_not_written=("shadow", "sshkey"),
)


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """``clock(t)``: time.time() returns t (NOW until told otherwise)."""

    def set_clock(t: float) -> None:
        monkeypatch.setattr(time, "time", lambda: t)

    set_clock(NOW)
    return set_clock


# --- the summary line -------------------------------------------------------------------------------


def test_summary_of_an_ok_run():
    assert report.summary(OK) == (
        "run ok in 1.23 s: 4 users, 2 groups, 4 SSH keys; dropped: key/key 1, user/inactive 1; "
        f"3 requests, 1 retries; nsscache wrote: passwd, group, shadow, sshkey (run {RUN})"
    )


def test_summary_of_an_ok_run_without_drops_says_none():
    assert "; dropped: none; " in report.summary(replace(OK, drops={}))


def test_summary_of_an_incomplete_run_ends_with_what_was_not_written():
    assert report.summary(INCOMPLETE) == (
        "run incomplete in 1.23 s: 3 users, 2 groups, 4 SSH keys; dropped: key/key 1, user/inactive 1; "
        f"3 requests, 1 retries; nsscache wrote: passwd, group (run {LATER_RUN}); "
        "nsscache did not write shadow, sshkey (see its log)"
    )


def test_summary_of_a_run_nsscache_wrote_nothing_of():
    text = report.summary(replace(INCOMPLETE, maps_written=(), maps_not_written=MAPS))
    assert f"; nsscache wrote: none (run {LATER_RUN}); " in text


@pytest.mark.parametrize(
    "run, line",
    [
        pytest.param(FAILED, "run failed in 0.50 s after 1 requests: AuthError: Groups page 1: HTTP 401", id="failed"),
        pytest.param(REFUSED, "run refused in 0.75 s after 2 requests: GuardError: refusing to shrink users from 4 "
                     "to 1", id="refused"),
    ],
)
def test_summary_of_a_failed_or_refused_run_names_the_error(run, line):
    assert report.summary(run) == line


# --- the counters a report is made of ----------------------------------------------------------------


def test_drops_are_counted_by_kind_and_code_in_order():
    drops = [
        Drop("user", "dave", "is inactive", expected=True, code="inactive"),
        Drop("key", "frank", "key 2 does not decode", code="key"),
        Drop("user", "eve", "is inactive", expected=True, code="inactive"),
    ]

    counted = count_drops(drops)

    assert list(counted.items()) == [("key/key", 1), ("user/inactive", 2)]


def test_requests_are_counted_by_endpoint_and_status_class_in_order():
    stats = Stats(requests=Counter({("Users", "2xx"): 2, ("Users", "5xx"): 1, ("Groups", "2xx"): 1}))

    counted = report_of(InternalError("ValueError"), run="r", started=0.0, duration=0.0, stats=stats).requests

    assert list(counted.items()) == [("Groups/2xx", 1), ("Users/2xx", 2), ("Users/5xx", 1)]


# --- the run record ------------------------------------------------------------------------------------


def saved(state_dir, scope) -> dict:
    """The scope's record as the state file holds it."""
    return json.loads((state_dir / STATE_FILE).read_text())["scopes"][scope]


def last_run_of(run: RunReport) -> dict:
    """A report as the state file keeps it (JSON: lists for tuples)."""
    return {
        "started": run.started, "duration": run.duration, "outcome": run.outcome, "run": run.run,
        "error_kind": run.error_kind, "error": run.error, "users": run.users, "groups": run.groups,
        "keys": run.keys, "maps_written": list(run.maps_written), "maps_not_written": list(run.maps_not_written),
        "drops": run.drops, "requests": run.requests, "retries": run.retries, "bytes": run.bytes,
    }


OK_CACHES = {
    "passwd": {"run": RUN, "time": NOW, "count": 4},  # users
    "group": {"run": RUN, "time": NOW, "count": 2},  # groups
    "shadow": {"run": RUN, "time": NOW, "count": 4},  # users
    "sshkey": {"run": RUN, "time": NOW, "count": 4},  # keys
}


def test_an_ok_run_is_recorded_with_its_caches_counts_and_success(tmp_path):
    record = report.record(str(tmp_path), SCOPE, OK)

    assert saved(tmp_path, SCOPE) == {
        "last_run": last_run_of(OK),
        "caches": OK_CACHES,
        "users": 4, "groups": 2, "time": NOW,  # the shrink guard's accepted counts
        "last_success": NOW,
    }
    assert record == state.read(str(tmp_path), SCOPE)  # what was written
    assert (record.last_run, record.accepted) == (OK, Counts(users=4, groups=2, time=NOW))


def test_a_failed_run_replaces_the_last_run_only(tmp_path, clock):
    report.record(str(tmp_path), SCOPE, OK)
    clock(LATER)

    report.record(str(tmp_path), SCOPE, FAILED)

    assert saved(tmp_path, SCOPE) == {
        "last_run": last_run_of(FAILED),
        "caches": OK_CACHES,  # nsscache wrote nothing: the caches are the good run's
        "users": 4, "groups": 2, "time": NOW,
        "last_success": NOW,
    }


def test_refused_runs_are_counted(tmp_path, clock):
    report.record(str(tmp_path), SCOPE, OK)
    clock(LATER)

    first = report.record(str(tmp_path), SCOPE, REFUSED)
    second = report.record(str(tmp_path), SCOPE, REFUSED)

    assert (first.shrink_refusals, second.shrink_refusals) == (1, 2)
    assert saved(tmp_path, SCOPE) == {
        "last_run": last_run_of(REFUSED),
        "caches": OK_CACHES,
        "users": 4, "groups": 2, "time": NOW,  # a refused run is never accepted
        "last_success": NOW,
        "shrink_refusals": 2,
    }


def test_an_incomplete_run_records_the_caches_it_wrote_and_is_no_success(tmp_path, clock):
    report.record(str(tmp_path), SCOPE, OK)
    clock(LATER)

    report.record(str(tmp_path), SCOPE, INCOMPLETE)

    assert saved(tmp_path, SCOPE) == {
        "last_run": last_run_of(INCOMPLETE),
        "caches": {
            "passwd": {"run": LATER_RUN, "time": LATER, "count": 3},
            "group": {"run": LATER_RUN, "time": LATER, "count": 2},
            "shadow": OK_CACHES["shadow"],  # still the good run's
            "sshkey": OK_CACHES["sshkey"],
        },
        "users": 4, "groups": 2, "time": NOW,
        "last_success": NOW,
    }


def test_a_record_touches_only_its_scope(tmp_path):
    report.record(str(tmp_path), OTHER, REFUSED)

    report.record(str(tmp_path), SCOPE, OK)

    assert saved(tmp_path, OTHER) == {"last_run": last_run_of(REFUSED), "shrink_refusals": 1}


def test_recorded_changes_nothing_but_the_record_it_returns():
    before = ScopeRecord(accepted=Counts(4, 2, NOW), last_success=NOW, shrink_refusals=1,
                         caches={"passwd": CacheRecord(RUN, NOW, 4)})

    after = report.recorded(before, INCOMPLETE, LATER)

    assert after == replace(before, last_run=INCOMPLETE, caches={"passwd": CacheRecord(LATER_RUN, LATER, 3),
                                                                 "group": CacheRecord(LATER_RUN, LATER, 2)})
    assert before.caches == {"passwd": CacheRecord(RUN, NOW, 4)}


def test_a_record_in_a_directory_that_cannot_be_created_raises_oserror(tmp_path):
    (tmp_path / "file").write_text("")

    with pytest.raises(OSError):
        report.record(str(tmp_path / "file" / "state"), SCOPE, OK)


# --- the Prometheus textfile ----------------------------------------------------------------------------


def samples(text: str) -> dict:
    """{(sample name, ((label, value), ...)): value} of a textfile."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families(text: str) -> dict:
    """{family name: type} of a textfile (the parser names a counter without ``_total``)."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


P = "nsscache_coreweave_"


def test_metrics_of_an_ok_run(tmp_path):
    entry = report.record(str(tmp_path), SCOPE, OK)

    text = report.metrics_text(OK, entry)

    assert samples(text) == {
        (P + "last_run_timestamp_seconds", ()): NOW - 2.0,
        (P + "last_run_success", ()): 1.0,
        (P + "last_success_timestamp_seconds", ()): NOW,
        (P + "run_duration_seconds", ()): 1.234,
        (P + "http_requests", (("endpoint", "Groups"), ("status_class", "2xx"))): 1.0,
        (P + "http_requests", (("endpoint", "Users"), ("status_class", "2xx"))): 2.0,
        (P + "http_retries", ()): 1.0,
        (P + "http_response_bytes", ()): 9229.0,
        (P + "users", ()): 4.0,
        (P + "groups", ()): 2.0,
        (P + "ssh_keys", ()): 4.0,
        (P + "map_written", (("map", "passwd"),)): 1.0,
        (P + "map_written", (("map", "group"),)): 1.0,
        (P + "map_written", (("map", "shadow"),)): 1.0,
        (P + "map_written", (("map", "sshkey"),)): 1.0,
        (P + "dropped_entries", (("kind", "key"), ("reason", "key"))): 1.0,
        (P + "dropped_entries", (("kind", "user"), ("reason", "inactive"))): 1.0,
        (P + "shrink_guard_refusals_total", ()): 0.0,
    }


def test_metric_types_and_help():
    text = report.metrics_text(OK, ScopeRecord(last_success=NOW))

    assert families(text) == {
        P + name: "gauge"
        for name in ("last_run_timestamp_seconds", "last_run_success", "last_success_timestamp_seconds",
                     "run_duration_seconds", "http_requests", "http_retries", "http_response_bytes", "users",
                     "groups", "ssh_keys", "map_written", "dropped_entries")
    } | {P + "shrink_guard_refusals": "counter"}
    assert all(family.documentation for family in text_string_to_metric_families(text))


def test_metrics_after_a_failed_run_keep_the_last_success_and_the_caches(tmp_path, clock):
    report.record(str(tmp_path), SCOPE, OK)
    clock(LATER)
    failed = replace(FAILED, requests={"Users/5xx": 2}, retries=1, bytes=120)
    entry = report.record(str(tmp_path), SCOPE, failed)

    text = report.metrics_text(failed, entry)

    assert samples(text) == {
        (P + "last_run_timestamp_seconds", ()): LATER - 1.0,
        (P + "last_run_success", ()): 0.0,
        (P + "last_success_timestamp_seconds", ()): NOW,
        (P + "run_duration_seconds", ()): 0.5,
        (P + "http_requests", (("endpoint", "Users"), ("status_class", "5xx"))): 2.0,
        (P + "http_retries", ()): 1.0,
        (P + "http_response_bytes", ()): 120.0,
        (P + "users", ()): 4.0,  # what the caches hold: the good run's
        (P + "groups", ()): 2.0,
        (P + "ssh_keys", ()): 4.0,
        (P + "shrink_guard_refusals_total", ()): 0.0,
    }


def test_metrics_of_an_incomplete_run_say_which_maps_were_written(tmp_path, clock):
    report.record(str(tmp_path), SCOPE, OK)
    clock(LATER)
    entry = report.record(str(tmp_path), SCOPE, INCOMPLETE)

    found = samples(report.metrics_text(INCOMPLETE, entry))

    assert {name: found[(P + "map_written", (("map", name),))] for name in MAPS} == {
        "passwd": 1.0, "group": 1.0, "shadow": 0.0, "sshkey": 0.0,
    }
    assert found[(P + "last_run_success", ())] == 0.0
    assert found[(P + "users", ())] == 3.0  # passwd.cache as this run wrote it
    assert found[(P + "ssh_keys", ())] == 4.0  # sshkey.cache as the good run wrote it


def test_metrics_before_any_success_have_no_success_time_nor_cache_counts():
    text = report.metrics_text(FAILED, ScopeRecord())

    found = samples(text)
    assert P + "last_success_timestamp_seconds" not in families(text)
    assert not [key for key in found if key[0] in (P + "users", P + "groups", P + "ssh_keys")]
    assert found[(P + "shrink_guard_refusals_total", ())] == 0.0


def test_metrics_count_the_refusals_of_the_entry(tmp_path):
    report.record(str(tmp_path), SCOPE, OK)
    report.record(str(tmp_path), SCOPE, REFUSED)
    entry = report.record(str(tmp_path), SCOPE, REFUSED)

    found = samples(report.metrics_text(REFUSED, entry))

    assert found[(P + "shrink_guard_refusals_total", ())] == 2.0
    assert found[(P + "last_run_success", ())] == 0.0


def test_label_values_are_escaped():
    endpoint = 'Us"ers\\x\ny'  # a quote, a backslash, a line break

    found = samples(report.metrics_text(replace(OK, requests={f"{endpoint}/2xx": 1}), ScopeRecord()))

    assert found[(P + "http_requests", (("endpoint", endpoint), ("status_class", "2xx")))] == 1.0


def test_write_metrics_replaces_the_file_whole(tmp_path):
    path = tmp_path / "coreweave.prom"
    path.write_text("old\n")

    report.write_metrics(str(path), OK, ScopeRecord(last_success=NOW))

    assert path.read_text() == report.metrics_text(OK, ScopeRecord(last_success=NOW))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter reads it
    assert os.listdir(tmp_path) == ["coreweave.prom"]  # no temporary file left


def test_write_metrics_into_a_missing_directory_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        report.write_metrics(str(tmp_path / "missing" / "coreweave.prom"), OK, ScopeRecord())


# --- mirror mode ---------------------------------------------------------------------------------------------

MIRROR_URL = "https://mirror.example.com/bundle"
MIRRORED = replace(OK, requests={"mirror/2xx": 3}, mirror=MIRROR_URL, generation=1_780_000_000,
                   published=NOW - 60.5)


def test_metrics_of_a_mirror_run_name_the_mirror_its_generation_and_publication_time():
    found = samples(report.metrics_text(MIRRORED, ScopeRecord(last_success=NOW)))

    assert found[(P + "mirror_generation", (("mirror", MIRROR_URL),))] == 1_780_000_000.0
    assert found[(P + "mirror_published_timestamp_seconds", (("mirror", MIRROR_URL),))] == NOW - 60.5
    assert found[(P + "http_requests", (("endpoint", "mirror"), ("status_class", "2xx")))] == 3.0


def test_the_mirror_metrics_are_two_gauge_lines():
    text = report.metrics_text(MIRRORED, ScopeRecord())

    assert [line for line in text.splitlines() if "mirror_" in line and not line.startswith("#")] == [
        f'{P}mirror_generation{{mirror="{MIRROR_URL}"}} 1780000000.0',
        f'{P}mirror_published_timestamp_seconds{{mirror="{MIRROR_URL}"}} {NOW - 60.5!r}',
    ]
    assert {name: kind for name, kind in families(text).items() if "mirror_" in name} == {
        P + "mirror_generation": "gauge", P + "mirror_published_timestamp_seconds": "gauge"}


def test_the_mirror_label_is_escaped():
    url = 'https://mirror.example.com/a"b\\c\nd'  # a quote, a backslash, a line break

    text = report.metrics_text(replace(MIRRORED, mirror=url), ScopeRecord())

    assert f'{P}mirror_generation{{mirror="https://mirror.example.com/a\\"b\\\\c\\nd"}} 1780000000.0' in text
    assert samples(text)[(P + "mirror_generation", (("mirror", url),))] == 1_780_000_000.0


def test_a_mirror_run_that_accepted_no_bundle_shows_generation_zero():
    failed = replace(FAILED, mirror=MIRROR_URL)

    found = samples(report.metrics_text(failed, ScopeRecord()))

    assert found[(P + "mirror_generation", (("mirror", MIRROR_URL),))] == 0.0
    assert found[(P + "mirror_published_timestamp_seconds", (("mirror", MIRROR_URL),))] == 0.0


def test_an_iam_run_has_no_mirror_metrics():
    assert "mirror" not in report.metrics_text(OK, ScopeRecord(last_success=NOW))


def test_the_summary_of_a_mirror_run_names_the_generation():
    assert report.summary(MIRRORED).endswith(f"(run {RUN}); mirror generation 1780000000")


def test_a_mirror_run_is_recorded_with_its_generation(tmp_path):
    saved = report.record(str(tmp_path), "mirror " + MIRROR_URL + " groups=*", MIRRORED)

    assert saved.last_run == MIRRORED
    assert state.read(str(tmp_path), "mirror " + MIRROR_URL + " groups=*").last_run.generation == 1_780_000_000
