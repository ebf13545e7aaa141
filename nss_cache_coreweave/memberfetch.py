"""Member-only fetch (coreweave_fetch): the allowed groups' members by id,
instead of every user of the directory.

When the server advertises filtering (RFC 7643 §5, ``/ServiceProviderConfig``
``filter.supported``), the wanted ids are asked for in batches,
``filter=id eq "a" or id eq "b" …`` (RFC 7644 §3.4.2.2), each batch a
complete, checked listing (scim.list_resources), the batch's size within the
server's ``maxResults``, ``coreweave_page_size`` and a URL length budget.
Nothing depends on the server honouring it: an answer holding an id that was
not asked for, a refused filter (400) or a listing that does not add up means
the server does not filter as asked, and ``auto`` lists every user instead in
the same run (logged once); ``members`` fails. A requested id missing from a
batch that adds up (``totalResults`` counts only what came back) is a user
IAM does not have: its member does not resolve, as in a full listing; unless
the id may also be a POSIX name (``coreweave_member_match = auto``), which only
the full listing can tell. So the result is exactly what the full listing
would give for the wanted users.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Callable, FrozenSet, Iterable, List, Optional, Sequence, TypeVar
from urllib.parse import quote

from .config import Server
from .errors import FetchError, FetchReason, ListingError, ListingReason

__all__ = ["Batches", "NotFiltering", "discover", "fetch", "batches", "is_bad_request", "refused", "FILTER_BUDGET"]

log = logging.getLogger("nss_cache_coreweave")

FILTER_BUDGET = 6000  # characters of the URL-encoded filter of one request (servers take 8 KiB URLs)
T = TypeVar("T")


class NotFiltering(Exception):
    """Why the server cannot be trusted to filter Users by id this run (``why``: for the log)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def discover(get: Callable[[str], bytes], server: Server) -> Optional[int]:
    """The server's filter ``maxResults`` when its ServiceProviderConfig says it
    filters, else None (no document, 404, or filtering not supported).
    ``get(url)`` fetches a document (scim.fetch_document)."""
    try:
        content = get(server.base_url + "/ServiceProviderConfig")
    except FetchError as e:
        failure = e.values.get("failure")
        if e.reason is FetchReason.NOT_RETRIED and getattr(failure, "status", None) in (400, 404, 405, 501):
            return None
        raise
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
    """The ids in batches of at most ``size``, each filter at most ``budget`` encoded characters."""
    found: List[List[str]] = []
    current: List[str] = []
    length = 0
    for user_id in sorted(ids):
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
    return "id eq " + json.dumps(user_id)  # a SCIM string is a JSON string: quotes and backslashes escaped


def filter_of(batch: Sequence[str]) -> str:
    return " or ".join(_term(i) for i in batch)


@dataclass(frozen=True)
class Batches:
    """How one run fetches its wanted users."""

    size: int  # ids per request

    @classmethod
    def of(cls, server: Server, max_results: int) -> Batches:
        return cls(max(1, min(max_results, server.page_size)))


def fetch(list_users: Callable[[Server], List[T]], server: Server, ids: Iterable[str], plan: Batches,
          key: Callable[[T], str], names: FrozenSet[str] = frozenset()) -> List[T]:
    """Every wanted user IAM has, batch by batch (``list_users(server)`` lists Users
    with the server's query); ``names``: the ids that may also be POSIX names.
    :raises NotFiltering: the answers show the filter is not honoured"""
    found: List[T] = []
    not_found = 0
    for batch in batches(ids, plan.size):
        missing = _missing(list_users, server, batch, key, found)
        if missing & names:
            raise NotFiltering(f"{len(missing & names)} requested ids did not come back and may be POSIX names "
                               "(coreweave_member_match = auto), which only the full listing resolves")
        not_found += len(missing)
    if not_found:
        log.info("coreweave: %d members' ids are no user of IAM (their members do not resolve)", not_found)
    return found


def _missing(list_users: Callable[[Server], List[T]], server: Server, batch: Sequence[str], key: Callable[[T], str],
             found: List[T]) -> FrozenSet[str]:
    """Ask for one batch, add its users to ``found``; the requested ids that did not come back."""
    # The only query: member fetch is off with a coreweave_users_query (the caller adds attributes=).
    filtered = dataclasses.replace(server, users_query=(("filter", filter_of(batch)),))
    try:
        answer = list_users(filtered)
    except ListingError as e:
        raise NotFiltering(f"a filtered Users listing did not add up ({e})") from None
    except FetchError as e:
        if is_bad_request(e):
            raise NotFiltering(f"the server refused the filter ({e.values['failure']})") from None
        raise
    asked = frozenset(batch)
    got = frozenset(key(item) for item in answer)
    if not asked.issuperset(got):
        raise NotFiltering("an answer held users that were not asked for")
    found.extend(answer)
    return asked - got


def is_bad_request(error: FetchError) -> bool:
    """A plain 400 (not an expired cursor, RFC 9865): the server refused what was asked."""
    return error.reason is FetchReason.NOT_RETRIED and getattr(error.values.get("failure"), "status", None) == 400


def refused(kind: str, why: str) -> ListingError:
    """coreweave_fetch = members: the full listing is not an option."""
    return ListingError(kind, None, ListingReason.NO_MEMBER_FETCH, why=why)
