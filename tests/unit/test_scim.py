"""scim: list every resource of an endpoint, all or nothing.

Every test runs the package's real ``requests.Session`` (``scim.new_session``)
over a scripted transport (``support.scripted_http.ScriptedTransport``): a
``BaseAdapter`` that answers from a script and records each request. No
network, no sleeping: ``sleep`` is injected and only recorded.
"""

from __future__ import annotations

import email.utils
import gc
import json
import logging
import pickle
import random
import time

import pytest
import requests
import urllib3

from nss_cache_coreweave import scim
from nss_cache_coreweave.errors import (
    AuthError,
    Failure,
    FetchError,
    FetchReason,
    ListingError,
    ListingReason,
    StaleCursorError,
)
from nss_cache_coreweave.scim import Action, RetryPolicy, Verdict, classify, retry_after_seconds
from support.scripted_http import (
    BASE,
    TOKEN,
    Reply,
    ScriptedTransport,
    cut,
    load_page,
    page,
    scim_error,
    server,
    session_with,
    users,
)


def no_sleep(seconds):
    raise AssertionError(f"slept {seconds} s")


NO_SLEEP = scim.Clock(sleep=no_sleep)


def every_user(srv, limit=None) -> scim.Listing:
    """The Users listing, each resource kept whole."""
    return scim.Listing("Users", srv.users_url, lambda r: r, lambda r: r["id"], limit)


def listing(*steps, limit=None, **server_options):
    """Run list_resources over a scripted transport (at most ``limit`` resources).

    Returns (ids listed, transport, sleeps) or raises what list_resources raised
    (the transport and sleeps are then on the exception as .transport/.sleeps).
    """
    srv = server(**server_options)
    transport = ScriptedTransport(*steps)
    sleeps = []
    try:
        found = scim.list_resources(
            session_with(transport, srv), srv, every_user(srv, limit),
            # random() == 0: backoff without jitter, so the waits are exact.
            clock=scim.Clock(sleep=sleeps.append, random=lambda: 0.0),
        )
    except Exception as e:
        e.transport, e.sleeps = transport, sleeps
        raise
    return [r["id"] for r in found], transport, sleeps


def refused(kind, *steps, **server_options):
    with pytest.raises(kind) as caught:
        listing(*steps, **server_options)
    return caught.value


def fields(error):
    """What an error says, as values: (endpoint, page, reason, the reason's values)."""
    return error.kind, error.page, error.reason, error.values


# --- index paging (RFC 7644 §3.4.2.4) ---------------------------------------


def test_index_paging_sends_explicit_start_index_and_count():
    ids, transport, sleeps = listing(
        page(users("a", "b"), total=3, startIndex=1),
        page(users("c"), total=3, startIndex=3),
        page_size=2,
    )
    assert ids == ["a", "b", "c"]
    assert transport.params() == [{"startIndex": "1", "count": "2"}, {"startIndex": "3", "count": "2"}]
    assert transport.paths() == ["/scim/cw-test/Users"] * 2
    assert sleeps == []


def test_index_paging_advances_by_what_the_server_returned():
    # The server caps pages at 1 although 2 were asked for.
    ids, transport, _ = listing(page(users("a"), total=3), page(users("b"), total=3), page(users("c"), total=3))
    assert ids == ["a", "b", "c"]
    assert [p["startIndex"] for p in transport.params()] == ["1", "2", "3"]


def test_single_page_listing_makes_one_request():
    ids, transport, _ = listing(page(users("a", "b")))
    assert (ids, len(transport.sent)) == (["a", "b"], 1)


def test_page_with_changed_total_is_refused():
    error = refused(ListingError, page(users("a", "b"), total=3), page(users("c", "d"), total=4))
    assert fields(error) == ("Users", 2, ListingReason.TOTAL_CHANGED, {"total": 4, "first": 3, "first_page": 1})


def test_empty_page_before_total_is_refused():
    error = refused(ListingError, page(users("a", "b"), total=3), page([], total=3))
    assert fields(error) == ("Users", 2, ListingReason.NO_NEW_RESOURCES, {"start": 3, "collected": 2, "total": 3})


def test_empty_first_page_with_a_total_is_refused():
    error = refused(ListingError, page([], total=5))
    assert fields(error) == ("Users", 1, ListingReason.NO_NEW_RESOURCES, {"start": 1, "collected": 0, "total": 5})


def test_page_repeating_earlier_resources_is_refused():
    # A server that ignores startIndex serves page 1 forever.
    error = refused(ListingError, page(users("a", "b"), total=4), page(users("a", "b"), total=4))
    assert fields(error) == ("Users", 2, ListingReason.NO_NEW_RESOURCES, {"start": 3, "collected": 2, "total": 4})


def test_overlapping_pages_are_deduplicated_by_id():
    # A deletion between requests shifts the window: b comes twice.
    ids, _, _ = listing(page(users("a", "b"), total=3), page(users("b", "c"), total=3))
    assert ids == ["a", "b", "c"]


def test_identical_copies_of_a_resource_are_kept_once():
    first = {"id": "a", "userName": "first"}
    srv = server()
    transport = ScriptedTransport(page([first, dict(first), {"id": "b"}], total=2, itemsPerPage=3))
    found = scim.list_resources(session_with(transport, srv), srv, every_user(srv), clock=NO_SLEEP)
    assert found == [first, {"id": "b"}]


@pytest.mark.parametrize(
    "steps, page_no",
    [
        pytest.param(
            [page([{"id": "a", "userName": "first"}, {"id": "a", "userName": "second"}], total=1)], 1, id="same-page"
        ),
        pytest.param(
            [page([{"id": "a", "userName": "first"}, {"id": "b"}], total=3),
             page([{"id": "a", "userName": "second"}, {"id": "c"}], total=3)],
            2, id="across-pages",
        ),
    ],
)
def test_same_id_with_different_content_is_refused(steps, page_no):
    error = refused(ListingError, *steps)
    assert fields(error) == ("Users", page_no, ListingReason.CHANGED_DURING_LISTING, {"id": "a"})


def test_same_id_with_different_content_is_refused_in_cursor_mode_too():
    error = refused(
        ListingError,
        page([{"id": "a", "active": True}], total=2, nextCursor="c1"),
        page([{"id": "a", "active": False}], total=2),
        pagination="cursor",
    )
    assert fields(error) == ("Users", 2, ListingReason.CHANGED_DURING_LISTING, {"id": "a"})


def test_long_duplicate_id_is_shown_cut():
    long_id = "x" * 200
    error = refused(ListingError, page([{"id": long_id, "n": 1}, {"id": long_id, "n": 2}], total=1))
    assert fields(error) == ("Users", 1, ListingReason.CHANGED_DURING_LISTING, {"id": "x" * 80})


@pytest.mark.parametrize(
    "total, seen",
    [
        pytest.param("omit", None, id="missing"),
        pytest.param("null", None, id="null"),
        pytest.param(-1, -1, id="negative"),
        pytest.param(True, True, id="bool"),
        pytest.param("3", "3", id="string"),
        pytest.param(3.0, 3.0, id="float"),
    ],
)
def test_total_that_cannot_be_checked_is_refused(total, seen):
    if total == "omit":
        reply = page(users("a"), omit=["totalResults"])
    elif total == "null":
        reply = page(users("a"), totalResults=None)
    else:
        reply = page(users("a"), total=total)
    error = refused(ListingError, reply)
    assert fields(error) == ("Users", 1, ListingReason.BAD_TOTAL, {"total": seen})
    assert type(error.values["total"]) is type(seen)


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param({"id": "a"}, id="object"),
        pytest.param("a", id="string"),
        pytest.param(5, id="number"),
        pytest.param(True, id="bool"),
    ],
)
def test_resources_that_are_not_a_list_are_refused(resources):
    error = refused(ListingError, page([], total=1, Resources=resources))
    assert fields(error) == ("Users", 1, ListingReason.RESOURCES_NOT_A_LIST, {})


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param({"userName": "a"}, id="no-id"),
        pytest.param({"id": ""}, id="empty-id"),
        pytest.param({"id": 5}, id="number-id"),
        pytest.param({"id": None}, id="null-id"),
        pytest.param({"id": ["a"]}, id="list-id"),
        pytest.param("a", id="string-resource"),
        pytest.param(None, id="null-resource"),
    ],
)
def test_resource_without_a_string_id_is_refused(resource):
    error = refused(ListingError, page([{"id": "ok"}, resource]))
    assert fields(error) == ("Users", 1, ListingReason.RESOURCE_WITHOUT_ID, {})


def test_more_resources_than_total_is_refused():
    error = refused(ListingError, page(users("a", "b"), total=1))
    assert fields(error) == ("Users", None, ListingReason.COUNT_MISMATCH, {"collected": 2, "total": 1})


def test_zero_total_with_resources_is_refused():
    error = refused(ListingError, page(users("a"), total=0))
    assert fields(error) == ("Users", None, ListingReason.COUNT_MISMATCH, {"collected": 1, "total": 0})


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(page([], total=0), id="empty-Resources"),
        pytest.param(page([], total=0, omit=["Resources"]), id="no-Resources"),
    ],
)
def test_zero_results_is_an_empty_listing_after_one_request(reply):
    ids, transport, _ = listing(reply)
    assert (ids, len(transport.sent)) == ([], 1)


def test_endless_index_listing_is_capped_by_max_pages():
    error = refused(ListingError, page(users("a"), total=100), page(users("b"), total=100), max_pages=2)
    assert fields(error) == ("Users", None, ListingReason.TOO_MANY_PAGES, {"max_pages": 2})
    assert len(error.transport.sent) == 2


def test_listing_of_exactly_max_pages_is_complete():
    ids, transport, _ = listing(page(users("a"), total=2), page(users("b"), total=2), max_pages=2)
    assert (ids, len(transport.sent)) == (["a", "b"], 2)


def test_an_index_listing_announcing_more_than_the_limit_is_refused_at_page_1():
    # Memory stays bounded: a user outside the listed groups still costs its id.
    error = refused(ListingError, page(users("a", "b"), total=3), page(users("c"), total=3), limit=2, page_size=2)
    assert fields(error) == (
        "Users", None, ListingReason.TOO_MANY_ANNOUNCED, {"count": 3, "limit": 2, "option": "coreweave_max_users"}
    )
    assert len(error.transport.sent) == 1


def test_a_listing_of_exactly_the_limit_is_complete():
    ids, _, _ = listing(page(users("a", "b"), total=2), limit=2)
    assert ids == ["a", "b"]


def test_a_cursor_listing_holding_more_than_the_limit_is_refused():
    steps = [cursor_page(f"u{n}", next_cursor=f"c{n}") for n in range(2)] + [cursor_page("u2")]
    error = refused(ListingError, *steps, pagination="cursor", limit=2)
    assert fields(error) == (
        "Users", None, ListingReason.TOO_MANY_COLLECTED, {"count": 3, "limit": 2, "option": "coreweave_max_users"}
    )


# --- cursor paging (RFC 9865) -------------------------------------------------


def cursor_page(*ids, next_cursor=None):
    """A cursor page without totalResults (RFC 9865 makes it optional)."""
    extra = {} if next_cursor is None else {"nextCursor": next_cursor}
    return page(users(*ids), omit=["totalResults"], **extra)


def test_cursor_paging_starts_empty_and_follows_next_cursor():
    ids, transport, _ = listing(
        page(users("a", "b"), total=3, nextCursor="VXNlcnM6Mg"),
        page(users("c"), total=3),
        pagination="cursor",
    )
    assert ids == ["a", "b", "c"]
    assert transport.params() == [{"cursor": "", "count": "2"}, {"cursor": "VXNlcnM6Mg", "count": "2"}]
    assert transport.sent[0].query == "cursor=&count=2"


@pytest.mark.parametrize(
    "last",
    [
        pytest.param(page(users("c"), omit=["totalResults"]), id="absent"),
        pytest.param(page(users("c"), omit=["totalResults"], nextCursor=None), id="null"),
    ],
)
def test_absent_next_cursor_ends_the_walk(last):
    ids, transport, _ = listing(cursor_page("a", next_cursor="c1"), last, pagination="cursor")
    assert (ids, len(transport.sent)) == (["a", "c"], 2)


def test_cursor_paging_does_not_need_total_results():
    ids, _, _ = listing(page(users("a", "b"), omit=["totalResults", "itemsPerPage"]), pagination="cursor")
    assert ids == ["a", "b"]


def test_repeated_cursor_is_refused():
    error = refused(
        ListingError,
        cursor_page("a", next_cursor="c1"),
        cursor_page("b", next_cursor="c2"),
        cursor_page("c", next_cursor="c1"),
        pagination="cursor",
    )
    assert fields(error) == ("Users", 3, ListingReason.NO_PROGRESS, {})


def test_cursor_page_without_new_resources_is_refused():
    error = refused(ListingError, cursor_page("a", next_cursor="c1"), cursor_page("a", next_cursor="c2"),
                    pagination="cursor")
    assert fields(error) == ("Users", 2, ListingReason.NO_PROGRESS, {})


@pytest.mark.parametrize("cursor", ["", 5, ["c"]])
def test_next_cursor_must_be_a_non_empty_string(cursor):
    error = refused(ListingError, cursor_page("a", next_cursor=cursor), pagination="cursor")
    assert fields(error) == ("Users", 1, ListingReason.BAD_NEXT_CURSOR, {"cursor": cursor})


def test_cursor_page_with_changed_total_is_refused():
    error = refused(ListingError, page(users("a"), total=2, nextCursor="c1"), page(users("b"), total=3),
                    pagination="cursor")
    assert fields(error) == ("Users", 2, ListingReason.TOTAL_CHANGED, {"total": 3, "first": 2, "first_page": 1})


def test_a_cursor_total_is_compared_with_the_first_page_that_sent_one():
    error = refused(
        ListingError,
        cursor_page("a", next_cursor="c1"),
        page(users("b"), total=3, nextCursor="c2"),
        page(users("c"), total=4),
        pagination="cursor",
    )
    assert fields(error) == ("Users", 3, ListingReason.TOTAL_CHANGED, {"total": 4, "first": 3, "first_page": 2})


def test_cursor_listing_short_of_its_total_is_refused():
    error = refused(ListingError, page(users("a"), total=2), pagination="cursor")
    assert fields(error) == ("Users", None, ListingReason.COUNT_MISMATCH, {"collected": 1, "total": 2})


def test_endless_cursor_listing_is_capped_by_max_pages():
    steps = [cursor_page(f"u{n}", next_cursor=f"c{n}") for n in range(3)]
    error = refused(ListingError, *steps, pagination="cursor", max_pages=3)
    assert fields(error) == ("Users", None, ListingReason.TOO_MANY_PAGES, {"max_pages": 3})
    assert len(error.transport.sent) == 3


@pytest.mark.parametrize("scim_type", ["invalidCursor", "expiredCursor"])
def test_stale_cursor_restarts_the_walk_once(scim_type):
    ids, transport, sleeps = listing(
        page(users("a"), total=2, nextCursor="c1"),
        scim_error(400, "cursor expired", scim_type),
        page(users("a"), total=2, nextCursor="c9"),
        page(users("b"), total=2),
        pagination="cursor",
    )
    assert ids == ["a", "b"]
    assert [p["cursor"] for p in transport.params()] == ["", "c1", "", "c9"]
    assert sleeps == []


def test_second_stale_cursor_fails_the_listing():
    error = refused(
        StaleCursorError,
        cursor_page("a", next_cursor="c1"),
        scim_error(400, "cursor expired", "expiredCursor"),
        cursor_page("a", next_cursor="c2"),
        scim_error(400, "cursor expired", "invalidCursor"),
        pagination="cursor",
    )
    assert isinstance(error, FetchError)
    assert fields(error) == ("Users", 2, FetchReason.STALE_CURSOR, {"failure": Failure(BASE, 400, "cursor expired")})
    assert len(error.transport.sent) == 4


def test_bad_request_without_a_cursor_type_is_not_restarted():
    error = refused(FetchError, cursor_page("a", next_cursor="c1"), scim_error(400, "bad filter", "invalidFilter"),
                    pagination="cursor")
    assert type(error) is FetchError
    assert fields(error) == ("Users", 2, FetchReason.NOT_RETRIED, {"failure": Failure(BASE, 400, "bad filter")})
    assert len(error.transport.sent) == 2


# --- retries ----------------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after, wait",
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param(" 3 ", 3.0, id="padded"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("60", 60.0, id="at-the-cap"),
        pytest.param("61", 60.0, id="just-above-the-cap"),
        pytest.param("86400", 60.0, id="clamped"),
    ],
)
def test_429_retry_after_seconds_is_honoured_and_clamped(retry_after, wait):
    ids, transport, sleeps = listing(scim_error(429, headers={"Retry-After": retry_after}), page(users("a")))
    assert (ids, sleeps, len(transport.sent)) == (["a"], [wait], 2)


NOW = 1_780_000_000.0


@pytest.mark.parametrize(
    "offset, wait",
    [
        pytest.param(45, 45.0, id="in-45-s"),
        pytest.param(-300, 0.0, id="in-the-past"),
        pytest.param(3600, 60.0, id="clamped"),
    ],
)
def test_429_retry_after_http_date_is_honoured_and_clamped(monkeypatch, offset, wait):
    monkeypatch.setattr(scim.time, "time", lambda: NOW)
    header = email.utils.formatdate(NOW + offset, usegmt=True)
    _, _, sleeps = listing(scim_error(429, headers={"Retry-After": header}), page(users("a")))
    assert sleeps == [wait]


@pytest.mark.parametrize(
    "retry_after",
    [
        pytest.param("soon", id="word"),
        pytest.param("1.5", id="fraction"),
        pytest.param("-5", id="negative"),
        pytest.param("", id="empty"),
        pytest.param("Mon, 32 Foo 2026 25:61:61", id="bad-date"),
        pytest.param("\xb2", id="latin1-superscript-two"),  # http.client decodes header bytes as latin-1
    ],
)
def test_unusable_retry_after_falls_back_to_backoff(retry_after):
    _, _, sleeps = listing(scim_error(429, headers={"Retry-After": retry_after}), page(users("a")))
    assert sleeps == [1.0]


def test_retry_after_is_honoured_on_503_too():
    _, _, sleeps = listing(scim_error(503, headers={"Retry-After": "9"}), page(users("a")))
    assert sleeps == [9.0]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_status_backs_off_1_2_4_then_succeeds(status):
    ids, transport, sleeps = listing(scim_error(status), scim_error(status), scim_error(status), page(users("a")),
                                     retries=3)
    assert (ids, sleeps, len(transport.sent)) == (["a"], [1.0, 2.0, 4.0], 4)


def test_backoff_is_capped_by_max_retry_wait_and_then_fails():
    error = refused(FetchError, *[scim_error(503)] * 8, retries=7)
    assert type(error) is FetchError
    assert error.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert fields(error) == ("Users", 1, FetchReason.SERVER_FAILING, {"failure": Failure(BASE, 503), "attempts": 8})


def test_zero_retries_fails_at_once():
    error = refused(FetchError, scim_error(500, "boom"), retries=0)
    assert (error.sleeps, len(error.transport.sent)) == ([], 1)
    assert fields(error) == (
        "Users", 1, FetchReason.SERVER_FAILING, {"failure": Failure(BASE, 500, "boom"), "attempts": 1}
    )


def test_retries_count_per_page():
    ids, _, sleeps = listing(
        page(users("a"), total=2), scim_error(502), scim_error(502), page(users("b"), total=2), retries=2,
    )
    assert (ids, sleeps) == (["a", "b"], [1.0, 2.0])


@pytest.mark.parametrize(
    "exception",
    [
        pytest.param(requests.ConnectionError("refused"), id="ConnectionError"),
        pytest.param(requests.exceptions.ConnectTimeout("connect timeout"), id="ConnectTimeout"),
        pytest.param(requests.exceptions.ReadTimeout("read timeout"), id="ReadTimeout"),
        pytest.param(requests.exceptions.SSLError("handshake"), id="SSLError"),
    ],
)
def test_connection_errors_are_retried(exception):
    ids, _, sleeps = listing(exception, exception, page(users("a")))
    assert (ids, sleeps) == (["a"], [1.0, 2.0])


def test_connection_errors_fail_after_the_last_attempt():
    error = refused(FetchError, *[requests.ConnectionError("refused")] * 4, retries=3)
    assert error.sleeps == [1.0, 2.0, 4.0]
    assert fields(error) == (
        "Users", 1, FetchReason.UNREACHABLE, {"failure": Failure(BASE, error="ConnectionError"), "attempts": 4}
    )


def test_other_request_errors_are_not_retried():
    error = refused(FetchError, requests.exceptions.InvalidURL("bad"))
    assert fields(error) == ("Users", 1, FetchReason.REQUEST_FAILED, {"error": "InvalidURL"})
    assert error.sleeps == []


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_never_retried(status):
    error = refused(AuthError, scim_error(status, "invalid or expired bearer token", headers={"Retry-After": "1"}))
    assert isinstance(error, FetchError)
    assert (error.sleeps, len(error.transport.sent)) == ([], 1)
    assert fields(error) == (
        "Users", 1, FetchReason.TOKEN_REFUSED, {"failure": Failure(BASE, status, "invalid or expired bearer token")}
    )


@pytest.mark.parametrize(
    "reply, detail",
    [
        pytest.param(scim_error(404, "no such tenant"), "no such tenant", id="404-scim-error"),
        pytest.param(Reply(404, b"<html>Not Found</html>"), "", id="404-html"),
        pytest.param(Reply(405, b""), "", id="405"),
        pytest.param(Reply(400, b""), "", id="400"),
        pytest.param(scim_error(404, "a\nb\x00c" + "x" * 300), "a b c" + "x" * 195, id="detail-cleaned-and-cut"),
    ],
)
def test_other_statuses_fail_without_retry(reply, detail):
    error = refused(FetchError, reply)
    assert type(error) is FetchError
    assert (error.sleeps, len(error.transport.sent)) == ([], 1)
    assert fields(error) == ("Users", 1, FetchReason.NOT_RETRIED, {"failure": Failure(BASE, reply.status, detail)})


# --- response bodies ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>hello</html>", id="html"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"Resources": [', id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    ],
)
def test_body_that_is_not_json_is_a_listing_error(body):
    error = refused(ListingError, Reply(200, body))
    assert fields(error) == ("Users", 1, ListingReason.NOT_JSON, {})


def test_deeply_nested_error_body_is_still_a_fetch_error():
    error = refused(FetchError, Reply(503, b"[" * 100_000), retries=0)
    assert fields(error) == ("Users", 1, FetchReason.SERVER_FAILING, {"failure": Failure(BASE, 503), "attempts": 1})


@pytest.mark.parametrize("body", [[], "Resources", 5, None, True])
def test_json_that_is_not_an_object_is_a_listing_error(body):
    error = refused(ListingError, Reply(200, body))
    assert fields(error) == ("Users", 1, ListingReason.NOT_AN_OBJECT, {})


@pytest.mark.parametrize(
    "schemas",
    [
        ["urn:ietf:params:scim:api:messages:2.0:Error"],
        ["urn:ietf:params:scim:schemas:core:2.0:User"],
    ],
)
def test_wrong_schemas_are_a_listing_error(schemas):
    error = refused(ListingError, page(users("a"), schemas=schemas))
    assert fields(error) == ("Users", 1, ListingReason.NOT_A_LIST_RESPONSE, {"schemas": repr(schemas)})


def test_wrong_schemas_are_shown_cut():
    schemas = [f"urn:example:{n}" for n in range(20)]
    error = refused(ListingError, page(users("a"), schemas=schemas))
    assert error.values == {"schemas": repr(schemas)[:100]}


def test_listing_without_schemas_is_tolerated():
    ids, _, _ = listing(page(users("a"), omit=["schemas"]))
    assert ids == ["a"]


# --- what goes on the wire ----------------------------------------------------


def test_request_carries_bearer_token_scim_accept_and_user_agent():
    _, transport, _ = listing(page(users("a")), timeout=7.5)
    sent = transport.sent[0]
    assert sent.method == "GET"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Accept"] == "application/scim+json"
    assert sent.headers["User-Agent"] == f"nss-cache-coreweave/{scim.__version__}"
    assert sent.timeout == 7.5


@pytest.mark.parametrize("verify", [True, False, "/etc/ssl/iam-ca.pem"])
def test_configured_tls_verification_is_used(monkeypatch, verify):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    _, transport, _ = listing(page(users("a")), verify=verify)
    assert transport.sent[0].verify == verify


@pytest.mark.parametrize("verify", [False, "/etc/ssl/iam-ca.pem"])
def test_environment_ca_bundle_does_not_override_configured_verification(monkeypatch, verify):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    _, transport, _ = listing(page(users("a")), verify=verify)
    assert transport.sent[0].verify == verify


def test_netrc_does_not_replace_the_bearer_token(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.coreweave.test login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    # Control: a plain Session over the same transport does pick the netrc up.
    plain = requests.Session()
    control = ScriptedTransport(page([]))
    plain.mount("https://", control)
    plain.get(BASE + "/Users")
    assert control.sent[0].headers["Authorization"].startswith("Basic ")

    _, transport, _ = listing(page(users("a")))
    assert transport.sent[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_refused_and_never_followed(status):
    redirect = Reply(status, b"", {"Location": "https://elsewhere.example/scim/Users?startIndex=1&count=2"})
    # The second step would be the redirect target: it must never be asked.
    error = refused(FetchError, redirect, page(users("a")))
    assert type(error) is FetchError
    assert fields(error) == ("Users", 1, FetchReason.REDIRECT, {"status": status, "location": "elsewhere.example"})
    assert [s.url.split("?")[0] for s in error.transport.sent] == [BASE + "/Users"]
    assert (error.sleeps, len(error.transport.steps)) == ([], 1)


@pytest.mark.parametrize(
    "location, shown",
    [
        pytest.param("/scim/cw-test/People", "elsewhere", id="same-host-relative"),
        pytest.param(None, "elsewhere", id="no-location"),
        pytest.param(f"{BASE}/Users?startIndex=1", "api.coreweave.test", id="same-host-absolute"),
    ],
)
def test_even_a_redirect_to_the_same_host_is_refused(location, shown):
    headers = {} if location is None else {"Location": location}
    error = refused(FetchError, Reply(307, b"", headers))
    assert fields(error) == ("Users", 1, FetchReason.REDIRECT, {"status": 307, "location": shown})
    assert len(error.transport.sent) == 1


def test_304_is_refused_like_a_redirect():
    # There is no If-Modified-Since: a 304 can only be a broken server.
    error = refused(FetchError, Reply(304, b""))
    assert fields(error) == ("Users", 1, FetchReason.REDIRECT, {"status": 304, "location": "elsewhere"})


def test_session_auth_repr_hides_the_token():
    session = scim.new_session(server())
    assert TOKEN not in repr(session.auth)
    assert repr(session.auth) == "_Bearer(<redacted>)"


@pytest.mark.parametrize(
    "steps, kind",
    [
        pytest.param([scim_error(401, "invalid or expired bearer token")], AuthError, id="401"),
        pytest.param([scim_error(403)], AuthError, id="403-no-detail"),
        pytest.param([scim_error(404, "not found")], FetchError, id="404"),
        pytest.param([scim_error(503, "busy")] * 4, FetchError, id="503-exhausted"),
        pytest.param([requests.ConnectionError(f"Authorization: Bearer {TOKEN}")] * 4, FetchError,
                     id="connection-error-quoting-the-header"),
        pytest.param([requests.exceptions.InvalidHeader(f"Invalid header value b'Bearer {TOKEN}'")], FetchError,
                     id="invalid-header"),
        pytest.param([Reply(200, b"not json")], ListingError, id="not-json"),
        pytest.param([page(users("a"), total=2), page([], total=2)], ListingError, id="short-listing"),
    ],
)
def test_no_error_message_or_field_contains_the_token(steps, kind):
    error = refused(kind, *steps)
    assert TOKEN not in shown_chain(error)
    assert TOKEN not in repr(fields(error))


def shown_chain(error) -> str:
    """Every message a traceback of ``error`` would print."""
    texts = []
    while error is not None:
        texts.append(f"{error!s} {error!r}")
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return "\n".join(texts)


def test_server_error_detail_echoing_the_token_is_not_repeated():
    # Some servers quote the credential they refused; the message is logged.
    error = refused(AuthError, scim_error(401, f"invalid bearer token {TOKEN}"))
    assert error.values == {"failure": Failure(BASE, 401, "invalid bearer token <token>")}
    assert TOKEN not in str(error)


# --- coreweave_users_query / coreweave_groups_query ----------------------------

ACTIVE = (("filter", 'active eq "true"'), ("groups", "admin"))


def test_users_query_is_on_every_index_page_after_the_paging_parameters():
    _, transport, _ = listing(page(users("a", "b"), total=3), page(users("c"), total=3), users_query=ACTIVE)
    assert [s.query for s in transport.sent] == [
        "startIndex=1&count=2&filter=active+eq+%22true%22&groups=admin",
        "startIndex=3&count=2&filter=active+eq+%22true%22&groups=admin",
    ]


def test_users_query_is_on_every_cursor_page():
    _, transport, _ = listing(
        page(users("a", "b"), total=3, nextCursor="c2"), page(users("c"), total=3),
        pagination="cursor", users_query=ACTIVE,
    )
    assert transport.params() == [
        {"cursor": "", "count": "2", "filter": 'active eq "true"', "groups": "admin"},
        {"cursor": "c2", "count": "2", "filter": 'active eq "true"', "groups": "admin"},
    ]


def test_each_endpoint_gets_its_own_query():
    srv = server(users_query=(("filter", "u"),), groups_query=(("filter", 'displayName eq "a&b"'),))
    transport = ScriptedTransport(page(users("g")), page(users("u")))
    session = session_with(transport, srv)
    for kind, url in (("Groups", srv.groups_url), ("Users", srv.users_url)):
        scim.list_resources(session, srv, scim.Listing(kind, url, lambda r: r, lambda r: r["id"]), clock=NO_SLEEP)
    assert [s.query for s in transport.sent] == [
        "startIndex=1&count=2&filter=displayName+eq+%22a%26b%22",
        "startIndex=1&count=2&filter=u",
    ]


def test_a_repeated_query_parameter_is_sent_as_often_as_written():
    _, transport, _ = listing(page(users("a")), users_query=(("attributes", "id"), ("attributes", "userName")))
    assert transport.sent[0].query == "startIndex=1&count=2&attributes=id&attributes=userName"


def test_fetch_page_carries_the_endpoints_query():
    _, transport, _ = one_page(page(users("a")), users_query=ACTIVE)
    assert transport.sent[0].query == "startIndex=1&count=1&filter=active+eq+%22true%22&groups=admin"


def test_the_query_changes_no_completeness_check():
    # A filtering server still has to deliver every resource it announces.
    error = refused(ListingError, page(users("a"), total=2), page([], total=2), users_query=ACTIVE)
    assert fields(error) == ("Users", 2, ListingReason.NO_NEW_RESOURCES, {"start": 2, "collected": 1, "total": 2})


# --- the documented payloads (docs/coreweave-iam-scim.md §8) -----------------


def test_documented_index_pages_list_three_users():
    ids, _, _ = listing(Reply(200, load_page("users-index-page1.json")),
                        Reply(200, load_page("users-index-page2.json")))
    assert ids == ["5b0e8f7a", "c3a4d5e6", "e1f2a3b4"]


def test_documented_cursor_last_page_ends_the_walk():
    first = load_page("users-index-page1.json")
    first.pop("startIndex")
    first["nextCursor"] = "VXNlcnM6Mg"
    ids, transport, _ = listing(Reply(200, first), Reply(200, load_page("users-cursor-last.json")), pagination="cursor")
    assert ids == ["5b0e8f7a", "c3a4d5e6", "e1f2a3b4"]
    assert [p["cursor"] for p in transport.params()] == ["", "VXNlcnM6Mg"]


def test_documented_empty_result_is_an_empty_listing():
    ids, transport, _ = listing(Reply(200, load_page("empty.json")))
    assert (ids, len(transport.sent)) == ([], 1)


def test_documented_401_body_is_an_auth_error():
    error = refused(AuthError, Reply(401, load_page("error-401.json")))
    assert fields(error) == (
        "Users", 1, FetchReason.TOKEN_REFUSED, {"failure": Failure(BASE, 401, "invalid or expired bearer token")}
    )


# --- deadline, size limit, content type, itemsPerPage, cut bodies -------------


class FakeClock:
    """Monotonic time that moves only when slept on or advanced."""

    def __init__(self, now: float = 1000.0):
        self.now = now
        self.sleeps = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float):
        """A step (for the transport or a streamed body) that lets time pass."""

        def step(_sent=None):
            self.now += seconds

        return step

    def clock(self, random=lambda: 0.0) -> scim.Clock:
        return scim.Clock(sleep=self.sleep, monotonic=self.monotonic, random=random)


def timed_listing(fake, *steps, random=lambda: 0.0, **server_options):
    """list_resources over a scripted transport with a fake clock; returns
    (ids, transport) or raises with .transport on the exception."""
    srv = server(**server_options)
    transport = ScriptedTransport(*steps)
    try:
        found = scim.list_resources(session_with(transport, srv), srv, every_user(srv), clock=fake.clock(random))
    except Exception as e:
        e.transport = transport
        raise
    return [r["id"] for r in found], transport


def then(seconds_passing, fake, reply):
    """A transport step: ``seconds_passing`` go by, then ``reply`` comes."""

    def step(_sent):
        fake.now += seconds_passing
        return reply

    return step


def test_retries_stop_when_the_next_wait_would_pass_the_deadline():
    fake = FakeClock()
    with pytest.raises(FetchError) as caught:
        timed_listing(fake, *[scim_error(503)] * 6, retries=5, deadline=10)
    assert fields(caught.value) == (
        "Users", 1, FetchReason.NO_TIME_TO_RETRY, {"failure": Failure(BASE, 503), "deadline": 10}
    )
    # 1 + 2 + 4 = 7 s slept; the next wait (8 s) would end past 10 s.
    assert (fake.sleeps, len(caught.value.transport.sent)) == ([1.0, 2.0, 4.0], 4)


def test_retry_after_beyond_the_deadline_is_not_waited_for():
    fake = FakeClock()
    with pytest.raises(FetchError) as caught:
        timed_listing(fake, scim_error(429, headers={"Retry-After": "30"}), page(users("a")), deadline=20)
    assert fields(caught.value) == (
        "Users", 1, FetchReason.NO_TIME_TO_RETRY, {"failure": Failure(BASE, 429), "deadline": 20}
    )
    assert fake.sleeps == []


def test_connection_errors_stop_at_the_deadline_too():
    fake = FakeClock()
    steps = [then(3.0, fake, requests.exceptions.ReadTimeout("read timeout"))] * 4
    with pytest.raises(FetchError) as caught:
        timed_listing(fake, *steps, retries=3, deadline=8)
    # 3 s timing out, 1 s backoff, 3 s timing out: 7 s; a 2 s wait would end at 9 s.
    assert fields(caught.value) == (
        "Users", 1, FetchReason.NO_TIME_TO_RETRY, {"failure": Failure(BASE, error="ReadTimeout"), "deadline": 8}
    )
    assert fake.sleeps == [1.0]


def test_no_page_is_asked_for_once_the_deadline_has_passed():
    fake = FakeClock()
    with pytest.raises(FetchError) as caught:
        # Page 1 arrives whole; the deadline passes as its connection ends.
        first = Reply(200, chunks=[page(users("a"), total=2).content(), fake.advance(11.0)])
        timed_listing(fake, first, page(users("b"), total=2), deadline=10)
    assert fields(caught.value) == ("Users", 2, FetchReason.DEADLINE, {"deadline": 10})
    assert len(caught.value.transport.sent) == 1


def test_each_request_timeout_is_cut_to_the_time_left():
    fake = FakeClock()
    _, transport = timed_listing(
        fake, then(8.0, fake, page(users("a"), total=2)), page(users("b"), total=2), timeout=7.5, deadline=10,
    )
    assert [s.timeout for s in transport.sent] == [7.5, 2.0]


def test_a_body_still_arriving_at_the_deadline_is_abandoned():
    fake = FakeClock()
    body = [b'{"schemas": ', fake.advance(11.0), b'["urn:ietf:params:scim:api:messages:2.0:ListResponse"]}']
    with pytest.raises(FetchError) as caught:
        timed_listing(fake, Reply(200, chunks=body), deadline=10)
    assert type(caught.value) is FetchError
    assert fields(caught.value) == ("Users", 1, FetchReason.DEADLINE_READING, {"deadline": 10})
    assert fake.sleeps == []


def test_an_explicit_deadline_is_shared_by_listings():
    # snapshot.take gives Users and Groups one deadline: time spent on the
    # first endpoint is not available to the second.
    fake = FakeClock()
    srv = server(deadline=10)
    transport = ScriptedTransport(page(users("a")))
    with pytest.raises(FetchError) as caught:
        scim.list_resources(
            session_with(transport, srv), srv, every_user(srv), clock=fake.clock(), deadline=fake.now - 0.5,
        )
    assert fields(caught.value) == ("Users", 1, FetchReason.DEADLINE, {"deadline": 10})
    assert transport.sent == []


def test_default_deadline_starts_when_the_listing_starts():
    fake = FakeClock()
    # 299 s pass on page 1: page 2 is still asked for, with 1 s left.
    _, transport = timed_listing(fake, then(299.0, fake, page(users("a"), total=2)), page(users("b"), total=2))
    assert [s.timeout for s in transport.sent] == [7.5, 1.0]


def test_a_declared_content_length_above_the_limit_is_refused_unread():
    reply = Reply(200, headers={"Content-Length": "1025"}, chunks=[lambda: pytest.fail("the body was read")])
    srv = server(max_page_bytes=1024)
    transport = ScriptedTransport(reply)
    with pytest.raises(ListingError) as caught:
        scim.list_resources(session_with(transport, srv), srv, every_user(srv), clock=NO_SLEEP)
    assert fields(caught.value) == ("Users", 1, ListingReason.TOO_LARGE_RESPONSE, {"limit": 1024})
    assert transport.streamed.delivered == 0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-content-length"),
        pytest.param({"Content-Length": "100"}, id="content-length-lies"),
        pytest.param({"Transfer-Encoding": "chunked"}, id="chunked"),
    ],
)
def test_a_streamed_body_above_the_limit_is_refused_as_soon_as_it_passes_it(headers):
    chunks = [b"x" * 600, b"x" * 600, lambda: pytest.fail("read past the limit")]
    reply = Reply(200, headers=headers, chunks=chunks)
    with pytest.raises(ListingError) as caught:
        timed_listing(FakeClock(), reply, max_page_bytes=1024)
    assert fields(caught.value) == ("Users", 1, ListingReason.TOO_LARGE_RESPONSE, {"limit": 1024})
    assert caught.value.transport.streamed.delivered == 1200


def test_a_body_of_exactly_the_limit_is_accepted():
    body = json.dumps(page(users("a")).body).encode()
    body = body[:-1] + b" " * (1024 - len(body)) + b"}"
    assert len(body) == 1024
    ids, _ = timed_listing(FakeClock(), Reply(200, body, {"Content-Length": "1024"}), max_page_bytes=1024)
    assert ids == ["a"]


def test_a_body_over_the_limit_is_not_retried():
    reply = Reply(200, headers={"Content-Length": str(10**9)}, chunks=[])
    with pytest.raises(ListingError) as caught:
        timed_listing(FakeClock(), reply, page(users("a")), max_page_bytes=1024)
    assert len(caught.value.transport.sent) == 1


@pytest.mark.parametrize(
    "content_type, shown",
    [
        pytest.param("text/html", "text/html", id="html"),
        pytest.param("text/html; charset=iso-8859-1", "text/html", id="html-charset"),
        pytest.param("text/plain", "text/plain", id="plain"),
        pytest.param("application/xml", "application/xml", id="xml"),
        pytest.param("application/octet-stream", "application/octet-stream", id="octet-stream"),
        pytest.param("x/" + "y" * 100, "x/" + "y" * 58, id="long-cut-at-60"),
    ],
)
def test_a_page_that_is_not_json_by_content_type_is_refused(content_type, shown):
    # Even when the body would parse: a proxy page is not the directory.
    reply = page(users("a"))
    reply.headers["Content-Type"] = content_type
    error = refused(ListingError, reply)
    assert fields(error) == ("Users", 1, ListingReason.NOT_JSON_TYPE, {"content_type": shown})
    assert len(error.transport.sent) == 1


def test_an_html_error_page_served_with_200_is_refused():
    reply = Reply(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", {"Content-Type": "text/html"})
    error = refused(ListingError, reply)
    assert fields(error) == ("Users", 1, ListingReason.NOT_JSON_TYPE, {"content_type": "text/html"})


@pytest.mark.parametrize(
    "content_type",
    [
        "application/scim+json",
        "application/json",
        "application/scim+json; charset=utf-8",
        "Application/SCIM+JSON",
        " application/json ; charset=UTF-8",
        None,
    ],
)
def test_json_content_types_are_accepted(content_type):
    reply = page(users("a"))
    if content_type is not None:
        reply.headers["Content-Type"] = content_type
    ids, _, _ = listing(reply)
    assert ids == ["a"]


@pytest.mark.parametrize("pagination", ["index", "cursor"])
@pytest.mark.parametrize(
    "promised, held",
    [
        pytest.param(1, 2, id="more-than-promised"),
        pytest.param(0, 2, id="zero-with-resources"),
    ],
)
def test_items_per_page_smaller_than_the_resources_is_refused(pagination, promised, held):
    reply = page(users(*"ab"[:held]), total=4, itemsPerPage=promised)
    error = refused(ListingError, reply, pagination=pagination)
    assert fields(error) == ("Users", 1, ListingReason.ITEMS_PER_PAGE, {"said": promised, "held": held})


def test_items_per_page_echoing_count_on_every_page_is_accepted():
    # A server reporting the requested count, also on the last, short page.
    ids, transport, _ = listing(
        page(users("a", "b"), total=3, itemsPerPage=2), page(users("c"), total=3, itemsPerPage=2), page_size=2
    )
    assert ids == ["a", "b", "c"]
    assert [p["startIndex"] for p in transport.params()] == ["1", "3"]


def test_items_per_page_echoing_count_with_cursor_paging_is_accepted():
    ids, _, _ = listing(
        page(users("a", "b"), total=3, itemsPerPage=2, nextCursor="c2"), page(users("c"), total=3, itemsPerPage=2),
        pagination="cursor", page_size=2,
    )
    assert ids == ["a", "b", "c"]


def test_a_short_page_is_followed_from_where_it_ended():
    # itemsPerPage 2, one resource held: the next request starts after what came.
    ids, transport, _ = listing(
        page(users("a", "b"), total=4), page(users("c"), total=4, itemsPerPage=2), page(users("d"), total=4),
    )
    assert ids == ["a", "b", "c", "d"]
    assert [p["startIndex"] for p in transport.params()] == ["1", "3", "4"]


def test_a_resource_missing_from_a_short_page_for_good_is_refused():
    # The server said itemsPerPage 2 and 4 in all, but "d" never comes.
    error = refused(
        ListingError, page(users("a", "b"), total=4), page(users("c"), total=4, itemsPerPage=2),
        page([], total=4, itemsPerPage=2),
    )
    assert fields(error) == ("Users", 3, ListingReason.NO_NEW_RESOURCES, {"start": 4, "collected": 3, "total": 4})


def test_a_short_last_cursor_page_missing_a_resource_is_refused():
    error = refused(
        ListingError, page(users("a", "b"), total=4, nextCursor="c2"), page(users("c"), total=4, itemsPerPage=2),
        pagination="cursor",
    )
    assert fields(error) == ("Users", None, ListingReason.COUNT_MISMATCH, {"collected": 3, "total": 4})


def test_items_per_page_zero_on_an_empty_page_before_the_total_is_refused():
    error = refused(ListingError, page(users("a", "b"), total=3), page([], total=3, itemsPerPage=0))
    assert fields(error) == ("Users", 2, ListingReason.NO_NEW_RESOURCES, {"start": 3, "collected": 2, "total": 3})


def test_connection_cut_mid_body_is_retried():
    ids, transport, sleeps = listing(Reply(200, chunks=cut(b'{"schemas": ["urn:ietf')), page(users("a")))
    assert (ids, sleeps, len(transport.sent)) == (["a"], [1.0], 2)


def test_read_timeout_mid_body_is_retried():
    stalled = urllib3.exceptions.ReadTimeoutError(None, BASE, "Read timed out.")
    ids, _, sleeps = listing(Reply(200, chunks=[b'{"schemas"', stalled]), page(users("a")))
    assert (ids, sleeps) == (["a"], [1.0])


def test_connection_cut_mid_body_every_time_fails_after_the_retries():
    error = refused(FetchError, *[Reply(200, chunks=cut(b'{"Resources": ['))] * 4, retries=3)
    assert type(error) is FetchError
    assert fields(error) == (
        "Users", 1, FetchReason.UNREACHABLE, {"failure": Failure(BASE, error="ChunkedEncodingError"), "attempts": 4}
    )
    assert error.sleeps == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    "random, waits",
    [
        pytest.param(0.0, [1.0, 2.0, 4.0], id="no-jitter"),
        pytest.param(0.5, [0.75, 1.5, 3.0], id="half"),
        pytest.param(1.0, [0.5, 1.0, 2.0], id="most"),
    ],
)
def test_backoff_is_jittered_by_a_factor_between_one_half_and_one(random, waits):
    fake = FakeClock()
    timed_listing(fake, scim_error(503), scim_error(503), scim_error(503), page(users("a")), random=lambda: random)
    assert fake.sleeps == waits


def test_jitter_is_applied_after_the_cap():
    fake = FakeClock()
    with pytest.raises(FetchError):
        timed_listing(fake, *[scim_error(503)] * 4, retries=3, max_retry_wait=2, random=lambda: 1.0)
    assert fake.sleeps == [0.5, 1.0, 1.0]


def test_retry_after_is_not_jittered():
    fake = FakeClock()
    timed_listing(fake, scim_error(429, headers={"Retry-After": "7"}), page(users("a")), random=lambda: 1.0)
    assert fake.sleeps == [7.0]


@pytest.mark.parametrize(
    "cap, retry_after, waits",
    [
        pytest.param(5, "10", [5.0], id="retry-after-capped"),
        pytest.param(5, None, [1.0], id="backoff-below-cap"),
        pytest.param(0, "10", [0.0], id="zero-cap-retry-after"),
        pytest.param(0, None, [0.0], id="zero-cap-backoff"),
    ],
)
def test_max_retry_wait_caps_every_wait(cap, retry_after, waits):
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    _, _, sleeps = listing(scim_error(429, headers=headers), page(users("a")), max_retry_wait=cap)
    assert sleeps == waits


def test_default_clock_is_real_time():
    clock = scim.Clock()
    assert (clock.sleep, clock.monotonic, clock.random) == (time.sleep, time.monotonic, random.random)


def test_each_retry_is_logged_without_the_token(caplog):
    caplog.set_level(logging.WARNING, logger="nss_cache_coreweave")
    listing(scim_error(503, f"busy {TOKEN}"), requests.ConnectionError(f"Bearer {TOKEN}"), page(users("a")))
    assert [r.getMessage() for r in caplog.records] == [
        f"Users page 1: HTTP 503 from {BASE} ('busy <token>'); retrying in 1.0 s (1 of 3)",
        f"Users page 1: ConnectionError talking to {BASE}; retrying in 2.0 s (2 of 3)",
    ]
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_not_retried_statuses_are_not_retried_even_with_retry_after(status):
    error = refused(FetchError, scim_error(status, headers={"Retry-After": "1"}), page(users("a")))
    assert (error.sleeps, len(error.transport.sent)) == ([], 1)


# --- one page (check --sample) ------------------------------------------------


def one_page(*steps, **server_options):
    """scim.fetch_page of Users with startIndex=1, count=1 over a scripted transport."""
    srv = server(**server_options)
    transport = ScriptedTransport(*steps)
    sleeps = []
    clock = scim.Clock(sleep=sleeps.append, random=lambda: 0.0)
    try:
        body = scim.fetch_page(session_with(transport, srv), srv, srv.users_url, "Users",
                               {"startIndex": 1, "count": 1}, clock=clock)
    except Exception as e:
        e.transport, e.sleeps = transport, sleeps
        raise
    return body, transport, sleeps


def test_fetch_page_returns_the_decoded_page_of_one_request():
    body, transport, sleeps = one_page(page(users("a"), total=7))

    assert [r["id"] for r in body["Resources"]] == ["a"] and body["totalResults"] == 7
    assert transport.params() == [{"startIndex": "1", "count": "1"}]
    assert sleeps == []


def test_fetch_page_retries_like_a_listing():
    body, transport, sleeps = one_page(scim_error(503), page(users("a")), retries=1)

    assert [r["id"] for r in body["Resources"]] == ["a"]
    assert (len(transport.sent), sleeps) == (2, [1.0])


def test_fetch_page_refuses_a_redirect_without_following_it():
    redirect = Reply(302, b"", {"Location": "https://elsewhere.example/scim/Users?startIndex=1&count=1"})
    with pytest.raises(FetchError) as caught:
        one_page(redirect, page(users("a")))

    assert fields(caught.value) == ("Users", 1, FetchReason.REDIRECT, {"status": 302, "location": "elsewhere.example"})
    assert [s.url.split("?")[0] for s in caught.value.transport.sent] == [BASE + "/Users"]


def test_fetch_page_refuses_a_response_over_max_page_bytes():
    with pytest.raises(ListingError) as caught:
        one_page(page(users("a"), padding="x" * 2048), max_page_bytes=1024)

    assert fields(caught.value) == ("Users", 1, ListingReason.TOO_LARGE_RESPONSE, {"limit": 1024})


def test_fetch_page_refuses_what_is_not_a_list_response():
    with pytest.raises(ListingError) as caught:
        one_page(Reply(200, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "a"}))

    assert fields(caught.value) == (
        "Users", 1, ListingReason.NOT_A_LIST_RESPONSE, {"schemas": "['urn:ietf:params:scim:schemas:core:2.0:User']"}
    )


# --- the retry policy, without HTTP ----------------------------------------------


def test_the_retry_policy_is_read_from_the_server_settings():
    assert RetryPolicy.of(server(retries=5, max_retry_wait=30)) == RetryPolicy(retries=5, cap=30.0, base=1.0)


@pytest.mark.parametrize(
    "attempt, retry_after, jitter, wait",
    [
        pytest.param(0, None, 0.0, 1.0, id="first-backoff"),
        pytest.param(3, None, 0.0, 8.0, id="doubled-per-attempt"),
        pytest.param(6, None, 0.0, 60.0, id="backoff-capped"),
        pytest.param(2, None, 0.5, 3.0, id="jittered-by-three-quarters"),
        pytest.param(6, None, 1.0, 30.0, id="jittered-after-the-cap"),
        pytest.param(0, 7.0, 1.0, 7.0, id="retry-after-not-jittered"),
        pytest.param(0, 90.0, 0.0, 60.0, id="retry-after-capped"),
        pytest.param(0, -300.0, 0.0, 0.0, id="retry-after-in-the-past"),
        pytest.param(5, 0.0, 0.0, 0.0, id="retry-after-zero-beats-backoff"),
    ],
)
def test_retry_policy_delay(attempt, retry_after, jitter, wait):
    assert RetryPolicy(retries=7, cap=60.0).delay(attempt, retry_after, jitter) == wait


def test_retry_policy_is_exhausted_after_its_retries():
    policy = RetryPolicy(retries=2, cap=60.0)
    assert [policy.exhausted(attempt) for attempt in range(4)] == [False, False, True, True]
    assert RetryPolicy(retries=0, cap=60.0).exhausted(0)


@pytest.mark.parametrize(
    "value, seconds",
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param(" 3 ", 3.0, id="padded"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("86400", 86400.0, id="large-not-capped-here"),
        pytest.param(email.utils.formatdate(NOW + 45, usegmt=True), 45.0, id="http-date"),
        pytest.param(email.utils.formatdate(NOW - 300, usegmt=True), -300.0, id="http-date-in-the-past"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="word"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("-5", None, id="negative"),
        pytest.param("Mon, 32 Foo 2026 25:61:61", None, id="bad-date"),
        pytest.param("Mon, 01 Jun 2026 12:00:00", None, id="date-without-zone"),
        pytest.param("\xb2", None, id="latin1-superscript-two"),
    ],
)
def test_retry_after_seconds(value, seconds):
    assert retry_after_seconds(value, NOW) == seconds


# --- what a response means, without HTTP -----------------------------------------


def error_body(detail=None, scim_type=None) -> bytes:
    return scim_error(400, detail, scim_type).content()


@pytest.mark.parametrize(
    "status, headers, content, verdict",
    [
        pytest.param(200, {}, b"anything", Verdict(Action.OK, 200), id="200"),
        pytest.param(429, {"Retry-After": "7"}, error_body("slow down"), Verdict(Action.RETRY, 429, "slow down", "7"),
                     id="429"),
        pytest.param(500, {}, b"", Verdict(Action.RETRY, 500), id="500"),
        pytest.param(502, {}, b"<html>Bad Gateway</html>", Verdict(Action.RETRY, 502), id="502-html"),
        pytest.param(503, {"Retry-After": "9"}, error_body("busy"), Verdict(Action.RETRY, 503, "busy", "9"),
                     id="503"),
        pytest.param(504, {}, b"", Verdict(Action.RETRY, 504), id="504"),
        pytest.param(401, {"Retry-After": "1"}, error_body("expired"), Verdict(Action.AUTH, 401, "expired"),
                     id="401"),
        pytest.param(403, {}, b"", Verdict(Action.AUTH, 403), id="403"),
        pytest.param(400, {}, error_body("old", "invalidCursor"), Verdict(Action.STALE_CURSOR, 400, "old"),
                     id="400-invalidCursor"),
        pytest.param(400, {}, error_body(None, "expiredCursor"), Verdict(Action.STALE_CURSOR, 400),
                     id="400-expiredCursor"),
        pytest.param(400, {}, error_body("bad", "invalidFilter"), Verdict(Action.REFUSED, 400, "bad"),
                     id="400-invalidFilter"),
        pytest.param(404, {}, b"<html>Not Found</html>", Verdict(Action.REFUSED, 404), id="404-html"),
        pytest.param(201, {}, b"", Verdict(Action.REFUSED, 201), id="201"),
        pytest.param(302, {"Location": "https://elsewhere.example/x"}, b"",
                     Verdict(Action.REDIRECT, 302, location="elsewhere.example"), id="302"),
        pytest.param(307, {"Location": "/relative"}, b"", Verdict(Action.REDIRECT, 307, location="elsewhere"),
                     id="307-relative"),
        pytest.param(304, {}, b"", Verdict(Action.REDIRECT, 304, location="elsewhere"), id="304"),
    ],
)
def test_classify(status, headers, content, verdict):
    assert classify(status, headers, content, TOKEN) == verdict


def test_classify_cuts_the_token_out_of_the_servers_words():
    verdict = classify(401, {}, error_body(f"token {TOKEN} refused"), TOKEN)
    assert verdict == Verdict(Action.AUTH, 401, "token <token> refused")


def test_classify_cleans_and_cuts_the_detail():
    verdict = classify(500, {}, error_body("a\nb\x00c" + "x" * 300), TOKEN)
    assert verdict.detail == "a b c" + "x" * 195


def test_a_verdict_becomes_an_errors_failure():
    assert Verdict(Action.RETRY, 503, "busy", "9").failure(BASE) == Failure(BASE, 503, "busy")
    assert Verdict(Action.RETRY, error="ReadTimeout").failure(BASE) == Failure(BASE, error="ReadTimeout")


# --- what the errors say -----------------------------------------------------------

# One rendered message per reason: the operator reads these (logs, `check`, the run record).
RENDERED = [
    (
        FetchError("Users", 2, FetchReason.UNREACHABLE, failure=Failure(BASE, error="ReadTimeout"), attempts=4),
        f"Users page 2: ReadTimeout talking to {BASE} (after 4 attempts): is the network or the server down?",
    ),
    (
        FetchError("Users", 1, FetchReason.SERVER_FAILING, failure=Failure(BASE, 500, "boom"), attempts=1),
        f"Users page 1: HTTP 500 from {BASE} ('boom') (after 1 attempts): the server is failing, try later",
    ),
    (
        FetchError("Groups", 1, FetchReason.NO_TIME_TO_RETRY, failure=Failure(BASE, 503), deadline=2.5),
        f"Groups page 1: HTTP 503 from {BASE}: no time left to retry within coreweave_deadline (2.5 s)",
    ),
    (
        AuthError("Groups", 1, FetchReason.TOKEN_REFUSED, failure=Failure(BASE, 401, "invalid or expired token")),
        f"Groups page 1: HTTP 401 from {BASE} ('invalid or expired token'): the bearer token is missing, "
        "expired or lacks the SUNK/SCIM permissions: check coreweave_token_file or NSSCACHE_SCIM_AUTH_TOKEN",
    ),
    (
        StaleCursorError("Users", 2, FetchReason.STALE_CURSOR, failure=Failure(BASE, 400, "cursor expired")),
        f"Users page 2: HTTP 400 from {BASE} ('cursor expired'): the server expired our cursor; try later",
    ),
    (
        FetchError("Users", 1, FetchReason.NOT_RETRIED, failure=Failure(BASE, 404)),
        f"Users page 1: HTTP 404 from {BASE}: not retried; check coreweave_base_url and the endpoints",
    ),
    (
        FetchError("Users", 1, FetchReason.REDIRECT, status=302, location="elsewhere.example"),
        "Users page 1: HTTP 302 redirect to elsewhere.example: refusing to follow it (the bearer token must not go "
        "anywhere else); set coreweave_base_url to the final URL",
    ),
    (FetchError("Users", 1, FetchReason.REQUEST_FAILED, error="InvalidURL"),
     "Users page 1: request failed: InvalidURL"),
    (FetchError("Users", 2, FetchReason.DEADLINE, deadline=10.0),
     "Users page 2: coreweave_deadline (10 s) exceeded: refusing to go on"),
    (FetchError("Users", 1, FetchReason.DEADLINE_WAITING, deadline=2.0),
     "Users page 1: coreweave_deadline (2 s) exceeded waiting for the server: refusing to go on"),
    (FetchError("Users", 1, FetchReason.DEADLINE_READING, deadline=10.0),
     "Users page 1: coreweave_deadline (10 s) exceeded while reading"),
    (FetchError("Users", 9, FetchReason.DEADLINE_DECODING, deadline=300.0),
     "Users page 9: coreweave_deadline (300 s) exceeded while decoding: refusing to go on"),
    (
        ListingError("Users", 2, ListingReason.TOO_LARGE_RESPONSE, limit=65536),
        "Users page 2: the response is larger than coreweave_max_page_bytes (65536 bytes): refusing a runaway response",
    ),
    (ListingError("Users", 2, ListingReason.NOT_JSON_TYPE, content_type="text/plain"),
     "Users page 2: the response is text/plain, not JSON: refusing a malformed listing"),
    (ListingError("Users", 2, ListingReason.NOT_JSON),
     "Users page 2: the response is not JSON: refusing a malformed listing"),
    (ListingError("Users", 1, ListingReason.NOT_AN_OBJECT),
     "Users page 1: the response is not a JSON object: refusing a malformed listing"),
    (
        ListingError("Users", 1, ListingReason.NOT_A_LIST_RESPONSE,
                     schemas="['urn:ietf:params:scim:api:messages:2.0:Error']"),
        "Users page 1: the response is not a SCIM ListResponse "
        "(schemas ['urn:ietf:params:scim:api:messages:2.0:Error'])",
    ),
    (ListingError("Users", 1, ListingReason.RESOURCES_NOT_A_LIST),
     "Users page 1: 'Resources' is not a list: refusing a malformed listing"),
    (ListingError("Users", 1, ListingReason.RESOURCE_WITHOUT_ID),
     "Users page 1: a resource has no string 'id': refusing a malformed listing"),
    (ListingError("Users", 2, ListingReason.ITEMS_PER_PAGE, said=1, held=2),
     "Users page 2 says itemsPerPage 1 but holds 2 resources: refusing a partial listing"),
    (
        ListingError("Users", 1, ListingReason.BAD_TOTAL, total=None),
        "Users page 1: totalResults is None, not a non-negative integer: refusing a listing we cannot check",
    ),
    (ListingError("Users", 2, ListingReason.TOTAL_CHANGED, total=99, first=6, first_page=1),
     "Users page 2 has totalResults 99, page 1 said 6: refusing a partial listing"),
    (
        ListingError("Users", 2, ListingReason.NO_NEW_RESOURCES, start=3, collected=2, total=6),
        "Users page 2 (startIndex 3) brought no new resources after 2 of 6: refusing a partial listing",
    ),
    (ListingError("Users", 1, ListingReason.BAD_NEXT_CURSOR, cursor=""),
     "Users page 1: nextCursor '' is not a non-empty string"),
    (
        ListingError("Users", 2, ListingReason.NO_PROGRESS),
        "Users page 2 makes no progress (repeated cursor or no new resources): refusing an endless listing",
    ),
    (
        ListingError("Users", 2, ListingReason.CHANGED_DURING_LISTING, id="u-alice"),
        "Users page 2: id 'u-alice' appears twice with different content: the directory changed during the listing, "
        "refusing it (the next run will retry)",
    ),
    (ListingError("Users", None, ListingReason.TOO_MANY_PAGES, max_pages=2),
     "Users: more than coreweave_max_pages (2) pages: refusing an endless listing"),
    (
        ListingError("Users", None, ListingReason.COUNT_MISMATCH, collected=1, total=2),
        "Users: collected 1 distinct resources but totalResults is 2: refusing a partial listing",
    ),
    (
        ListingError("Users", None, ListingReason.TOO_MANY_ANNOUNCED, count=6, limit=5, option="coreweave_max_users"),
        "Users: totalResults is 6, more than coreweave_max_users (5): refusing to hold a larger listing",
    ),
    (
        ListingError("Users", None, ListingReason.TOO_MANY_COLLECTED, count=3, limit=2, option="coreweave_max_users"),
        "Users: collected 3, more than coreweave_max_users (2): refusing to hold a larger listing",
    ),
    (
        ListingError("Users", None, ListingReason.NO_MEMBER_FETCH, why="coreweave_users_query is set"),
        "Users: coreweave_users_query is set: coreweave_fetch = members refuses to list every user instead; set "
        "coreweave_fetch = auto (falls back to the full listing) or full",
    ),
]
MESSAGES = [pytest.param(error, message, id=error.reason.name) for error, message in RENDERED]


@pytest.mark.parametrize("error, message", MESSAGES)
def test_an_error_renders_its_fields(error, message):
    assert str(error) == message


def test_every_reason_has_a_rendered_example():
    shown = [error.reason for error, _ in RENDERED]
    assert sorted(r.name for r in shown) == sorted(r.name for r in [*FetchReason, *ListingReason])


@pytest.mark.parametrize("error, message", MESSAGES)
def test_a_pickled_error_keeps_its_type_fields_and_message(error, message):
    # Errors raised in a decoding worker reach the walk pickled.
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), fields(copy), str(copy)) == (type(error), fields(error), message)


def test_an_errors_repr_shows_its_fields():
    error = FetchError("Users", 1, FetchReason.SERVER_FAILING, failure=Failure(BASE, 503), attempts=4)
    assert repr(error) == (
        f"FetchError('Users', 1, FetchReason.SERVER_FAILING, failure=Failure(base_url={BASE!r}, status=503, "
        "detail='', error=''), attempts=4)"
    )


def test_the_collector_is_back_on_only_when_the_last_of_overlapping_listings_ends():
    """Member batches are listed two at a time, each in its thread: the first to end must not
    turn the collector back on under the other, nor the last leave it off."""
    pause = scim._CollectorPause()
    assert gc.isenabled()
    pause.__enter__()
    pause.__enter__()
    pause.__exit__(None, None, None)
    assert not gc.isenabled()
    pause.__exit__(None, None, None)
    assert gc.isenabled()
