"""Fixtures shared by the test directories. Helpers (not fixtures) are in the package
tests/support/: pytest puts tests/ on sys.path (setup.cfg: ``pythonpath``), so tests
import them as ``from support.fakeiam import FakeIAM``.

Here: the demo organisation, the project's wheel and venvs with nsscache 0.49 and that wheel
(integration, e2e and packaging tests), and the loopback fake IAM serving the demo organisation.
A directory's own conftest.py or a test module may override any of them (tests/slurm/conftest.py
has its own ``org`` and ``iam``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from support.fakeiam import FakeIAM
from support.node import TOKEN
from support.venvs import Venv, build_wheel, new_venv

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture
def demo_org() -> dict:
    """demo/org.json: alice, bob, erin, frank in slurm-users (alice also in
    slurm-admins), carol only in other-team, dave inactive."""
    return json.loads((REPO / "demo" / "org.json").read_text())


@pytest.fixture
def iam(demo_org):
    """The loopback IAM serving demo/org.json, requiring the nodes' token."""
    with FakeIAM(demo_org, token=TOKEN) as server:
        yield server


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory) -> Path:
    """The project's wheel, built once per session with `pip wheel --no-deps` from a copy of the checkout."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def make_venv(project_wheel, tmp_path_factory) -> Callable[[], Venv]:
    """Factory: a fresh venv with nsscache (scripts/install-nsscache) and the project wheel (non-editable)."""

    def make() -> Venv:
        return new_venv(tmp_path_factory.mktemp("venv"), project_wheel)

    return make


@pytest.fixture(scope="session")
def installed_venv(make_venv) -> Venv:
    """One shared venv with nsscache and the wheel: treat it as read-only (use make_venv() to modify one)."""
    return make_venv()
