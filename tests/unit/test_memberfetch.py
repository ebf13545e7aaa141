"""memberfetch: the allowed groups' members by id, in batches, trusted only
when every answer is exactly what was asked for (issue 16). Pure: a list
function stands in for the Users listing; the whole path against a real
server is tests/integration's."""

from __future__ import annotations

import json
import threading
from typing import List
from urllib.parse import quote

import pytest

from nss_cache_coreweave import memberfetch
from nss_cache_coreweave.config import Server
from nss_cache_coreweave.errors import Failure, FetchError, FetchReason, ListingError, ListingReason
from nss_cache_coreweave.memberfetch import Batches, NotFiltering

SERVER = Server(base_url="https://iam.example/scim", users_url="https://iam.example/scim/Users",
                groups_url="https://iam.example/scim/Groups", token="t", page_size=100)
IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(7)]


def never(url: str) -> bytes:
    raise AssertionError(f"no user should be fetched on its own: {url}")


def gone(url: str) -> bytes:
    """GET /Users/<id> of a user IAM does not have."""
    raise FetchError("User", 1, FetchReason.NOT_RETRIED, failure=Failure(SERVER.base_url, 404))


def asked(server: Server) -> List[str]:
    """The ids a filtered Users listing asks for."""
    ((name, text),) = server.users_query
    assert name == "filter"
    return [json.loads(term[len("id eq "):]) for term in text.split(" or ")]


def honest(directory):
    """A server that filters: the asked ids it holds."""
    return lambda server: [i for i in asked(server) if i in directory]


# --- batches ------------------------------------------------------------------------------------------


def test_batches_hold_at_most_the_size_each_in_the_order_given():
    assert memberfetch.batches(IDS[::-1], 3) == [IDS[6:3:-1], IDS[3:0:-1], IDS[0:1]]


def test_a_batch_stays_within_the_url_budget():
    budget = 2 * len(quote('id eq "' + IDS[0] + '" or ', safe="")) + 1

    assert memberfetch.batches(IDS[:5], 100, budget) == [IDS[0:2], IDS[2:4], IDS[4:5]]


def test_an_id_is_a_json_string_in_the_filter():
    assert memberfetch.filter_of(['a"b', "c\\d"]) == 'id eq "a\\"b" or id eq "c\\\\d"'


def test_the_batch_size_is_the_smallest_of_max_results_and_the_page_size():
    assert (Batches.of(SERVER, 50).size, Batches.of(SERVER, 500).size) == (50, 100)


# --- discovery ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document, expected", [
    pytest.param({"filter": {"supported": True, "maxResults": 200}}, 200, id="supported"),
    pytest.param({"filter": {"supported": True}}, 1000, id="supported-without-max"),
    pytest.param({"filter": {"supported": False, "maxResults": 200}}, None, id="not-supported"),
    pytest.param({"filter": {"supported": "true"}}, None, id="not-a-boolean"),
    pytest.param({}, None, id="no-filter"),
    pytest.param([], None, id="not-an-object"),
])
def test_discovery_reads_filter_supported_and_max_results(document, expected):
    assert memberfetch.discover(lambda url: json.dumps(document).encode(), SERVER) == expected


def refusal(status: int) -> FetchError:
    return FetchError("ServiceProviderConfig", 1, FetchReason.NOT_RETRIED, failure=Failure(SERVER.base_url, status))


@pytest.mark.parametrize("status", [400, 404, 405, 414, 431, 501])
def test_a_server_without_the_document_does_not_filter(status):
    def get(url):
        assert url == "https://iam.example/scim/ServiceProviderConfig"
        raise refusal(status)

    assert memberfetch.discover(get, SERVER) is None


@pytest.mark.parametrize("error", [
    FetchError("ServiceProviderConfig", 1, FetchReason.TOKEN_REFUSED, failure=Failure(SERVER.base_url, 403)),
    FetchError("ServiceProviderConfig", 1, FetchReason.SERVER_FAILING, failure=Failure(SERVER.base_url, 503),
               attempts=4),
    FetchError("ServiceProviderConfig", 1, FetchReason.REDIRECT, status=302, location="elsewhere"),
], ids=["forbidden", "failing", "redirected"])
def test_a_discovery_that_fails_means_no_member_fetch_not_a_failed_run(error):
    """The run has just listed Groups with the same token: the full listing may still work."""
    with pytest.raises(NotFiltering) as caught:
        memberfetch.discover(lambda url: (_ for _ in ()).throw(error), SERVER)

    assert caught.value.why == f"/ServiceProviderConfig could not be read ({error})"


def test_batches_leave_room_for_the_attributes_in_the_url():
    attributes = "a" * 2000

    assert Batches.of(SERVER, 1000) == Batches(size=100, budget=7000)
    assert Batches.of(SERVER, 1000, attributes) == Batches(size=100, budget=5000)
    assert Batches.of(SERVER, 1000, "a" * 9000) == Batches(size=100, budget=1000)  # a filter still gets room


# --- fetching ------------------------------------------------------------------------------------------


def test_every_wanted_user_comes_back_batch_by_batch():
    sent = []

    def list_users(server):
        sent.append(asked(server))
        return honest(set(IDS))(server)

    found = memberfetch.fetch(list_users, SERVER, IDS, Batches(3), key=str, get=never)

    assert found == IDS
    assert sorted(sent) == [IDS[0:3], IDS[3:6], IDS[6:7]]  # sorted: batches are asked for from two threads


def test_in_flight_batches_are_on_the_wire_at_once():
    """A server far away costs one round trip per IN_FLIGHT batches."""
    ids = IDS[:memberfetch.IN_FLIGHT]
    together = threading.Barrier(len(ids), timeout=30)  # broken (the test fails) unless all meet

    def list_users(server):
        together.wait()
        return asked(server)

    assert memberfetch.fetch(list_users, SERVER, ids, Batches(1), key=str, get=never) == ids


def test_a_batch_is_a_listing_of_at_most_its_ids():
    """A server that ignores the filter is caught at its first page (scim: totalResults above
    the listing's limit), not after listing the whole directory."""
    limits = []

    def list_users(server):
        limits.append(server.max_users)
        raise ListingError("Users", 1, ListingReason.TOO_MANY_ANNOUNCED, count=100000, limit=server.max_users,
                           option="coreweave_max_users")

    with pytest.raises(NotFiltering) as caught:
        memberfetch.fetch(list_users, SERVER, IDS[:3], Batches(3), key=str, get=never)

    assert limits == [3]
    assert caught.value.why == "an answer held more users (100000) than the 3 asked for"


def test_answers_are_taken_in_batch_order_whichever_comes_first():
    second_done = threading.Event()

    def list_users(server):
        if asked(server) == IDS[:2]:
            assert second_done.wait(30), "the second batch was not asked for while the first was out"
        else:
            second_done.set()
        return asked(server)

    assert memberfetch.fetch(list_users, SERVER, IDS[:4], Batches(2), key=str, get=never) == IDS[:4]


def test_a_refused_batch_stops_the_batches_not_yet_asked_for():
    sent = []

    def list_users(server):
        sent.append(asked(server))
        if asked(server) == IDS[:2]:
            raise refusal(400)
        return asked(server)

    with pytest.raises(NotFiltering):
        memberfetch.fetch(list_users, SERVER, IDS[:6], Batches(2), key=str, get=never)

    assert sorted(sent) == [IDS[0:2], IDS[2:4]]  # the second was on the wire with the first; the third never


@pytest.mark.parametrize("list_users, why", [
    pytest.param(lambda server: asked(server) + ["someone-else"], "an answer held users that were not asked for",
                 id="an-id-not-asked-for"),
    pytest.param(lambda server: IDS, "an answer held users that were not asked for", id="the-filter-ignored"),
])
def test_an_answer_that_is_not_what_was_asked_means_the_server_does_not_filter(list_users, why):
    with pytest.raises(NotFiltering) as caught:
        memberfetch.fetch(list_users, SERVER, IDS[:3], Batches(3), key=str, get=never)

    assert caught.value.why == why


def test_a_requested_id_missing_from_an_answer_that_adds_up_is_no_user_of_iam(caplog):
    """As in a full listing, the member naming it does not resolve (policy drops and logs it)."""
    caplog.set_level("INFO", "nss_cache_coreweave")

    confirmed = []

    def get(url):
        confirmed.append(url)
        gone(url)

    found = memberfetch.fetch(lambda server: asked(server)[1:], SERVER, IDS[:6], Batches(3), key=str, get=get)

    assert found == IDS[1:3] + IDS[4:6]
    assert confirmed == [f"https://iam.example/scim/Users/{IDS[0]}", f"https://iam.example/scim/Users/{IDS[3]}"]
    assert [r.getMessage() for r in caplog.records] == [
        "coreweave: 2 members' ids are no user of IAM (their members do not resolve)"]


@pytest.mark.parametrize("get, why", [
    pytest.param(lambda url: b'{"id": "x"}', f"requested user {IDS[0]!r} exists but the filtered answer left it out",
                 id="it-exists"),
    pytest.param(lambda url: (_ for _ in ()).throw(FetchError("Users", 1, FetchReason.NOT_RETRIED,
                                                              failure=Failure(SERVER.base_url, 403))),
                 f"requested user {IDS[0]!r} did not come back and could not be confirmed gone", id="forbidden"),
])
def test_a_requested_user_left_out_but_not_confirmed_gone_means_the_full_listing(get, why):
    """A server that truncates long filters (answering a consistent total) must not take access away."""
    with pytest.raises(NotFiltering) as caught:
        memberfetch.fetch(lambda server: asked(server)[1:], SERVER, IDS[:3], Batches(3), key=str, get=get)

    assert caught.value.why.startswith(why)


def test_more_missing_users_than_a_run_confirms_mean_the_full_listing():
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(memberfetch.MAX_CONFIRMED + 1)]

    with pytest.raises(NotFiltering) as caught:
        memberfetch.fetch(lambda server: [], SERVER, ids, Batches(100), key=str, get=never)

    assert caught.value.why == "51 requested users did not come back (more than 50 to confirm one by one)"


def test_ids_that_may_be_posix_names_are_asked_for_first():
    sent = []

    def list_users(server):
        sent.append(asked(server))
        return asked(server)

    memberfetch.fetch(list_users, SERVER, IDS[:4], Batches(2), key=str, get=never, names=frozenset({IDS[3]}))

    # The batches: the possible name with the first id, then the others (asked from two threads: any order).
    assert sorted(sent) == [[IDS[1], IDS[2]], [IDS[3], IDS[0]]]


def test_a_missing_id_that_may_be_a_posix_name_means_the_full_listing():
    """coreweave_member_match = auto: a short `value` may name a user by POSIX name, not by id."""
    with pytest.raises(NotFiltering) as caught:
        memberfetch.fetch(lambda server: asked(server)[1:], SERVER, IDS[:3], Batches(3), key=str, get=never,
                          names=frozenset(IDS[:1]))

    assert caught.value.why == ("1 requested ids did not come back and may be POSIX names "
                                "(coreweave_member_match = auto), which only the full listing resolves")


def test_a_listing_that_does_not_add_up_or_a_refused_filter_means_no_filtering():
    def inconsistent(server):
        raise ListingError("Users", 1, ListingReason.COUNT_MISMATCH, collected=2, total=3)

    def refused(server):
        raise refusal(400)

    for list_users, fragment in ((inconsistent, "did not add up"), (refused, "refused the filter")):
        with pytest.raises(NotFiltering) as caught:
            memberfetch.fetch(list_users, SERVER, IDS[:3], Batches(3), key=str, get=never)
        assert fragment in caught.value.why


def test_a_failing_server_fails_the_run_rather_than_listing_everyone():
    def failing(server):
        raise FetchError("Users", 1, FetchReason.SERVER_FAILING, failure=Failure(SERVER.base_url, 503), attempts=4)

    with pytest.raises(FetchError):
        memberfetch.fetch(failing, SERVER, IDS[:3], Batches(3), key=str, get=never)


def test_no_wanted_user_asks_nothing():
    assert memberfetch.fetch(lambda server: pytest.fail("asked"), SERVER, [], Batches(3), key=str, get=never) == []


def test_an_id_is_one_json_string_with_any_other_character_as_itself():
    assert memberfetch.filter_of(['a"b\\c', "zoë"]) == 'id eq "a\\"b\\\\c" or id eq "zoë"'
