"""Paging judged by what matters, and server-side query parameters, through
the stock ``nsscache update`` (nsscache 0.49, the project's wheel installed
beside it) against the loopback IAM (tests/support/fakeiam.py).

* A server that reports ``itemsPerPage`` as the requested ``count`` on every
  page, the last, short one included, syncs with exact caches: completeness
  is decided by ``totalResults``, the distinct ids collected and progress.
* ``coreweave_users_query`` / ``coreweave_groups_query`` reach the server on
  every listing request, and a server that filters never widens access:
  ``coreweave_groups`` still decides. A Groups ``filter`` is refused (the
  primary-gid rule needs every group).
"""

from __future__ import annotations

import copy
from typing import Callable, List

import pytest
import requests

from support.fakeiam import FakeIAM, Fault
from support.node import ATTRIBUTES_ENCODED, EXT, MAPS, TOKEN, Node, assert_stock_update_writes_the_demo_caches

USERS_QUERY = 'groups=admin&filter=active eq "true"'
GROUPS_QUERY = "sortBy=displayName&sortOrder=ascending"  # a Groups filter is refused
USERS_ENCODED = "groups=admin&filter=active+eq+%22true%22"
GROUPS_ENCODED = "sortBy=displayName&sortOrder=ascending"


@pytest.fixture
def echoing(demo_org):
    """The loopback IAM serving demo/org.json, saying itemsPerPage = count on every page."""
    with FakeIAM(demo_org, token=TOKEN, echo_count=True) as server:
        yield server


def a_node(tmp_path, installed_venv, base_url: str, extra: str) -> Node:
    node = Node(tmp_path / "node", installed_venv.python.parent)
    node.configure(base_url, extra)
    return node


def items_per_page(iam: FakeIAM, endpoint: str, count: int) -> List[tuple]:
    """(itemsPerPage, resources) of each index page of ``endpoint`` at ``count`` per page, as served."""
    pages, start = [], 1
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        while True:
            body = http.get(f"{iam.base_url}/{endpoint}", params={"startIndex": start, "count": count},
                            timeout=10).json()
            pages.append((body["itemsPerPage"], len(body["Resources"])))
            start += len(body["Resources"])
            if start > body["totalResults"] or not body["Resources"]:
                return pages


# --- itemsPerPage echoing count ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "page_size, users_pages, groups_pages",
    [
        # 6 users, 3 groups: every listing ends on a short page.
        pytest.param(4, [(4, 4), (4, 2)], [(4, 3)], id="4-per-page"),
        pytest.param(5, [(5, 5), (5, 1)], [(5, 3)], id="5-per-page"),
    ],
)
def test_a_server_echoing_count_as_items_per_page_syncs_with_exact_caches(
    tmp_path, installed_venv, echoing, demo_org, page_size, users_pages, groups_pages
):
    # The server really says more than it holds on the short pages.
    assert items_per_page(echoing, "Users", page_size) == users_pages
    assert items_per_page(echoing, "Groups", page_size) == groups_pages
    echoing.reset_stats()
    node = a_node(tmp_path, installed_venv, echoing.base_url, f"coreweave_page_size = {page_size}\n")

    assert_stock_update_writes_the_demo_caches(node, demo_org)

    assert [r.params["startIndex"] for r in echoing.requests("Users")] == [
        str(1 + page_size * i) for i in range(len(users_pages))
    ]


def test_a_server_echoing_count_syncs_with_cursor_paging(tmp_path, installed_venv, echoing, demo_org):
    node = a_node(tmp_path, installed_venv, echoing.base_url,
                  "coreweave_pagination = cursor\ncoreweave_page_size = 4\n")

    assert_stock_update_writes_the_demo_caches(node, demo_org)
    assert echoing.request_count("Users") == 2 and echoing.request_count("Groups") == 1


def test_an_echoing_server_that_loses_a_user_is_still_refused(tmp_path, installed_venv, echoing, demo_org):
    # erin is missing from every page, totalResults still counts her.
    node = a_node(tmp_path, installed_venv, echoing.base_url, "coreweave_page_size = 4\n")
    assert node.run("nsscache", "update", "--full").returncode == 0
    before = node.files()
    erin = next(u["id"] for u in demo_org["Users"] if u[EXT]["sunkPosixUsername"] == "erin")
    echoing.add_fault(Fault("Users", None, body=without_resource(erin), times=None))

    result = node.run("nsscache", "update", "--full")

    assert result.returncode == 4, result.stderr
    assert "Users page 3 (startIndex 6) brought no new resources after 5 of 6: refusing a partial listing" in (
        result.stderr)
    assert node.files() == before


def without_resource(resource_id: str) -> Callable[[dict], dict]:
    def rewrite(body: dict) -> dict:
        body["Resources"] = [r for r in body["Resources"] if r["id"] != resource_id]
        return body

    return rewrite


# --- coreweave_users_query / coreweave_groups_query ---------------------------------------------------------------


@pytest.mark.parametrize(
    "paging, users_targets, groups_targets",
    [
        pytest.param("coreweave_pagination = index",
                     [f"startIndex={i}&count=2&{USERS_ENCODED}&{ATTRIBUTES_ENCODED}" for i in (1, 3, 5)],
                     [f"startIndex={i}&count=2&{GROUPS_ENCODED}" for i in (1, 3)], id="index"),
        pytest.param("coreweave_pagination = cursor", None, None, id="cursor"),
    ],
)
def test_the_server_receives_the_query_on_every_page(tmp_path, installed_venv, iam, demo_org, paging,
                                                     users_targets, groups_targets):
    node = a_node(tmp_path, installed_venv, iam.base_url,
                  f"coreweave_page_size = 2\n{paging}\n"
                  f"coreweave_users_query = {USERS_QUERY}\ncoreweave_groups_query = {GROUPS_QUERY}\n")

    # The fake IAM ignores filters: the same caches, the parameters only cost the server nothing more.
    assert_stock_update_writes_the_demo_caches(node, demo_org)
    sample = node.run("nsscache-coreweave", "check", "--sample")
    assert sample.returncode == 0, sample.stdout + sample.stderr

    users, groups = iam.requests("Users"), iam.requests("Groups")
    assert len(users) == 3 + 3 + 1 and len(groups) == 2 + 2 + 1  # update, check's listing, check's sample
    for request in users[:-1]:  # the listings: the operator's query, then the attributes read
        assert (request.params["groups"], request.params["filter"]) == ("admin", 'active eq "true"')
        assert request.target.endswith(f"&{USERS_ENCODED}&{ATTRIBUTES_ENCODED}"), request.target
    for request in groups:
        assert (request.params["sortBy"], request.params["sortOrder"]) == ("displayName", "ascending")
        assert request.target.endswith("&" + GROUPS_ENCODED), request.target
    if users_targets is not None:
        assert [r.target.split("?")[1] for r in users[:3]] == users_targets
        assert [r.target.split("?")[1] for r in groups[:2]] == groups_targets
    assert users[-1].target.split("?")[1] == f"startIndex=1&count=1&{USERS_ENCODED}"  # check --sample


def server_filter(org: dict) -> List[Fault]:
    """What a server honouring the users query (and more) sends: active users
    only; and groups narrowed by some rule of its own: slurm-users without bob
    and other-team, but not slurm-admins. Every page of both endpoints, with
    consistent totals."""
    users = [u for u in org["Users"] if u["active"]]
    groups = [copy.deepcopy(g) for g in org["Groups"] if g["sunkPosixGroupName"] in ("slurm-users", "other-team")]
    bob = next(u["id"] for u in org["Users"] if u[EXT]["sunkPosixUsername"] == "bob")
    for group in groups:
        group["members"] = [m for m in group["members"] if m["value"] != bob]

    def serve(resources: list) -> Callable[[dict], dict]:
        def rewrite(body: dict) -> dict:
            return {**body, "totalResults": len(resources), "itemsPerPage": len(resources), "Resources": resources}

        return rewrite

    return [Fault("Users", None, body=serve(users), times=None), Fault("Groups", None, body=serve(groups), times=None)]


def test_a_server_side_filter_never_widens_access(tmp_path, installed_venv, iam, demo_org):
    # coreweave_groups (slurm-users, slurm-admins) decides; the server's answer
    # only narrows: other-team (carol) is dropped, bob's lost membership and the
    # missing slurm-admins are not made up.
    for fault in server_filter(demo_org):
        iam.add_fault(fault)
    node = a_node(tmp_path, installed_venv, iam.base_url,
                  f"coreweave_users_query = {USERS_QUERY}\ncoreweave_groups_query = {GROUPS_QUERY}\n")

    result = node.run("nsscache", "update", "--full")

    assert result.returncode == 0, result.stderr
    assert node.cache("passwd") == (
        "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash\n"
        "erin:x:20005:20005:Erin Garcia:/mnt/home/erin:/bin/bash\n"
        "frank:x:20006:20006:Frank Miller:/mnt/home/frank:/bin/bash\n"
    )
    assert node.cache("group") == "slurm-users:x:30001:alice,erin,frank\n"
    assert node.cache("shadow") == "alice:*:::::::\nerin:*:::::::\nfrank:*:::::::\n"
    for name in MAPS:
        text = node.cache(name)
        assert not any(word in text for word in ("bob", "carol", "dave", "other-team", "slurm-admins")), name
    assert all(r.params.get("filter") for r in iam.requests("Users"))
    assert all(r.params.get("sortBy") for r in iam.requests("Groups"))


def test_a_groups_filter_is_refused_before_any_request(tmp_path, installed_venv, iam):
    # Hiding a group from the listing would hide its gid from the primary-gid rule.
    node = a_node(tmp_path, installed_venv, iam.base_url,
                  'coreweave_groups_query = filter=displayName eq "slurm-users"\n')

    result = node.run("nsscache", "update", "--full")

    assert result.returncode != 0
    assert ("invalid configuration: coreweave_groups_query must not set 'filter': the primary-gid rule needs every "
            "group; choose groups with coreweave_groups") in result.stderr
    assert iam.requests() == []
    assert not any((node.root / "cache" / f"{name}.cache").exists() for name in MAPS)
