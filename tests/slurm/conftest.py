"""Fixtures of the slurm-sync tests against a real slurmdbd (support.slurm_harness,
support.slurm_site). They override tests/conftest.py's ``iam`` (this suite's organisation and
token) and add:

``stack``   munged + MariaDB, started once per test module, stopped by pid at its end.
``dbd``     a fresh slurmdbd and database per test, with the cluster registered.
``org``     the organisation: ml-team (alice, bob, carol), hpc (bob, dave), other (erin).
``iam``     a FakeIAM serving ``org``.
``site``    a FakeIAM organisation and an nsscache.conf for it; ``site.sync(...)``
            runs the installed ``nsscache-coreweave slurm-sync`` as a subprocess.
"""

from __future__ import annotations

import pytest

from support.fakeiam import FakeIAM
from support.slurm_harness import SlurmStack
from support.slurm_site import CLI, TOKEN, Site, make_org


@pytest.fixture(scope="module")
def stack():
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: run the tests with `make test` (installs the package into .venv)",
                    pytrace=False)
    s = SlurmStack()
    try:
        s.start()
    except Exception as e:
        pytest.fail(f"could not start munged/MariaDB: {e}", pytrace=False)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def dbd(stack):
    try:
        stack.start_dbd()
    except Exception as e:
        pytest.fail(f"could not start slurmdbd: {e}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop_dbd()


@pytest.fixture
def org():
    return make_org({
        "ml-team": ["alice", "bob", "carol"],
        "hpc": ["bob", "dave"],
        "other": ["erin"],
    })


@pytest.fixture
def iam(org):
    with FakeIAM(org, token=TOKEN) as server:
        yield server


@pytest.fixture
def site(tmp_path, iam, dbd):
    return Site(tmp_path / "site", iam, dbd, ["ml-team", "hpc"])
