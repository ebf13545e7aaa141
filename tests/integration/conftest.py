"""Fixtures shared by the integration tests (the venv fixtures live in _venv.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeiam import FakeIAM  # noqa: E402
from node import TOKEN  # noqa: E402


@pytest.fixture
def iam(demo_org):
    """The loopback IAM serving demo/org.json, requiring the nodes' token."""
    with FakeIAM(demo_org, token=TOKEN) as server:
        yield server
