"""run: fetch -> decide -> guard -> record, once per process.

What the nsscache adapter does through it is tested in test_source.py; here
the steps the operator's commands share: ``fetch_and_decide`` (slurm-sync),
``decide`` (check, preview), ``shrink_problem`` (check), the report of a
decided run or of the error that stopped it (``report_of``), and the
outcome of a scope from what nsscache wrote (``scope_outcome``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections import Counter

import pytest

from nss_cache_coreweave import config as config_mod
from nss_cache_coreweave import policy, run, snapshot, state
from nss_cache_coreweave.errors import Failure, FetchError, FetchReason, GuardError
from nss_cache_coreweave.scim import Stats
from nss_cache_coreweave.snapshot import GroupRecord, Member, Snapshot, UserRecord
from nss_cache_coreweave.state import CacheRecord, RunReport
from support.scripted_http import BASE, TOKEN

STARTED = 1_780_000_000.5
RUN = "20260528T202638Z-0123456789ab"
MAPS = ("passwd", "group", "shadow", "sshkey")


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("NSSCACHE_COREWEAVE_TOKEN", TOKEN)
    monkeypatch.setattr(run, "_CACHE", {})  # a new process
    return config_mod.parse({
        "name": "coreweave", "base_url": BASE, "groups": "slurm-users", "state_dir": str(tmp_path / "state"),
        "local_passwd": str(tmp_path / "no-passwd"), "local_group": str(tmp_path / "no-group"),
    })


def user(name, uid, active=True):
    return UserRecord(id=f"u-{name}", active=active, name=name, uid=uid, gid=uid, gecos="", home=None, shell=None,
                      ssh_keys=None)


SNAPSHOT = Snapshot(
    (user("alice", 20001), user("bob", 20002), user("dave", 20004, active=False)),
    (GroupRecord("g-users", "slurm-users", 30001,
                 (Member("u-alice", "User"), Member("u-bob", "User"), Member("u-dave", "User"))),),
    0.0,
)


# --- fetch, decide, log -----------------------------------------------------------------------


def test_fetch_and_decide_lists_once_per_process_and_logs_every_drop(config, mocker, caplog):
    take = mocker.patch.object(snapshot, "take", return_value=SNAPSHOT)
    caplog.set_level(logging.INFO, logger="nss_cache_coreweave")

    first = run.fetch_and_decide(config)
    second = run.fetch_and_decide(config)

    assert take.call_count == 1
    assert [a.name for a in first.accounts] == [a.name for a in second.accounts] == ["alice", "bob"]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "coreweave: dropped user dave: is inactive"),
    ] * 2


def test_fetch_and_decide_logs_the_listings_warnings(config, mocker, caplog):
    # coreweave_member_match = auto: u-alice is an id, so the member "bob" (a name) is not taken.
    members = (Member("u-alice", "User", "u-alice"), Member("bob", None, "bob"))
    mixed = dataclasses.replace(SNAPSHOT, groups=(GroupRecord("g-users", "slurm-users", 30001, members),))
    mocker.patch.object(snapshot, "take", return_value=mixed)
    caplog.set_level(logging.WARNING, logger="nss_cache_coreweave")

    decided = run.fetch_and_decide(config)

    assert [a.name for a in decided.accounts] == ["alice"]
    assert [r.getMessage() for r in caplog.records] == [f"coreweave: {decided.warnings[0]}", (
        "coreweave: dropped member slurm-users/bob: is a listed user's POSIX name, but this listing's members "
        "are user ids: not taken")]
    assert "1 member value(s)" in decided.warnings[0]


def test_a_failed_listing_is_raised_again_without_listing_again(config, mocker):
    down = FetchError("Users", 1, FetchReason.SERVER_FAILING, failure=Failure(BASE, status=503), attempts=4)
    take = mocker.patch.object(snapshot, "take", side_effect=down)

    for _ in range(2):
        with pytest.raises(FetchError) as caught:
            run.fetch_and_decide(config)
        assert caught.value is down
    assert take.call_count == 1


def test_decide_gives_the_garbage_collector_back(config):
    assert gc.isenabled()

    run.decide(config, SNAPSHOT)

    assert gc.isenabled()


def test_shrink_problem_compares_with_the_scopes_last_accepted_run(config):
    decided = run.decide(config, SNAPSHOT)
    assert run.shrink_problem(config, decided) is None  # nothing to compare with, not empty
    state.write(config.state_dir, run.state_scope(config), state.ScopeRecord(accepted=state.Counts(4, 1, 0.0)))

    refusal = run.shrink_problem(config, decided)

    assert (refusal.what, refusal.before, refusal.now, refusal.command) == ("users", 4, 2, "update")


# --- the report of a run ------------------------------------------------------------------------


def report_of(outcome):
    stats = Stats(requests=Counter({("Users", "2xx"): 1, ("Groups", "2xx"): 1}), retries=1, bytes=100)
    return run.report_of(outcome, run=RUN, started=STARTED, duration=0.5, stats=stats)


COMMON = dict(started=STARTED, duration=0.5, run=RUN, requests={"Groups/2xx": 1, "Users/2xx": 1}, retries=1,
              bytes=100)


def test_the_report_of_a_decided_run_counts_what_reaches_the_maps(config):
    assert report_of(run.decide(config, SNAPSHOT)) == RunReport(
        outcome="decided", users=2, groups=1, keys=0, drops={"user/inactive": 1}, **COMMON)


@pytest.mark.parametrize(
    "error, outcome",
    [
        pytest.param(GuardError("users", 4, 1, 0.25, "update"), "refused", id="guard"),
        pytest.param(FetchError("Users", 1, FetchReason.SERVER_FAILING, failure=Failure(BASE, status=503),
                                attempts=4), "failed", id="fetch"),
    ],
)
def test_the_report_of_a_stopped_run_names_the_error(error, outcome):
    assert report_of(error) == RunReport(outcome=outcome, error_kind=type(error).__name__, error=str(error),
                                         **COMMON)


# --- the outcome of a scope -----------------------------------------------------------------------


def decided_run(config, served=MAPS, written=MAPS):
    report = RunReport(started=STARTED, duration=0.5, outcome="decided", run=RUN, users=2)
    return run.Run(config, policy.Directory((), (), (), ()), report, record=True, served=list(served),
                   written=list(written))


def test_a_scope_is_ok_when_nsscache_wrote_every_map_it_was_handed(config):
    done = run.scope_outcome([decided_run(config)], {})

    assert (done.outcome, done.maps_written, done.maps_not_written, done.error) == ("ok", MAPS, (), "")


def test_a_map_handed_out_but_not_written_leaves_the_scope_incomplete(config):
    done = run.scope_outcome([decided_run(config, written=("passwd", "group"))], {})

    assert (done.outcome, done.error_kind, done.maps_written, done.maps_not_written) == (
        "incomplete", "NotWritten", ("passwd", "group"), ("shadow", "sshkey"))
    assert done.error == ("nsscache did not write shadow, sshkey (see its log): the keys command serves no key until "
                          "one run writes passwd and sshkey together")


def test_a_cache_left_from_an_earlier_run_leaves_the_scope_incomplete(config):
    earlier = {name: CacheRecord("earlier", 0.0, 1) for name in MAPS}

    done = run.scope_outcome([decided_run(config, served=("passwd",), written=("passwd",))], earlier)

    assert (done.outcome, done.maps_written, done.maps_not_written) == (
        "incomplete", ("passwd",), ("group", "shadow", "sshkey"))
    assert done.error.startswith("group, shadow, sshkey still from an earlier run (nsscache was asked for some maps "
                                 "only)")


def test_a_stopped_run_is_the_scopes_outcome_as_it_was(config):
    stopped = decided_run(config)
    stopped.report = RunReport(started=STARTED, duration=0.5, outcome="refused", error_kind="GuardError")

    assert run.scope_outcome([stopped], {}) is stopped.report
