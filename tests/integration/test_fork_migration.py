"""Switching from CoreWeave's nsscache fork: a SUNK-style fork configuration
(tests/data/fork/sunk.conf: sections, ``/`` paths, the token in
NSSCACHE_SCIM_AUTH_TOKEN, a displayName filter, ``members/value``, cursor paging)
converted by the installed ``nsscache-coreweave convert-config``, then the stock
``nsscache update`` against the loopback IAM serving group members either way
(RFC 7643 ids, or POSIX names as the fork reads them): exact caches."""

from __future__ import annotations

import pytest

from support.fakeiam import FakeIAM
from support.node import TOKEN, Node, expected_caches
from support.venvs import REPO

FORK = REPO / "tests" / "data" / "fork"
SUNK_BASE_URL = "https://api.coreweave.com/scim/org-0123"


def converted(node: Node, base_url: str) -> str:
    """sunk.conf converted on ``node`` (exit 0), with only what differs between this
    test node and a SUNK login node changed: the IAM URL and the node's directories.
    Shells are listed so that the host's /etc/shells does not matter."""
    result = node.run("nsscache-coreweave", "convert-config", str(FORK / "sunk.conf"))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for fork_value, here in (
        (f"coreweave_base_url = {SUNK_BASE_URL}", f"coreweave_base_url = {base_url}"),
        ("files_dir = /etc/nsscache", f"files_dir = {node.root / 'cache'}"),
        ("timestamp_dir = /var/lib/nsscache", f"timestamp_dir = {node.root / 'state'}\n"
                                              f"lockfile = {node.root / 'nsscache.lock'}"),
    ):
        assert text.count(fork_value) == 1, fork_value
        text = text.replace(fork_value, here)
    return text + (f"coreweave_state_dir = {node.root / 'state'}\n"
                   "coreweave_allowed_shells = /bin/bash, /bin/zsh\n")


@pytest.mark.parametrize("members_by", [None, "value"], ids=["members-by-id", "members-by-name"])
def test_a_converted_sunk_configuration_writes_exact_caches_whichever_member_convention(
        node, demo_org, members_by):
    with FakeIAM(demo_org, token=TOKEN, members_by=members_by) as served:
        node.conf.write_text(converted(node, served.base_url))

        result = node.run("nsscache", "update", "--full", environ={"NSSCACHE_SCIM_AUTH_TOKEN": TOKEN})
        check = node.run("nsscache-coreweave", "check", environ={"NSSCACHE_SCIM_AUTH_TOKEN": TOKEN})
        targets = [r.target for r in served.requests("Groups")]

    assert result.returncode == 0, result.stderr
    for name, content in expected_caches(demo_org).items():
        assert node.cache(name) == content, name
    assert "does not resolve" not in result.stderr
    assert check.returncode == 0, check.stdout + check.stderr
    assert "would write: 4 users, 2 groups, 4 SSH keys" in check.stdout.splitlines()
    # Cursor paging at 500 per page, and no server-side filter: the allow-list is applied here.
    assert targets[0] == "/scim/cw-demo/Groups?cursor=&count=500"
    assert TOKEN not in result.stdout + result.stderr + check.stdout + check.stderr


def test_without_the_token_in_the_environment_the_converted_configuration_writes_nothing(node, iam):
    node.conf.write_text(converted(node, iam.base_url))

    result = node.run("nsscache", "update", "--full")

    assert result.returncode != 0
    assert "no bearer token" in result.stderr
    assert not list((node.root / "cache").glob("*.cache"))
