"""The benchmark harness (benchmarks/) at a tiny size, so that it cannot rot.

The organisation generator, the pre-rendering SCIM server (plain, or filtering: id
filters and attributes honoured) and the runner (real nsscache from a fresh venv with the
project's wheel, the floor, the report) run end to end on a few hundred users; so do the
many-nodes part (issue 15: a real publish, a real nginx, nodes in mirror mode through the
stock nsscache, a small fleet) and the fetch-less part (issue 16: members by id from the
filtering server, and its lower bound). Request counts, bytes, cache line counts and the report's shape are
asserted; timings never are.
"""

from __future__ import annotations

import json
import math

import pytest
import requests

from benchmarks import keys, replay, runner
from benchmarks.org import CONFIGURED_GROUPS, EXT_CW, Org, OrgSpec
from benchmarks.server import FILTER_MAX_RESULTS, BenchServer, InvalidFilter, listing_targets, parse_id_filter
from nss_cache_coreweave import memberfetch, sshkeys

SPEC = OrgSpec(users=150, groups=12, members=60, invalid=34, key_pool=32)


@pytest.fixture(scope="module")
def org():
    return Org(SPEC)


def test_org_is_deterministic(org):
    again = Org(SPEC)
    assert [org.user(i) for i in range(SPEC.users)] == [again.user(i) for i in range(SPEC.users)]
    assert [org.group(j) for j in range(SPEC.groups)] == [again.group(j) for j in range(SPEC.groups)]
    assert org.expected == again.expected
    assert Org(OrgSpec(users=150, groups=12, members=60, invalid=34, key_pool=32, seed=2)).user(0) != org.user(0)


def test_org_keys_are_real_and_varied(org):
    for line in org.key_pool:
        sshkeys.parse(line)  # every pool key is valid for the package
    assert {line.split()[0] for line in org.key_pool} == {
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
        "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    }
    for line in keys.bad_keys():
        with pytest.raises(sshkeys.InvalidKey):
            sshkeys.parse(line)
    bodies = [k.split()[1] for i in range(SPEC.users) for k in org.user(i).get(EXT_CW, {}).get("sunkSshKeys", [])]
    assert len(set(bodies)) > 10
    assert {len(org.ssh_key_indices(i)) for i in range(SPEC.users)} == {0, 1, 2, 3}


def test_org_shape(org):
    sizes = [len(json.dumps(org.user(i), separators=(",", ":")).encode()) for i in range(SPEC.users)]
    assert 1000 <= sum(sizes) / len(sizes) <= 2000
    assert len(org.members) == SPEC.members
    assert len(org.invalid) == SPEC.invalid
    assert sum(1 for u in org.invalid if u in org.members) >= SPEC.invalid * 0.75
    names = {org.group(j)["sunkPosixGroupName"] for j in range(SPEC.groups)}
    assert {name for name, _, _ in CONFIGURED_GROUPS} <= names and len(names) == SPEC.groups
    expected = org.expected
    assert expected["group"] == len(CONFIGURED_GROUPS)
    assert 0 < expected["sshkey"] <= expected["passwd"] == expected["shadow"] < SPEC.members


def _get(session, url, **params):
    response = session.get(url, params=params)
    return response.status_code, response.json()


def test_server_paginates_projects_and_counts(org):
    with BenchServer(org, "t0ken", capability="filtering") as server:
        s = requests.Session()
        s.headers["Authorization"] = "Bearer t0ken"
        users = f"{server.base_url}/Users"

        status, page = _get(s, users, startIndex=41, count=40)
        assert status == 200 and page["startIndex"] == 41 and page["itemsPerPage"] == 40
        assert page["totalResults"] == SPEC.users and page["Resources"][0] == org.user(40)
        status, page = _get(s, users, startIndex=141, count=40)
        assert page["itemsPerPage"] == 10

        seen, cursor = [], ""
        while True:
            status, page = _get(s, users, cursor=cursor, count=64)
            seen += [r["id"] for r in page["Resources"]]
            if "nextCursor" not in page:
                break
            cursor = page["nextCursor"]
        assert seen == [org.user_id(i) for i in range(SPEC.users)]
        assert _get(s, users, cursor="bogus", count=10)[1]["scimType"] == "invalidCursor"

        attributes = f"userName,name.givenName,{EXT_CW}:sunkSshKeys,{EXT_CW.upper()}:SUNKPOSIXUID"
        status, page = _get(s, users, startIndex=1, count=3, attributes=attributes)
        first = page["Resources"][0]
        assert set(first) == {"schemas", "id", "userName", "name", EXT_CW}
        assert set(first["name"]) == {"givenName"} and set(first[EXT_CW]) <= {"sunkSshKeys", "sunkPosixUid"}
        status, page = _get(s, f"{server.base_url}/Groups", count=2, attributes="members.value,sunkPosixGid")
        assert all(set(m) == {"value"} for g in page["Resources"] for m in g["members"])
        status, page = _get(s, users, count=2, excludedAttributes=f"id,meta,emails,{EXT_CW}:sunkSshKeys")
        first = page["Resources"][0]
        assert "id" in first and "meta" not in first and "emails" not in first and "sunkSshKeys" not in first[EXT_CW]

        assert requests.get(users).status_code == 401
        stats = server.take_stats(reset=True)
        assert stats["requests"] == {"Users": 9, "Groups": 1}
        assert stats["connections"] == 2  # the session's one keep-alive connection, then the unauthenticated get
        assert stats["targets"][0] == "/scim/cwbench/Users?startIndex=41&count=40"
        assert stats["body_bytes"] > 0
        assert server.take_stats()["requests"] == {}


def _session() -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = "Bearer t0ken"
    return s


def _filter(*ids: str) -> str:
    return " or ".join(f"id eq {json.dumps(i)}" for i in ids)


def test_plain_server_ignores_filter_and_attributes(org):
    with BenchServer(org, "t0ken", capability="plain") as server:
        s = _session()

        status, config = _get(s, f"{server.base_url}/ServiceProviderConfig")
        status, page = _get(s, f"{server.base_url}/Users", startIndex=1, count=3, filter=_filter(org.user_id(7)),
                            attributes="userName", excludedAttributes="emails")

        assert config["filter"] == {"supported": False, "maxResults": 0}
        assert status == 200 and page["totalResults"] == SPEC.users and page["itemsPerPage"] == 3
        assert page["Resources"] == [org.user(0), org.user(1), org.user(2)]


def test_filtering_server_advertises_and_honours_id_filters(org):
    with BenchServer(org, "t0ken", capability="filtering") as server:
        s = _session()
        users = f"{server.base_url}/Users"

        status, config = _get(s, f"{server.base_url}/ServiceProviderConfig")
        assert config["filter"] == {"supported": True, "maxResults": FILTER_MAX_RESULTS}
        # Matches come back once each, in listing order; an id no user has matches nothing.
        asked = _filter(org.user_id(7), "no-such-user", org.user_id(3), org.user_id(7))
        status, page = _get(s, users, startIndex=1, count=100, filter=asked)
        assert status == 200
        assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (2, 1, 2)
        assert page["Resources"] == [org.user(3), org.user(7)]
        status, page = _get(s, users, filter=asked, attributes="active")
        assert page["Resources"] == [{"schemas": org.user(3)["schemas"], "id": org.user_id(3), "active": True},
                                     {"schemas": org.user(7)["schemas"], "id": org.user_id(7), "active": True}]
        status, page = _get(s, users, filter=_filter(org.user_id(3).upper()))
        assert (page["totalResults"], page["Resources"]) == (0, [])  # ids are compared exactly


def test_filtering_server_pages_over_the_matches_at_most_max_results_a_page():
    many = Org(OrgSpec(users=450, groups=12, members=60, invalid=0, key_pool=32))
    with BenchServer(many, "t0ken", capability="filtering") as server:
        s = _session()
        everyone = _filter(*(many.user_id(i) for i in range(449, 199, -1)))  # 250 users, in reverse

        status, first = _get(s, f"{server.base_url}/Users", startIndex=1, count=1000, filter=everyone)
        status, second = _get(s, f"{server.base_url}/Users", startIndex=201, count=1000, filter=everyone)
        status, walked = _get(s, f"{server.base_url}/Users", cursor="", count=1000, filter=everyone)

        assert (first["totalResults"], first["itemsPerPage"]) == (250, FILTER_MAX_RESULTS)
        assert [r["id"] for r in first["Resources"] + second["Resources"]] == [many.user_id(i) for i in range(200, 450)]
        assert second["itemsPerPage"] == 50
        assert walked["itemsPerPage"] == FILTER_MAX_RESULTS and "nextCursor" in walked


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"),
    pytest.param('userName eq "a"', id="another-attribute"),
    pytest.param('id ne "a"', id="another-operator"),
    pytest.param("id eq 7", id="not-a-string"),
    pytest.param('id eq "a" and id eq "b"', id="and"),
    pytest.param('(id eq "a")', id="brackets"),
    pytest.param('id eq "a" or', id="dangling-or"),
    pytest.param('id eq "a', id="unterminated-string"),
    pytest.param('id eq "a" id eq "b"', id="no-operator"),
])
def test_filtering_server_refuses_any_other_filter(org, text):
    with pytest.raises(InvalidFilter):
        parse_id_filter(text)
    with BenchServer(org, "t0ken", capability="filtering") as server:
        status, body = _get(_session(), f"{server.base_url}/Users", filter=text)

    assert status == 400 and body["scimType"] == "invalidFilter" and body["status"] == "400"


def test_id_filter_values_are_json_strings():
    crafted = 'x" or id pr or id eq "y'

    assert parse_id_filter(_filter(crafted, "b\\c", "é")) == (crafted, "b\\c", "é")
    assert parse_id_filter('ID Eq "a"  OR  id EQ "b"') == ("a", "b")  # RFC 7644 §3.4.2.2: case-insensitive


def test_filtering_server_refuses_a_filter_on_groups_and_switches_capability(org):
    with BenchServer(org, "t0ken", capability="filtering") as server:
        s = _session()
        status, body = _get(s, f"{server.base_url}/Groups", filter=_filter("x"))
        assert (status, body["scimType"]) == (400, "invalidFilter")

        switched = requests.get(f"{server.base_url.split('/scim')[0]}/_bench/capability?set=plain")
        status, config = _get(s, f"{server.base_url}/ServiceProviderConfig")
        refused = requests.get(f"{server.base_url.split('/scim')[0]}/_bench/capability?set=psychic")

        assert switched.json() == {"capability": "plain"} and config["filter"]["supported"] is False
        assert refused.status_code == 400 and server.capability == "plain"


def test_latency_is_set_in_milliseconds_and_a_bad_value_is_refused(org):
    with BenchServer(org, "t0ken") as server:
        control = f"{server.base_url.split('/scim')[0]}/_bench/latency"

        answers = [requests.get(control, params={"set": value}) for value in ("25", "-1", "nan", "slow", "0")]

        assert [a.status_code for a in answers] == [200, 400, 400, 400, 200]
        assert answers[0].json() == {"latency_ms": 25.0} and server.latency == 0.0


@pytest.mark.parametrize("pagination", ["index", "cursor"])
def test_listing_targets_are_a_whole_listing_walk(org, pagination):
    with BenchServer(org, "t0ken") as server:
        s = _session()
        for endpoint in ("Users", "Groups"):
            params = {"startIndex": 1} if pagination == "index" else {"cursor": ""}
            while True:
                status, page = _get(s, f"{server.base_url}/{endpoint}", **params, count=40)
                if pagination == "index":
                    params["startIndex"] += 40
                    if params["startIndex"] > page["totalResults"]:
                        break
                elif "nextCursor" in page:
                    params["cursor"] = page["nextCursor"]
                else:
                    break
        walked = server.take_stats()["targets"]

        assert listing_targets(server.prefix, server.totals, 40, pagination) == walked
        assert len(walked) == math.ceil(SPEC.users / 40) + 1


def test_runner_end_to_end(installed_venv, tmp_path):
    md, raw = tmp_path / "benchmarks.md", tmp_path / "bench.json"
    status = runner.main([
        "--sizes", "150,300", "--groups", "12", "--members-share", "0.4", "--invalid", "34", "--key-pool", "32",
        "--reps", "2", "--page-size", "40", "--bin-dir", str(installed_venv.python.parent),
        "--work-dir", str(tmp_path), "--output", str(md), "--json", str(raw),
    ])
    assert status == 0
    data = json.loads(raw.read_text())
    assert [s["users"] for s in data["sizes"]] == [150, 300]
    for size in data["sizes"]:
        expected_requests = math.ceil(size["users"] / 40) + math.ceil(12 / 40)
        expected_lines = {m: size["org"]["expected"][m] for m in runner.MAPS}
        assert len(size["sync"]) == len(size["floor"]) == 2
        for run in size["sync"]:
            assert run["exit"] == 0
            assert run["requests"].get("Users", 0) + run["requests"].get("Groups", 0) == expected_requests
            assert run["requests"].get("other", 0) <= 1
            assert run["lines"] == expected_lines
            assert run["targets_match"] and run["maxrss_kb"] > 0 and run["wall"] > 0
        for run in size["floor"]:
            assert sum(run["requests"].values()) == expected_requests and run["targets_match"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "benchmarks.md"]  # work files removed

    text = md.read_text()
    for heading in ("# Benchmarks", "## Command", "## Machine", "## Targets (issue 5)", "## Results",
                    "## Organisation"):
        assert f"\n{heading}\n" in f"\n{text}"
    assert "-m benchmarks --sizes 150,300" in text
    assert "| users | groups | members | sync wall s |" in text
    assert "| 150 → 300 | 2 |" in text
    assert "✅ pass" in text and "— not measured" in text  # the request-count target; 100k was not run
    assert "FAIL" not in text.split("## Targets")[1].split("## Results")[0]
    many = text.split("\n## Many nodes (issue 15)\n")[1]
    assert ("| many nodes (issue 15) | not run (--no-many-nodes, or --many-nodes-at not among --sizes) "
            "| — not measured |") in many
    assert data["many"] is None
    less = text.split("\n## Fetching less (issue 16)\n")[1]
    assert ("| fetching less (issue 16) | not run (--no-fetch-less, or --fetch-less-at not among --sizes) "
            "| — not measured |") in less
    assert data["fetch_less"] == []


def test_fetch_less_part_fetches_the_members_by_id_with_the_full_listings_caches(installed_venv, tmp_path):
    """An organisation without dangling member ids (``--invalid 0``): with one, the package lists every user."""
    md, raw = tmp_path / "benchmarks.md", tmp_path / "bench.json"
    status = runner.main([
        "--sizes", "450", "--groups", "12", "--members-share", "0.4", "--invalid", "0", "--key-pool", "32",
        "--reps", "2", "--page-size", "40", "--no-many-nodes", "--fetch-less-at", "450",
        "--bin-dir", str(installed_venv.python.parent), "--work-dir", str(tmp_path), "--output", str(md),
        "--json", str(raw),
    ])

    assert status == 0
    data = json.loads(raw.read_text())
    (size,), (part,) = data["sizes"], data["fetch_less"]
    expected_lines = {m: size["org"]["expected"][m] for m in runner.MAPS}
    whole = math.ceil(450 / 40) + 1
    assert size["full_listing_requests"] is True and {r["fetch"] for r in size["sync"]} == {"full"}
    assert part["users"] == 450 and part["members"] == 180 and part["expected_listing"] == whole
    assert part["floor_is_full_run"] is True and part["fell_back"] == []
    assert part["full"]["fetch"] == "full" and part["full"]["requests"] == {"Users": whole - 1, "Groups": 1}
    assert part["full"]["lines"] == expected_lines
    for run in part["sync"]:  # the Groups page, then 180 ids in batches of at most 40 (coreweave_page_size)
        assert run["fetch"] == "members" and run["same_caches"] is True and run["lines"] == expected_lines
        assert run["requests"] == {"Groups": 1, "Users": math.ceil(180 / 40), "other": 1}
        assert run["body_bytes"] < part["full_listing_bytes"] and run["targets_match"]
    for run in part["floor"]:
        assert run["requests"] == {"Users": whole - 1, "Groups": 1} and run["targets_match"]
        assert run["body_bytes"] == part["full_listing_bytes"]
    assert len(part["lower"]) == 2 and replay.IN_FLIGHT == memberfetch.IN_FLIGHT
    for run, sync in zip(part["lower"], part["sync"]):  # the lower bound: the sync's requests and caches, nothing else
        assert run["requests"] == sync["requests"] and run["body_bytes"] == sync["body_bytes"]
        assert run["targets_match"] is True and run["same_caches"] is True and run["lines"] == expected_lines

    section = md.read_text().split("\n## Fetching less (issue 16)\n")[1]
    for target in ("at 450 users, filtering server: users fetched by id (`fetch: members`) and caches identical to a "
                   "full listing's, every run",
                   "at 450 users, filtering server: ≤ 300 listing requests (worst run)",
                   "at 450 users, plain server (the table's runs): listing requests exactly the whole listing's "
                   "(+ ≤ 1 discovery)"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {target} |"))
        assert row.endswith("| ✅ pass |"), row
    assert "| 450 | filtering: `coreweave_fetch = auto` |" in section
    assert "| 450 | plain: default `coreweave_fetch` (the table's runs) |" in section
    assert "| 450 | lower bound: the sync's requests, its caches replayed |" in section
    assert "every lower bound requested the sync's URLs (and as many bytes) and wrote its caches byte for byte: yes" \
        in section
    assert "**NO**" not in section  # every check of the measurement itself holds


def _bundle_paths(generation: str):
    return ["/manifest.json", f"/generations/{generation}/manifest.json.sig",
            *(f"/generations/{generation}/{name}" for name in runner.MAPS)]


def test_many_nodes_publish_refresh_idle_and_fleet(installed_venv, tmp_path):
    md, raw = tmp_path / "benchmarks.md", tmp_path / "bench.json"
    status = runner.main([
        "--sizes", "150", "--groups", "12", "--members-share", "0.4", "--invalid", "34", "--key-pool", "32",
        "--reps", "2", "--page-size", "40", "--many-nodes-at", "150", "--fleet-nodes", "3", "--fleet-workers", "2",
        "--bin-dir", str(installed_venv.python.parent), "--work-dir", str(tmp_path), "--output", str(md),
        "--json", str(raw),
    ])

    assert status == 0
    data = json.loads(raw.read_text())
    many, (size,) = data["many"], data["sizes"]
    listing = {"Users": math.ceil(150 / 40), "Groups": 1}
    assert many["expected_listing"] == 5 and many["users"] == 150 and many["members"] == 60
    publisher = dict(listing, other=1)  # the listing and one discovery (the plain server: every user is fetched)
    assert [run["iam_requests"] for run in many["publish"]] == [publisher, publisher]
    assert [run["iam_bytes"] for run in many["publish"]] == [run["body_bytes"] for run in size["sync"]]
    for run in many["unchanged"]:  # after a publish of the same listing: the new manifest and its signature only
        generation = run["nginx"]["paths"][1].split("/")[2]
        assert run["nginx"]["paths"] == _bundle_paths(generation)[:2]
        assert run["nginx"]["statuses"] == {"200": 2} and run["node_requests"] == {"mirror/2xx": 2}
        assert run["nginx"]["body_bytes"] == run["node_bytes"] > 0
        assert run["iam_requests"] == {} and run["same_as_direct"] is True
    for run in many["refresh"]:  # without its kept bundle: the manifest, its signature, every map, once
        generation = run["nginx"]["paths"][1].split("/")[2]
        assert run["nginx"]["paths"] == _bundle_paths(generation)
        assert run["nginx"]["statuses"] == {"200": 6} and run["node_requests"] == {"mirror/2xx": 6}
        assert run["nginx"]["body_bytes"] == run["node_bytes"] > 0
        assert run["iam_requests"] == {} and run["iam_bytes"] == 0
        assert run["lines"] == {name: size["org"]["expected"][name] for name in runner.MAPS}
        assert run["same_as_direct"] is True
    for run in many["idle"]:  # nothing new: one conditional GET, answered 304
        assert run["nginx"]["paths"] == ["/manifest.json"] and run["nginx"]["statuses"] == {"304": 1}
        assert run["nginx"]["body_bytes"] == 0 == run["node_bytes"] and run["node_requests"] == {"mirror/3xx": 1}
        assert run["iam_requests"] == {} and run["same_as_direct"] is True

    after_publish, nothing_new = many["rounds"]
    assert after_publish["iam_requests"] == publisher  # the publisher's requests, and no node's
    assert after_publish["publish"]["iam_requests"] == publisher
    assert after_publish["nginx"]["statuses"] == {"200": 18}
    assert after_publish["nginx"]["body_bytes"] == 3 * sum(many["bundle"].values())
    assert after_publish["per_node"] == {"mirror/2xx 6": 3} and after_publish["failures"] == 0
    assert nothing_new["iam_requests"] == {} and nothing_new["publish"] is None
    assert nothing_new["nginx"]["statuses"] == {"304": 3} and nothing_new["nginx"]["body_bytes"] == 0
    assert nothing_new["per_node"] == {"mirror/3xx 1": 3} and nothing_new["failures"] == 0
    assert sorted(many["bundle"]) == sorted(["manifest.json", "manifest.json.sig", *runner.MAPS])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "benchmarks.md"]  # nginx stopped, files gone

    section = md.read_text().split("\n## Many nodes (issue 15)\n")[1]
    for target in ("an idle refresh (nothing new published): exactly one request, a 304, in every run",
                   "IAM requests per fleet round of 3 nodes = one listing, the publisher's",
                   "no IAM request from any node (single refreshes, idle refreshes, both fleet rounds)",
                   "fleet round with nothing new: every one of 3 nodes sends one request, a 304"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {target} |"))
        assert row.endswith("| ✅ pass |"), row
    assert "| publish / floor |" in section and "| round | nodes | at a time |" in section
    assert "| node refresh, unchanged listing / direct sync |" in section
    assert "**NO**" not in section  # every check of the measurement itself holds
