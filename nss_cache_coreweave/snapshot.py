"""Snapshot: one consistent set of users and groups per run.

Groups are listed whole, then the users the allowed groups name: by id when
the server filters (memberfetch.py), else every user; with only the attributes
the configuration reads (coreweave_fetch). Only the fields the maps need are
kept (raw JSON values, not yet validated: that is policy's job).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, Optional, Sequence, Tuple

from . import memberfetch, scim
from .config import AttributePath, Config, Server
from .errors import FetchError

__all__ = ["UserRecord", "Member", "GroupRecord", "Snapshot", "take", "resolve", "attributes_of"]

log = logging.getLogger("nss_cache_coreweave")

_MISSING = object()
# coreweave_member_match modes in which a sub-attribute of each member holds the POSIX name.
NAME_MODES = ("value", "display", "userName")
# The longest POSIX name policy accepts: in ``auto`` a longer value (a UUID id) is never tried as a name.
_NAME_MAX = 32
# The options of the dataclasses made once per user or member: without a __dict__ where Python
# allows it (3.10+), 100,000 members' records take about 30 MB less (docs/performance.md).
LEAN = {"frozen": True, "slots": True} if sys.version_info >= (3, 10) else {"frozen": True}


@dataclass(**LEAN)
class UserRecord:
    id: str
    active: Any
    name: Any
    uid: Any
    gid: Any
    gecos: Any
    home: Any
    shell: Any
    ssh_keys: Any


@dataclass(**LEAN)
class Member:
    """Whom a group member may be, as coreweave_member_match reads it (policy resolves it)."""

    value: Optional[str]  # a user id: ``value``, else the id ending ``$ref`` (None in the name modes)
    type: Any  # "User", "Group" or absent
    name: Optional[str] = None  # a POSIX name: ``value`` in auto, the mode's sub-attribute in the name modes


@dataclass(**LEAN)
class GroupRecord:
    id: str
    name: Any
    gid: Any
    members: Tuple[Member, ...]  # read for the allowed groups (for every group with ``everyone``)
    # For the other groups: which of the wanted users they list (policy's primary-gid rule),
    # by id and by POSIX name, as the allowed groups' members refer to them.
    member_ids: FrozenSet[str] = frozenset()
    member_names: FrozenSet[str] = frozenset()


@dataclass(frozen=True)
class Snapshot:
    users: Tuple[UserRecord, ...]
    groups: Tuple[GroupRecord, ...]
    fetched_at: float  # time.time() when the listing started
    # coreweave_member_match = auto: the ids of listed users (kept as records or not) that a
    # user member of any group gives, read before other groups are narrowed (take).
    listed_member_ids: FrozenSet[str] = frozenset()


def take(
    config: Config,
    *,
    session=None,
    clock: Optional[scim.Clock] = None,
    stats: Optional[scim.Stats] = None,
    everyone: bool = False,
) -> Snapshot:
    """List Groups, then the Users the run needs, all within coreweave_deadline.

    Groups come first so that only members of the allowed groups are asked
    for by id, or kept from the (much longer) full Users listing, where every
    user still counts for the listing's checks. Every group is kept, the
    others with the ids of the wanted users they list (policy's primary-gid
    rule needs every gid). ``everyone`` keeps every user (for ``check``).

    :raises FetchError, ListingError: see scim.list_resources.
    """
    started = time.time()
    server = config.server
    clock = clock or scim.Clock()
    deadline = clock.monotonic() + server.deadline
    own_session = session is None
    if own_session:
        session = scim.new_session(server)
    try:
        # The wanted users are the allowed groups' members (everyone, when
        # every group is allowed or everyone is asked for).
        allowed = None if everyone or config.allowed_groups is None else frozenset(config.allowed_groups)
        groups = scim.list_resources(
            session, server, scim.Listing("Groups", server.groups_url, lambda r: _group(r, config, allowed), _id),
            clock=clock, deadline=deadline, stats=stats,
        )
        given = _given_ids(groups) if config.groups.member_match == "auto" else frozenset()
        wanted = None if allowed is None else _Wanted.of(groups)
        if wanted is not None:
            # Other groups matter only for the primary-gid rule, and only through wanted users.
            groups = [wanted.narrow(g) for g in groups]
        # coreweave_fetch = full asks exactly what it always did: whole users.
        attributes = None if server.fetch == "full" else attributes_of(config)
        users = _users(_Lister(session, config, wanted, clock, deadline, stats or scim.Stats(), attributes))
    finally:
        if own_session:
            session.close()
    listed = frozenset(i for i in map(_id, users) if i in given)
    return Snapshot(tuple(u for u in users if type(u) is UserRecord), tuple(groups), started, listed)


@dataclass
class _Lister:
    """Lists Users for one run: every user, or (memberfetch.py) the wanted ones by id;
    with ``attributes`` (RFC 7644 §3.4.2.5) until the server shows it cannot be trusted with them."""

    session: Any
    config: Config
    wanted: Optional["_Wanted"]
    clock: scim.Clock
    deadline: float
    stats: scim.Stats
    attributes: Optional[str] = None  # the attributes= value of this run's Users requests; None: whole users
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def users(self, server: Server) -> list:
        """The Users listing with ``server``'s query, projected while the server allows:
        a 400 answered to the projected request but not to the same one without
        ``attributes``, or a wanted user coming back without ``active`` (absent
        counts as active: a server projecting it away would revive deactivated
        users), means whole users for the rest of the run."""
        attributes = self.attributes
        if attributes is None:
            return self._list(server, projected=False)
        try:
            return self._list(_with_attributes(server, attributes), projected=True)
        except _Unprojected:
            why = "a user came back without `active`"
        except FetchError as e:
            if not memberfetch.is_refusal(e):
                raise
            why = f"the server refused `attributes` ({e.values['failure']})"
        # Refused here too: not the attributes (with a filter: the filter; else the run fails).
        found = self._list(server, projected=False)
        with self.lock:  # batches are asked for from several threads (memberfetch.IN_FLIGHT): warn once
            stopped, self.attributes = self.attributes is not None, None
        if stopped:
            log.warning("coreweave: asking for only the attributes this configuration reads failed: %s; asking "
                        "for whole users for the rest of this run", why)
        return found

    def _list(self, server: Server, projected: bool) -> list:
        listing = scim.Listing("Users", server.users_url, lambda r: _extract(r, self.config, self.wanted, projected),
                               _id, limit=server.max_users)
        return scim.list_resources(self.session, server, listing, clock=self.clock, deadline=self.deadline,
                                   stats=self.stats)

    def document(self, url: str, kind: str = "ServiceProviderConfig") -> bytes:
        return scim.fetch_document(self.session, self.config.server, url, kind, clock=self.clock,
                                   deadline=self.deadline, stats=self.stats)


class _Unprojected(Exception):
    """A projected Users answer cannot be trusted (raised while listing, also in a decoding worker)."""


def attributes_of(config: Config) -> str:
    """The ``attributes`` of a run's Users requests: ``active``, every configured
    user attribute path and GECOS's fallback (``id`` is always returned)."""
    users = config.users
    paths = (users.name, users.uid, users.gid, users.gecos, users.home, users.shell, users.ssh_keys)
    names = ["active", *(_notation(p) for field in paths for p in field), "name.givenName", "name.familyName"]
    first: Dict[str, str] = {}
    for name in names:
        first.setdefault(name.lower(), name)  # attribute names are case-insensitive (RFC 7643 §2.1)
    return ",".join(first.values())


def _notation(path: AttributePath) -> str:
    """RFC 7644 §3.10 attribute notation: ``urn:…:Schema:attr.sub`` or ``attr.sub``."""
    dotted = ".".join(path.names)
    return f"{path.schema}:{dotted}" if path.schema else dotted


def _with_attributes(server: Server, attributes: str) -> Server:
    return dataclasses.replace(server, users_query=(*(server.users_query or ()), ("attributes", attributes)))


def _users(lister: _Lister) -> list:
    """The wanted users by id when coreweave_fetch and the server allow it, else
    every user (``auto``), or an error (``members``); ``stats.fetch`` says which."""
    server = lister.config.server
    why = _no_member_fetch(lister.config, lister.wanted)
    if why is None:
        try:
            found = _members(lister)
        except memberfetch.NotFiltering as e:
            log.warning("coreweave: fetching only the members of coreweave_groups failed: %s; listing every user "
                        "instead", e.why)
            why = e.why
        else:
            if found is not None:
                lister.stats.fetch = "members"
                return found
            why = "the server does not advertise filtering in /ServiceProviderConfig"
        if server.fetch == "members":  # config refuses it where the full listing is the only way
            raise memberfetch.refused("Users", why)
    lister.stats.fetch = "full"
    return lister.users(server)


def _members(lister: _Lister) -> Optional[list]:
    """The wanted users by id; None when the server does not advertise filtering.
    :raises memberfetch.NotFiltering:"""
    server = lister.config.server
    most = memberfetch.discover(lister.document, server)
    if most is None:
        return None
    assert lister.wanted is not None, "_no_member_fetch: none when every user is wanted"
    plan = memberfetch.Batches.of(server, most, lister.attributes)
    return memberfetch.fetch(lister.users, server, lister.wanted.ids, plan, _id,
                             lambda url: lister.document(url, "User"), lister.wanted.names)


def _no_member_fetch(config: Config, wanted: Optional["_Wanted"]) -> Optional[str]:
    """Why this run lists every user whatever the server can do; None when it need not."""
    if config.server.fetch == "full":
        return "coreweave_fetch = full"
    if wanted is None:
        return "every user is wanted (coreweave_groups = *)"
    if config.groups.member_match in NAME_MODES:
        return f"members name users by POSIX name (coreweave_member_match = {config.groups.member_match})"
    if config.server.users_query:
        return "coreweave_users_query is set"
    return None


def _given_ids(groups: Iterable[GroupRecord]) -> FrozenSet[str]:
    """Every id a user member of any group gives (nested groups are never users)."""
    given = {m.value for g in groups for m in g.members if m.value and _user_type(m.type)}
    return frozenset(given.union(*(g.member_ids for g in groups)))


@dataclass(frozen=True)
class _Wanted:
    """What the allowed groups' members refer to: user ids, and POSIX names."""

    ids: FrozenSet[str]
    names: FrozenSet[str]

    @classmethod
    def of(cls, groups: Iterable[GroupRecord]) -> _Wanted:
        members = [m for g in groups for m in g.members if _user_type(m.type)]  # a nested group is no user
        return cls(frozenset(m.value for m in members if m.value), frozenset(m.name for m in members if m.name))

    def narrow(self, group: GroupRecord) -> GroupRecord:
        """An other group with only the references to wanted users."""
        if not (group.member_ids or group.member_names):
            return group
        return dataclasses.replace(group, member_ids=group.member_ids & self.ids,
                                   member_names=group.member_names & self.names)


def _extract(resource: dict, config: Config, wanted: Optional[_Wanted], projected: bool = False):
    """A user's record when an allowed group may list it (its id, or its POSIX
    name, is among the members' references), else its bare id: kept for the
    listing's checks, 100,000 users cost a set of strings. Only a name that
    members give is looked up (none when members are UUIDs and ids): the names
    of other users are never kept."""
    user_id = resource["id"]
    kept = wanted is None or user_id in wanted.ids
    if not kept and wanted is not None and wanted.names:
        name = resolve(resource, config.users.name)
        # Kept whatever policy decides: a name two users carry is ambiguous.
        kept = isinstance(name, str) and name in wanted.names
    if not kept:
        return user_id
    if projected and _child(resource, "active") is _MISSING:
        raise _Unprojected(user_id)
    return _user(resource, config)


def _id(item) -> str:
    """A record's id (an unwanted user is kept as its bare id)."""
    return item if type(item) is str else item.id


def resolve(resource: dict, paths: Sequence[AttributePath]) -> Any:
    """The first present, non-empty value among ``paths`` (None if none).

    Attribute names are matched exactly, then case-insensitively as
    RFC 7643 §2.1 asks.
    """
    for path in paths:
        node: Any = resource
        steps = ((path.schema,) if path.schema else ()) + path.names
        for step in steps:
            node = _child(node, step)
            if node is _MISSING:
                break
        if node is not _MISSING and node is not None and node != "" and node != []:
            return node
    return None


def _child(node: Any, name: str) -> Any:
    if not isinstance(node, dict):
        return _MISSING
    if name in node:
        return node[name]
    lowered = name.lower()
    for key, value in node.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return _MISSING


def _user(resource: dict, config: Config) -> UserRecord:
    attrs = config.users
    active = _child(resource, "active")
    return UserRecord(
        id=sys.intern(resource["id"]),  # the same string as the members naming it (_references)
        active=True if active is _MISSING else active,  # absent counts as active
        name=resolve(resource, attrs.name),
        uid=resolve(resource, attrs.uid),
        gid=resolve(resource, attrs.gid),
        gecos=resolve(resource, attrs.gecos) or _given_family(resource),
        home=resolve(resource, attrs.home),
        shell=resolve(resource, attrs.shell),
        ssh_keys=resolve(resource, attrs.ssh_keys),
    )


def _given_family(resource: dict) -> Optional[str]:
    """GECOS's last resort: name.givenName + name.familyName (RFC 7643 §4.1.1)."""
    name = _child(resource, "name")
    parts = [_child(name, part) for part in ("givenName", "familyName")]
    text = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    return text or None


def _group(resource: dict, config: Config, allowed: Optional[frozenset] = None) -> GroupRecord:
    name = resolve(resource, config.groups.name)
    mode = config.groups.member_match
    members = _child(resource, "members")
    # A bare string member is taken as a name (the fork's habit) in the name modes only.
    takes = (dict, str) if mode in NAME_MODES else dict
    items = [m for m in members if isinstance(m, takes)] if isinstance(members, list) else []
    gid = resolve(resource, config.groups.gid)
    if allowed is not None and not (isinstance(name, str) and name in allowed):
        # Not ours: only which users it lists matters (one string per user however many
        # groups list it: memberships of every group are held while the listing lasts).
        refs = [_references(m, mode) for m in items if isinstance(m, str) or _is_user(m)]
        ids = frozenset(sys.intern(i) for i, _ in refs if i)
        names = frozenset(sys.intern(n) for _, n in refs if n)
        return GroupRecord(resource["id"], name, gid, (), ids, names)
    return GroupRecord(resource["id"], name, gid, tuple(_member(m, mode) for m in items))


def _member(item, mode: str) -> Member:
    value, name = _references(item, mode)
    kind = _kind(item) if isinstance(item, dict) else None
    # "User" once, not once per member (100,000 members: 5 MB).
    return Member(value, sys.intern(kind) if type(kind) is str else kind, name)


def _references(item, mode: str) -> Tuple[Optional[str], Optional[str]]:
    """The user id and the POSIX name a member object (or, in the name
    modes, a bare string) may refer to, as coreweave_member_match reads it.

    id: ``value``, else the last segment of ``$ref`` (RFC 7643 §4.2); auto:
    the same, and ``value`` may also be a POSIX name (an id from ``$ref``
    never is); value/display/userName: that sub-attribute is the POSIX name.
    A nested group never carries a name: only its id reaches policy.
    """
    if isinstance(item, str):
        return None, item or None
    if mode in NAME_MODES:
        name = _child(item, mode)
        return None, name if isinstance(name, str) and name and _is_user(item) else None
    value = _child(item, "value")
    if isinstance(value, str) and value:
        named = mode == "auto" and len(value) <= _NAME_MAX and _is_user(item)
        value = sys.intern(value)  # one string per user however many groups list it
        return value, value if named else None
    ref = _child(item, "$ref")
    value = ref.rstrip("/").rpartition("/")[2] if isinstance(ref, str) else None
    return value or None, None


def _kind(item: dict) -> Any:
    """A member's ``type`` (None if absent); "Group" whatever it says when its
    ``$ref`` is no Users resource (``.../Groups/<id>``): a nested group."""
    ref = _child(item, "$ref")
    if isinstance(ref, str) and ref.strip("/"):
        segments = ref.rstrip("/").split("/")
        if len(segments) < 2 or segments[-2].lower() != "users":
            return "Group"
    kind = _child(item, "type")
    return None if kind is _MISSING else kind


def _is_user(item: dict) -> bool:
    """A member without a type, or of type User (any case), whose ``$ref`` (if any) is a Users resource."""
    return _user_type(_kind(item))


def _user_type(kind: Any) -> bool:
    return kind is None or str(kind).lower() == "user"
