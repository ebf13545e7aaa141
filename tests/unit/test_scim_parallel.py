"""scim: a long index listing is decoded in forked worker processes while
the next pages are fetched (coreweave_workers). The walk's rules and
errors are the same as in-process; only where json.loads runs changes.

Real forked workers, a scripted transport in this process (as test_scim.py).
"""

from __future__ import annotations

import pytest

from nss_cache_coreweave import scim
from nss_cache_coreweave.errors import ListingError, ListingReason
from support.scripted_http import ScriptedTransport, page, server, session_with, users

TOTAL = 20  # one user per page: 19 pages after the first, more than PARALLEL_MIN_PAGES


def no_sleep(seconds):
    raise AssertionError(f"slept {seconds} s")


NO_SLEEP = scim.Clock(sleep=no_sleep)


def listing(*steps, **options):
    srv = server(page_size=1, **options)
    transport = ScriptedTransport(*steps)
    user_names = scim.Listing("Users", srv.users_url, lambda r: r["userName"], lambda u: u.split("@")[0])
    found = scim.list_resources(session_with(transport, srv), srv, user_names, clock=NO_SLEEP)
    return found, transport


def starts(transport):
    return [int(s.params["startIndex"]) for s in transport.sent]


def one_per_page(n=TOTAL):
    return [page(users(f"u{i:02d}"), total=n) for i in range(n)]


def test_long_listing_is_decoded_in_workers_with_one_request_per_page(mocker):
    pool = mocker.spy(scim.multiprocessing.get_context("fork"), "Pool")

    found, transport = listing(*one_per_page(), workers=2)

    assert found == [f"u{i:02d}@example.com" for i in range(TOTAL)]
    assert starts(transport) == list(range(1, TOTAL + 1))
    assert pool.call_count == 1


def test_without_workers_everything_is_decoded_in_process(mocker):
    ahead = mocker.patch.object(scim, "_Ahead", side_effect=AssertionError("no workers asked for"))

    found, transport = listing(*one_per_page(), workers=0)

    assert len(found) == TOTAL and starts(transport) == list(range(1, TOTAL + 1))
    ahead.assert_not_called()


def test_a_short_listing_stays_in_process(mocker):
    ahead = mocker.patch.object(scim, "_Ahead", side_effect=AssertionError("too short to fork for"))

    found, _ = listing(*one_per_page(scim.PARALLEL_MIN_PAGES), workers=2)

    assert len(found) == scim.PARALLEL_MIN_PAGES
    ahead.assert_not_called()


def test_a_page_shorter_than_page_1_drops_the_pipeline_and_the_walk_goes_on():
    # page_size 2: page 1 holds 2, page 2 only 1, so the walk continues at 4,
    # not at 5 where the pipeline had asked: its pages at 5, 7, 9 and 11
    # (four in flight for two workers) are dropped.
    srv_pages = [page(users("a", "b"), total=22), page(users("c"), total=22)]
    srv_pages += [page(users(f"x{i}", f"y{i}"), total=22) for i in range(4)]
    rest = [f"u{i:02d}" for i in range(4, 23)]
    srv_pages += [page(users(*rest[i:i + 2]), total=22) for i in range(0, len(rest), 2)]
    srv = server(page_size=2, workers=2)
    transport = ScriptedTransport(*srv_pages)

    ids = scim.Listing("Users", srv.users_url, lambda r: r["id"], lambda i: i)
    found = scim.list_resources(session_with(transport, srv), srv, ids, clock=NO_SLEEP)

    assert found == ["a", "b", "c", *rest]
    assert starts(transport) == [1, 3, 5, 7, 9, 11, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]


def test_a_bad_page_decoded_in_a_worker_fails_with_the_same_error():
    # The error crosses the process boundary pickled: its fields and its text survive.
    pages = one_per_page()
    pages[6] = page([{"userName": "no-id@example.com"}], total=TOTAL)

    with pytest.raises(ListingError) as caught:
        listing(*pages, workers=2)

    error = caught.value
    assert (error.kind, error.page, error.reason, error.values) == ("Users", 7, ListingReason.RESOURCE_WITHOUT_ID, {})
    assert str(error) == "Users page 7: a resource has no string 'id': refusing a malformed listing"


def test_a_changed_total_in_a_worker_decoded_page_is_refused():
    pages = one_per_page()
    pages[9] = page(users("u09"), total=TOTAL + 1)

    with pytest.raises(ListingError) as caught:
        listing(*pages, workers=2)

    error = caught.value
    assert (error.kind, error.page, error.reason, error.values) == (
        "Users", 10, ListingReason.TOTAL_CHANGED, {"total": TOTAL + 1, "first": TOTAL, "first_page": 1}
    )
