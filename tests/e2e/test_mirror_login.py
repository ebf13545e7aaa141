"""End to end in mirror mode (issue 15): who can ssh into a login node that reads the
publisher's signed bundle instead of IAM. The chain: FakeIAM on loopback -> ``nsscache-coreweave
publish`` -> a real nginx serving the bundle -> the stock ``nsscache update --full`` with the
shipped nsscache.conf in mirror mode (coreweave_mirror_url, coreweave_mirror_public_key) ->
libnss-cache -> a real sshd with PAM and the keys command -> ``ssh``. The organisation and keys
are test_login's."""

from __future__ import annotations

import copy

import pytest

from support.fleet import Publisher
from support.loginnode import (
    ALICE_ID,
    FRANK_ID,
    LoginNode,
    group_of,
    public_key,
    user_of,
)
from support.nginx import serve
from support.node import EXT


@pytest.fixture(scope="module")
def publisher(tmp_path_factory, installed_venv, iam):
    root = tmp_path_factory.mktemp("fleet")
    found = Publisher.create(root, installed_venv.python.parent, iam.base_url)
    found.directory.mkdir()
    assert found.publish().returncode == 0
    return found


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, publisher):
    with serve(publisher.directory, tmp_path_factory.mktemp("nginx")) as server:
        yield server


@pytest.fixture(scope="module")
def node(host_before, installed_venv, keys_bin, iam, publisher, mirror):
    mode = (mirror.base_url, publisher.public_key)
    with LoginNode(installed_venv.python.parent, keys_bin, "", "", mirror=mode) as n:
        iam.reset_stats()
        n.update()
        assert iam.request_count() == 0  # the node never asks IAM
        yield n


def test_a_member_logs_in_from_the_mirror_with_iam_identity(sshd, keys):
    login = sshd.ssh("alice", keys["alice"])

    assert (login.returncode, login.stdout) == (0, ALICE_ID), login
    assert login.sshd_logged("Accepted publickey for alice from 127.0.0.1"), login


def test_a_user_outside_the_groups_and_a_local_name_are_refused(sshd, keys):
    assert sshd.ssh("carol", keys["carol"]).refused
    assert sshd.ssh("root", keys["root"]).refused


def test_a_refused_bundle_keeps_logins_working(sshd, node, publisher, keys):
    passwd = publisher.generation_dir() / "passwd"
    original = passwd.read_bytes()
    passwd.write_bytes(original.replace(b"Frank Miller", b"Frank Muller"))  # the same size, another sha256
    # The node holds these maps already: make it fetch them again (a node that lost its store).
    for stored in (node.state / "coreweave-mirror").rglob("*"):
        if stored.is_file() and len(stored.name) == 64:
            stored.unlink()
    try:
        refused = node.nsscache("update", "--full")
        assert refused.returncode != 0 and "a tampered or partly copied file" in refused.stderr, refused.stderr
        assert sshd.ssh("frank", keys["frank"]).stdout == FRANK_ID
    finally:
        passwd.write_bytes(original)


def test_a_removal_in_iam_reaches_the_node_after_one_publish_and_one_update(sshd, node, iam, org, publisher,
                                                                          keys):
    assert sshd.ssh("frank", keys["frank"]).stdout == FRANK_ID
    new_org = copy.deepcopy(org)
    frank_id = user_of(new_org, "frank")["id"]
    users = group_of(new_org, "slurm-users")
    users["members"] = [m for m in users["members"] if m["value"] != frank_id]
    user_of(new_org, "alice")[EXT]["sunkSshKeys"] = [public_key(keys["alice"])]  # alice2 revoked
    iam.set_org(new_org)
    assert publisher.publish().returncode == 0

    iam.reset_stats()
    node.update()

    assert iam.request_count() == 0
    frank = sshd.ssh("frank", keys["frank"])
    assert frank.refused and frank.sshd_logged("Invalid user frank"), frank
    assert sshd.ssh("alice", keys["alice2"]).refused
    assert sshd.ssh("alice", keys["alice"]).stdout == ALICE_ID
