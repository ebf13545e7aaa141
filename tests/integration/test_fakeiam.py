"""The fake CoreWeave IAM server (tests/support/fakeiam.py): paging, auth, faults, counting, CLI."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from support.fakeiam import DEFAULT_PREFIX, FakeIAM, Fault

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent

ORG_FILE = REPO / "demo" / "org.json"
EXT = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
TOKEN = "t0ken"


@pytest.fixture(scope="module")
def org() -> dict:
    return json.loads(ORG_FILE.read_text())


@pytest.fixture
def iam(org):
    with FakeIAM(org, token=TOKEN) as server:
        yield server


@pytest.fixture
def http() -> requests.Session:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def ids(resources: list[dict]) -> list[str]:
    return [r["id"] for r in resources]


def walk_index(http, url, count):
    pages, start = [], 1
    while True:
        body = http.get(url, params={"startIndex": start, "count": count}, timeout=5).json()
        pages.append(body)
        start += body["itemsPerPage"]
        if start > body["totalResults"]:
            return pages


def walk_cursor(http, url, count):
    pages, cursor = [], ""
    while True:
        r = http.get(url, params={"cursor": cursor, "count": count}, timeout=5)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        if "nextCursor" not in pages[-1]:
            return pages
        cursor = pages[-1]["nextCursor"]


# -- index paging -----------------------------------------------------------


def test_index_paging_walks_every_user_in_order(iam, http, org):
    pages = walk_index(http, iam.base_url + "/Users", count=2)
    assert [p["startIndex"] for p in pages] == [1, 3, 5]
    assert all(p["totalResults"] == 6 and p["itemsPerPage"] == 2 for p in pages)
    assert all(p["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"] for p in pages)
    assert all("nextCursor" not in p for p in pages)
    assert [r for p in pages for r in p["Resources"]] == org["Users"]


def test_index_paging_defaults(iam, http, org):
    body = http.get(iam.base_url + "/Groups", timeout=5).json()
    assert body["startIndex"] == 1
    assert body["totalResults"] == body["itemsPerPage"] == len(org["Groups"])
    assert ids(body["Resources"]) == ids(org["Groups"])


def test_index_paging_default_count_is_100(http):
    many = {"Users": [{"id": f"u{i:03}", "userName": f"u{i}@example.com"} for i in range(250)], "Groups": []}
    with FakeIAM(many, token=TOKEN) as iam:
        body = http.get(iam.base_url + "/Users", timeout=5).json()
        assert (body["totalResults"], body["itemsPerPage"]) == (250, 100)
        body = http.get(iam.base_url + "/Users", params={"startIndex": 201}, timeout=5).json()
        assert (body["startIndex"], body["itemsPerPage"], body["Resources"][0]["id"]) == (201, 50, "u200")


def test_index_paging_edges(iam, http):
    past = http.get(iam.base_url + "/Users", params={"startIndex": 7, "count": 2}, timeout=5).json()
    assert (past["totalResults"], past["itemsPerPage"], past["Resources"]) == (6, 0, [])
    zero = http.get(iam.base_url + "/Users", params={"count": 0}, timeout=5).json()
    assert (zero["totalResults"], zero["itemsPerPage"], zero["Resources"]) == (6, 0, [])
    bad = http.get(iam.base_url + "/Users", params={"count": "lots"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidValue"


def test_max_page_size_caps_count(org, http):
    with FakeIAM(org, token=TOKEN, max_page_size=4) as iam:
        body = http.get(iam.base_url + "/Users", params={"count": 50}, timeout=5).json()
        assert (body["itemsPerPage"], body["totalResults"]) == (4, 6)


def test_unknown_path_is_404(iam, http):
    r = http.get(iam.base_url + "/Schemas", timeout=5)
    assert r.status_code == 404
    assert r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


# -- cursor paging ----------------------------------------------------------


def test_cursor_paging_walks_every_user(iam, http, org):
    pages = walk_cursor(http, iam.base_url + "/Users", count=4)
    assert len(pages) == 2
    assert "nextCursor" in pages[0] and "nextCursor" not in pages[1]
    assert [p["itemsPerPage"] for p in pages] == [4, 2]
    assert all(p["totalResults"] == 6 and "startIndex" not in p for p in pages)
    assert [r for p in pages for r in p["Resources"]] == org["Users"]
    assert [r.params["cursor"] for r in iam.requests("Users")] == ["", pages[0]["nextCursor"]]


def test_bare_cursor_parameter_starts_a_walk(iam, http):
    # CoreWeave's nsscache fork sends "...&cursor" with no "=".
    r = http.get(iam.base_url + "/Users?count=5&cursor", timeout=5)
    assert r.status_code == 200 and r.json()["itemsPerPage"] == 5 and "nextCursor" in r.json()


def test_cursor_exactly_filling_the_last_page_has_no_next(iam, http):
    pages = walk_cursor(http, iam.base_url + "/Users", count=3)
    assert [p["itemsPerPage"] for p in pages] == [3, 3]


@pytest.mark.parametrize("cursor", ["bogus", "VXNlcnM6Mg"])
def test_unknown_cursor_is_400_invalid_cursor(iam, http, cursor):
    r = http.get(iam.base_url + "/Users", params={"cursor": cursor, "count": 2}, timeout=5)
    assert r.status_code == 400
    body = r.json()
    assert body["scimType"] == "invalidCursor" and body["status"] == "400"
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_cursor_of_another_endpoint_is_invalid(iam, http):
    nxt = http.get(iam.base_url + "/Groups", params={"cursor": "", "count": 1}, timeout=5).json()["nextCursor"]
    r = http.get(iam.base_url + "/Users", params={"cursor": nxt, "count": 1}, timeout=5)
    assert r.status_code == 400 and r.json()["scimType"] == "invalidCursor"


@pytest.mark.parametrize("scim_type", ["invalidCursor", "expiredCursor"])
def test_invalidated_cursors_are_refused_and_a_restart_works(iam, http, org, scim_type):
    nxt = http.get(iam.base_url + "/Users", params={"cursor": "", "count": 2}, timeout=5).json()["nextCursor"]
    assert iam.invalidate_cursors(scim_type) == 1
    r = http.get(iam.base_url + "/Users", params={"cursor": nxt, "count": 2}, timeout=5)
    assert r.status_code == 400 and r.json()["scimType"] == scim_type
    pages = walk_cursor(http, iam.base_url + "/Users", count=2)
    assert pages[0]["nextCursor"] != nxt
    assert [r for p in pages for r in p["Resources"]] == org["Users"]


def test_cursor_with_start_index_is_400(iam, http):
    r = http.get(iam.base_url + "/Users", params={"cursor": "", "startIndex": 1}, timeout=5)
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"


def test_server_without_cursor_support_answers_index_pages(org, http):
    with FakeIAM(org, token=TOKEN, cursor_pagination=False) as iam:
        body = http.get(iam.base_url + "/Users", params={"cursor": "", "count": 2}, timeout=5).json()
        assert body["startIndex"] == 1 and "nextCursor" not in body and body["itemsPerPage"] == 2


# -- authentication ---------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}],
    ids=["missing", "wrong", "other-scheme", "empty"],
)
def test_bad_token_is_401_scim_error(iam, headers):
    r = requests.get(iam.base_url + "/Users", headers=headers, timeout=5)
    assert r.status_code == 401
    assert r.headers["Content-Type"] == "application/scim+json"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    body = r.json()
    assert body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "401",
        "detail": "invalid or expired bearer token",
    }
    assert iam.requests("Users")[-1].authorized is False


def test_no_token_configured_accepts_everyone(org):
    with FakeIAM(org) as iam:
        assert requests.get(iam.base_url + "/Users", timeout=5).status_code == 200


def test_faults_do_not_apply_to_unauthorized_requests(iam, http):
    fault = iam.fail("Users", status=503)
    assert requests.get(iam.base_url + "/Users", timeout=5).status_code == 401
    assert fault.fired == 0
    assert http.get(iam.base_url + "/Users", timeout=5).status_code == 503


# -- faults -----------------------------------------------------------------


def test_fail_page_two_once_then_recover(iam, http, org):
    fault = iam.fail(endpoint="Users", page=2, status=500, times=1)
    url = iam.base_url + "/Users"
    assert http.get(url, params={"startIndex": 1, "count": 2}, timeout=5).status_code == 200
    r = http.get(url, params={"startIndex": 3, "count": 2}, timeout=5)
    assert r.status_code == 500
    assert r.json()["status"] == "500" and r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert fault.fired == 1 and iam.pending_faults == []
    pages = walk_index(http, url, count=2)
    assert [r for p in pages for r in p["Resources"]] == org["Users"]
    assert [r.status for r in iam.requests("Users")] == [200, 500, 200, 200, 200]
    assert iam.requests("Users")[1].fault is fault


def test_fault_on_a_cursor_page(iam, http):
    iam.add_fault(Fault.error("Users", page=2, status=502))
    first = http.get(iam.base_url + "/Users", params={"cursor": "", "count": 3}, timeout=5).json()
    r = http.get(iam.base_url + "/Users", params={"cursor": first["nextCursor"], "count": 3}, timeout=5)
    assert r.status_code == 502
    assert [x.page for x in iam.requests("Users")] == [1, 2]


def test_fault_only_hits_its_endpoint(iam, http):
    iam.add_fault(Fault.error("Groups", status=500, times=None))
    assert http.get(iam.base_url + "/Users", timeout=5).status_code == 200
    for _ in range(3):
        assert http.get(iam.base_url + "/Groups", timeout=5).status_code == 500


def test_wildcard_fault_and_times(iam, http):
    fault = iam.add_fault(Fault("*", status=503, times=2))
    statuses = [http.get(iam.base_url + ep, timeout=5).status_code for ep in ("/Users", "/Groups", "/Users")]
    assert statuses == [503, 503, 200]
    assert fault.fired == 2


def test_faults_fire_in_the_order_added(iam, http):
    iam.add_fault(Fault.error("Users", page=1, status=500))
    iam.add_fault(Fault.error("Users", page=1, status=502))
    statuses = [http.get(iam.base_url + "/Users", timeout=5).status_code for _ in range(3)]
    assert statuses == [500, 502, 200]


def test_rate_limited_carries_retry_after(iam, http):
    iam.add_fault(Fault.rate_limited("Users", page=1, retry_after=7))
    r = http.get(iam.base_url + "/Users", timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["scimType"] == "tooMany"


def test_not_json_body(iam, http):
    iam.add_fault(Fault.not_json("Users"))
    r = http.get(iam.base_url + "/Users", timeout=5)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert r.headers["Content-Type"] == "application/scim+json"  # a broken server claiming JSON


def test_raw_body_and_headers(iam, http):
    iam.add_fault(Fault("Users", status=502, body="<h1>Bad Gateway</h1>", headers={"Content-Type": "text/html"}))
    r = http.get(iam.base_url + "/Users", timeout=5)
    assert (r.status_code, r.text, r.headers["Content-Type"]) == (502, "<h1>Bad Gateway</h1>", "text/html")


@pytest.mark.parametrize("total", [99, 0, None])
def test_wrong_total(iam, http, total):
    iam.add_fault(Fault.wrong_total("Users", page=1, total=total))
    body = http.get(iam.base_url + "/Users", params={"count": 2}, timeout=5).json()
    assert body.get("totalResults") == total
    assert body["itemsPerPage"] == 2 and len(body["Resources"]) == 2


def test_empty_page_before_the_total(iam, http):
    iam.add_fault(Fault.empty_page("Users", page=2))
    body = http.get(iam.base_url + "/Users", params={"startIndex": 3, "count": 2}, timeout=5).json()
    assert (body["totalResults"], body["itemsPerPage"], body["startIndex"], body["Resources"]) == (6, 0, 3, [])


def test_repeated_page_index(iam, http, org):
    iam.add_fault(Fault.repeated_page("Users", page=2, of_page=1))
    body = http.get(iam.base_url + "/Users", params={"startIndex": 3, "count": 2}, timeout=5).json()
    assert body["startIndex"] == 1
    assert ids(body["Resources"]) == ids(org["Users"][:2])


def test_repeated_page_cursor_repeats_next_cursor(iam, http, org):
    iam.add_fault(Fault.repeated_page("Users", page=2, of_page=1))
    first = http.get(iam.base_url + "/Users", params={"cursor": "", "count": 2}, timeout=5).json()
    again = http.get(iam.base_url + "/Users", params={"cursor": first["nextCursor"], "count": 2}, timeout=5).json()
    assert again["nextCursor"] == first["nextCursor"]
    assert ids(again["Resources"]) == ids(first["Resources"])


def test_body_callable_sees_the_normal_page(iam, http):
    seen = []
    iam.add_fault(Fault("Groups", body=lambda page: seen.append(page) or {**page, "itemsPerPage": 0}))
    body = http.get(iam.base_url + "/Groups", timeout=5).json()
    assert body["itemsPerPage"] == 0 and len(body["Resources"]) == 3
    assert seen[0]["itemsPerPage"] == 3


def test_stall_times_out_the_client_and_close_does_not_wait(org):
    iam = FakeIAM(org, token=TOKEN).start()
    try:
        iam.add_fault(Fault.stall("Users", seconds=300))
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(iam.base_url + "/Users", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=0.3)
    finally:
        started = time.monotonic()
        iam.close()
    assert time.monotonic() - started < 10


def test_short_delay_still_answers(iam, http):
    iam.add_fault(Fault.stall("Users", seconds=0.2))
    started = time.monotonic()
    assert http.get(iam.base_url + "/Users", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_disconnect_drops_the_connection(iam, http):
    iam.add_fault(Fault("Users", disconnect=True))
    with pytest.raises(requests.exceptions.ConnectionError):
        http.get(iam.base_url + "/Users", timeout=5)
    assert iam.requests("Users")[-1].status == 0
    assert http.get(iam.base_url + "/Users", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "kwargs",
    [{"endpoint": "users"}, {"endpoint": "Users", "page": 0}, {"endpoint": "Users", "times": 0}],
)
def test_fault_validation(kwargs):
    with pytest.raises(ValueError):
        Fault(**kwargs)


def test_clear_faults(iam, http):
    iam.fail("Users", status=500, times=None)
    iam.clear_faults()
    assert http.get(iam.base_url + "/Users", timeout=5).status_code == 200


# -- counting, recording, org changes ---------------------------------------


def test_counts_requests_and_bytes(iam, http):
    sizes = []
    for url, params in [("/Users", {"startIndex": 1, "count": 2}), ("/Users", {"startIndex": 3, "count": 2}),
                        ("/Groups", {})]:
        sizes.append(len(http.get(iam.base_url + url, params=params, timeout=5).content))
    assert (iam.request_count("Users"), iam.request_count("Groups"), iam.request_count()) == (2, 1, 3)
    assert iam.bytes_sent == sum(sizes)
    assert [r.target for r in iam.requests()] == [
        f"{DEFAULT_PREFIX}/Users?startIndex=1&count=2",
        f"{DEFAULT_PREFIX}/Users?startIndex=3&count=2",
        f"{DEFAULT_PREFIX}/Groups",
    ]
    assert iam.requests("Users")[1].params == {"startIndex": "3", "count": "2"}
    iam.reset_stats()
    assert (iam.request_count(), iam.bytes_sent) == (0, 0)


def test_filters_are_recorded_not_applied(iam, http, org):
    r = http.get(iam.base_url + "/Groups", params={"filter": 'displayName eq "slurm-users"'}, timeout=5)
    assert len(r.json()["Resources"]) == len(org["Groups"])
    assert iam.requests("Groups")[0].params["filter"] == 'displayName eq "slurm-users"'


def test_counting_is_thread_safe(iam):
    def worker(results):
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {TOKEN}"
            for i in range(25):
                results.append(len(s.get(iam.base_url + ("/Users" if i % 2 else "/Groups"), timeout=10).content))

    results: list[int] = []
    threads = [threading.Thread(target=worker, args=(results,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    assert iam.request_count() == 200
    assert iam.request_count("Users") == 8 * 12
    assert iam.bytes_sent == sum(results)


def test_set_org_serves_the_new_org(iam, http, org):
    smaller = {"Users": org["Users"][:2], "Groups": org["Groups"]}
    iam.set_org(smaller)
    assert http.get(iam.base_url + "/Users", timeout=5).json()["totalResults"] == 2
    with pytest.raises(ValueError):
        iam.set_org({"Users": [{"userName": "no-id"}]})


def test_org_from_file_and_copy_isolation(org):
    with FakeIAM(ORG_FILE) as iam:
        served = iam.org
        served["Users"].clear()
        assert iam.org == {"Users": org["Users"], "Groups": org["Groups"]}


def test_base_url_is_loopback_ephemeral(org):
    with FakeIAM(org, prefix="/scim/cw623e") as a, FakeIAM(org) as b:
        assert a.base_url.startswith("http://127.0.0.1:") and a.base_url.endswith("/scim/cw623e")
        assert a.port != b.port and a.port > 0


# -- ServiceProviderConfig (RFC 7643 §5) --------------------------------------

SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def test_service_provider_config_is_404_unless_served(iam, http):
    r = http.get(iam.base_url + "/ServiceProviderConfig", timeout=5)
    assert r.status_code == 404 and r.json()["schemas"] == [ERROR_SCHEMA]
    assert [(q.endpoint, q.status) for q in iam.requests()] == [(None, 404)]


def test_service_provider_config_advertises_the_filter(org, http):
    with FakeIAM(org, token=TOKEN, service_provider_config=True, filter_supported=True, filter_max_results=50,
                 max_page_size=500) as iam:
        r = http.get(iam.base_url + "/ServiceProviderConfig", timeout=5)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/scim+json"
        body = r.json()
        assert body["schemas"] == [SPC_SCHEMA]
        assert body["filter"] == {"supported": True, "maxResults": 50}
        assert {k: body[k] for k in ("patch", "changePassword", "sort", "etag")} == {
            k: {"supported": False} for k in ("patch", "changePassword", "sort", "etag")}
        assert body["bulk"] == {"supported": False, "maxOperations": 0, "maxPayloadSize": 0}
        assert [s["type"] for s in body["authenticationSchemes"]] == ["oauthbearertoken"]
        assert body["pagination"] == {"cursor": True, "index": True, "defaultPaginationMethod": "index",
                                      "defaultPageSize": 100, "maxPageSize": 500}
        assert [(q.endpoint, q.status, q.page) for q in iam.requests()] == [("ServiceProviderConfig", 200, None)]
        assert iam.request_count("ServiceProviderConfig") == 1


def test_service_provider_config_defaults_to_no_filter_and_needs_the_token(org, http):
    with FakeIAM(org, token=TOKEN, service_provider_config=True) as iam:
        assert http.get(iam.base_url + "/ServiceProviderConfig", timeout=5).json()["filter"] == {
            "supported": False, "maxResults": 200}
        assert requests.get(iam.base_url + "/ServiceProviderConfig", timeout=5).status_code == 401
        assert http.post(iam.base_url + "/ServiceProviderConfig", timeout=5).status_code == 405


def test_service_provider_config_fault_is_explicit_not_wildcard(org, http):
    with FakeIAM(org, token=TOKEN, service_provider_config=True) as iam:
        wildcard = iam.add_fault(Fault("*", status=503))
        spc = iam.add_fault(Fault("ServiceProviderConfig", status=500))
        assert http.get(iam.base_url + "/ServiceProviderConfig", timeout=5).status_code == 500
        assert http.get(iam.base_url + "/ServiceProviderConfig", timeout=5).status_code == 200
        assert (spc.fired, wildcard.fired) == (1, 0)


# -- filter (RFC 7644 §3.4.2.2) ---------------------------------------------

ODD_IDS = ["plain", 'with "quotes"', "back\\slash", "u-4", "u-5"]


def odd_org() -> dict:
    """Users whose ids need escaping in a filter; ``u-5`` is in no group."""
    return {"Users": [{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": i, "userName": f"n{n}"}
                      for n, i in enumerate(ODD_IDS)], "Groups": []}


def id_filter(*values: str) -> str:
    return " or ".join(f"id eq {json.dumps(v)}" for v in values)


def get_users(http, iam, **params):
    return http.get(iam.base_url + "/Users", params=params, timeout=5)


@pytest.fixture
def filtering(http):
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="honour") as server:
        yield server


def test_filter_honour_one_id(filtering, http):
    body = get_users(http, filtering, filter='id eq "u-4"').json()
    assert (body["totalResults"], body["itemsPerPage"], body["startIndex"]) == (1, 1, 1)
    assert ids(body["Resources"]) == ["u-4"]
    assert filtering.requests("Users")[0].params == {"filter": 'id eq "u-4"'}


def test_filter_honour_several_ids_in_org_order_with_escapes(filtering, http):
    wanted = ["u-4", "back\\slash", 'with "quotes"']
    body = get_users(http, filtering, filter=id_filter(*wanted)).json()
    assert body["totalResults"] == 3
    assert ids(body["Resources"]) == ['with "quotes"', "back\\slash", "u-4"]
    sent = r'id eq "u-4" or id eq "back\\slash" or id eq "with \"quotes\""'
    assert filtering.requests("Users")[0].params["filter"] == sent


@pytest.mark.parametrize("text", [
    '(id eq "plain" or id eq "u-5")', 'ID EQ "plain" OR Id Eq "u-5"', '  id  eq "plain"  or\tid eq "\\u0075-5" ',
    'id eq "plain" or id eq "u-5" or id eq "plain"',
])
def test_filter_honour_accepts_the_member_fetch_forms(filtering, http, text):
    body = get_users(http, filtering, filter=text).json()
    assert (ids(body["Resources"]), body["totalResults"]) == (["plain", "u-5"], 2)


def test_filter_honour_unknown_id_is_not_in_the_answer(filtering, http):
    body = get_users(http, filtering, filter=id_filter("u-4", "nobody", "plain")).json()
    assert (ids(body["Resources"]), body["totalResults"], body["itemsPerPage"]) == (["plain", "u-4"], 2, 2)
    none = get_users(http, filtering, filter=id_filter("nobody")).json()
    assert (none["Resources"], none["totalResults"], none["itemsPerPage"]) == ([], 0, 0)


def test_filtered_listing_pages_like_the_full_one(filtering, http):
    text = id_filter("u-5", "plain", "u-4")
    first = get_users(http, filtering, filter=text, startIndex=1, count=2).json()
    second = get_users(http, filtering, filter=text, startIndex=3, count=2).json()
    assert [(p["startIndex"], p["itemsPerPage"], p["totalResults"], ids(p["Resources"])) for p in (first, second)] == [
        (1, 2, 3, ["plain", "u-4"]), (3, 1, 3, ["u-5"])]
    assert [r.page for r in filtering.requests("Users")] == [1, 2]
    pages = walk_cursor(http, filtering.base_url + f"/Users?filter={quote(text)}", count=2)
    assert [ids(p["Resources"]) for p in pages] == [["plain", "u-4"], ["u-5"]]


@pytest.mark.parametrize("text", [
    'userName eq "n1"', 'id eq "plain" and id eq "u-4"', "id eq plain", 'id ne "plain"', "", 'id eq "plain" or',
    '(id eq "plain"', '((id eq "plain"))', 'id eq "bad \\q escape"', 'id eq "plain" or userName eq "n1"',
    'id eq "plain"or id eq "u-4"', 'id pr',
])
def test_filter_honour_refuses_every_other_filter(filtering, http, text):
    r = get_users(http, filtering, filter=text)
    assert r.status_code == 400
    assert (r.json()["scimType"], r.json()["schemas"]) == ("invalidFilter", [ERROR_SCHEMA])


def test_filter_with_more_ids_than_max_results_is_too_many(http):
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="honour", filter_max_results=2) as iam:
        assert get_users(http, iam, filter=id_filter("plain", "u-4", "plain")).status_code == 200
        r = get_users(http, iam, filter=id_filter("plain", "u-4", "u-5"))
        assert (r.status_code, r.json()["scimType"]) == (400, "tooMany")


def test_filter_honour_without_a_filter_lists_everyone_and_groups_ignore_it(filtering, http):
    assert ids(get_users(http, filtering).json()["Resources"]) == ODD_IDS
    groups = http.get(filtering.base_url + "/Groups", params={"filter": "anything"}, timeout=5)
    assert groups.status_code == 200


def test_filter_ignored_by_default(iam, http, org):
    body = get_users(http, iam, filter=id_filter(org["Users"][0]["id"])).json()
    assert (body["Resources"], body["totalResults"]) == (org["Users"], 6)
    assert iam.requests("Users")[0].params["filter"] == id_filter(org["Users"][0]["id"])


def test_filter_reject_is_invalid_filter(http):
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="reject") as iam:
        r = get_users(http, iam, filter='id eq "plain"')
        assert (r.status_code, r.json()["scimType"]) == (400, "invalidFilter")
        assert get_users(http, iam).json()["totalResults"] == 5
        assert [(q.status, q.params) for q in iam.requests()] == [(400, {"filter": 'id eq "plain"'}), (200, {})]


def test_filter_extra_adds_a_user_not_asked_for(http):
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="extra") as iam:
        body = get_users(http, iam, filter=id_filter("u-4", "back\\slash")).json()
        assert (ids(body["Resources"]), body["totalResults"]) == (["plain", "back\\slash", "u-4"], 3)
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="extra", filter_fault_user="u-5") as iam:
        body = get_users(http, iam, filter=id_filter("plain")).json()
        assert (ids(body["Resources"]), body["totalResults"]) == (["plain", "u-5"], 2)


def test_filter_drop_leaves_out_a_requested_user_still_counted(http):
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="drop") as iam:
        body = get_users(http, iam, filter=id_filter("nobody", "u-4", "plain")).json()
        assert (ids(body["Resources"]), body["totalResults"], body["itemsPerPage"]) == (["plain"], 2, 1)
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="drop", filter_fault_user="plain") as iam:
        body = get_users(http, iam, filter=id_filter("u-4", "plain", "u-5")).json()
        assert (ids(body["Resources"]), body["totalResults"]) == (["u-4", "u-5"], 3)


def test_filter_truncate_matches_only_the_first_terms_with_consistent_totals(http):
    """A server that silently cuts long filters: ``filter_truncate_after`` terms, in the filter's order."""
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="truncate", filter_truncate_after=2) as iam:
        body = get_users(http, iam, filter=id_filter("u-5", "plain", "u-4", "back\\slash")).json()
        assert (ids(body["Resources"]), body["totalResults"], body["itemsPerPage"]) == (["plain", "u-5"], 2, 2)
        body = get_users(http, iam, filter=id_filter("nobody", "u-4", "plain")).json()
        assert (ids(body["Resources"]), body["totalResults"], body["itemsPerPage"]) == (["u-4"], 1, 1)
        pages = walk_index(http, iam.base_url + f"/Users?filter={quote(id_filter('u-4', 'plain', 'u-5'))}", count=1)
        assert [(p["startIndex"], p["totalResults"], ids(p["Resources"])) for p in pages] == [
            (1, 2, ["plain"]), (2, 2, ["u-4"])]
        assert ids(get_users(http, iam).json()["Resources"]) == ODD_IDS  # no filter: every user
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="truncate") as iam:
        body = get_users(http, iam, filter=id_filter("u-4", "plain")).json()
        assert (ids(body["Resources"]), body["totalResults"], body["itemsPerPage"]) == (["u-4"], 1, 1)


def test_filter_truncate_checks_the_whole_filter_as_honour_does(http):
    with FakeIAM(odd_org(), token=TOKEN, filter_mode="truncate", filter_max_results=2) as iam:
        r = get_users(http, iam, filter=id_filter("plain", "u-4", "u-5"))
        assert (r.status_code, r.json()["scimType"]) == (400, "tooMany")
        r = get_users(http, iam, filter='id eq "plain" or userName eq "n1"')
        assert (r.status_code, r.json()["scimType"]) == (400, "invalidFilter")


@pytest.mark.parametrize("kwargs", [{"filter_mode": "sometimes"}, {"attributes_mode": "honor"},
                                    {"filter_max_results": 0}, {"filter_truncate_after": 0}])
def test_mode_validation(org, kwargs):
    with pytest.raises(ValueError):
        FakeIAM(org, **kwargs)


# -- attributes (RFC 7644 §3.9) ---------------------------------------------


@pytest.fixture
def projecting(org):
    with FakeIAM(org, token=TOKEN, attributes_mode="honour") as server:
        yield server


def test_attributes_honour_users_with_extension_and_sub_attributes(projecting, http, org):
    asked = f"UserName,name.givenName,{EXT}:sunkPosixUid,{EXT}:SUNKSSHKEYS"
    body = get_users(http, projecting, attributes=asked).json()
    assert body["totalResults"] == 6
    alice = org["Users"][0]
    assert body["Resources"][0] == {
        "schemas": alice["schemas"], "id": alice["id"], "userName": "alice.smith@example.com",
        "name": {"givenName": "Alice"}, EXT: {"sunkPosixUid": 20001, "sunkSshKeys": alice[EXT]["sunkSshKeys"]}}
    assert ids(body["Resources"]) == ids(org["Users"])
    assert all(sorted(u[EXT]) == ["sunkPosixUid", "sunkSshKeys"] for u in body["Resources"])
    # A complex attribute without the sub-attribute asked for stays, empty; one not set stays absent.
    assert (body["Resources"][1]["name"], "name" in body["Resources"][4]) == ({}, False)
    assert projecting.requests("Users")[0].params == {"attributes": asked}


def test_attributes_honour_whole_extension_and_core_urn(projecting, http, org):
    asked = f"{EXT},urn:ietf:params:scim:schemas:core:2.0:User:active,urn:x:unknown:thing,nosuch"
    body = get_users(http, projecting, attributes=asked, count=1).json()
    user = org["Users"][0]
    assert body["Resources"] == [{"schemas": user["schemas"], "id": user["id"], "active": user["active"],
                                  EXT: user[EXT]}]


def test_attributes_honour_groups_members_value(projecting, http, org):
    body = http.get(projecting.base_url + "/Groups", params={"attributes": "displayName,members.value"},
                    timeout=5).json()
    assert body["Resources"] == [
        {"schemas": g["schemas"], "id": g["id"], "displayName": g["displayName"],
         **({"members": [{"value": m["value"]} for m in g["members"]]} if "members" in g else {})}
        for g in org["Groups"]]


def test_attributes_honour_with_filter_and_empty_attributes(org, http):
    users = org["Users"]
    with FakeIAM(org, token=TOKEN, attributes_mode="honour", filter_mode="honour") as iam:
        body = get_users(http, iam, filter=id_filter(users[1]["id"]), attributes="userName").json()
        assert body["Resources"] == [{"schemas": users[1]["schemas"], "id": users[1]["id"],
                                      "userName": users[1]["userName"]}]
        assert get_users(http, iam, attributes="").json()["Resources"] == users


def test_attributes_ignored_by_default(iam, http, org):
    assert get_users(http, iam, attributes="userName").json()["Resources"] == org["Users"]
    assert iam.requests("Users")[0].params == {"attributes": "userName"}


@pytest.mark.parametrize("endpoint", ["Users", "Groups"])
def test_attributes_reject_is_invalid_value(org, http, endpoint):
    with FakeIAM(org, token=TOKEN, attributes_mode="reject") as iam:
        r = http.get(f"{iam.base_url}/{endpoint}", params={"attributes": "id"}, timeout=5)
        assert (r.status_code, r.json()["scimType"], r.json()["schemas"]) == (400, "invalidValue", [ERROR_SCHEMA])
        assert http.get(f"{iam.base_url}/{endpoint}", timeout=5).status_code == 200


# -- one resource by id (RFC 7644 §3.4.1) ------------------------------------


def test_a_user_by_id_is_the_resource_the_listing_serves(iam, http, org):
    bob = org["Users"][1]
    r = http.get(f"{iam.base_url}/Users/{bob['id']}", timeout=5)
    assert (r.status_code, r.headers["Content-Type"], r.json()) == (200, "application/scim+json", bob)
    (lookup,) = iam.requests("User")
    assert (lookup.method, lookup.target, lookup.status, lookup.page, lookup.resource_id, lookup.authorized) == (
        "GET", f"{DEFAULT_PREFIX}/Users/{bob['id']}", 200, None, bob["id"], True)
    assert lookup.bytes_sent == len(r.content)
    assert (iam.requests("Users"), iam.requests("Group")) == ([], [])  # "Users": the listings only


def test_a_group_by_id_is_the_resource_the_listing_serves(org, http):
    group = org["Groups"][0]
    with FakeIAM(org, token=TOKEN, members_by="value") as iam:
        r = http.get(f"{iam.base_url}/Groups/{group['id']}", timeout=5)
        listed = http.get(f"{iam.base_url}/Groups", timeout=5).json()["Resources"][0]
        assert (r.status_code, r.json()) == (200, listed)
        assert [m["value"] for m in r.json()["members"]] == ["alice", "bob", "dave", "erin", "frank"]
        assert [(q.endpoint, q.status, q.resource_id) for q in iam.requests()] == [
            ("Group", 200, group["id"]), ("Groups", 200, None)]


def test_an_unknown_id_is_a_404_scim_error(iam, http, org):
    r = http.get(f"{iam.base_url}/Users/nobody", timeout=5)
    assert (r.status_code, r.headers["Content-Type"]) == (404, "application/scim+json")
    assert r.json() == {"schemas": [ERROR_SCHEMA], "status": "404", "detail": "Resource nobody not found"}
    group_id = org["Groups"][0]["id"]
    r = http.get(f"{iam.base_url}/Groups/{org['Users'][0]['id']}", timeout=5)  # a user's id is no group's
    assert r.json() == {"schemas": [ERROR_SCHEMA], "status": "404",
                        "detail": f"Resource {org['Users'][0]['id']} not found"}
    assert http.get(f"{iam.base_url}/Users/{group_id}", timeout=5).status_code == 404
    assert [(q.endpoint, q.status, q.resource_id) for q in iam.requests()] == [
        ("User", 404, "nobody"), ("Group", 404, org["Users"][0]["id"]), ("User", 404, group_id)]


def test_a_lookup_takes_the_id_percent_decoded_as_one_path_segment(http):
    odd = {"Users": [*odd_org()["Users"], {"id": "a/b c", "userName": "slash"}], "Groups": []}
    with FakeIAM(odd, token=TOKEN) as iam:
        for user in odd["Users"]:
            r = http.get(f"{iam.base_url}/Users/{quote(user['id'], safe='')}", timeout=5)
            assert (r.status_code, r.json()) == (200, user)
        assert [q.resource_id for q in iam.requests("User")] == [*ODD_IDS, "a/b c"]
        # Not a lookup: no id, or more than one segment.
        assert [http.get(f"{iam.base_url}/Users/{rest}", timeout=5).status_code for rest in ("", "a/b%20c")] == [
            404, 404]
        assert [(q.endpoint, q.status) for q in iam.requests()][-2:] == [(None, 404), (None, 404)]


def test_a_lookup_needs_the_token_and_a_get(iam, org):
    url = f"{iam.base_url}/Users/{org['Users'][0]['id']}"
    r = requests.get(url, timeout=5)
    assert (r.status_code, r.headers["WWW-Authenticate"]) == (401, 'Bearer realm="scim"')
    assert r.json() == {"schemas": [ERROR_SCHEMA], "status": "401", "detail": "invalid or expired bearer token"}
    assert requests.get(f"{iam.base_url}/Users/nobody", headers={"Authorization": "Bearer wrong"},
                        timeout=5).status_code == 401
    assert requests.delete(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 405
    assert [(q.method, q.endpoint, q.status, q.authorized) for q in iam.requests("User")] == [
        ("GET", "User", 401, False), ("GET", "User", 401, False), ("DELETE", "User", 405, True)]


def test_a_lookup_projects_as_the_listing_does(projecting, http, org):
    alice = org["Users"][0]
    r = http.get(f"{projecting.base_url}/Users/{alice['id']}", params={"attributes": f"userName,{EXT}:sunkPosixUid"},
                 timeout=5)
    assert r.json() == {"schemas": alice["schemas"], "id": alice["id"], "userName": alice["userName"],
                        EXT: {"sunkPosixUid": 20001}}
    assert projecting.requests("User")[0].params == {"attributes": f"userName,{EXT}:sunkPosixUid"}
    with FakeIAM(org, token=TOKEN, attributes_mode="reject") as iam:
        r = http.get(f"{iam.base_url}/Users/{alice['id']}", params={"attributes": "id"}, timeout=5)
        assert (r.status_code, r.json()["scimType"]) == (400, "invalidValue")
        assert http.get(f"{iam.base_url}/Users/{alice['id']}", timeout=5).json() == alice


def test_a_lookup_fault_replaces_the_answer_found_or_not(iam, http, org):
    alice_id = org["Users"][0]["id"]
    wildcard = iam.add_fault(Fault("*", status=500, times=None))
    listing = iam.add_fault(Fault("Users", status=500, times=None))
    lookups = iam.add_fault(Fault.error("User", status=503, times=2))
    renamed = iam.add_fault(Fault("User", body=lambda user: {**user, "userName": "mallory"}))
    assert [http.get(f"{iam.base_url}/Users/{i}", timeout=5).status_code for i in (alice_id, "nobody")] == [503, 503]
    assert http.get(f"{iam.base_url}/Users/{alice_id}", timeout=5).json()["userName"] == "mallory"
    assert http.get(f"{iam.base_url}/Users/{alice_id}", timeout=5).json() == org["Users"][0]
    assert http.get(f"{iam.base_url}/Groups/{org['Groups'][0]['id']}", timeout=5).status_code == 200
    assert (wildcard.fired, listing.fired, lookups.fired, renamed.fired) == (0, 0, 2, 1)
    with pytest.raises(ValueError):
        Fault("Users/x")


# -- command line -----------------------------------------------------------


class _Lines:
    """Lines from a child's pipe, each awaited with a bounded timeout (no fixed sleeps)."""

    def __init__(self, pipe):
        self.fd, self.buffer = pipe.fileno(), b""

    def next(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    pytest.fail(f"no line from the server within {timeout}s (got {self.buffer!r})")
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    pytest.fail(f"server closed stderr (got {self.buffer!r})")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def rest(self) -> str:
        chunks = [self.buffer]
        while chunk := os.read(self.fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()


def test_cli_serves_until_sigterm(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-cli-token\n")
    os.chmod(token_file, 0o600)
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "support" / "fakeiam.py"), "--org", str(ORG_FILE), "--token-file", str(token_file),
         "--port", "0", "--port-file", str(port_file)],
        stderr=subprocess.PIPE,
    )
    lines = _Lines(proc.stderr)
    try:
        banner = lines.next(timeout=30)
        assert "serving 6 users, 3 groups" in banner, banner
        port = int(port_file.read_text())
        base = f"http://127.0.0.1:{port}{DEFAULT_PREFIX}"
        assert banner.split(" at ")[1].split()[0] == base
        r = requests.get(base + "/Users", params={"count": 2}, headers={"Authorization": "Bearer s3cret-cli-token"},
                         timeout=5)
        assert r.status_code == 200 and r.json()["totalResults"] == 6
        assert requests.get(base + "/Groups", timeout=5).status_code == 401
        log1 = lines.next(timeout=10)
        log2 = lines.next(timeout=10)
        assert f"GET {DEFAULT_PREFIX}/Users?count=2 -> 200" in log1
        assert f"GET {DEFAULT_PREFIX}/Groups -> 401" in log2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = lines.rest()
    proc.stderr.close()
    assert "SIGTERM" in rest
    assert "s3cret-cli-token" not in banner + log1 + log2 + rest
