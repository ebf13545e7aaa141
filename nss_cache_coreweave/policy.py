"""Policy: decide who and what reaches the node, and say why for the rest.

Only active members of the allowed groups become accounts; every field is
checked here, so render can trust what it is given. A bad entry is dropped
(with a Drop saying why), never rewritten into something else, except GECOS,
which is cleaned because it is free text.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple, Union

from . import marker, shrink, sshkeys
from .config import Config
from .config import clean_path as _clean_path
from .errors import GuardError
from .snapshot import LEAN, GroupRecord, Member, Snapshot, UserRecord

__all__ = [
    "Account", "PosixGroup", "Drop", "Directory", "LocalAccounts", "decide", "narrow", "read_local_accounts",
    "shrink_problem", "valid_name",
    "POSIX_NAME",
]

# POSIX portable names: lower-case letters, digits, '_', '-', '.', not
# starting with '-', at most 32 characters (utmp's limit).
POSIX_NAME = re.compile(r"[a-z0-9_.][a-z0-9_.-]{0,31}", re.ASCII)
NOBODY = marker.NOBODY
# Never a home: pam_mkhomedir would hand the user the directory, or a tree below it
# (below /tmp and /var/tmp anyone may create the home first and own the user's dotfiles).
SYSTEM_HOMES = frozenset({
    "/", "/root", "/etc", "/bin", "/sbin", "/boot", "/dev", "/proc", "/run", "/sys", "/tmp", "/usr", "/var",
})
SYSTEM_TREES = ("/etc/", "/proc/", "/sys/", "/dev/", "/boot/", "/run/", "/tmp/", "/var/tmp/")
MAX_KEYS = 100  # key lines read per user; a longer attribute is not an honest one
_LIB = re.compile(r"/lib[^/]*", re.ASCII)  # /lib, /lib32, /lib64, /libx32 ...
_GECOS_MAX = 255


@dataclass(**LEAN)
class Account:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str
    keys: Tuple[str, ...]


@dataclass(frozen=True)
class PosixGroup:
    name: str
    gid: int
    members: Tuple[str, ...]


@dataclass(**LEAN)
class Drop:
    """An entry (or part of one) that does not reach the caches, and why."""

    kind: str  # "user", "group", "member", "key" or "shell" (replaced, not dropped)
    who: str  # the POSIX name where known, else the SCIM id
    reason: str
    expected: bool = False  # e.g. an inactive user: logged quietly
    # A short, stable label for metrics ("uid", "duplicate", "local_clash" ...).
    code: str = field(default="other", compare=False)

    def __str__(self) -> str:
        return f"dropped {self.kind} {self.who}: {self.reason}"


@dataclass(frozen=True)
class Directory:
    """What the maps are rendered from: accepted entries, sorted by name."""

    accounts: Tuple[Account, ...]
    groups: Tuple[PosixGroup, ...]
    drops: Tuple[Drop, ...]
    missing_groups: Tuple[str, ...]  # allowed groups the directory lacks
    warnings: Tuple[str, ...] = ()  # about the listing as a whole (logged, and shown by check)


@dataclass(frozen=True)
class LocalAccounts:
    """The node's own /etc/passwd and /etc/group: IAM must not shadow them."""

    user_names: FrozenSet[str] = frozenset()
    uids: FrozenSet[int] = frozenset()
    group_names: FrozenSet[str] = frozenset()
    gids: FrozenSet[int] = frozenset()
    homes: FrozenSet[str] = frozenset()


def read_local_accounts(config: Config) -> LocalAccounts:
    """Names and ids from the node's passwd and group files (a missing file
    counts as empty; an unreadable one is an error)."""
    users = _read_colon_file(config.local_passwd)
    groups = _read_colon_file(config.local_group)
    return LocalAccounts(
        user_names=frozenset(f[0] for f in users),
        uids=_ids(users),
        group_names=frozenset(f[0] for f in groups),
        gids=_ids(groups),
        homes=frozenset(posixpath.normpath(f[5]) for f in users if len(f) > 5 and f[5].startswith("/")),
    )


def _read_colon_file(path: str) -> List[List[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith(("#", "+", "-"))]
    except FileNotFoundError:
        return []


def decide(snapshot: Snapshot, config: Config, local: Optional[LocalAccounts] = None) -> Directory:
    """Accept, clean or drop every entry; ``local`` defaults to the node's
    own accounts (read_local_accounts)."""
    if local is None:
        local = read_local_accounts(config)
    drops: List[Drop] = []
    groups = _allowed_groups(snapshot.groups, config, local, drops)
    found = {g.name for g in groups}
    missing = tuple(n for n in (config.allowed_groups or ()) if n not in found)

    index = _member_index(snapshot, config)
    groups = [dataclasses.replace(g, members=_resolved(g, index, drops)) for g in groups]
    member_ids = dict.fromkeys(user_id for g in groups for user_id in g.members)

    holders = _gid_holders(snapshot.groups, index)
    accounts = {}
    for user_id in member_ids:
        account = _account(index.by_id[user_id], config, local, holders, drops)
        if account is not None:
            accounts[user_id] = account
    accounts = _without_duplicates(accounts, ("name", "uid", "home"), "user", drops)
    accounts = _without_shared_private_gids(accounts, holders, drops)
    accounts = _without_nested_homes(accounts, local, drops)

    posix_groups = []
    for group in groups:
        names = sorted({accounts[user_id].name for user_id in group.members if user_id in accounts})
        posix_groups.append(PosixGroup(group.name, group.gid, tuple(names)))

    return Directory(
        accounts=tuple(sorted(accounts.values(), key=lambda a: a.name)),
        groups=tuple(sorted(posix_groups, key=lambda g: g.name)),
        drops=tuple(drops),
        missing_groups=missing,
        warnings=_match_warnings(snapshot, index),
    )


def narrow(published: Directory, config: Config, local: Optional[LocalAccounts] = None) -> Directory:
    """A published Directory (mirror mode) under this node's own rules: its
    accounts and groups, uid/gid ranges and shells, and ``coreweave_groups``
    choosing among the published groups. The rules that need the whole IAM
    listing (duplicates, primary gids) were the publisher's."""
    if local is None:
        local = read_local_accounts(config)
    drops: List[Drop] = []
    groups = [g for g in published.groups if _node_accepts_group(g, config, local, drops)]
    found = {g.name for g in groups}
    wanted = {name for g in groups for name in g.members}
    accounts = {}
    for account in published.accounts:
        if account.name in wanted:
            problem = _node_account_problem(account, config, local)
            if problem:
                drops.append(Drop("user", account.name, problem.text, code=problem.code))
            else:
                accounts[account.name] = _with_allowed_shell(account, config, drops)
    # The publisher dropped every party to a clash; a bundle that has one anyway is not trusted with it.
    accounts = _without_duplicates(accounts, ("name", "uid", "home"), "user", drops)
    accounts = _without_nested_homes(accounts, local, drops)
    groups = list(_without_duplicates({g.name: g for g in groups}, ("name", "gid"), "group", drops).values())
    return Directory(
        accounts=tuple(sorted(accounts.values(), key=lambda a: a.name)),
        groups=tuple(PosixGroup(g.name, g.gid, tuple(m for m in g.members if m in accounts)) for g in groups),
        drops=tuple(drops),
        missing_groups=tuple(n for n in (config.allowed_groups or ()) if n not in found),
    )


def _node_accepts_group(group: PosixGroup, config: Config, local: LocalAccounts, drops: List[Drop]) -> bool:
    if config.allowed_groups is not None and group.name not in config.allowed_groups:
        return False
    problem = (_id_problem(group.gid, "gid", config.min_gid, config.max_gid)
               or _local_clash(group.name, "group", local.group_names, group.gid, "gid", local.gids))
    if problem:
        drops.append(Drop("group", group.name, problem.text, code=problem.code))
    return problem is None


def _node_account_problem(account: Account, config: Config, local: LocalAccounts) -> Optional[_Problem]:
    return (
        _id_problem(account.uid, "uid", config.min_uid, config.max_uid)
        or _id_problem(account.gid, "gid", config.min_gid, config.max_gid)
        or _local_clash(account.name, "account", local.user_names, account.uid, "uid", local.uids)
        or (_gid_local(account.gid) if account.gid in local.gids else None)
        or _home_problem(account.home, local)
    )


def _with_allowed_shell(account: Account, config: Config, drops: List[Drop]) -> Account:
    if _clean_path(account.shell) and account.shell in config.allowed_shells:
        return account
    drops.append(Drop("shell", account.name, f"shell {_show(account.shell)} is not an allowed shell: "
                                             f"{config.default_shell} used instead", code="shell"))
    return dataclasses.replace(account, shell=config.default_shell)


@dataclass(frozen=True)
class _Group:
    name: str
    gid: int
    members: tuple  # of snapshot.Member; once resolved, of the listed users' ids


@dataclass(frozen=True)
class _Members:
    """The listed users as group members name them (coreweave_member_match)."""

    by_id: Dict[str, UserRecord]
    by_name: Dict[str, List[str]]  # a name -> the ids of the listed users carrying it (empty in ``id`` mode)
    # Members are ids, never names: in ``id``, and in ``auto`` for a listing where a member
    # of any group is a listed user's id; names only otherwise (and in the name modes).
    reads_ids: bool


def _member_index(snapshot: Snapshot, config: Config) -> _Members:
    """Every name a member may give is a listed user's name in snapshot.users
    (snapshot.take keeps each user carrying one), so a name carried twice is seen twice."""
    mode = config.groups.member_match
    by_id = {u.id: u for u in snapshot.users}
    by_name: Dict[str, List[str]] = {}
    if mode != "id":
        for user in snapshot.users:
            if isinstance(user.name, str):
                by_name.setdefault(user.name, []).append(user.id)
    return _Members(by_id, by_name, mode == "id" or (mode == "auto" and _ids_given(snapshot, by_id)))


def _ids_given(snapshot: Snapshot, by_id: Dict[str, UserRecord]) -> bool:
    """Whether a user member of any group gives a listed user's id: auto then
    reads this listing's members as ids (RFC 7643), so that an id (of a user
    the listing lacks, too) never stands for another user's name."""
    if snapshot.listed_member_ids:
        return True
    given = (m.value for g in snapshot.groups for m in g.members if m.value is not None and not _nested(m))
    return any(i in by_id for i in given) or any(i in by_id for g in snapshot.groups for i in g.member_ids)


def _match_warnings(snapshot: Snapshot, index: _Members) -> Tuple[str, ...]:
    """Members read as ids while some are listed users' names: say how many names are not taken."""
    if not index.reads_ids or not index.by_name:
        return ()
    names = {m.name for g in snapshot.groups for m in g.members if m.name is not None and not _nested(m)}
    count = sum(1 for n in names if n in index.by_name and n not in index.by_id and n not in snapshot.listed_member_ids)
    if not count:
        return ()
    return (f"coreweave_member_match = auto: this listing's group members are user ids (RFC 7643), so {count} "
            "member value(s) equal to a listed user's POSIX name and to no listed user's id are not taken",)


def _member_user(index: _Members, member_id: Optional[str], name: Optional[str]) -> Optional[str]:
    """The id of the one listed user a member names, else None: by its id
    when the listing's members are ids, else by a POSIX name exactly one
    listed user carries (a name several carry names none of them)."""
    if index.reads_ids:
        return member_id if member_id is not None and member_id in index.by_id else None
    holders = index.by_name.get(name, ()) if name is not None else ()
    return holders[0] if len(holders) == 1 else None


def _resolved(group: _Group, index: _Members, drops: List[Drop]) -> Tuple[str, ...]:
    """The ids of the listed users a group's members name, each once; the
    other members dropped, saying why."""
    ids: Dict[str, None] = {}
    for member in group.members:
        user_id = None if _nested(member) else _member_user(index, member.value, member.name)
        if user_id is not None:
            ids[user_id] = None
            continue
        shown = member.value if member.value is not None or member.name is None else member.name
        drops.append(Drop("member", f"{group.name}/{_printable(shown)}", *_unresolved(member, index)))
    return tuple(ids)


def _nested(member: Member) -> bool:
    return member.type is not None and str(member.type).lower() != "user"


def _unresolved(member: Member, index: _Members) -> Tuple[str, bool, str]:
    """Why a member names no listed user: (reason, expected, code) of its Drop."""
    if _nested(member):
        return f"is a {member.type!r}, not a User (nested groups are not supported)", False, "nested_group"
    carriers = len(index.by_name.get(member.name, ())) if member.name is not None else 0
    if index.reads_ids and carriers:
        return "is a listed user's POSIX name, but this listing's members are user ids: not taken", False, "not_an_id"
    if carriers > 1:
        return f"is the POSIX name of {carriers} listed users: ambiguous, none is taken", False, "ambiguous"
    return "does not resolve to any listed user", False, "unresolved"


def _allowed_groups(records: Tuple[GroupRecord, ...], config: Config, local: LocalAccounts,
                    drops: List[Drop]) -> List[_Group]:
    allowed = None if config.allowed_groups is None else set(config.allowed_groups)
    chosen = {}
    for record in records:
        name = record.name
        if allowed is not None and not (isinstance(name, str) and name in allowed):
            continue  # exact match on the POSIX group name; others are not ours
        who = name if isinstance(name, str) and POSIX_NAME.fullmatch(name) else f"id {_printable(record.id)}"
        gid = _as_int(record.gid)
        problem = (
            _name_problem(name)
            or _id_problem(record.gid, "gid", config.min_gid, config.max_gid)
            or _local_clash(name, "group", local.group_names, gid, "gid", local.gids)
        )
        if problem:
            drops.append(Drop("group", who, problem.text, code=problem.code))
            continue
        assert gid is not None, "_id_problem refuses a gid that is no integer"
        chosen[record.id] = _Group(name, gid, record.members)
    return list(_without_duplicates(chosen, ("name", "gid"), "group", drops).values())


def _account(user: UserRecord, config: Config, local: LocalAccounts, holders: "_GidHolders",
             drops: List[Drop]) -> Optional[Account]:
    name = user.name
    who = name if isinstance(name, str) and POSIX_NAME.fullmatch(name) else f"id {_printable(user.id)}"
    home = config.home_template.replace("%u", name) if config.home_template and isinstance(name, str) else user.home
    if home is None and isinstance(name, str):
        home = f"/home/{name}"
    uid, gid = _as_int(user.uid), _as_int(user.gid)
    problem = (
        _activity_problem(user.active)
        or _name_problem(name)
        or _id_problem(user.uid, "uid", config.min_uid, config.max_uid)
        or _id_problem(user.gid, "gid", config.min_gid, config.max_gid)
        or _local_clash(name, "account", local.user_names, uid, "uid", local.uids)
        or _primary_gid_problem(user.id, gid, local, holders)
        or _home_problem(home, local)
    )
    if problem:
        drops.append(Drop("user", who, problem.text, expected=problem.code == "inactive", code=problem.code))
        return None
    assert uid is not None and gid is not None, "_id_problem refuses an id that is no integer"
    shell = config.default_shell
    if _clean_path(user.shell) and user.shell in config.allowed_shells:
        shell = user.shell
    elif user.shell is not None:
        drops.append(Drop(
            "shell", name, f"shell {_show(user.shell)} is not an allowed shell: {shell} used instead", code="shell",
        ))
    return Account(
        name=name,
        uid=uid,
        gid=gid,
        gecos=_clean_gecos(user.gecos),
        home=home,
        shell=shell,
        keys=_keys(name, user.ssh_keys, config, drops),
    )


def _activity_problem(active) -> Optional[_Problem]:
    if active is False:
        return _Problem("inactive", "is inactive")
    if active is not True:
        return _Problem("active", f"active is {_show(active)}, not a boolean")
    return None


# gid -> (group, member ids) for every IAM group carrying it, listed or not.
_GidHolders = Dict[int, List[Tuple[str, FrozenSet[str]]]]


def _gid_holders(records: Tuple[GroupRecord, ...], index: _Members) -> _GidHolders:
    holders: _GidHolders = {}
    for record in records:
        gid = _as_int(record.gid)
        if gid is not None:
            name = (record.name if isinstance(record.name, str) and POSIX_NAME.fullmatch(record.name)
                    else f"id {_printable(record.id)}")
            holders.setdefault(gid, []).append((name, _listed_members(record, index)))
    return holders


def _listed_members(record: GroupRecord, index: _Members) -> FrozenSet[str]:
    """The ids of the listed users a group's members name, as _resolved
    finds them: allowed groups carry members, the others member_ids and
    member_names (snapshot.take)."""
    found = [_member_user(index, m.value, m.name) for m in record.members if not _nested(m)]
    found += [_member_user(index, i, None) for i in record.member_ids]
    found += [_member_user(index, None, n) for n in record.member_names]
    return frozenset(filter(None, found))


def _primary_gid_problem(user_id: str, gid: Optional[int], local: LocalAccounts,
                         holders: _GidHolders) -> Optional[_Problem]:
    """A primary gid grants its group's file access: only a private gid, or
    the gid of IAM groups the user is a member of."""
    if gid is None:
        return None  # _id_problem reports it
    if gid in local.gids:
        return _gid_local(gid)
    for name, members in holders.get(gid, ()):
        if user_id not in members:
            return _Problem(
                "gid_not_member", f"primary gid {gid} is the gid of IAM group {name}, which the user is not a member of"
            )
    return None


def _gid_local(gid: int) -> _Problem:
    return _Problem("gid_local", f"primary gid {gid} belongs to a local group of this node")


def _home_problem(home, local: LocalAccounts) -> Optional[_Problem]:
    if not _clean_path(home):
        return _Problem("home", f"home directory {_show(home)} is not an absolute, normalised path")
    if home in SYSTEM_HOMES or home.startswith(SYSTEM_TREES) or _LIB.fullmatch(home):
        return _Problem("home_system", f"home directory {home!r} is a system directory")
    if home in local.homes:
        return _Problem("home_local", f"home directory {home!r} is the home of a local account of this node")
    return None


def _without_shared_private_gids(accounts: dict, holders: "_GidHolders", drops: List[Drop]) -> dict:
    """A gid no IAM group carries is a private group: two users holding it
    would share each other's group access without IAM saying so."""
    by_gid: Dict[int, List[str]] = {}
    for account in accounts.values():
        if account.gid not in holders:
            by_gid.setdefault(account.gid, []).append(account.name)
    shared = {gid: sorted(names) for gid, names in by_gid.items() if len(names) > 1}
    kept = {}
    for key, account in accounts.items():
        if account.gid in shared:
            drops.append(Drop("user", account.name, f"primary gid {account.gid} is shared by "
                              f"{', '.join(shared[account.gid])} and no IAM group carries it", code="gid_shared"))
        else:
            kept[key] = account
    return kept


def _without_nested_homes(accounts: dict, local: LocalAccounts, drops: List[Drop]) -> dict:
    """A home inside another user's home (IAM or local, "/" aside) is under that user's control."""
    owners = {a.home: a.name for a in accounts.values()}
    owners.update({home: "a local account" for home in local.homes if home != "/"})
    kept = {}
    for key, account in accounts.items():
        parent = posixpath.dirname(account.home)
        while parent != "/" and parent not in owners:
            parent = posixpath.dirname(parent)
        if parent == "/":
            kept[key] = account
        else:
            drops.append(Drop("user", account.name, f"home {account.home} is inside {parent}, the home of "
                              f"{owners[parent]}", code="home_nested"))
    return kept


def _keys(name: str, raw, config: Config, drops: List[Drop]) -> Tuple[str, ...]:
    keys: Dict[str, str] = {}  # "type base64" -> the first line carrying it
    lines = _key_lines(raw)
    if len(lines) > MAX_KEYS:
        drops.append(Drop("key", name, f"keys {MAX_KEYS + 1} to {len(lines)} are ignored: at most {MAX_KEYS} "
                                       "lines of keys are read per user", code="key"))
    for position, line in enumerate(lines[:MAX_KEYS], 1):
        try:
            if not isinstance(line, str):
                raise sshkeys.InvalidKey(line.text)
            key = sshkeys.parse(
                line,
                allowed=config.keys.types,
                min_rsa_bits=config.keys.min_rsa_bits,
                allow_options=config.keys.allow_options,
            )
        except sshkeys.InvalidKey as e:
            drops.append(Drop("key", name, f"key {position} {e}", code="key"))
            continue
        # The same key with another comment (or options) is still the same key.
        keys.setdefault(key.identity, key.line)
    return tuple(keys.values())


def _key_lines(raw) -> List[Union[str, _Problem]]:
    """The keys as people enter them ("one key per line"): one string or a
    list of them, each split at LF (so CRLF too), blank lines skipped and
    surrounding whitespace stripped; a list item may be a SCIM multi-valued
    object, whose string ``value`` is taken. Anything else is a _Problem."""
    if raw is None:
        return []
    lines: List[Union[str, _Problem]] = []
    for item in raw if isinstance(raw, list) else [raw]:
        if isinstance(item, dict):
            item = next((v for k, v in item.items() if isinstance(k, str) and k.lower() == "value"), item)
        if isinstance(item, str):
            lines.extend(filter(None, map(str.strip, item.split("\n"))))
        elif isinstance(item, dict):
            lines.append(_Problem("key", "is a JSON object without a string 'value'"))
        else:
            shown = "JSON null" if item is None else f"a JSON {type(item).__name__}"
            lines.append(_Problem("key", f"is {shown}, not a string"))
    return lines


def _without_duplicates(entries: dict, fields: Tuple[str, ...], kind: str, drops: List[Drop]) -> dict:
    """Drop every party to a name, id or home clash: never "last one wins".
    Each party is dropped once, for the first field it shares."""
    clashing = set()
    for attribute in fields:
        holders: Dict[object, List[str]] = {}
        for entry in entries.values():
            holders.setdefault(getattr(entry, attribute), []).append(entry.name)
        for key, entry in entries.items():
            value = getattr(entry, attribute)
            if len(holders[value]) > 1 and key not in clashing:
                clashing.add(key)
                others = sorted(holders[value])
                drops.append(Drop(kind, entry.name, f"{attribute} {value} is shared by {', '.join(others)}",
                                  code="duplicate"))
    return {k: e for k, e in entries.items() if k not in clashing}


class _Problem(NamedTuple):
    code: str
    text: str


def valid_name(name) -> bool:
    """Whether an IAM user or group may have ``name`` on the node (and it is not the run marker's)."""
    return _name_problem(name) is None


def _name_problem(name) -> Optional[_Problem]:
    if not isinstance(name, str):
        return _Problem("name", "has no POSIX name" if name is None
                        else f"name is a JSON {type(name).__name__}, not a string")
    if not POSIX_NAME.fullmatch(name) or name.isdigit() or name in (".", ".."):
        return _Problem(
            "name", f"name {_show(name)} is not a POSIX portable name (a-z 0-9 _ . -, at most 32, lower-case)"
        )
    if name == marker.NAME:
        return _Problem("reserved", f"name {name!r} is reserved for the run marker on the first line of every cache")
    return None


def shrink_problem(directory: Directory, previous, max_shrink: float,
                   allowed_groups: Optional[Tuple[str, ...]] = None, command: str = "update") -> Optional[GuardError]:
    """The shrink guard's refusal of ``directory`` (shrink.py): losing too many
    users, then groups, compared with ``previous`` (state.Counts of the last
    accepted run); or, with nothing to compare with, being empty. None when
    the run may go on. ``command`` is the one to rerun with --accept-shrink."""
    if previous is None:
        # An empty result is far likelier an outage or a wrong setting than a
        # decision, even with nothing to compare with (a first run over caches
        # another source wrote, a changed coreweave_base_url or coreweave_groups).
        return None if directory.accounts else GuardError("users", None, 0, max_shrink, command, allowed_groups)
    for what, before, now in (
        ("users", previous.users, len(directory.accounts)),
        ("groups", previous.groups, len(directory.groups)),
    ):
        refusal = shrink.problem(command, what, before, now, max_shrink)
        if refusal is not None:
            return refusal
    return None


def _local_clash(name: str, what: str, names, number: Optional[int], id_name: str, numbers) -> Optional[_Problem]:
    if name in names:
        where = "/etc/passwd" if what == "account" else "/etc/group"
        return _Problem("local_clash", f"name {name!r} is a local {what} of this node ({where})")
    if number in numbers:
        return _Problem("local_clash", f"{id_name} {number} belongs to a local {what} of this node")
    return None


def _id_problem(value, id_name: str, low: int, high: int) -> Optional[_Problem]:
    number = _as_int(value)
    if number is None:
        return _Problem(id_name, f"{id_name} {_show(value)} is missing or not an integer")
    if number == 0:
        return _Problem(id_name, f"{id_name} 0 (root) is never accepted")
    if number == NOBODY:
        return _Problem(id_name, f"{id_name} {NOBODY} (nobody) is never accepted")
    if not low <= number <= high:
        return _Problem(id_name, f"{id_name} {number} is outside [{low}, {high}]")
    return None


def _ids(entries: List[List[str]]) -> FrozenSet[int]:
    """The numeric third fields (uid or gid) of passwd or group entries."""
    numbers = (_as_int(f[2]) for f in entries if len(f) > 2)
    return frozenset(n for n in numbers if n is not None)


def _as_int(value) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        return int(value)
    return None


def _clean_gecos(value) -> str:
    """Free text for passwd's 5th field: ASCII (nsscache's index offsets
    count characters, not bytes), without ':' or control characters."""
    if not isinstance(value, str):
        return ""
    ascii_text = value if value.isascii() else (
        unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    )
    cleaned = " ".join("".join(c for c in ascii_text if c.isprintable() and c != ":").split())[:_GECOS_MAX]
    return value if cleaned == value else cleaned  # the snapshot's string, not a copy, when nothing changed


def _printable(value) -> str:
    """A SCIM id or value as it may appear in a log line: a newline in it
    must not forge another line."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
