"""state: one ScopeRecord per scope (directory and allow-list), kept in one
JSON file, ``coreweave-state.json`` in ``coreweave_state_dir``, written
atomically and readable by root only. An unreadable or corrupt file, or a
malformed field, reads as nothing recorded (for the shrink guard: nothing to
compare with), never a crash; writing replaces it. A file written by the
previous version reads back, and what is written reads as it did there."""

from __future__ import annotations

import json
import os
import stat

import pytest

from nss_cache_coreweave import state
from nss_cache_coreweave.state import STATE_FILE, CacheRecord, Counts, RunReport, ScopeRecord

SCOPE = "https://api.coreweave.test/scim/cw-test groups=slurm-users"
OTHER = "https://api.coreweave.test/scim/cw-test groups=*"
NOW = 1_780_000_000.5
RUN = "20260528T202638Z-0123456789ab"

ACCEPTED = ScopeRecord(accepted=Counts(users=3, groups=2, time=NOW))
REPORT = RunReport(started=NOW - 2.0, duration=1.234, outcome="ok", run=RUN, users=3, groups=2, keys=4,
                   maps_written=("passwd", "group"), maps_not_written=("sshkey",), drops={"user/inactive": 1},
                   requests={"Groups/2xx": 1, "Users/2xx": 2}, retries=1, bytes=9229)
FULL = ScopeRecord(accepted=Counts(3, 2, NOW), last_run=REPORT,
                   caches={"passwd": CacheRecord(RUN, NOW, 3), "group": CacheRecord(RUN, NOW, 2)},
                   last_success=NOW, shrink_refusals=2)

# FULL as the previous version of this package wrote it (report.record, state.accept).
FULL_AS_WRITTEN = {
    "users": 3, "groups": 2, "time": NOW,
    "last_run": {
        "started": NOW - 2.0, "duration": 1.234, "outcome": "ok", "run": RUN, "error_kind": "", "error": "",
        "users": 3, "groups": 2, "keys": 4, "maps_written": ["passwd", "group"], "maps_not_written": ["sshkey"],
        "drops": {"user/inactive": 1}, "requests": {"Groups/2xx": 1, "Users/2xx": 2}, "retries": 1, "bytes": 9229,
    },
    "caches": {"passwd": {"run": RUN, "time": NOW, "count": 3}, "group": {"run": RUN, "time": NOW, "count": 2}},
    "last_success": NOW,
    "shrink_refusals": 2,
}


def state_file(directory):
    return directory / STATE_FILE


def written(directory) -> dict:
    return json.loads(state_file(directory).read_text())


def test_nothing_written_reads_as_an_empty_record(tmp_path):
    assert state.read(str(tmp_path), SCOPE) == ScopeRecord()
    assert state.read(str(tmp_path / "no-such-dir"), SCOPE) == ScopeRecord()
    assert ScopeRecord().accepted is None and ScopeRecord().last_run is None


def test_a_written_record_reads_back(tmp_path):
    state.write(str(tmp_path), SCOPE, FULL)
    assert state.read(str(tmp_path), SCOPE) == FULL


def test_writing_again_replaces_the_record(tmp_path):
    state.write(str(tmp_path), SCOPE, FULL)
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    assert state.read(str(tmp_path), SCOPE) == ACCEPTED


def test_scopes_are_kept_apart(tmp_path):
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    state.write(str(tmp_path), OTHER, FULL)
    assert state.read(str(tmp_path), SCOPE) == ACCEPTED
    assert state.read(str(tmp_path), OTHER) == FULL
    assert state.read(str(tmp_path), "elsewhere groups=x") == ScopeRecord()


def test_the_file_keeps_the_format_of_the_previous_version(tmp_path):
    state.write(str(tmp_path), SCOPE, FULL)
    assert written(tmp_path) == {"scopes": {SCOPE: FULL_AS_WRITTEN}}


def test_a_file_of_the_previous_version_reads_as_the_record(tmp_path):
    state_file(tmp_path).write_text(json.dumps({"scopes": {SCOPE: FULL_AS_WRITTEN}}))
    assert state.read(str(tmp_path), SCOPE) == FULL


def test_fields_at_their_default_are_left_out(tmp_path):
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    assert written(tmp_path) == {"scopes": {SCOPE: {"users": 3, "groups": 2, "time": NOW}}}


def test_an_older_run_report_without_the_maps_written_reads_with_none(tmp_path):
    older = {key: value for key, value in FULL_AS_WRITTEN["last_run"].items()
             if key not in ("maps_written", "maps_not_written", "run")}
    state_file(tmp_path).write_text(json.dumps({"scopes": {SCOPE: {"last_run": older}}}))
    last_run = state.read(str(tmp_path), SCOPE).last_run
    assert (last_run.outcome, last_run.run, last_run.maps_written, last_run.maps_not_written) == ("ok", "", (), ())


def test_the_file_is_json_readable_by_root_only(tmp_path):
    old_umask = os.umask(0)
    try:
        state.write(str(tmp_path), SCOPE, ACCEPTED)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(state_file(tmp_path).stat().st_mode) == 0o600


def test_a_group_readable_file_becomes_0600_when_rewritten(tmp_path):
    path = state_file(tmp_path)
    path.write_text("{}")
    path.chmod(0o644)
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_missing_state_directory_is_created(tmp_path):
    directory = tmp_path / "var" / "lib" / "nsscache"
    state.write(str(directory), SCOPE, ACCEPTED)
    assert state.read(str(directory), SCOPE) == ACCEPTED


def test_no_temporary_file_is_left_behind(tmp_path):
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    state.write(str(tmp_path), SCOPE, FULL)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    before = state_file(tmp_path).read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "fsync", disk_full)
    with pytest.raises(OSError):
        state.write(str(tmp_path), SCOPE, FULL)
    assert state_file(tmp_path).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_the_file_is_replaced_by_rename_never_rewritten_in_place(tmp_path):
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    inode = state_file(tmp_path).stat().st_ino
    state.write(str(tmp_path), SCOPE, FULL)
    assert state_file(tmp_path).stat().st_ino != inode


def test_write_atomically_gives_the_mode_and_replaces_the_file_whole(tmp_path):
    path = tmp_path / "metrics.prom"
    path.write_text("old and longer\n")
    state.write_atomically(str(path), "new\n", 0o644)
    assert (path.read_text(), stat.S_IMODE(path.stat().st_mode)) == ("new\n", 0o644)
    assert os.listdir(tmp_path) == ["metrics.prom"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"scopes": {"', id="truncated"),
        pytest.param(b"\xff\xfe garbage", id="binary"),
        pytest.param(b"[1, 2]", id="a-list"),
        pytest.param(b'{"scopes": []}', id="scopes-a-list"),
        pytest.param(json.dumps({"scopes": {SCOPE: "3"}}).encode(), id="entry-a-string"),
        pytest.param(json.dumps({"scopes": {SCOPE: {"users": "many", "groups": 2, "time": 1}}}).encode(),
                     id="users-a-word"),
        pytest.param(json.dumps({"scopes": {SCOPE: {"users": 3, "time": 1}}}).encode(), id="groups-missing"),
        pytest.param(json.dumps({"scopes": {SCOPE: {"users": None, "groups": 2, "time": 1}}}).encode(),
                     id="users-null"),
    ],
)
def test_a_corrupt_file_reads_as_nothing_accepted_and_is_replaced_by_the_next_write(tmp_path, content):
    state_file(tmp_path).write_bytes(content)
    assert state.read(str(tmp_path), SCOPE).accepted is None
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    assert state.read(str(tmp_path), SCOPE) == ACCEPTED


@pytest.mark.parametrize(
    "field, value, reads_as",
    [
        pytest.param("last_run", {"outcome": "ok"}, ScopeRecord(), id="last-run-without-start"),
        pytest.param("last_run", {"started": 1, "outcome": "ok", "users": "many"}, ScopeRecord(),
                     id="last-run-users-a-word"),
        pytest.param("last_run", [1], ScopeRecord(), id="last-run-a-list"),
        pytest.param("caches", {"passwd": {"run": RUN, "time": NOW}, "group": {"run": RUN, "time": NOW, "count": 2}},
                     ScopeRecord(caches={"group": CacheRecord(RUN, NOW, 2)}), id="a-cache-without-count"),
        pytest.param("caches", ["passwd"], ScopeRecord(), id="caches-a-list"),
        pytest.param("last_success", "yesterday", ScopeRecord(), id="last-success-a-word"),
        pytest.param("shrink_refusals", "two", ScopeRecord(), id="refusals-a-word"),
        # JSON as Python writes it allows NaN and Infinity: a hand-edited file must not stop every run.
        pytest.param("shrink_refusals", float("nan"), ScopeRecord(), id="refusals-nan"),
        pytest.param("shrink_refusals", float("inf"), ScopeRecord(), id="refusals-infinity"),
        pytest.param("last_success", float("inf"), ScopeRecord(), id="last-success-infinity"),
        pytest.param("last_run", {"started": 1, "outcome": "ok", "users": float("inf")}, ScopeRecord(),
                     id="last-run-users-infinity"),
        pytest.param("caches", {"passwd": {"run": RUN, "time": NOW, "count": float("nan")}}, ScopeRecord(),
                     id="a-cache-count-nan"),
    ],
)
def test_a_malformed_field_reads_as_not_recorded(tmp_path, field, value, reads_as):
    state_file(tmp_path).write_text(json.dumps({"scopes": {SCOPE: {field: value}}}))
    assert state.read(str(tmp_path), SCOPE) == reads_as


def test_writing_one_scope_keeps_what_it_cannot_read_of_the_others(tmp_path):
    state_file(tmp_path).write_text(json.dumps({"scopes": {OTHER: {"future": [1, 2]}}}))
    state.write(str(tmp_path), SCOPE, ACCEPTED)
    assert written(tmp_path)["scopes"][OTHER] == {"future": [1, 2]}


def test_writing_a_scope_keeps_its_fields_this_version_does_not_know(tmp_path):
    state_file(tmp_path).write_text(json.dumps({"scopes": {SCOPE: {**FULL_AS_WRITTEN, "future": {"a": 1}}}}))

    state.write(str(tmp_path), SCOPE, ACCEPTED)

    assert written(tmp_path)["scopes"][SCOPE] == {"future": {"a": 1}, "users": 3, "groups": 2, "time": NOW}


def test_an_unwritable_state_directory_raises_os_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        state.write(str(blocker / "state"), SCOPE, ACCEPTED)


def test_module_exports():
    assert state.STATE_FILE == "coreweave-state.json"
    assert {"Counts", "RunReport", "ScopeRecord", "read", "write", "write_atomically"} <= set(state.__all__)


# --- mirror mode: the mirror, its generation and when it was published --------------------------------------

MIRROR_REPORT = RunReport(started=NOW - 2.0, duration=0.25, outcome="ok", run=RUN, users=3, groups=2, keys=4,
                          maps_written=("passwd", "group", "shadow", "sshkey"), requests={"mirror/2xx": 3},
                          bytes=2048, mirror="https://mirror.example.com/bundle", generation=1_780_000_000,
                          published=NOW - 60.5)


def test_a_mirror_report_round_trips_through_its_dict():
    data = MIRROR_REPORT.to_dict()

    assert (data["mirror"], data["generation"], data["published"]) == (
        "https://mirror.example.com/bundle", 1_780_000_000, NOW - 60.5)
    assert RunReport.from_dict(data) == MIRROR_REPORT
    assert RunReport.from_dict(json.loads(json.dumps(data))) == MIRROR_REPORT


def test_an_iam_report_has_no_mirror_keys():
    assert not {"mirror", "generation", "published"} & set(REPORT.to_dict())
    assert REPORT.to_dict() == FULL_AS_WRITTEN["last_run"]  # as the previous version wrote it


def test_a_mirror_report_is_kept_in_the_state_file(tmp_path):
    record = ScopeRecord(accepted=Counts(3, 2, NOW), last_run=MIRROR_REPORT, last_success=NOW)
    state.write(str(tmp_path), "mirror https://mirror.example.com/bundle groups=*", record)

    assert state.read(str(tmp_path), "mirror https://mirror.example.com/bundle groups=*") == record
    kept = written(tmp_path)["scopes"]["mirror https://mirror.example.com/bundle groups=*"]["last_run"]
    assert (kept["mirror"], kept["generation"], kept["published"]) == (
        "https://mirror.example.com/bundle", 1_780_000_000, NOW - 60.5)


def test_a_failed_mirror_run_names_the_mirror_without_a_generation():
    failed = RunReport(started=NOW, duration=0.1, outcome="failed", error_kind="BundleError", error="refused",
                       mirror="https://mirror.example.com/bundle")

    data = failed.to_dict()

    assert data["mirror"] == "https://mirror.example.com/bundle"
    assert "generation" not in data and "published" not in data
    assert RunReport.from_dict(data) == failed


def test_a_generation_that_is_no_number_reads_as_no_report():
    assert RunReport.from_dict({**MIRROR_REPORT.to_dict(), "generation": "many"}) is None


def test_a_publication_time_that_is_no_number_reads_as_none_accepted():
    found = RunReport.from_dict({**MIRROR_REPORT.to_dict(), "published": "yesterday"})

    assert found == RunReport(**{**MIRROR_REPORT.__dict__, "published": 0.0})
