"""memberfetch: the allowed groups' members by id, in batches, trusted only
when every answer is exactly what was asked for (issue 16). Pure: a list
function stands in for the Users listing; the whole path against a real
server is tests/integration's."""

from __future__ import annotations

import json
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


def asked(server: Server) -> List[str]:
    """The ids a filtered Users listing asks for."""
    ((name, text),) = server.users_query
    assert name == "filter"
    return [json.loads(term[len("id eq "):]) for term in text.split(" or ")]


def honest(directory):
    """A server that filters: the asked ids it holds."""
    return lambda server: [i for i in asked(server) if i in directory]


# --- batches ------------------------------------------------------------------------------------------


def test_batches_hold_at_most_the_size_each_in_sorted_order():
    assert memberfetch.batches(reversed(IDS), 3) == [IDS[0:3], IDS[3:6], IDS[6:7]]


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


@pytest.mark.parametrize("status", [400, 404, 405, 501])
def test_a_server_without_the_document_does_not_filter(status):
    def get(url):
        assert url == "https://iam.example/scim/ServiceProviderConfig"
        raise refusal(status)

    assert memberfetch.discover(get, SERVER) is None


def test_a_refused_token_at_discovery_fails_the_run():
    error = FetchError("ServiceProviderConfig", 1, FetchReason.TOKEN_REFUSED, failure=Failure(SERVER.base_url, 401))

    with pytest.raises(FetchError):
        memberfetch.discover(lambda url: (_ for _ in ()).throw(error), SERVER)


# --- fetching ------------------------------------------------------------------------------------------


def test_every_wanted_user_comes_back_batch_by_batch():
    sent = []

    def list_users(server):
        sent.append(asked(server))
        return honest(set(IDS))(server)

    found = memberfetch.fetch(list_users, SERVER, IDS, Batches(3), key=str)

    assert found == IDS
    assert sent == [IDS[0:3], IDS[3:6], IDS[6:7]]


@pytest.mark.parametrize("list_users, why", [
    pytest.param(lambda server: asked(server) + ["someone-else"], "an answer held users that were not asked for",
                 id="an-id-not-asked-for"),
    pytest.param(lambda server: IDS, "an answer held users that were not asked for", id="the-filter-ignored"),
])
def test_an_answer_that_is_not_what_was_asked_means_the_server_does_not_filter(list_users, why):
    with pytest.raises(NotFiltering) as caught:
        memberfetch.fetch(list_users, SERVER, IDS[:3], Batches(3), key=str)

    assert caught.value.why == why


def test_a_requested_id_missing_from_an_answer_that_adds_up_is_no_user_of_iam(caplog):
    """As in a full listing, the member naming it does not resolve (policy drops and logs it)."""
    caplog.set_level("INFO", "nss_cache_coreweave")

    found = memberfetch.fetch(lambda server: asked(server)[1:], SERVER, IDS[:6], Batches(3), key=str)

    assert found == IDS[1:3] + IDS[4:6]
    assert [r.getMessage() for r in caplog.records] == [
        "coreweave: 2 members' ids are no user of IAM (their members do not resolve)"]


def test_a_missing_id_that_may_be_a_posix_name_means_the_full_listing():
    """coreweave_member_match = auto: a short `value` may name a user by POSIX name, not by id."""
    with pytest.raises(NotFiltering) as caught:
        memberfetch.fetch(lambda server: asked(server)[1:], SERVER, IDS[:3], Batches(3), key=str,
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
            memberfetch.fetch(list_users, SERVER, IDS[:3], Batches(3), key=str)
        assert fragment in caught.value.why


def test_a_failing_server_fails_the_run_rather_than_listing_everyone():
    def failing(server):
        raise FetchError("Users", 1, FetchReason.SERVER_FAILING, failure=Failure(SERVER.base_url, 503), attempts=4)

    with pytest.raises(FetchError):
        memberfetch.fetch(failing, SERVER, IDS[:3], Batches(3), key=str)


def test_no_wanted_user_asks_nothing():
    assert memberfetch.fetch(lambda server: pytest.fail("asked"), SERVER, [], Batches(3), key=str) == []
