"""The login tests' shared set-up (module scope: one organisation, one IAM per module): the
host's /etc checked unchanged around each module, a fresh key pair per user, demo/org.json with
those keys (support.loginnode.build_org) served by the loopback IAM, the keys command's venv,
and sshd on the module's ``node``."""

from __future__ import annotations

import shutil

import pytest

from support.fakeiam import FakeIAM
from support.loginnode import HOST_STATE_DIR, build_org, make_key, make_keys_venv, require_environment, snapshot
from support.node import TOKEN

HOST_PATHS = ("/etc", "/usr/local/sbin", HOST_STATE_DIR)  # a missing one must stay missing


@pytest.fixture(scope="module")
def host_before():
    require_environment()
    before = snapshot(*HOST_PATHS)
    yield before
    after = snapshot(*HOST_PATHS)
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    assert changed == [], f"changed on the host: {changed}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ssh-keys")
    return {name: make_key(directory, name)
            for name in ("alice", "alice2", "bob", "carol", "dave", "frank", "root", "mallory")}


@pytest.fixture(scope="module")
def org(keys):
    return build_org(keys)


@pytest.fixture(scope="module")
def iam(org):
    with FakeIAM(org, token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def keys_bin(project_wheel, host_before):
    path = make_keys_venv(project_wheel)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def sshd(node):
    server = node.start_sshd()
    yield server
    server.stop()
