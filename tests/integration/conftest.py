"""Fixtures shared by the integration tests. The venvs (``installed_venv``, ``make_venv``) and the
loopback IAM (``iam``) come from tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.fleet import Publisher
from support.nginx import serve
from support.node import Node


@pytest.fixture(scope="module")
def bin_dir(installed_venv) -> Path:
    """The bin directory of the shared venv with nsscache 0.49 and the wheel (test_faults, test_security)."""
    return installed_venv.python.parent


@pytest.fixture
def node(tmp_path, installed_venv, iam):
    n = Node(tmp_path / "node", installed_venv.python.parent)
    n.configure(iam.base_url)
    return n


@pytest.fixture
def publisher(tmp_path, bin_dir, iam) -> Publisher:
    """A publisher (issue 15) listing the loopback IAM into tmp_path/published."""
    return Publisher.create(tmp_path, bin_dir, iam.base_url)


@pytest.fixture
def mirror(tmp_path, publisher):
    """A real nginx serving the publish directory (created empty: nginx needs its root)."""
    publisher.directory.mkdir()
    with serve(publisher.directory, tmp_path / "nginx") as server:
        yield server
