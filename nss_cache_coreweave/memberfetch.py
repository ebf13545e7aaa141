"""Member-only fetch (coreweave_fetch): the allowed groups' members by id,
instead of every user of the directory.

When the server advertises filtering (RFC 7643 §5, ``/ServiceProviderConfig``
``filter.supported``), the wanted ids are asked for in batches,
``filter=id eq "a" or id eq "b" …`` (RFC 7644 §3.4.2.2), each batch a
complete, checked listing (scim.list_resources), the batch's size within the
server's ``maxResults``, ``coreweave_page_size`` and a URL length budget,
IN_FLIGHT batches at a time, their answers taken in order.
Nothing depends on the server honouring it: an answer holding an id that was
not asked for, a refused filter (REFUSALS) or a listing that does not add up
means the server does not filter as asked, and ``auto`` lists every user
instead in the same run (logged once); ``members`` fails. A requested id
missing from a batch that adds up must be a 404 on its own (``GET
/Users/<id>``): a user IAM does not have, whose member does not resolve, as in
a full listing; an id that may also be a POSIX name (``coreweave_member_match
= auto``) only the full listing can tell. So the result is exactly what the
full listing would give for the wanted users.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Deque, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar
from urllib.parse import quote

from .config import Server
from .errors import FetchError, FetchReason, ListingError, ListingReason

__all__ = [
    "Batches", "NotFiltering", "discover", "fetch", "batches", "filter_of", "is_refusal", "refused", "FILTER_BUDGET",
    "IN_FLIGHT", "REFUSALS",
]

log = logging.getLogger("nss_cache_coreweave")

# URL-encoded characters of one request's filter and attributes= together (servers commonly take
# 8 KiB request lines); however long the attributes, a filter gets room for some ids.
FILTER_BUDGET = 7000
MIN_FILTER_BUDGET = 1000
# Requested ids a run confirms gone one by one (GET /Users/<id>: 404); more means the full listing.
MAX_CONFIRMED = 50
# Batches asked for at once: while one answer is decoded, the next is on the wire (and a
# server far away costs one round trip per IN_FLIGHT batches, not one per batch).
IN_FLIGHT = 2
T = TypeVar("T")


class NotFiltering(Exception):
    """Why the server cannot be trusted to filter Users by id this run (``why``: for the log)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def discover(get: Callable[[str], bytes], server: Server) -> Optional[int]:
    """The server's filter ``maxResults`` when its ServiceProviderConfig says it
    filters, else None (no such document, or filtering not supported).
    ``get(url)`` fetches a document (scim.fetch_document).
    :raises NotFiltering: the document could not be read (the run has listed Groups with
        the same token: whatever stops this request, the full listing may still work)"""
    try:
        content = get(server.base_url + "/ServiceProviderConfig")
    except FetchError as e:
        if is_refusal(e) or getattr(e.values.get("failure"), "status", None) == 404:
            return None
        raise NotFiltering(f"/ServiceProviderConfig could not be read ({e})") from None
    except ListingError:  # not JSON, too large: no usable document
        return None
    return _max_results(content)


def _max_results(content: bytes) -> Optional[int]:
    try:
        document = json.loads(content)
    except ValueError:
        return None
    found = document.get("filter") if isinstance(document, dict) else None
    if not isinstance(found, dict) or found.get("supported") is not True:
        return None
    most = found.get("maxResults")
    return most if isinstance(most, int) and not isinstance(most, bool) and most > 0 else 1000


def batches(ids: Iterable[str], size: int, budget: int = FILTER_BUDGET) -> List[List[str]]:
    """The ids, in order, in batches of at most ``size``, each filter at most ``budget`` encoded characters."""
    found: List[List[str]] = []
    current: List[str] = []
    length = 0
    for user_id in ids:
        term = len(quote(_term(user_id), safe="")) + len(quote(" or ", safe=""))
        if current and (len(current) >= size or length + term > budget):
            found.append(current)
            current, length = [], 0
        current.append(user_id)
        length += term
    if current:
        found.append(current)
    return found


def _term(user_id: str) -> str:
    # A SCIM string is a JSON string: quotes and backslashes escaped, any other character as itself.
    return "id eq " + json.dumps(user_id, ensure_ascii=False)


def filter_of(batch: Sequence[str]) -> str:
    return " or ".join(_term(i) for i in batch)


@dataclass(frozen=True)
class Batches:
    """How one run fetches its wanted users."""

    size: int  # ids per request
    budget: int = FILTER_BUDGET  # URL-encoded characters of one request's filter

    @classmethod
    def of(cls, server: Server, max_results: int, attributes: Optional[str] = None) -> Batches:
        """Within maxResults and coreweave_page_size; the filter and ``attributes=`` within the URL budget."""
        taken = len(quote(attributes, safe="")) if attributes else 0
        return cls(max(1, min(max_results, server.page_size)), max(MIN_FILTER_BUDGET, FILTER_BUDGET - taken))


def fetch(list_users: Callable[[Server], List[T]], server: Server, ids: Iterable[str], plan: Batches,
          key: Callable[[T], str], get: Callable[[str], bytes], names: FrozenSet[str] = frozenset()) -> List[T]:
    """Every wanted user IAM has, batch by batch (``list_users(server)`` lists Users
    with the server's query, and is called from IN_FLIGHT threads at once); ``names``:
    the ids that may also be POSIX names (asked for first: one missing means the full
    listing); ``get(url)`` fetches one user, to confirm that a requested id which did
    not come back is no user of IAM.
    :raises NotFiltering: the answers show the filter is not honoured"""
    found: List[T] = []
    missing: List[str] = []
    ordered = batches(sorted(ids, key=lambda i: (i not in names, i)), plan.size, plan.budget)
    with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="nss-cache-coreweave-batch") as pool:
        for batch, answer in _answers(pool, list_users, server, ordered):
            gone = _missing(batch, answer, key)
            if gone & names:
                raise NotFiltering(f"{len(gone & names)} requested ids did not come back and may be POSIX names "
                                   "(coreweave_member_match = auto), which only the full listing resolves")
            found.extend(answer)
            missing.extend(sorted(gone))
    if missing:
        _confirm_gone(get, server, missing)
        log.info("coreweave: %d members' ids are no user of IAM (their members do not resolve)", len(missing))
    return found


def _answers(pool: ThreadPoolExecutor, list_users: Callable[[Server], List[T]], server: Server,
             ordered: List[List[str]]) -> Iterator[Tuple[List[str], List[T]]]:
    """Each batch with its answer, in order, IN_FLIGHT batches asked for at once.
    The first error in that order is raised; of the batches after it, only those
    already asked for are (the caller's pool waits for them)."""
    pending: Deque[Tuple[List[str], Future]] = deque()
    for batch in ordered:
        pending.append((batch, pool.submit(_ask, list_users, server, batch)))
        if len(pending) == IN_FLIGHT:
            yield _oldest(pending)
    while pending:
        yield _oldest(pending)


def _oldest(pending: Deque[Tuple[List[str], Future]]) -> Tuple[List[str], list]:
    batch, answer = pending.popleft()
    return batch, answer.result()


def _ask(list_users: Callable[[Server], List[T]], server: Server, batch: Sequence[str]) -> List[T]:
    """One batch's answer. :raises NotFiltering: the answer does not add up or the filter is refused"""
    # The only query: member fetch is off with a coreweave_users_query (the caller adds attributes=).
    # At most the batch's users: a server ignoring the filter is caught at its first page,
    # not after listing the whole directory (twice, with two batches in flight).
    filtered = dataclasses.replace(server, users_query=(("filter", filter_of(batch)),), max_users=len(batch))
    try:
        return list_users(filtered)
    except ListingError as e:
        if e.reason in (ListingReason.TOO_MANY_ANNOUNCED, ListingReason.TOO_MANY_COLLECTED):
            raise NotFiltering(f"an answer held more users ({e.values['count']}) than the {len(batch)} asked "
                               "for") from None
        raise NotFiltering(f"a filtered Users listing did not add up ({e})") from None
    except FetchError as e:
        if is_refusal(e):
            raise NotFiltering(f"the server refused the filter ({e.values['failure']})") from None
        raise


def _confirm_gone(get: Callable[[str], bytes], server: Server, missing: List[str]) -> None:
    """Each requested id a filtered answer left out must be a 404 on its own: a server
    that drops users from filtered answers (truncates long filters) would otherwise
    take their access away. :raises NotFiltering:"""
    if len(missing) > MAX_CONFIRMED:
        raise NotFiltering(f"{len(missing)} requested users did not come back (more than {MAX_CONFIRMED} to confirm "
                           "one by one)")
    for user_id in missing:
        try:
            get(f"{server.users_url}/{quote(user_id, safe='')}")
        except (FetchError, ListingError) as e:
            if isinstance(e, FetchError) and getattr(e.values.get("failure"), "status", None) == 404:
                continue
            raise NotFiltering(f"requested user {user_id!r} did not come back and could not be confirmed gone "
                               f"({e})") from None
        raise NotFiltering(f"requested user {user_id!r} exists but the filtered answer left it out")


def _missing(batch: Sequence[str], answer: List[T], key: Callable[[T], str]) -> FrozenSet[str]:
    """The requested ids that did not come back. :raises NotFiltering: the answer holds others"""
    asked = frozenset(batch)
    got = frozenset(key(item) for item in answer)
    if not asked.issuperset(got):
        raise NotFiltering("an answer held users that were not asked for")
    return asked - got


# What a server answers to a request it will not serve as asked: bad request, URI or headers
# too long, not implemented (RFC 9110 §15.5.1, §15.5.15, RFC 6585 §5, RFC 9110 §15.6.2).
REFUSALS = frozenset({400, 405, 414, 431, 501})


def is_refusal(error: FetchError) -> bool:
    """A refused request (not an expired cursor, RFC 9865): the server will not serve what was asked."""
    return error.reason is FetchReason.NOT_RETRIED and getattr(error.values.get("failure"), "status", None) in REFUSALS


def refused(kind: str, why: str) -> ListingError:
    """coreweave_fetch = members: the full listing is not an option."""
    return ListingError(kind, None, ListingReason.NO_MEMBER_FETCH, why=why)
