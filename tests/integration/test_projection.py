"""Attribute projection (issue 16, item 2) through the stock nsscache 0.49: a
node asks Users only for the attributes its configuration reads, on the
member-only path and on the full listing; a server that rejects the
parameter, or one whose projection loses ``active``, gets whole users in the
same run. The caches are exactly the demo's on every path. The server is the
loopback fake IAM with its attribute modes."""

from __future__ import annotations

import pytest

from support.fakeiam import FakeIAM
from support.node import ATTRIBUTES, TOKEN, assert_stock_update_writes_the_demo_caches

FELL_BACK = "asking for only the attributes this configuration reads failed"


def iam_with(demo_org, attributes: str, filtering: bool) -> FakeIAM:
    return FakeIAM(demo_org, token=TOKEN, service_provider_config=True, filter_supported=filtering,
                   filter_mode="honour" if filtering else "ignore", attributes_mode=attributes)


@pytest.mark.parametrize("filtering", [True, False], ids=["members-by-id", "full-listing"])
def test_users_are_asked_only_for_the_attributes_the_configuration_reads(node, demo_org, filtering):
    with iam_with(demo_org, "honour", filtering) as iam:
        node.configure(iam.base_url)

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)

        assert [r.params.get("attributes") for r in iam.requests("Users")] == [ATTRIBUTES]
        assert all("attributes" not in r.params for r in iam.requests("Groups"))  # groups are listed whole
        assert FELL_BACK not in result.stderr
        assert node.state()["last_run"]["fetch"] == ("members" if filtering else "full")


@pytest.mark.parametrize("filtering", [True, False], ids=["members-by-id", "full-listing"])
def test_a_server_rejecting_attributes_gets_whole_users_in_the_same_run(node, demo_org, filtering):
    with iam_with(demo_org, "reject", filtering) as iam:
        node.configure(iam.base_url)

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)

        users = iam.requests("Users")
        assert [(r.status, "attributes" in r.params) for r in users] == [(400, True), (200, False)]
        assert all(("filter" in r.params) is filtering for r in users)  # the filter was not the problem
        assert result.stderr.count(FELL_BACK) == 1
        assert "the server refused `attributes` (HTTP 400 from " in result.stderr
        assert node.state()["last_run"]["fetch"] == ("members" if filtering else "full")


@pytest.mark.parametrize("filtering", [True, False], ids=["members-by-id", "full-listing"])
def test_a_projection_that_loses_active_cannot_revive_a_deactivated_user(node, demo_org, filtering):
    """dave is inactive and a member of slurm-users: a server leaving `active` out of its projected
    answer would make him active (absent counts as active). The node asks again for whole users."""
    assert [u["displayName"] for u in demo_org["Users"] if u["active"] is False] == ["Dave Brown"]
    with iam_with(demo_org, "lose-active", filtering) as iam:
        node.configure(iam.base_url)

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)  # dave absent

        assert ["attributes" in r.params for r in iam.requests("Users")] == [True, False]
        assert "a user came back without `active`" in result.stderr
        assert result.stderr.count(FELL_BACK) == 1


def test_batches_asked_together_each_lose_active_and_each_is_asked_again_whole(node, demo_org):
    """Batches of two members, two on the wire at once (memberfetch.IN_FLIGHT): every projected
    answer that lost `active` is asked again whole, the switch is logged once, dave stays out."""
    with iam_with(demo_org, "lose-active", filtering=True) as iam:
        node.configure(iam.base_url, "coreweave_page_size = 2\n")

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)

        asked = [(r.params["filter"], "attributes" in r.params) for r in iam.requests("Users")]
        batches = {f for f, _ in asked}
        assert len(batches) >= 3
        assert sorted(f for f, projected in asked if not projected) == sorted(batches)  # each batch whole once
        assert {f for f, projected in asked if projected} <= batches
        assert result.stderr.count(FELL_BACK) == 1


def test_fetch_full_asks_exactly_what_it_always_did(node, demo_org):
    with iam_with(demo_org, "honour", filtering=True) as iam:
        node.configure(iam.base_url, "coreweave_fetch = full\n")

        assert_stock_update_writes_the_demo_caches(node, demo_org)

        assert [sorted(r.params) for r in iam.requests("Users")] == [["count", "startIndex"]]
        assert iam.request_count("ServiceProviderConfig") == 0
