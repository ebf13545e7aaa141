"""shrink: the one shrink guard of the maps (policy.shrink_problem, run.shrink_problem)
and of slurm-sync (slurm.shrink_problem).

A refusal is a GuardError carrying what shrank, from how many to how many,
the limit, and the command to rerun with --accept-shrink (or, ``before``
None, an empty run with nothing to compare with); ``str()`` renders the
operator's message from them. ``enforce`` raises it, or logs it when the
operator accepted it (``NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1``, exactly).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

import nss_cache_coreweave
from nss_cache_coreweave import shrink
from nss_cache_coreweave.errors import GuardError

RERUN_UPDATE = ("If this removal is intended, run `nsscache-coreweave update --accept-shrink` once "
                "(or set NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1 for one run)")
RERUN_SLURM_SYNC = ("If this removal is intended, run `nsscache-coreweave slurm-sync --accept-shrink` once "
                    "(or set NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1 for one run)")


def fields(refusal):
    return None if refusal is None else (refusal.what, refusal.before, refusal.now, refusal.max_shrink,
                                         refusal.command)


@pytest.mark.parametrize(
    "before, now, max_shrink, refused",
    [
        pytest.param(4, 3, 0.25, False, id="exactly-the-limit"),
        pytest.param(4, 2, 0.25, True, id="beyond-the-limit"),
        pytest.param(4, 0, 1.0, True, id="all-of-it-even-with-the-ratio-off"),
        pytest.param(4, 1, 1.0, False, id="one-disables-the-ratio"),
        pytest.param(100, 99, 0.0, True, id="zero-tolerance"),
        pytest.param(0, 0, 0.25, False, id="nothing-before"),
        pytest.param(4, 400, 0.0, False, id="growth"),
    ],
)
def test_problem_refuses_losing_more_than_the_limit_or_everything(before, now, max_shrink, refused):
    refusal = shrink.problem("update", "users", before, now, max_shrink)

    assert fields(refusal) == (("users", before, now, max_shrink, "update") if refused else None)


@pytest.mark.parametrize(
    "refusal, message",
    [
        pytest.param(GuardError("users", 3, 1, 0.25, "update"),
                     "refusing to shrink users from 3 to 1 (-67%, more than coreweave_max_shrink 25% of the last "
                     "accepted run): the previous caches are kept. " + RERUN_UPDATE, id="update-too-many"),
        pytest.param(GuardError("groups", 100, 0, 1.0, "update"),
                     "refusing to remove all 100 groups of the last accepted run: the previous caches are kept. "
                     + RERUN_UPDATE, id="update-all"),
        pytest.param(GuardError("users", None, 0, 0.25, "update", ("slurm-users", "slurm-admins")),
                     "refusing an empty directory: no active member of coreweave_groups (slurm-users, slurm-admins) "
                     "is left to write (no earlier accepted run to compare with); the previous caches are kept. "
                     + RERUN_UPDATE, id="update-empty"),
        pytest.param(GuardError("users", None, 0, 0.25, "update"),
                     "refusing an empty directory: no active member of coreweave_groups (*) is left to write (no "
                     "earlier accepted run to compare with); the previous caches are kept. " + RERUN_UPDATE,
                     id="update-empty-every-group"),
        pytest.param(GuardError("users", 4, 2, 0.25, "slurm-sync"),
                     "refusing to remove 2 of 4 users from every managed Slurm account (-50%, more than "
                     "coreweave_max_shrink 25%): nothing was changed. " + RERUN_SLURM_SYNC, id="slurm-sync-too-many"),
        pytest.param(GuardError("users", 4, 0, 1.0, "slurm-sync"),
                     "refusing to remove all 4 users from every managed Slurm account: nothing was changed. "
                     + RERUN_SLURM_SYNC, id="slurm-sync-all"),
    ],
)
def test_a_refusal_renders_the_operators_message_from_its_fields(refusal, message):
    assert str(refusal) == message
    assert refusal.args == (message,)


def test_a_pickled_refusal_keeps_its_fields():
    refusal = GuardError("users", None, 0, 0.25, "update", ("slurm-users",))

    copy = pickle.loads(pickle.dumps(refusal))

    assert (fields(copy), copy.allowed_groups, str(copy)) == (fields(refusal), ("slurm-users",), str(refusal))


@pytest.mark.parametrize("value, accepted", [("1", True), ("", False), ("0", False), ("true", False), (" 1", False)])
def test_only_exactly_1_accepts(value, accepted):
    assert shrink.accepted({shrink.ACCEPT_SHRINK_ENV: value}) is accepted
    assert shrink.accepted({}) is False


def test_enforce_raises_the_refusal_unless_accepted(caplog):
    refusal = GuardError("users", 3, 1, 0.25, "update")

    with pytest.raises(GuardError) as caught:
        shrink.enforce(refusal, accept=False)
    shrink.enforce(refusal, accept=True)
    shrink.enforce(None, accept=False)

    assert caught.value is refusal
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"coreweave: shrink accepted by the operator (NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1): {refusal}"),
    ]


def test_the_environment_variable_is_spelled_in_one_place():
    package = Path(nss_cache_coreweave.__file__).parent
    spelled = [p.name for p in sorted(package.glob("*.py")) if "NSSCACHE_COREWEAVE_ACCEPT_SHRINK" in p.read_text()]

    assert spelled == ["errors.py"]
    assert shrink.ACCEPT_SHRINK_ENV == GuardError.ACCEPT_SHRINK_ENV == "NSSCACHE_COREWEAVE_ACCEPT_SHRINK"


def test_enforce_logs_on_the_package_logger(caplog):
    caplog.set_level(logging.WARNING, logger="nss_cache_coreweave")

    shrink.enforce(GuardError("users", 4, 2, 0.25, "slurm-sync"), accept=True)

    assert [r.name for r in caplog.records] == ["nss_cache_coreweave"]
