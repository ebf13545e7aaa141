"""Shared fixtures. This directory is on sys.path, so tests import
``fakeiam`` (the loopback CoreWeave-IAM-like server) directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture
def demo_org() -> dict:
    """demo/org.json: alice, bob, erin, frank in slurm-users (alice also in
    slurm-admins), carol only in other-team, dave inactive."""
    return json.loads((REPO / "demo" / "org.json").read_text())
