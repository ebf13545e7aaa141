"""coreweave_fetch (issue 16) through the stock nsscache 0.49: with ``auto`` a
node asks only for the allowed groups' members, by id, when the server
advertises filtering, and lists every user instead whenever an answer shows
the filter is not honoured; the caches are the same exact demo caches on
either path. ``members`` refuses the full listing: the caches stay
byte-identical. The server is the loopback fake IAM with its filter modes."""

from __future__ import annotations

import json
import re

import pytest

from support.fakeiam import FakeIAM
from support.node import TOKEN, assert_stock_update_writes_the_demo_caches


def members(org) -> set:
    """The ids the node's groups (slurm-users, slurm-admins) list: dave's too (inactive, policy drops him)."""
    return {m["value"] for g in org["Groups"] if g["sunkPosixGroupName"] in ("slurm-users", "slurm-admins")
            for m in g["members"]}


def filtering_iam(demo_org, mode="honour", advertised=True):
    return FakeIAM(demo_org, token=TOKEN, service_provider_config=True, filter_supported=advertised,
                   filter_mode=mode)


def asked_ids(request) -> set:
    """The ids of an `id eq "…" or …` filter, each a JSON string (which may itself hold " or ")."""
    text = request.params["filter"]
    terms = re.findall(r'id eq ("(?:[^"\\]|\\.)*")(?: or |$)', text)
    assert " or ".join(f"id eq {t}" for t in terms) == text
    return {json.loads(term) for term in terms}


def test_only_the_members_are_fetched_by_id_and_the_caches_are_exact(node, demo_org):
    with filtering_iam(demo_org) as iam:
        node.configure(iam.base_url, "coreweave_fetch = auto\n")

        assert_stock_update_writes_the_demo_caches(node, demo_org)

        (users,) = iam.requests("Users")
        assert asked_ids(users) == members(demo_org)  # carol, only in another team, is never asked for
        assert iam.request_count("ServiceProviderConfig") == 1
        assert node.state()["last_run"]["fetch"] == "members"


@pytest.mark.parametrize("mode, why", [
    # More users announced than asked for: refused at the answer's first page.
    pytest.param("ignore", "an answer held more users (", id="filter-ignored"),
    pytest.param("reject", "the server refused the filter", id="filter-rejected"),
    pytest.param("extra", "an answer held more users (", id="an-extra-id"),
    pytest.param("drop", "did not add up", id="a-missing-id"),
])
def test_a_server_that_does_not_filter_as_asked_gets_the_full_listing_in_the_same_run(node, demo_org, mode, why):
    with filtering_iam(demo_org, mode) as iam:
        node.configure(iam.base_url, "coreweave_fetch = auto\n")

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)

        assert "fetching only the members of coreweave_groups failed" in result.stderr and why in result.stderr
        assert "filter" not in iam.requests("Users")[-1].params  # the last listing: every user
        assert node.state()["last_run"]["fetch"] == "full"


def test_a_server_that_does_not_advertise_filtering_is_listed_whole(node, demo_org):
    with filtering_iam(demo_org, advertised=False) as iam:
        node.configure(iam.base_url, "coreweave_fetch = auto\n")

        assert_stock_update_writes_the_demo_caches(node, demo_org)

        assert ["filter" in r.params for r in iam.requests("Users")] == [False]
        assert node.state()["last_run"]["fetch"] == "full"


def test_fetch_members_refuses_the_full_listing_and_keeps_the_caches(node, demo_org):
    with filtering_iam(demo_org) as iam:
        node.configure(iam.base_url, "coreweave_fetch = auto\n")
        assert_stock_update_writes_the_demo_caches(node, demo_org)
        before = node.files()
        node.configure(iam.base_url, "coreweave_fetch = members\n")
        iam.filter_mode = "reject"

        result = node.run("nsscache-coreweave", "update")

        assert result.returncode == 1, result.stderr
        assert "coreweave_fetch = members refuses to list every user instead" in result.stderr
        assert node.files() == before
        assert all("filter" in r.params for r in iam.requests("Users"))


def test_a_member_value_crafted_as_filter_syntax_is_asked_for_as_one_id(node, demo_org):
    """A group admin (an insider) names a member `x" or id pr or id eq "y`: sent as a JSON string it stays
    one id, which no user has; short enough to be a POSIX name (member_match auto), so the run lists
    every user, and the caches are exactly the demo's."""
    crafted = 'x" or id pr or id eq "y'
    next(g for g in demo_org["Groups"] if g["sunkPosixGroupName"] == "slurm-users")["members"].append(
        {"value": crafted, "type": "User"})
    with filtering_iam(demo_org) as iam:
        node.configure(iam.base_url, "coreweave_fetch = auto\n")

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)

        first = iam.requests("Users")[0]
        assert first.status == 200 and crafted in asked_ids(first)
        assert "1 requested ids did not come back and may be POSIX names" in result.stderr
        assert node.state()["last_run"]["fetch"] == "full"


def test_a_member_iam_does_not_have_does_not_resolve_and_the_members_path_holds(node, demo_org):
    """A member whose user IAM deleted (a UUID no user has): not found, as in a full listing."""
    gone = "0b7e5a31-6a55-4c1e-9d0e-3f1f6a1c2d4e"
    next(g for g in demo_org["Groups"] if g["sunkPosixGroupName"] == "slurm-users")["members"].append(
        {"value": gone, "type": "User"})
    with filtering_iam(demo_org) as iam:
        node.configure(iam.base_url)

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)

        assert [asked_ids(r) for r in iam.requests("Users")] == [members(demo_org)]
        assert "coreweave: 1 members' ids are no user of IAM (their members do not resolve)" in result.stderr
        assert f"dropped member slurm-users/{gone}: does not resolve to any listed user" in result.stderr
        assert node.state()["last_run"]["fetch"] == "members"


def filter_terms(request) -> list:
    """The ids of an `id eq "…" or …` filter in the order sent."""
    return [json.loads(term) for term in re.findall(r'id eq ("(?:[^"\\]|\\.)*")(?: or |$)', request.params["filter"])]


def test_a_server_that_truncates_long_filters_gets_the_full_listing_and_nobody_loses_access(node, demo_org):
    """The answer adds up for the two ids the server kept; the members it cut exist (GET /Users/<id>:
    200), so the filter cannot be trusted: the same run lists every user, and the caches are exact."""
    with filtering_iam(demo_org, "truncate") as iam:
        iam.filter_truncate_after = 2
        node.configure(iam.base_url, "coreweave_fetch = auto\n")

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)

        filtered, full = iam.requests("Users")
        assert asked_ids(filtered) == members(demo_org) and "filter" not in full.params
        left_out = set(filter_terms(filtered)[2:])
        assert len(left_out) == len(members(demo_org)) - 2
        (lookup,) = iam.requests("User")  # the first one found is enough
        assert (lookup.status, lookup.resource_id in left_out) == (200, True)
        assert (f"fetching only the members of coreweave_groups failed: requested user {lookup.resource_id!r} "
                "exists but the filtered answer left it out") in result.stderr
        assert node.state()["last_run"]["fetch"] == "full"


def test_a_member_iam_does_not_have_is_confirmed_gone_by_one_lookup(node, demo_org):
    """The id a filtered answer left out is asked for once on its own (GET /Users/<id>): a 404, so its
    member does not resolve and the run stays on the member path."""
    gone = "0b7e5a31-6a55-4c1e-9d0e-3f1f6a1c2d4e"
    next(g for g in demo_org["Groups"] if g["sunkPosixGroupName"] == "slurm-users")["members"].append(
        {"value": gone, "type": "User"})
    with filtering_iam(demo_org) as iam:
        node.configure(iam.base_url, "coreweave_fetch = auto\n")

        assert_stock_update_writes_the_demo_caches(node, demo_org)

        assert [asked_ids(r) for r in iam.requests("Users")] == [members(demo_org)]
        assert [(r.method, r.target.split("?")[0], r.status, r.resource_id) for r in iam.requests("User")] == [
            ("GET", f"{iam.prefix}/Users/{gone}", 404, gone)]
        assert node.state()["last_run"]["fetch"] == "members"
