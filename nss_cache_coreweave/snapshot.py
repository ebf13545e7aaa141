"""Snapshot: one consistent set of users and groups per run.

Users and Groups are each listed once; only the fields the maps need are
kept (raw JSON values, not yet validated: that is policy's job).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Any, FrozenSet, Optional, Sequence, Tuple

from . import scim
from .config import AttributePath, Config

__all__ = ["UserRecord", "Member", "GroupRecord", "Snapshot", "take", "resolve"]

_MISSING = object()


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Member:
    value: Optional[str]  # the member's resource id
    type: Any  # "User", "Group" or absent


@dataclass(frozen=True)
class GroupRecord:
    id: str
    name: Any
    gid: Any
    members: Tuple[Member, ...]  # read for the allowed groups (for every group with ``everyone``)
    # For the other groups: which of the wanted users they list (policy's primary-gid rule).
    member_ids: FrozenSet[str] = frozenset()


@dataclass(frozen=True)
class Snapshot:
    users: Tuple[UserRecord, ...]
    groups: Tuple[GroupRecord, ...]
    fetched_at: float  # time.time() when the listing started


def take(
    config: Config,
    *,
    session=None,
    clock: Optional[scim.Clock] = None,
    stats: Optional[scim.Stats] = None,
    everyone: bool = False,
) -> Snapshot:
    """List Groups, then Users, once each, both within coreweave_deadline.

    Groups come first so that only members of the allowed groups are kept
    from the (much longer) Users listing; every user still counts for the
    listing's checks. Every group is kept, the others with the ids of the
    wanted users they list (policy's primary-gid rule needs every gid).
    ``everyone`` keeps every user (for ``check``).

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
        wanted = None if allowed is None else {m.value for g in groups for m in g.members if m.value}
        if wanted is not None:
            # Other groups matter only for the primary-gid rule, and only through wanted users.
            groups = [dataclasses.replace(g, member_ids=g.member_ids & wanted) if g.member_ids else g for g in groups]

        def extract(resource: dict):
            # A user in no allowed group is kept as its bare id, for the
            # listing's checks: 100,000 users cost a set of strings.
            if wanted is None or resource["id"] in wanted:
                return _user(resource, config)
            return resource["id"]

        users = scim.list_resources(
            session, server, scim.Listing("Users", server.users_url, extract, _id, limit=server.max_users),
            clock=clock, deadline=deadline, stats=stats,
        )
    finally:
        if own_session:
            session.close()
    return Snapshot(tuple(u for u in users if type(u) is UserRecord), tuple(groups), started)


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
        id=resource["id"],
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
    members = _child(resource, "members")
    items = [m for m in members if isinstance(m, dict)] if isinstance(members, list) else []
    if allowed is not None and not (isinstance(name, str) and name in allowed):
        # Not ours: only which users it lists matters (ids, one string per user however
        # many groups list it: memberships of every group are held while the listing lasts).
        ids = frozenset(sys.intern(v) for v in map(_member_value, items) if v)
        return GroupRecord(resource["id"], name, resolve(resource, config.groups.gid), (), ids)
    return GroupRecord(resource["id"], name, resolve(resource, config.groups.gid), tuple(_member(m) for m in items))


def _member_value(item: dict) -> Optional[str]:
    """A member's resource id: ``value``, else the last segment of ``$ref``."""
    value = _child(item, "value")
    if not (isinstance(value, str) and value):
        ref = _child(item, "$ref")
        value = ref.rstrip("/").rpartition("/")[2] if isinstance(ref, str) else None
    return value if isinstance(value, str) and value else None


def _member(item: dict) -> Member:
    kind = _child(item, "type")
    return Member(value=_member_value(item), type=None if kind is _MISSING else kind)
