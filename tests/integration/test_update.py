"""The whole chain against the real nsscache 0.49: the project's wheel,
installed non-editably into a fresh venv beside nsscache, the stock
``nsscache update`` (and ``nsscache-coreweave``) run as subprocesses against
a real HTTP server on loopback (tests/support/fakeiam.py), exact cache contents."""

from __future__ import annotations

import copy
import json
import time

import pytest

from support.fakeiam import FakeIAM, Fault
from support.node import (
    ATTRIBUTES_ENCODED,
    EXT,
    MAPS,
    TOKEN,
    assert_stock_update_writes_the_demo_caches,
    expected_caches,
)


def test_stock_nsscache_writes_exact_caches(node, iam, demo_org):
    result = assert_stock_update_writes_the_demo_caches(node, demo_org)
    assert "dropped key frank: key 2 does not decode as a ssh-ed25519 key" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_four_maps_make_one_users_pass_and_one_groups_pass(node, iam):
    node.configure(iam.base_url, "coreweave_page_size = 2\n")

    assert node.run("nsscache", "update", "--full").returncode == 0

    # 6 users and 3 groups at 2 per page: 3 + 2 requests for all four maps (and one discovery).
    assert [r.target for r in iam.requests("Users")] == [
        f"/scim/cw-demo/Users?startIndex={i}&count=2&{ATTRIBUTES_ENCODED}" for i in (1, 3, 5)
    ]
    assert [r.target for r in iam.requests("Groups")] == [
        f"/scim/cw-demo/Groups?startIndex={i}&count=2" for i in (1, 3)
    ]


def test_cursor_pagination_writes_the_same_caches(node, iam, demo_org):
    node.configure(iam.base_url, "coreweave_pagination = cursor\ncoreweave_page_size = 4\n")

    assert_stock_update_writes_the_demo_caches(node, demo_org)
    assert iam.request_count("Users") == 2 and iam.request_count("Groups") == 1


@pytest.mark.parametrize(
    "members_by, member_match",
    [
        pytest.param(None, "auto", id="ids-auto"),
        pytest.param("value", "auto", id="names-in-value-auto"),
        pytest.param("display", "auto", id="names-in-display-auto"),  # value still holds the id
        pytest.param(None, "id", id="ids-id"),
        pytest.param("value", "value", id="names-in-value-value"),
        pytest.param("display", "display", id="names-in-display-display"),
        pytest.param("userName", "userName", id="names-in-userName-userName"),
    ],
)
def test_members_served_either_way_give_the_same_caches(node, demo_org, members_by, member_match):
    with FakeIAM(demo_org, token=TOKEN, members_by=members_by) as served:
        node.configure(served.base_url, f"coreweave_member_match = {member_match}\n")

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)

    assert "does not resolve" not in result.stderr


def test_members_served_by_name_with_member_match_id_are_dropped_with_warnings(node, demo_org):
    # The safe default stays RFC 7643 first: names are never read as ids.
    with FakeIAM(demo_org, token=TOKEN, members_by="value") as served:
        node.configure(served.base_url, "coreweave_member_match = id\n")

        result = node.run("nsscache", "update", "--full")

    assert result.returncode != 0
    for name in ("alice", "bob", "erin", "frank"):
        assert f"dropped member slurm-users/{name}: does not resolve to any listed user" in result.stderr
    assert not any((node.root / "cache" / f"{name}.cache").exists() for name in MAPS)


def test_names_and_group_refs_among_id_members_grant_nothing(node, demo_org):
    # An insider who can edit a group's members (or a directory mixing conventions) adds POSIX
    # names and a $ref to a Groups resource beside the RFC 7643 ids: in auto, one listed id
    # decides that this listing names members by id, so none of them is taken.
    org = copy.deepcopy(demo_org)
    admins = next(g for g in org["Groups"] if g.get("sunkPosixGroupName") == "slurm-admins")
    erin_id = next(u["id"] for u in org["Users"] if u[EXT]["sunkPosixUsername"] == "erin")
    admins["members"] += [
        {"value": "bob"},  # bob's POSIX name
        {"value": "carol", "type": "User"},  # carol is in no allowed group
        {"$ref": f"https://api.coreweave.com/scim/cw-demo/Groups/{erin_id}"},  # a group, not erin
    ]
    with FakeIAM(org, token=TOKEN) as served:
        node.configure(served.base_url)

        result = assert_stock_update_writes_the_demo_caches(node, demo_org)  # slurm-admins: alice only

    assert "carol" not in node.cache("passwd") + node.cache("shadow") + node.cache("sshkey")
    assert "this listing's members are user ids" in result.stderr


def test_inactive_and_outside_users_never_reach_any_cache(node, iam):
    assert node.run("nsscache", "update", "--full").returncode == 0

    for name in MAPS:
        text = node.cache(name)
        assert "dave" not in text and "carol" not in text and "other-team" not in text, name


def test_removed_user_disappears_at_the_next_run(node, iam, demo_org):
    assert node.run("nsscache", "update", "--full").returncode == 0
    slurm_users = next(g for g in demo_org["Groups"] if g["sunkPosixGroupName"] == "slurm-users")
    bob_id = next(u["id"] for u in demo_org["Users"] if u[EXT]["sunkPosixUsername"] == "bob")
    slurm_users["members"] = [m for m in slurm_users["members"] if m["value"] != bob_id]
    iam.set_org(demo_org)

    # A plain `update` (what cron runs) is a full write: no modify timestamp.
    assert node.run("nsscache", "update").returncode == 0

    assert all("bob" not in node.cache(name) for name in MAPS)
    assert not (node.root / "state" / "timestamp-passwd-modify").exists()


@pytest.mark.parametrize(
    "fault, status",
    [
        pytest.param(Fault.error("Users", page=2, status=503, times=None), 75, id="server-down-mid-listing"),
        pytest.param(Fault.error("Groups", page=1, status=401, times=None), 75, id="token-refused"),
        pytest.param(Fault.wrong_total("Users", page=2, total=99), 4, id="total-changes-mid-listing"),
        pytest.param(Fault.not_json("Users", page=3), 4, id="proxy-error-page"),
        pytest.param(Fault.empty_page("Users", page=2), 4, id="empty-page-before-total"),
    ],
)
def test_failed_run_leaves_every_cache_byte_identical(node, iam, fault, status):
    node.configure(iam.base_url, "coreweave_page_size = 2\ncoreweave_retries = 0\n")
    assert node.run("nsscache", "update", "--full").returncode == 0
    before = node.files()
    iam.add_fault(fault)

    result = node.run("nsscache", "update", "--full")

    # SourceUnavailable stops nsscache at once (75, EX_TEMPFAIL); InvalidMap
    # fails each of the four maps (+1 each).
    assert result.returncode == status, result.stderr
    assert node.files() == before
    # Groups are listed before Users: a Groups failure stops before any Users page.
    assert iam.request_count("Users") == 3 + (0 if fault.endpoint == "Groups" else fault.page)


def test_nsscache_coreweave_update_exit_status_is_truthful(node, iam):
    # passwd's own coreweave_groups names a group without members: nsscache
    # refuses the empty map, then group and shadow succeed and overwrite its
    # exit status with 0 (upstream bug). Our command reports the failure.
    node.configure(iam.base_url, "[passwd]\ncoreweave_groups = no-such-group\n", maps="passwd, group")

    stock = node.run("nsscache", "update", "--full")
    ours = node.run("nsscache-coreweave", "update")

    assert stock.returncode == 0
    assert ours.returncode == 1
    assert "not updated this run: passwd" in ours.stderr


def test_nsscache_coreweave_update_writes_the_caches(node, iam, demo_org):
    result = node.run("nsscache-coreweave", "update")

    assert result.returncode == 0, result.stderr
    for name, content in expected_caches(demo_org).items():
        assert node.cache(name) == content, name


def test_preview_prints_map_lines_and_touches_no_cache(node, iam, demo_org):
    result = node.run("nsscache-coreweave", "preview", "group")
    first, rest = result.stdout.split("\n", 1)

    assert (result.returncode, rest) == (0, expected_caches(demo_org)["group"])
    assert first.startswith("nsscache-coreweave:*") and first.endswith(":65534:")  # the run marker
    assert node.files() == {}


def test_check_reports_counts_attributes_and_drops(node, iam):
    result = node.run("nsscache-coreweave", "check")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "listed: 6 users, 3 groups (token accepted)" in lines
    assert "would write: 4 users, 2 groups, 4 SSH keys" in lines
    assert "registration: the nsscache command finds source coreweave" in lines
    assert "dropped user dave: is inactive" in lines
    assert "dropped key frank: key 2 does not decode as a ssh-ed25519 key (Invalid format)" in lines
    assert f"attribute users.uid ({EXT}:sunkPosixUid): present on 6 of 6" in lines
    assert TOKEN not in result.stdout + result.stderr


def test_check_names_a_misspelt_attribute_and_fails(node, iam):
    node.configure(iam.base_url, f"coreweave_uid_attribute = {EXT}:sunkPosixUID_typo\n")

    result = node.run("nsscache-coreweave", "check")

    assert result.returncode == 1
    assert (
        f"problem: no user carries {EXT}:sunkPosixUID_typo: check the attribute name (see check --sample)"
        in result.stdout.splitlines()
    )


def test_check_reports_a_refused_token(node, iam):
    node.token_file.write_text("wrong-token\n")

    result = node.run("nsscache-coreweave", "check")

    assert result.returncode == 75
    assert ("HTTP 401" in result.stdout
            and "the bearer token is missing, expired or lacks the SUNK/SCIM permissions" in result.stdout)
    assert "wrong-token" not in result.stdout + result.stderr


def test_check_sample_prints_one_raw_user_and_group(node, iam, demo_org):
    result = node.run("nsscache-coreweave", "check", "--sample")

    assert result.returncode == 0, result.stdout + result.stderr
    user = json.dumps(demo_org["Users"][0], indent=2, sort_keys=True)
    group = json.dumps(demo_org["Groups"][0], indent=2, sort_keys=True)
    assert result.stdout.endswith(f"sample User:\n{user}\nsample Group:\n{group}\n")
    assert [r.target for r in iam.requests()][-2:] == [
        "/scim/cw-demo/Users?startIndex=1&count=1", "/scim/cw-demo/Groups?startIndex=1&count=1",
    ]


def test_check_sample_refuses_a_response_over_max_page_bytes(node, iam):
    node.configure(iam.base_url, "coreweave_max_page_bytes = 65536\n")
    iam.add_fault(Fault("Users", page=1))  # the listing's page 1: as usual; the sample's page 1: 1 MiB
    huge = iam.add_fault(Fault.huge_page("Users", page=1, size=1 << 20))

    result = node.run("nsscache-coreweave", "check", "--sample")

    lines = result.stdout.splitlines()
    assert huge.fired == 1
    assert (
        "sample User: cannot be read: Users page 1: the response is larger than coreweave_max_page_bytes "
        "(65536 bytes): refusing a runaway response"
    ) in lines
    assert "sample Group:" in lines
    assert result.returncode == 1, result.stdout  # as a refused listing


@pytest.mark.parametrize(
    "fault, error",
    [
        pytest.param(Fault.stall("Users", page=1, seconds=60), "ReadTimeout talking to {base_url} (after 1 attempts): "
                     "is the network or the server down?", id="no-answer"),
        # Each header line well within coreweave_timeout: only the deadline ends it.
        pytest.param(Fault.slow_headers("Users", page=1, seconds_per_line=0.5, lines=120),
                     "coreweave_deadline (2 s) exceeded waiting for the server: refusing to go on",
                     id="trickled-headers"),
    ],
)
def test_check_sample_ends_within_the_deadline(node, iam, fault, error):
    node.configure(iam.base_url, "coreweave_deadline = 2\ncoreweave_timeout = 30\ncoreweave_retries = 0\n")
    iam.add_fault(Fault("Users", page=1))  # the listing's page 1: as usual
    iam.add_fault(fault)

    start = time.monotonic()
    result = node.run("nsscache-coreweave", "check", "--sample")
    elapsed = time.monotonic() - start

    lines = result.stdout.splitlines()
    assert f"sample User: cannot be read: Users page 1: {error.format(base_url=iam.base_url)}" in lines
    assert "sample Group:" in lines
    assert result.returncode == 75, result.stdout
    assert fault.fired == 1
    # The whole check (listing, registration probe, samples); the fault alone would take 60 s.
    assert elapsed < 2 + 15


def test_long_listing_decoded_in_workers_writes_the_same_caches(node, iam, demo_org):
    # 26 users at 1 per page: more than scim.PARALLEL_MIN_PAGES pages, so the
    # Users pages are decoded in forked workers (coreweave_workers = 2).
    org = dict(demo_org, Users=demo_org["Users"] + [
        {"id": f"filler-{i:02d}", "userName": f"filler{i}@example.com", "active": True} for i in range(20)
    ])
    iam.set_org(org)
    node.configure(iam.base_url, "coreweave_page_size = 1\ncoreweave_workers = 2\n")

    assert_stock_update_writes_the_demo_caches(node, demo_org)

    assert [r.target for r in iam.requests("Users")] == [
        f"/scim/cw-demo/Users?startIndex={i}&count=1&{ATTRIBUTES_ENCODED}" for i in range(1, 27)
    ]
