"""state: the counts of the last accepted run (for the shrink guard), kept per
scope in one JSON file, ``coreweave-state.json`` in ``coreweave_state_dir``,
written atomically and readable by root only. An unreadable or corrupt file
means "nothing to compare with", never a crash; saving replaces it."""

from __future__ import annotations

import json
import os
import stat

import pytest

from nss_cache_coreweave import state
from nss_cache_coreweave.state import STATE_FILE, Counts

SCOPE = "https://api.coreweave.test/scim/cw-test groups=slurm-users"
OTHER = "https://api.coreweave.test/scim/cw-test groups=*"
NOW = 1_780_000_000.5


@pytest.fixture(autouse=True)
def frozen_time(monkeypatch):
    monkeypatch.setattr(state.time, "time", lambda: NOW)


def state_file(directory):
    return directory / STATE_FILE


def test_nothing_saved_loads_as_none(tmp_path):
    assert state.load(str(tmp_path), SCOPE) is None
    assert state.load(str(tmp_path / "no-such-dir"), SCOPE) is None


def test_saved_counts_load_back(tmp_path):
    state.save(str(tmp_path), SCOPE, 3000, 12)
    assert state.load(str(tmp_path), SCOPE) == Counts(users=3000, groups=12, time=NOW)


def test_saving_again_replaces_the_counts(tmp_path):
    state.save(str(tmp_path), SCOPE, 3000, 12)
    state.save(str(tmp_path), SCOPE, 2990, 11)
    assert state.load(str(tmp_path), SCOPE) == Counts(2990, 11, NOW)


def test_scopes_are_kept_apart(tmp_path):
    state.save(str(tmp_path), SCOPE, 3, 2)
    state.save(str(tmp_path), OTHER, 40, 9)
    assert state.load(str(tmp_path), SCOPE) == Counts(3, 2, NOW)
    assert state.load(str(tmp_path), OTHER) == Counts(40, 9, NOW)
    assert state.load(str(tmp_path), "elsewhere groups=x") is None


def test_saving_counts_keeps_the_rest_of_the_scope_entry(tmp_path):
    state.update(str(tmp_path), SCOPE, lambda e: e.update(last_run={"outcome": "ok"}))
    state.save(str(tmp_path), SCOPE, 3, 2)
    assert state.entry(str(tmp_path), SCOPE) == {"last_run": {"outcome": "ok"}, "users": 3, "groups": 2, "time": NOW}


def test_the_file_is_json_readable_by_root_only(tmp_path):
    old_umask = os.umask(0)
    try:
        state.save(str(tmp_path), SCOPE, 3, 2)
    finally:
        os.umask(old_umask)
    path = state_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"scopes": {SCOPE: {"users": 3, "groups": 2, "time": NOW}}}


def test_a_group_readable_file_becomes_0600_when_rewritten(tmp_path):
    path = state_file(tmp_path)
    path.write_text("{}")
    path.chmod(0o644)
    state.save(str(tmp_path), SCOPE, 3, 2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_missing_state_directory_is_created(tmp_path):
    directory = tmp_path / "var" / "lib" / "nsscache"
    state.save(str(directory), SCOPE, 3, 2)
    assert state.load(str(directory), SCOPE) == Counts(3, 2, NOW)


def test_no_temporary_file_is_left_behind(tmp_path):
    state.save(str(tmp_path), SCOPE, 3, 2)
    state.save(str(tmp_path), SCOPE, 4, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    state.save(str(tmp_path), SCOPE, 3, 2)
    before = state_file(tmp_path).read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "fsync", disk_full)
    with pytest.raises(OSError):
        state.save(str(tmp_path), SCOPE, 1, 1)
    assert state_file(tmp_path).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_the_file_is_replaced_by_rename_never_rewritten_in_place(tmp_path):
    state.save(str(tmp_path), SCOPE, 3, 2)
    inode = state_file(tmp_path).stat().st_ino
    state.save(str(tmp_path), SCOPE, 4, 2)
    assert state_file(tmp_path).stat().st_ino != inode


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
def test_a_corrupt_file_loads_as_none_and_is_replaced_by_the_next_save(tmp_path, content):
    state_file(tmp_path).write_bytes(content)
    assert state.load(str(tmp_path), SCOPE) is None
    state.save(str(tmp_path), SCOPE, 3, 2)
    assert state.load(str(tmp_path), SCOPE) == Counts(3, 2, NOW)


def test_an_unwritable_state_directory_raises_os_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        state.save(str(blocker / "state"), SCOPE, 3, 2)


def test_module_exports():
    assert state.STATE_FILE == "coreweave-state.json"
    assert {"Counts", "load", "save"} <= set(state.__all__)
