"""The scim2-server harness (tests/support/scim2_harness.py): the demo org loaded into an
independent SCIM server, read back page by page as our client will read it.

scim2-server missing is a failure, never a skip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import requests

from support import scim2_harness
from support.scim2_harness import (
    GROUP_EXT,
    GROUP_GID_PATH,
    GROUP_NAME_PATH,
    USER_EXT,
    Scim2Server,
    Scim2ServerMissing,
    load_org,
)

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
ORG_FILE = REPO / "demo" / "org.json"
TOKEN = "t0ken"


def _start(server: Scim2Server) -> Scim2Server:
    try:
        return server.start()
    except Scim2ServerMissing as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def org() -> dict:
    return json.loads(ORG_FILE.read_text())


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, org):
    """One scim2-server (cursor + index paging) holding demo/org.json; (server, org id -> server id)."""
    server = _start(Scim2Server(tmp_path_factory.mktemp("scim2"), token=TOKEN))
    try:
        ids = load_org(server.base_url, TOKEN, ORG_FILE)
        yield server, ids
    finally:
        server.stop()


@pytest.fixture
def http() -> requests.Session:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def walk_index(http, url, count):
    pages, start = [], 1
    while True:
        r = http.get(url, params={"startIndex": start, "count": count}, timeout=10)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        start += pages[-1]["itemsPerPage"]
        if start > pages[-1]["totalResults"] or pages[-1]["itemsPerPage"] == 0:
            return pages


def walk_cursor(http, url, count):
    pages, cursor = [], ""
    while True:
        r = http.get(url, params={"cursor": cursor, "count": count}, timeout=10)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        if "nextCursor" not in pages[-1]:
            return pages
        cursor = pages[-1]["nextCursor"]


def by_username(resources):
    return {r["userName"]: r for r in resources}


def as_served(ext: dict) -> dict:
    """scim2-server drops empty multi-valued attributes (RFC 7643 §2.5: empty = unassigned)."""
    return {k: v for k, v in ext.items() if v != []}


def test_scim2_server_is_installed():
    try:
        command = scim2_harness.scim2_server_command()
    except Scim2ServerMissing as e:
        pytest.fail(str(e))
    assert command


def test_missing_scim2_server_is_reported(monkeypatch, tmp_path):
    monkeypatch.delenv("SCIM2_SERVER_PYTHON", raising=False)
    monkeypatch.setitem(sys.modules, "scim2_server.testserver.cli", None)  # import now raises ImportError
    with pytest.raises(Scim2ServerMissing, match="pip install"):
        Scim2Server(tmp_path).start()


def test_a_scim2_server_named_by_the_environment_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("SCIM2_SERVER_PYTHON", str(tmp_path / "nothing"))
    with pytest.raises(Scim2ServerMissing, match="is not an executable file"):
        Scim2Server(tmp_path).start()


def test_load_org_maps_every_id(loaded, http, org):
    server, ids = loaded
    assert set(ids) == {r["id"] for r in org["Users"] + org["Groups"]}
    assert len(set(ids.values())) == len(ids)
    for user in org["Users"]:
        r = http.get(f"{server.base_url}/Users/{ids[user['id']]}", timeout=10)
        assert r.status_code == 200 and r.json()["userName"] == user["userName"]


def test_index_pages_of_two_hold_every_user_and_the_extension(loaded, http, org):
    server, ids = loaded
    pages = walk_index(http, f"{server.base_url}/Users", count=2)
    assert [p["startIndex"] for p in pages] == [1, 3, 5]
    assert all(p["totalResults"] == 6 and p["itemsPerPage"] == 2 for p in pages)
    served = by_username(r for p in pages for r in p["Resources"])
    assert set(served) == {u["userName"] for u in org["Users"]}
    for user in org["Users"]:
        got = served[user["userName"]]
        assert got["id"] == ids[user["id"]]
        assert got[USER_EXT] == as_served(user[USER_EXT])  # sunkPosixUsername/Uid/Gid, home, shell, sunkSshKeys
        assert got["active"] is user["active"]
        assert got.get("name") == user.get("name")
        assert got["displayName"] == user["displayName"]
        assert USER_EXT in got["schemas"]
    assert served["frank.miller@example.com"][USER_EXT]["sunkSshKeys"][1].endswith("frank@old-laptop")
    assert "sunkSshKeys" not in served["erin.garcia@example.com"][USER_EXT]  # sent as [], served absent


def test_cursor_pages_of_two_hold_every_user(loaded, http, org):
    server, _ = loaded
    pages = walk_cursor(http, f"{server.base_url}/Users", count=2)
    assert len(pages) == 3
    assert all(p["totalResults"] == 6 and "startIndex" not in p for p in pages)
    assert "nextCursor" not in pages[-1]
    served = by_username(r for p in pages for r in p["Resources"])
    assert ({name: u[USER_EXT] for name, u in served.items()}
            == {u["userName"]: as_served(u[USER_EXT]) for u in org["Users"]})


def test_groups_carry_the_extension_and_server_member_ids(loaded, http, org):
    server, ids = loaded
    groups = {g["displayName"]: g
              for p in walk_index(http, f"{server.base_url}/Groups", count=2) for g in p["Resources"]}
    assert set(groups) == {g["displayName"] for g in org["Groups"]}
    name_attr, gid_attr = GROUP_NAME_PATH.rsplit(":", 1)[1], GROUP_GID_PATH.rsplit(":", 1)[1]
    for group in org["Groups"]:
        got = groups[group["displayName"]]
        assert "sunkPosixGroupName" not in got  # moved into the extension
        assert got[GROUP_EXT] == {name_attr: group["sunkPosixGroupName"], gid_attr: group["sunkPosixGid"]}
        assert [m["value"] for m in got["members"]] == [ids[m["value"]] for m in group["members"]]
        assert all(m["$ref"] == f"{server.base_url}/v2/Users/{m['value']}" for m in got["members"])
        assert [m["display"] for m in got["members"]] == [m["display"] for m in group["members"]]
    assert groups["Slurm-Admins"][GROUP_EXT]["sunkPosixGroupName"] == "slurm-admins"


def test_filters(loaded, http):
    server, _ = loaded
    active = http.get(f"{server.base_url}/Users", params={"filter": "active eq true"}, timeout=10).json()
    assert active["totalResults"] == 5 and "dave.brown@example.com" not in by_username(active["Resources"])
    one = http.get(f"{server.base_url}/Groups", params={"filter": 'displayName eq "slurm-users"'}, timeout=10).json()
    assert [g["displayName"] for g in one["Resources"]] == ["slurm-users"]


def test_cursor_errors(loaded, http):
    server, _ = loaded
    url = f"{server.base_url}/Users"
    r = http.get(url, params={"cursor": "bogus", "count": 2}, timeout=10)
    assert r.status_code == 400 and r.json()["scimType"] == "invalidCursor"
    nxt = http.get(url, params={"cursor": "", "count": 2}, timeout=10).json()["nextCursor"]
    r = http.get(url, params={"cursor": nxt, "count": 3}, timeout=10)
    assert r.status_code == 400 and r.json()["scimType"] == "invalidCount"


def test_bearer_token_is_required(loaded):
    server, _ = loaded
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = requests.get(f"{server.base_url}/Users", headers=headers, timeout=10)
        assert r.status_code == 401
        assert r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_top_level_group_attributes_are_refused(loaded, http):
    """Why the harness moves sunkPosixGroupName/sunkPosixGid into an extension."""
    server, _ = loaded
    r = http.post(
        f"{server.base_url}/Groups",
        data=json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "x",
                         "sunkPosixGroupName": "x", "sunkPosixGid": 39999}),
        headers={"Content-Type": "application/scim+json"},
        timeout=10,
    )
    assert r.status_code == 400 and "sunkPosixGroupName" in r.json()["detail"]


def test_index_only_server_and_default_page_size(tmp_path, http, org):
    server = _start(Scim2Server(tmp_path, token=TOKEN, cursor=False, default_page_size=4))
    try:
        load_org(server.base_url, TOKEN, org)
        r = http.get(f"{server.base_url}/Users", params={"cursor": ""}, timeout=10)
        assert r.status_code == 501
        body = http.get(f"{server.base_url}/Users", timeout=10).json()
        assert (body["totalResults"], body["itemsPerPage"], body["startIndex"]) == (6, 4, 1)
    finally:
        server.stop()


def test_load_org_reports_a_refused_resource(loaded):
    server, _ = loaded
    with pytest.raises(scim2_harness.Scim2ServerError, match="POST /Users"):
        load_org(server.base_url, TOKEN,
                 {"Users": [{"id": "x", "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}]})
