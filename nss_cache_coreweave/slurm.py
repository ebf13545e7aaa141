"""Slurm users and accounts from the same Directory as the maps.

``nsscache-coreweave slurm-sync`` reconciles Slurm accounting (slurmdbd, through
``sacctmgr``) with the users and groups that reach the caches:

    Directory + config  -> wanted()  -> Wanted (accounts in configuration order, their members)
    sacctmgr -n -P show -> read()    -> Current (clusters, accounts, users, associations)
    Wanted + Current    -> plan()    -> Plan (operations, each one sacctmgr call; pure)
    Plan                -> shrink_problem(), then apply() with ``sacctmgr -i``

Ownership (what the package may touch) comes from the package's own record,
``<coreweave_state_dir>/coreweave-slurm-state.json``, never from a field a Slurm
coordinator can write (organization, description):

* an account is managed when the package created it (or an administrator handed it
  over with ``slurm-sync --adopt-account``); its organization ``MARKER`` is a label
  for people, not a claim: every other account (``root``, hand-made ones, one marked
  by hand) is never modified, removed, or given associations;
* associations are added and removed only in managed accounts;
* ``root`` and users with an AdminLevel (Operator, Administrator) are never touched;
* a Slurm user is removed only when the package created it and no association
  remains: slurmdbd itself deletes a user whose last association goes, so the last
  association of a user the package did not create is kept (and reported);
* created users and accounts are recorded *before* the sacctmgr call that creates
  them, so an interrupted run cannot lose them; an unreadable record, or a missing
  one while slurmdbd holds accounts labelled ``MARKER``, stops the run.

sacctmgr's ``-P`` output is read strictly: free text and names may hold ``|`` or
line breaks, so a row with the wrong number of fields, a field with a control
character, or a name listed twice stops the run (nothing is changed) rather than
being guessed at. sacctmgr runs with a cleaned environment (no token).

sacctmgr is called a bounded number of times: 3 reads plus one per cluster, and,
per cluster, one write per new or re-parented account and one per (account, kind
of change) for each ``ARG_BYTES`` of user names; never one per user.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import (
    AbstractSet,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
)

from . import shrink, state
from .errors import CoreWeaveError, GuardError

__all__ = [
    "MARKER", "STATE_FILE", "LOCK_FILE", "ARG_BYTES",
    "SlurmError", "SlurmUnavailable", "SlurmPermissionError", "SlurmStepError", "PlanError",
    "SlurmListingError", "SlurmStateError",
    "WantedAccount", "Wanted", "AccountRow", "AssocRow", "UserRow", "Current", "Kind", "Operation", "Plan",
    "SlurmState", "SlurmRun", "Sacctmgr", "wanted", "plan", "shrink_problem", "read", "resolve_clusters",
    "cluster_name_from_slurm_conf", "load_state", "save_state", "apply", "sync",
]

log = logging.getLogger("nss_cache_coreweave")

MARKER = "nsscache-coreweave"  # the organization of every account this package manages
STATE_FILE = "coreweave-slurm-state.json"
LOCK_FILE = "coreweave-slurm.lock"
# User names per sacctmgr argument (``name=`` + the names): Linux refuses one argument longer than 128 KiB
# (MAX_ARG_STRLEN).
ARG_BYTES = 100_000
ROOT = "root"
# Association limits an adopted account may carry (sacctmgr format names).
LIMITS = ("GrpJobs", "GrpSubmit", "GrpTRES", "GrpTRESMins", "GrpWall", "MaxJobs", "MaxSubmit", "MaxTRES",
          "MaxTRESMins", "MaxWall")
_NOT_ADMIN = ("", "none", "not set")
_UNAVAILABLE = re.compile(
    r"connection refused|problem talking to the database|unable to connect|persistinit|"
    r"couldn't connect|connection timed out|no route to host|munge|authentication error",
    re.I,
)
_DENIED = re.compile(r"permission denied|access/permission|privilege|not authorized|only admins", re.I)


class SlurmError(CoreWeaveError):
    """sacctmgr failed, or the Slurm side is not as the configuration says."""


class SlurmUnavailable(SlurmError):
    """slurmdbd (or munge) could not be reached, or sacctmgr timed out: try again later."""


class SlurmPermissionError(SlurmError):
    """slurmdbd refused: the caller is not a Slurm administrator (run as root or SlurmUser)."""


class SlurmStepError(SlurmError):
    """One step of an applied plan failed; the steps before it took effect (a rerun converges)."""


class PlanError(SlurmError):
    """The plan cannot be made: a configured cluster or the parent account does not exist."""


class SlurmListingError(SlurmError):
    """A sacctmgr listing is ambiguous (a name or free text holding ``|`` or a line
    break, a control character, a name listed twice): nothing is planned from it."""

    def __init__(self, listing: str, line: int, problem: str):
        self.listing, self.line, self.problem = listing, line, problem
        super().__init__(f"sacctmgr show {listing}, line {line}: {problem}: refusing to plan from an ambiguous "
                         f"listing, nothing was changed. Find the entry with `sacctmgr -P show {listing}` and "
                         f"rename or fix it")


class SlurmStateError(SlurmError):
    """The record of what the package created is unreadable or lost: nothing is changed
    until an administrator restores it or hands the accounts over explicitly."""

    def __init__(self, path: str, problem: str, fix: str):
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{path}: {problem}: nothing was changed. {fix}")


# --- what IAM says -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WantedAccount:
    name: str
    groups: Tuple[str, ...]  # the IAM groups feeding it (present in the directory)
    members: FrozenSet[str]


@dataclass(frozen=True)
class Wanted:
    """Slurm accounts wanted from IAM, in configuration order (a member's default
    account is the first of theirs in this order)."""

    accounts: Tuple[WantedAccount, ...]

    def order(self) -> Dict[str, int]:
        return {a.name: i for i, a in enumerate(self.accounts)}


def wanted(directory, mapping: Optional[Sequence[Tuple[str, str]]], allowed_groups: Optional[Sequence[str]]) -> Wanted:
    """Accounts wanted from a policy.Directory.

    ``mapping`` is coreweave_slurm_accounts ((group, account) pairs), or None for
    "every listed group becomes an account of the same name", in coreweave_groups
    order (alphabetical for ``*``). An account whose groups are all absent from the
    directory is not wanted (its members lose their associations).
    """
    present = {g.name: g for g in directory.groups}
    if mapping is None:
        names = list(allowed_groups) if allowed_groups is not None else sorted(present)
        mapping = [(g, g) for g in names]
    accounts: Dict[str, Tuple[List[str], Set[str]]] = {}
    for group, account in mapping:
        if group not in present:
            continue
        groups, members = accounts.setdefault(account, ([], set()))
        groups.append(group)
        members.update(present[group].members)
    return Wanted(tuple(WantedAccount(a, tuple(g), frozenset(m)) for a, (g, m) in accounts.items()))


# --- what slurmdbd says --------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRow:
    name: str
    organization: str  # a label anyone coordinating the account can change: never proof of ownership


@dataclass(frozen=True)
class AssocRow:
    cluster: str
    account: str
    user: str  # "" for the account's own association
    partition: str
    parent: str  # the parent account, for an account's own association


@dataclass(frozen=True)
class UserRow:
    name: str
    admin_level: str
    defaults: Tuple[Tuple[str, str], ...] = ()  # (cluster, default account)

    @property
    def protected(self) -> bool:
        """root and Slurm administrators/operators are never touched."""
        return self.name == ROOT or self.admin_level.strip().lower() not in _NOT_ADMIN

    def default(self, cluster: str) -> str:
        return dict(self.defaults).get(cluster, "")


@dataclass(frozen=True)
class Current:
    clusters: Tuple[str, ...]  # the clusters being reconciled
    accounts: Mapping[str, AccountRow]
    users: Mapping[str, UserRow]
    assocs: Tuple[AssocRow, ...]


# --- the plan ------------------------------------------------------------------------------------


class Kind(str, Enum):
    """What an Operation does. The value is the word logs, ``str(op)`` and the summary show."""

    ADD_ACCOUNT = "add account"
    SET_PARENT = "set parent"
    ADD_USERS = "add users"
    SET_DEFAULT = "set default account"
    REMOVE_USERS = "remove associations"
    REMOVE_ACCOUNT = "remove account"

    def __str__(self) -> str:  # also what format() and f-strings show, on every Python from 3.9
        return self.value


# Each kind under its module-level name (the names callers and tests import).
ADD_ACCOUNT = Kind.ADD_ACCOUNT
SET_PARENT = Kind.SET_PARENT
ADD_USERS = Kind.ADD_USERS
SET_DEFAULT = Kind.SET_DEFAULT
REMOVE_USERS = Kind.REMOVE_USERS
REMOVE_ACCOUNT = Kind.REMOVE_ACCOUNT


@dataclass(frozen=True)
class Operation:
    """One modifying sacctmgr call."""

    kind: Kind
    cluster: str
    account: str
    users: Tuple[str, ...] = ()
    parent: str = ""
    description: str = ""
    new_users: Tuple[str, ...] = ()  # for ADD_USERS: the users this call creates
    creates_account: bool = False  # for ADD_ACCOUNT: the account does not exist yet anywhere

    def args(self) -> List[str]:
        """sacctmgr's arguments after ``-i``.

        Every account and user name goes as the value of a ``key=`` (``name=``,
        ``account=``, ``parent=``, ``defaultaccount=``), never as a bare word: sacctmgr
        takes a bare ``where`` or ``set`` for its keyword (``add account where`` fails:
        "Need name of account to add"), so an IAM group of that name broke every run."""
        where = [f"cluster={self.cluster}"] if self.cluster else []
        names = ",".join(self.users)
        return {
            Kind.ADD_ACCOUNT: ["add", "account", f"name={self.account}", *where, f"parent={self.parent}",
                               f"organization={MARKER}", f"description={self.description}"],
            Kind.SET_PARENT: ["modify", "account", "where", f"name={self.account}", *where, "set",
                              f"parent={self.parent}"],
            Kind.ADD_USERS: ["add", "user", f"name={names}", f"account={self.account}", *where],
            Kind.SET_DEFAULT: ["modify", "user", "where", f"name={names}", *where, "set",
                               f"defaultaccount={self.account}"],
            Kind.REMOVE_USERS: ["remove", "user", "where", f"name={names}", f"account={self.account}", *where],
            Kind.REMOVE_ACCOUNT: ["remove", "account", "where", f"name={self.account}", *where],
        }[self.kind]

    def __str__(self) -> str:
        who = f" {len(self.users)} user(s)" if self.users else ""
        to = f" -> {self.parent}" if self.kind in (Kind.ADD_ACCOUNT, Kind.SET_PARENT) else ""
        on = f"cluster {self.cluster}" if self.cluster else "every cluster"
        return f"{self.kind} {self.account}{to}{who} on {on}"


@dataclass(frozen=True)
class Plan:
    operations: Tuple[Operation, ...]
    conflicts: Tuple[str, ...] = ()  # problems the operator must fix (exit status 1), nothing applied for them
    notes: Tuple[str, ...] = ()  # things deliberately left alone
    managed_users: FrozenSet[str] = frozenset()  # users holding a managed association before the run
    losing_users: FrozenSet[str] = frozenset()  # ... and those of them left without any
    deleted_users: FrozenSet[str] = frozenset()  # users slurmdbd deletes (no association left; created by us)
    kept_users: FrozenSet[str] = frozenset()  # not created by us: their last managed association is kept

    @property
    def new_users(self) -> FrozenSet[str]:
        return frozenset(u for op in self.operations for u in op.new_users)


def plan(want: Wanted, current: Current, *, parent: str, created_users: Iterable[str] = (),
         managed_accounts: Iterable[str] = (), prune_accounts: bool = False, arg_bytes: int = ARG_BYTES) -> Plan:
    """Operations turning ``current`` into what ``want`` asks, touching only what
    the package manages (``managed_accounts``, ``created_users``: its record; see the
    module's docstring). Pure: no I/O.

    Order: new and re-parented accounts; then per cluster: associations added
    (accounts in configuration order, so a user new to the cluster gets the first
    of theirs as default account), default accounts set, associations removed,
    empty managed accounts pruned. Each stage below is a pure function returning
    a value. :raises PlanError:"""
    scope = _scope(want, current, parent, created_users, managed_accounts)
    outcome = _outcome(_holdings(current), _changes(current, scope), scope.created)
    fates = _fates(current, scope, outcome)
    operations = outcome.changes.accounts + _user_operations(scope, outcome, current.users, arg_bytes)
    prunes = (_prunes(scope.managed - scope.usable_names, current, outcome.changes.removes) if prune_accounts
              else Prunes())
    return Plan(
        operations=_mark_new_users(operations, current.users) + prunes.operations,
        conflicts=scope.conflicts,
        notes=scope.notes + _kept_notes(outcome.kept) + prunes.notes,
        managed_users=fates.managed,
        losing_users=fates.losing,
        deleted_users=fates.deleted,
        kept_users=outcome.kept,
    )


# --- planning stages -------------------------------------------------------------------------------

Key = Tuple[str, str]  # (cluster, account): an association of a user, whatever its partition
Holdings = Mapping[str, AbstractSet[Key]]  # user -> the associations they hold, on every cluster
Table = Mapping[Key, AbstractSet[str]]  # (cluster, account) -> users
_K = TypeVar("_K")
_V = TypeVar("_V")


class Usable(NamedTuple):
    """The wanted accounts the package may fill, and why the others may not."""

    accounts: Tuple[WantedAccount, ...]  # in configuration order
    conflicts: Tuple[str, ...]
    notes: Tuple[str, ...]


@dataclass(frozen=True)
class Scope:
    """What the plan may touch, and in which order."""

    parent: str
    clusters: Tuple[str, ...]  # the reconciled clusters
    created: FrozenSet[str]  # the users the package created (its record)
    protected: FrozenSet[str]  # root and Slurm administrators: never touched
    managed: FrozenSet[str]  # existing accounts the package manages (never root or the parent)
    usable: Tuple[WantedAccount, ...]  # the wanted accounts it may fill, in configuration order
    order: Mapping[str, int]  # every wanted account's place in the configuration (Wanted.order)
    conflicts: Tuple[str, ...] = ()  # the wanted accounts it may not fill (exit status 1)
    notes: Tuple[str, ...] = ()  # wanted members left alone (root, Slurm administrators)

    @property
    def usable_names(self) -> FrozenSet[str]:
        return frozenset(a.name for a in self.usable)

    def rank(self, account: str) -> Tuple[int, str]:
        """Sort key: wanted accounts in configuration order, then the others by name."""
        return self.order.get(account, len(self.order)), account

    def accounts_of(self, user: str) -> List[str]:
        """The usable accounts ``user`` is a member of, in configuration order."""
        return [a.name for a in self.usable if user in a.members]


@dataclass(frozen=True)
class ClusterHolds:
    """What one cluster holds: the accounts there (with their parent) and their users."""

    cluster: str
    parents: Mapping[str, str]  # account -> its parent account
    general: Mapping[str, AbstractSet[str]]  # account -> users with an association for every partition
    anywhere: Mapping[str, AbstractSet[str]]  # account -> users with any association


@dataclass(frozen=True)
class Changes:
    """What the plan changes on the reconciled clusters, before it is cut into calls."""

    accounts: Tuple[Operation, ...] = ()  # ADD_ACCOUNT and SET_PARENT, cluster by cluster
    adds: Table = field(default_factory=dict)  # users to give the association
    removes: Table = field(default_factory=dict)  # users to take it from

    def removed_users(self) -> FrozenSet[str]:
        return frozenset(u for users in self.removes.values() for u in users)

    def keeping(self, users: AbstractSet[str]) -> Changes:
        """These changes without any removal from ``users``."""
        return replace(self, removes={key: names - users for key, names in self.removes.items() if names - users})


@dataclass(frozen=True)
class Outcome:
    """The changes to make, and each user's associations before them."""

    changes: Changes
    before: Holdings
    kept: FrozenSet[str]  # not created by the package, they would lose every association: nothing is removed

    def after(self, user: str) -> AbstractSet[Key]:
        """What ``user`` holds once the changes are made, on every cluster."""
        gone = {key for key, users in self.changes.removes.items() if user in users}
        added = {key for key, users in self.changes.adds.items() if user in users}
        return (self.before.get(user, frozenset()) - gone) | added


class Fates(NamedTuple):
    """What the plan does to the users holding managed associations."""

    managed: FrozenSet[str]  # holding a managed association on a reconciled cluster before the run
    losing: FrozenSet[str]  # ... and left without any managed or wanted association there
    deleted: FrozenSet[str]  # created by the package and left without any association: slurmdbd deletes them


class Defaults(NamedTuple):
    """The default accounts on one cluster."""

    moves: Mapping[str, FrozenSet[str]]  # account -> users whose default becomes it
    final: Mapping[str, str]  # user -> their default once associations are added and moves made ("": none)


class Prunes(NamedTuple):
    """The managed accounts removed, and why others are kept."""

    operations: Tuple[Operation, ...] = ()
    notes: Tuple[str, ...] = ()


def _scope(want: Wanted, current: Current, parent: str, created_users: Iterable[str],
           managed_accounts: Iterable[str]) -> Scope:
    """What the plan may touch: the package's record less root, the parent account and
    Slurm administrators, and the wanted accounts it may fill."""
    protected = frozenset(name for name, row in current.users.items() if row.protected) | {ROOT}
    managed = frozenset(managed_accounts) & frozenset(current.accounts) - {parent, ROOT}
    usable = _usable(want, current, parent, protected, managed)
    return Scope(parent, current.clusters, frozenset(created_users), protected, managed, usable.accounts,
                 want.order(), usable.conflicts, usable.notes)


def _usable(want: Wanted, current: Current, parent: str, protected: AbstractSet[str],
            managed: AbstractSet[str]) -> Usable:
    """The wanted accounts the package may fill, the conflicts, and notes."""
    usable: List[WantedAccount] = []
    conflicts: List[str] = []
    notes: List[str] = []
    for account in want.accounts:
        row = current.accounts.get(account.name)
        if account.name in (ROOT, parent):
            conflicts.append(f"account {account.name!r} (from group {', '.join(account.groups)}) is root or the "
                             f"parent account: map the group to another account in coreweave_slurm_accounts")
        elif row is not None and account.name not in managed:
            conflicts.append(
                f"account {account.name!r} (from group {', '.join(account.groups)}) exists and was not created by "
                f"{MARKER} (organization {row.organization!r}, which proves nothing): left alone. Map the group "
                f"to another account (coreweave_slurm_accounts = {account.groups[0]}=<account>), or hand it over "
                f"with `nsscache-coreweave slurm-sync --adopt-account {account.name}`"
            )
        else:
            usable.append(account)
            skipped = sorted(account.members & protected)
            if skipped:
                notes.append(f"{', '.join(skipped)}: root or a Slurm administrator, left alone "
                             f"(account {account.name})")
    return Usable(tuple(usable), tuple(conflicts), tuple(notes))


def _grouped(pairs: Iterable[Tuple[_K, _V]]) -> Dict[_K, Set[_V]]:
    """{key: the values paired with it}."""
    found: Dict[_K, Set[_V]] = {}
    for key, value in pairs:
        found.setdefault(key, set()).add(value)
    return found


def _holdings(current: Current) -> Holdings:
    """What each user holds now, on every cluster (a user whose last association goes
    anywhere is deleted by slurmdbd)."""
    return _grouped((r.user, (r.cluster, r.account)) for r in current.assocs if r.user)


def _cluster_holds(cluster: str, current: Current) -> ClusterHolds:
    rows = [r for r in current.assocs if r.cluster == cluster]
    return ClusterHolds(cluster, {r.account: r.parent for r in rows if not r.user},
                        general=_grouped((r.account, r.user) for r in rows if r.user and not r.partition),
                        anywhere=_grouped((r.account, r.user) for r in rows if r.user))


def _changes(current: Current, scope: Scope) -> Changes:
    """Every reconciled cluster's changes, in cluster order. :raises PlanError:"""
    found = [_cluster_changes(_cluster_holds(cluster, current), scope, current.accounts)
             for cluster in scope.clusters]
    return Changes(tuple(op for c in found for op in c.accounts),
                   {key: users for c in found for key, users in c.adds.items()},
                   {key: users for c in found for key, users in c.removes.items()})


def _cluster_changes(holds: ClusterHolds, scope: Scope, accounts: Mapping[str, AccountRow]) -> Changes:
    """On one cluster: the usable accounts to create or move under the parent, the
    members they lack an association for every partition, and the users managed
    accounts hold beyond their members. :raises PlanError:"""
    cluster, parent = holds.cluster, scope.parent
    if parent not in holds.parents:
        raise PlanError(f"coreweave_slurm_parent_account {parent!r} does not exist on cluster {cluster!r}: "
                        f"create it (sacctmgr add account name={parent} cluster={cluster}) or choose another")
    members = {a.name: a.members for a in scope.usable}
    adds = ((a.name, a.members - scope.protected - holds.general.get(a.name, frozenset())) for a in scope.usable)
    removes = ((a, holds.anywhere.get(a, frozenset()) - scope.protected - members.get(a, frozenset()))
               for a in sorted(scope.managed & holds.parents.keys()))
    ops = (_account_operation(holds, account, parent, accounts) for account in scope.usable)
    return Changes(tuple(op for op in ops if op is not None), _nonempty(cluster, adds), _nonempty(cluster, removes))


def _nonempty(cluster: str, users: Iterable[Tuple[str, AbstractSet[str]]]) -> Dict[Key, AbstractSet[str]]:
    """{(cluster, account): users} for each (account, users) with users."""
    return {(cluster, account): names for account, names in users if names}


def _account_operation(holds: ClusterHolds, account: WantedAccount, parent: str,
                       accounts: Mapping[str, AccountRow]) -> Optional[Operation]:
    """ADD_ACCOUNT when ``account`` is not on the cluster, SET_PARENT when it is under another parent."""
    if account.name not in holds.parents:
        return Operation(Kind.ADD_ACCOUNT, holds.cluster, account.name, parent=parent,
                         description="coreweave iam group " + "+".join(account.groups),
                         creates_account=account.name not in accounts)
    if holds.parents[account.name] != parent:
        return Operation(Kind.SET_PARENT, holds.cluster, account.name, parent=parent)
    return None


def _outcome(held: Holdings, proposed: Changes, created: AbstractSet[str]) -> Outcome:
    """``proposed``, less the removals from a user the package did not create that
    would leave them no association at all: slurmdbd would delete that user."""
    unkept = Outcome(proposed, held, frozenset())
    kept = frozenset(u for u in proposed.removed_users() - created if not unkept.after(u))
    return Outcome(proposed.keeping(kept), held, kept)


def _fates(current: Current, scope: Scope, outcome: Outcome) -> Fates:
    """Who holds a managed association, who is left with none (the shrink guard counts
    them), and who is left with no association at all."""
    clusters = frozenset(scope.clusters)
    managed = frozenset(r.user for r in current.assocs if r.user and r.cluster in clusters
                        and r.account in scope.managed and r.user not in scope.protected)
    staying = scope.managed | scope.usable_names
    losing = frozenset(u for u in managed
                       if not any(c in clusters and a in staying for c, a in outcome.after(u)))
    deleted = frozenset(u for u in outcome.changes.removed_users() & scope.created if not outcome.after(u))
    return Fates(managed, losing, deleted)


def _kept_notes(kept: AbstractSet[str]) -> Tuple[str, ...]:
    return tuple(f"{user}: not created by {MARKER}; its last association is kept (removing it would delete "
                 f"the Slurm user): remove it by hand if intended" for user in sorted(kept))


def _defaults(cluster: str, scope: Scope, outcome: Outcome, users: Mapping[str, UserRow]) -> Defaults:
    """Whose default account on ``cluster`` must move, and where.

    A user the package created gets the first of their accounts in configuration
    order; any user whose default association goes gets the first of theirs (else
    the first remaining account). Other users' defaults are left alone."""
    moves: Dict[str, Set[str]] = {}
    final: Dict[str, str] = {}
    for user in sorted(_touched(cluster, scope, outcome) - scope.protected):
        default, final[user] = _default_move(user, cluster, scope, outcome, users.get(user))
        if final[user] != default:
            moves.setdefault(final[user], set()).add(user)
    return Defaults({account: frozenset(names) for account, names in moves.items()}, final)


def _touched(cluster: str, scope: Scope, outcome: Outcome) -> Set[str]:
    """The users gaining or losing an association on ``cluster``, and those the package
    created holding one there (their default follows configuration order)."""
    tables = (outcome.changes.adds, outcome.changes.removes)
    touched = {u for table in tables for (c, _), users in table.items() if c == cluster for u in users}
    return touched | {u for u in scope.created if any(c == cluster for c, _ in outcome.before.get(u, ()))}


def _default_move(user: str, cluster: str, scope: Scope, outcome: Outcome, row: Optional[UserRow]) -> Tuple[str, str]:
    """(the user's default on ``cluster`` once associations are added, where it must be).
    The first is the current default, or for a user new to the cluster the first
    account added (slurmdbd makes it the default)."""
    if any(c == cluster for c, _ in outcome.before.get(user, ())):
        default = row.default(cluster) if row is not None else ""
    else:
        adds = outcome.changes.adds
        default = next((a.name for a in scope.usable if user in adds.get((cluster, a.name), ())), "")
    now = {a for c, a in outcome.after(user) if c == cluster}
    return default, (_default_target(user, default, now, scope) if now else default)


def _default_target(user: str, default: str, now: AbstractSet[str], scope: Scope) -> str:
    """Where the default of a user holding ``now`` on the cluster goes."""
    mine = scope.accounts_of(user)
    if user in scope.created and mine and default != mine[0]:
        return mine[0]
    if default not in now:
        return mine[0] if mine else sorted(now)[0]
    return default


def _user_operations(scope: Scope, outcome: Outcome, users: Mapping[str, UserRow],
                     arg_bytes: int) -> Tuple[Operation, ...]:
    """Cluster by cluster: associations added (accounts in configuration order, so a
    user new to the cluster gets the first of theirs as default), default accounts
    set, associations removed."""
    adds = outcome.changes.adds
    ops: List[Operation] = []
    for cluster in scope.clusters:
        defaults = _defaults(cluster, scope, outcome, users)
        added = [(a.name, adds.get((cluster, a.name), frozenset())) for a in scope.usable]
        moved = [(account, defaults.moves[account]) for account in sorted(defaults.moves, key=scope.rank)]
        ops += _batched(Kind.ADD_USERS, cluster, added, arg_bytes)
        ops += _batched(Kind.SET_DEFAULT, cluster, moved, arg_bytes)
        ops += _removals(cluster, scope, outcome.changes.removes, defaults.final, arg_bytes)
    return tuple(ops)


def _batched(kind: Kind, cluster: str, users: Iterable[Tuple[str, AbstractSet[str]]],
             arg_bytes: int) -> List[Operation]:
    """For each (account, users): one call per ``arg_bytes`` of sorted user names."""
    return [Operation(kind, cluster, account, tuple(chunk))
            for account, names in users for chunk in _chunks(sorted(names), arg_bytes)]


def _removals(cluster: str, scope: Scope, removes: Table, final: Mapping[str, str],
              arg_bytes: int) -> List[Operation]:
    """The associations removed on ``cluster``, accounts in configuration order."""
    ops: List[Operation] = []
    for account in sorted((a for c, a in removes if c == cluster), key=scope.rank):
        # slurmdbd refuses a removal mixing users for whom the account is the default with users for
        # whom it is not (its check carries "has another association" over from one user to the
        # next): one call for each kind.
        users = removes[(cluster, account)]
        default_here = frozenset(u for u in users if final.get(u) == account)
        ops += _batched(Kind.REMOVE_USERS, cluster, [(account, users - default_here), (account, default_here)],
                        arg_bytes)
    return ops


def _mark_new_users(operations: Iterable[Operation], existing: Iterable[str]) -> Tuple[Operation, ...]:
    """``operations``, each ADD_USERS naming the users it creates: those neither in
    Slurm nor added by an earlier call."""
    known = set(existing)
    marked: List[Operation] = []
    for op in operations:
        if op.kind == Kind.ADD_USERS:
            op = replace(op, new_users=tuple(u for u in op.users if u not in known))
            known.update(op.new_users)
        marked.append(op)
    return tuple(marked)


def _prunes(candidates: AbstractSet[str], current: Current, removes: Table) -> Prunes:
    """Managed accounts no longer wanted and left empty: removed on the reconciled
    clusters, and as a whole (``cluster=""``) when no other cluster has them."""
    found = [_prune(account, current, removes) for account in sorted(candidates)]
    return Prunes(tuple(op for p in found for op in p.operations), tuple(note for p in found for note in p.notes))


def _prune(account: str, current: Current, removes: Table) -> Prunes:
    rows = [r for r in current.assocs if r.account == account or (not r.user and r.parent == account)]
    on = sorted({r.cluster for r in rows if r.account == account and not r.user} & set(current.clusters))
    left = {cluster: _still_held(account, cluster, rows, removes) for cluster in on}
    notes = tuple(f"managed account {account} on {cluster} is kept: it still holds {', '.join(sorted(names))}"
                  for cluster, names in left.items() if names)
    empty = [cluster for cluster, names in left.items() if not names]
    elsewhere = {r.cluster for r in rows if r.account == account} - set(current.clusters)
    if empty and len(empty) == len(on) and not elsewhere:
        return Prunes((Operation(Kind.REMOVE_ACCOUNT, "", account),), notes)
    return Prunes(tuple(Operation(Kind.REMOVE_ACCOUNT, cluster, account) for cluster in empty), notes)


def _still_held(account: str, cluster: str, rows: Sequence[AssocRow], removes: Table) -> Set[str]:
    """The users ``account`` keeps on ``cluster`` once ``removes`` are made, and its sub-accounts there."""
    users = {r.user for r in rows if r.cluster == cluster and r.account == account and r.user}
    children = {r.account for r in rows if r.cluster == cluster and not r.user and r.parent == account}
    return (users - removes.get((cluster, account), frozenset())) | children


def _chunks(names: Sequence[str], limit: int) -> Iterator[List[str]]:
    """Names in order, in lists whose comma-joined length stays within ``limit`` bytes."""
    chunk: List[str] = []
    size = 0
    for name in names:
        cost = len(name.encode()) + (1 if chunk else 0)
        if chunk and size + cost > limit:
            yield chunk
            chunk, size, cost = [], 0, len(name.encode())
        chunk.append(name)
        size += cost
    if chunk:
        yield chunk


def shrink_problem(result: Plan, max_shrink: float) -> Optional[GuardError]:
    """The refusal of a plan that leaves more than ``max_shrink`` of the users holding
    managed associations without any, or all of them (the maps' guard, shrink.py, on
    the Slurm side); None when it may be applied."""
    before = len(result.managed_users)
    return shrink.problem("slurm-sync", "users", before, before - len(result.losing_users), max_shrink)


# --- sacctmgr ------------------------------------------------------------------------------------


# What sacctmgr may see of our environment: where slurm.conf is, and nothing secret
# (the IAM token may be in NSSCACHE_COREWEAVE_TOKEN).
SACCTMGR_ENV = ("PATH", "SLURM_CONF", "HOME", "LANG", "LC_ALL", "TZ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def sacctmgr_environment(environ: Mapping[str, str]) -> Dict[str, str]:
    """The cleaned environment sacctmgr runs with: SACCTMGR_ENV and SLURM_* only."""
    return {k: v for k, v in environ.items() if k in SACCTMGR_ENV or k.startswith("SLURM_")}


@dataclass
class Sacctmgr:
    """The one place that runs sacctmgr. ``reads`` and ``writes`` count the calls."""

    command: str = "sacctmgr"
    timeout: float = 600.0
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run
    reads: int = 0
    writes: int = 0
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def read(self, args: Sequence[str], step: str, fields: int) -> List[List[str]]:
        """``sacctmgr -n -P show ...`` as rows of exactly ``fields`` fields.

        ``-P`` escapes nothing: a ``|`` or a line break inside a name or a free-text
        field would shift or split a row, so such a listing is refused, never guessed
        at. :raises SlurmListingError:"""
        self.reads += 1
        out = self._call(["-n", "-P", *args], step)
        lines = out.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        rows = []
        for number, line in enumerate(lines, 1):
            row = line.split("|")
            if len(row) != fields:
                raise SlurmListingError(args[1], number, f"has {len(row)} fields, not {fields} (a '|' or a line "
                                                         f"break inside a name or a description)")
            if any(_CONTROL.search(f) for f in row):
                raise SlurmListingError(args[1], number, "holds a control character")
            rows.append(row)
        return rows

    def write(self, args: Sequence[str], step: str) -> str:
        self.writes += 1
        return self._call(["-i", *args], step)

    def argv(self, args: Sequence[str]) -> List[str]:
        return [self.command, "-i", *args]

    def _call(self, args: List[str], step: str) -> str:
        argv = [self.command, *args]
        try:
            result = self.run(argv, capture_output=True, encoding="utf-8", errors="replace", timeout=self.timeout,
                              stdin=subprocess.DEVNULL, env=sacctmgr_environment(self.environ))
        except FileNotFoundError:
            raise SlurmError(f"{step}: {self.command!r} not found: install slurm-client on this host or set "
                             f"coreweave_slurm_sacctmgr") from None
        except PermissionError:
            raise SlurmError(f"{step}: {self.command!r} is not executable") from None
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"{step}: sacctmgr did not answer within coreweave_slurm_timeout "
                                   f"({self.timeout:g} s): is slurmdbd overloaded?") from None
        text = " ".join(line.strip() for line in (result.stderr or "").splitlines() if line.strip())
        if result.returncode != 0 or " error: " in f" {text} ":
            detail = text or " ".join((result.stdout or "").split()) or f"exit status {result.returncode}"
            detail = detail[:1000]
            if _DENIED.search(detail):
                raise SlurmPermissionError(
                    f"{step}: slurmdbd refused (permission denied): run slurm-sync as root or SlurmUser, or as "
                    f"a Slurm administrator (sacctmgr: {detail})")
            if _UNAVAILABLE.search(detail):
                raise SlurmUnavailable(f"{step}: slurmdbd is unreachable (sacctmgr: {detail})")
            raise SlurmError(f"{step}: sacctmgr failed (exit status {result.returncode}): {detail}")
        return result.stdout or ""


def cluster_name_from_slurm_conf(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """ClusterName from slurm.conf ($SLURM_CONF, else /etc/slurm/slurm.conf), or None."""
    path = environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.split("#", 1)[0].strip().partition("=")
                if sep and key.strip().lower() == "clustername" and value.strip():
                    return value.strip().lower()
    except OSError:
        return None
    return None


def resolve_clusters(configured: Optional[Sequence[str]], known: Sequence[str],
                     environ: Mapping[str, str] = os.environ) -> Tuple[str, ...]:
    """coreweave_slurm_cluster, else every cluster slurmdbd knows, else ClusterName
    from slurm.conf; each must be registered in slurmdbd. :raises PlanError:"""
    if configured:
        clusters = tuple(configured)
    elif known:
        clusters = tuple(known)
    else:
        name = cluster_name_from_slurm_conf(environ)
        if not name:
            raise PlanError("slurmdbd knows no cluster and slurm.conf names none (ClusterName): set "
                            "coreweave_slurm_cluster")
        clusters = (name,)
    unknown = [c for c in clusters if c not in known]
    if unknown:
        raise PlanError(f"cluster {', '.join(unknown)} is not registered in slurmdbd (known: "
                        f"{', '.join(known) or 'none'}): start its slurmctld once, or `sacctmgr add cluster "
                        f"name={unknown[0]}`, or set coreweave_slurm_cluster")
    return clusters


def read(sacctmgr: Sacctmgr, configured_clusters: Optional[Sequence[str]],
         environ: Mapping[str, str] = os.environ) -> Current:
    """The current state, with 3 + (number of clusters) sacctmgr calls. :raises SlurmListingError:"""
    rows = sacctmgr.read(["show", "cluster", "format=cluster"], "reading clusters", 1)
    known = [name for name, in _unique(rows, "cluster", 1)]
    clusters = resolve_clusters(configured_clusters, known, environ)
    # No description: it is free text, and nothing here depends on it.
    rows = sacctmgr.read(["show", "account", "format=account,organization"], "reading accounts", 2)
    accounts = {name: AccountRow(name, organization) for name, organization in _unique(rows, "account", 1)}
    # Every cluster's: a user whose last association goes anywhere is deleted by slurmdbd.
    rows = sacctmgr.read(["show", "association", "format=cluster,account,user,partition,parentname"],
                         "reading associations", 5)
    assocs = tuple(AssocRow(*row) for row in _unique(rows, "association", 4))
    defaults: Dict[str, List[Tuple[str, str]]] = {}
    levels: Dict[str, str] = {}
    for cluster in clusters:
        rows = sacctmgr.read(["show", "user", f"cluster={cluster}", "format=user,defaultaccount,adminlevel"],
                             f"reading users of cluster {cluster}", 3)
        for name, default, level in _unique(rows, "user", 1):
            levels[name] = level
            if default:
                defaults.setdefault(name, []).append((cluster, default))
    users = {name: UserRow(name, level, tuple(defaults.get(name, ()))) for name, level in levels.items()}
    return Current(clusters, accounts, users, assocs)


def _unique(rows: List[List[str]], listing: str, key: int) -> List[List[str]]:
    """``rows``, refused when two share their first ``key`` fields or the first is empty
    (a forged line reuses a real name). :raises SlurmListingError:"""
    seen: Set[Tuple[str, ...]] = set()
    for number, row in enumerate(rows, 1):
        name = tuple(row[:key])
        if not name[0]:
            raise SlurmListingError(listing, number, "has an empty name")
        if name in seen:
            raise SlurmListingError(listing, number, f"repeats {'|'.join(name)!r} (a line break inside a name or "
                                                     f"a description forges rows)")
        seen.add(name)
    return rows


# --- the package's own record ----------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmState:
    """The Slurm users and accounts this package created."""

    users: FrozenSet[str] = frozenset()
    accounts: FrozenSet[str] = frozenset()


def load_state(state_dir: str) -> Optional[SlurmState]:
    """The record, or None when there is none yet. :raises SlurmStateError: when it
    cannot be read (never taken for empty: that would hand removals to nobody)."""
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return SlurmState(frozenset(str(u) for u in data["users"]), frozenset(str(a) for a in data["accounts"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SlurmStateError(path, f"cannot be read ({type(e).__name__})",
                              "Restore it from a backup (it lists the Slurm users and accounts this package "
                              "created); or move it aside and hand the accounts over with `nsscache-coreweave "
                              "slurm-sync --adopt-account ACCOUNT` (docs/slurm-sync.md)") from None


@dataclass(frozen=True)
class SlurmRun:
    """The last applied slurm-sync run, kept in the state file for ``status``."""

    time: float  # when it ended (time.time())
    operations: int  # sacctmgr calls
    conflicts: int
    managed_users: int
    kept_users: Tuple[str, ...] = ()  # whose last association was kept (not created by the package)

    @classmethod
    def from_dict(cls, data: object) -> Optional[SlurmRun]:
        """The run as the state file keeps it, or None when ``data`` is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(float(data["time"]), int(data["operations"]), int(data["conflicts"]),
                       int(data["managed_users"]), tuple(str(u) for u in data.get("kept_users") or ()))
        except (KeyError, TypeError, ValueError):
            return None

    def to_dict(self) -> dict:
        return {"time": self.time, "operations": self.operations, "conflicts": self.conflicts,
                "managed_users": self.managed_users, "kept_users": list(self.kept_users)}


def save_state(state_dir: str, recorded: SlurmState, last_run: Optional[SlurmRun] = None) -> None:
    """Atomically, mode 0600, with ``last_run`` (for ``status``). :raises OSError:"""
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    data = {"users": sorted(recorded.users), "accounts": sorted(recorded.accounts), "time": time.time(),
            "last_run": None if last_run is None else last_run.to_dict()}
    state.write_atomically(os.path.join(state_dir, STATE_FILE), json.dumps(data, indent=1, sort_keys=True), 0o600)


@contextlib.contextmanager
def _lock(state_dir: str):
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SlurmUnavailable(f"another slurm-sync is running ({os.path.join(state_dir, LOCK_FILE)} is "
                                   f"locked)") from None
        yield
    finally:
        os.close(fd)


# --- applying --------------------------------------------------------------------------------------


def apply(result: Plan, sacctmgr: Sacctmgr, recorded: SlurmState, save: Callable[[SlurmState], None]) -> SlurmState:
    """Run the plan's operations in order. The users and accounts a step creates are
    recorded before it runs (a run stopped right after it cannot lose them), and
    forgotten again if it fails without creating them. :raises SlurmError: naming the
    failed step."""
    total = len(result.operations)
    for number, op in enumerate(result.operations, 1):
        step = f"step {number} of {total} ({op})"
        log.info("coreweave: slurm: %s", step)
        if op.new_users or op.creates_account:
            recorded = SlurmState(recorded.users | set(op.new_users),
                                  recorded.accounts | ({op.account} if op.creates_account else set()))
            save(recorded)
        try:
            sacctmgr.write(op.args(), step)
        except SlurmError as e:
            if op.new_users or op.creates_account:
                recorded = _forget_uncreated(op, sacctmgr, recorded, save)
            if isinstance(e, (SlurmUnavailable, SlurmPermissionError)):
                raise
            raise SlurmStepError(f"{e}. The steps before it took effect; a rerun continues from there") from None
    return recorded


def _forget_uncreated(op: Operation, sacctmgr: Sacctmgr, recorded: SlurmState, save) -> SlurmState:
    """After a failed step: drop from the record what it was to create and does not
    exist (a later namesake made by hand is not ours). When slurmdbd cannot say,
    the record stays: the next run keeps only what exists."""
    try:
        users = {r[0] for r in sacctmgr.read(["show", "user", "format=user"], "re-reading users", 1)}
        accounts = {r[0] for r in sacctmgr.read(["show", "account", "format=account"], "re-reading accounts", 1)}
    except SlurmError:
        return recorded
    missing_users = set(op.new_users) - users
    missing_accounts = {op.account} - accounts if op.creates_account else set()
    if missing_users or missing_accounts:
        recorded = SlurmState(recorded.users - missing_users, recorded.accounts - missing_accounts)
        save(recorded)
    return recorded


def adopt(current: Current, names: Sequence[str], parent: str) -> None:
    """Check the accounts an administrator hands over. :raises PlanError:"""
    for name in names:
        if name in (ROOT, parent):
            raise PlanError(f"--adopt-account {name}: root and the parent account are never managed")
        if name not in current.accounts:
            raise PlanError(f"--adopt-account {name}: no such Slurm account")


def adoption_notes(current: Current, want: Wanted, names: Sequence[str], limits: List[List[str]]) -> List[str]:
    """What an adopted account brings with it: limits set by hand (kept: review them)
    and users outside its IAM groups (their associations go)."""
    members = {a.name: a.members for a in want.accounts}
    notes = []
    for name in names:
        extra = sorted({r.user for r in current.assocs if r.account == name and r.user}
                       - members.get(name, frozenset()) - {ROOT})
        if extra:
            notes.append(f"adopted account {name}: users not in its IAM groups lose their association: "
                         f"{', '.join(extra)}")
        for _, cluster, user, *values in (row for row in limits if row[0] == name):
            set_ = [f"{label}={value}" for label, value in zip(LIMITS, values) if value]
            if set_:
                notes.append(f"adopted account {name}: limits set before adoption are kept, review them: "
                             f"{' '.join(set_)} on cluster {cluster}{f' for user {user}' if user else ''}")
    return notes


def sync(directory, config, *, sacctmgr: Optional[Sacctmgr] = None, dry_run: bool = False,
         prune_accounts: bool = False, accept_shrink: bool = False, adopt_accounts: Sequence[str] = (),
         out=None, environ: Mapping[str, str] = os.environ) -> Plan:
    """Read, plan, guard and (unless ``dry_run``) apply; return the plan.

    ``--dry-run`` prints each sacctmgr command to ``out`` and changes nothing (not
    even the state file). :raises SlurmError, GuardError:"""
    settings = config.slurm
    sacctmgr = sacctmgr or Sacctmgr(settings.sacctmgr, settings.timeout, environ=environ)
    lock = contextlib.nullcontext() if dry_run else _lock(config.state_dir)
    with lock:
        loaded = load_state(config.state_dir)
        current = read(sacctmgr, settings.clusters, environ)
        if loaded is None and not adopt_accounts:
            _check_nothing_lost(config.state_dir, current)
        adopt(current, adopt_accounts, settings.parent_account)
        recorded = loaded or SlurmState()
        # Forget what no longer exists (removed by hand): a later namesake is not ours.
        recorded = SlurmState(recorded.users & set(current.users),
                              (recorded.accounts | set(adopt_accounts)) & set(current.accounts))
        want = wanted(directory, settings.accounts, config.allowed_groups)
        result = plan(want, current, parent=settings.parent_account, created_users=recorded.users,
                      managed_accounts=recorded.accounts, prune_accounts=prune_accounts)
        if adopt_accounts:
            limits = sacctmgr.read(["show", "association", "where", f"account={','.join(adopt_accounts)}",
                                    "format=account,cluster,user," + ",".join(LIMITS)],
                                   "reading the adopted accounts' limits", 3 + len(LIMITS))
            notes = adoption_notes(current, want, adopt_accounts, limits)
            result = replace(result, notes=tuple(notes) + result.notes)
        _guard(result, config.max_shrink, accept_shrink)
        if dry_run:
            for op in result.operations:
                print(shlex.join(sacctmgr.argv(op.args())), file=out)
            log.info("coreweave: slurm: dry run, nothing changed: %s", summary(result))
            return result
        previous = last_run_of(config.state_dir)  # kept for status until this run ends

        def save(state: SlurmState) -> None:
            save_state(config.state_dir, state, previous)

        save(recorded)  # adopted accounts, before anything changes
        recorded = apply(result, sacctmgr, recorded, save)
        save_state(config.state_dir, SlurmState(recorded.users - result.deleted_users, recorded.accounts),
                   last_run=_last_run(result))
        log.info("coreweave: slurm: %s", ("applied " if result.operations else "in sync: ") + summary(result))
        return result


def _check_nothing_lost(state_dir: str, current: Current) -> None:
    """No record: fine on a first run; lost if slurmdbd holds accounts labelled as ours.
    :raises SlurmStateError:"""
    labelled = sorted(n for n, row in current.accounts.items() if row.organization == MARKER and n != ROOT)
    if labelled:
        adopt_all = " ".join(f"--adopt-account {n}" for n in labelled)
        raise SlurmStateError(
            os.path.join(state_dir, STATE_FILE),
            f"is missing, yet slurmdbd holds accounts labelled {MARKER} ({', '.join(labelled)}): the record of "
            f"what this package created is lost",
            f"Restore it from a backup; or hand over the accounts you trust this package to manage "
            f"(`nsscache-coreweave slurm-sync {adopt_all}`: users it created before then count as hand-made, "
            f"their last association is kept and reported)")


def _guard(result: Plan, max_shrink: float, accept_shrink: bool) -> None:
    """Log the plan's notes and conflicts; refuse a large shrink unless accepted. :raises GuardError:"""
    for note in result.notes:
        log.info("coreweave: slurm: %s", note)
    for conflict in result.conflicts:
        log.error("coreweave: slurm: %s", conflict)
    shrink.enforce(shrink_problem(result, max_shrink), accept=accept_shrink)


def _last_run(result: Plan) -> SlurmRun:
    """What ``status`` shows of the last applied run."""
    return SlurmRun(time=time.time(), operations=len(result.operations), conflicts=len(result.conflicts),
                    managed_users=len(result.managed_users), kept_users=tuple(sorted(result.kept_users)))


def last_run_of(state_dir: str) -> Optional[SlurmRun]:
    """The last applied run recorded in the state file, or None."""
    try:
        with open(os.path.join(state_dir, STATE_FILE), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return SlurmRun.from_dict(data.get("last_run")) if isinstance(data, dict) else None


def summary(result: Plan) -> str:
    """The run's one-line summary: calls by kind, and the users whose last association is kept."""
    kinds: Dict[str, int] = {}
    for op in result.operations:
        kinds[op.kind] = kinds.get(op.kind, 0) + (len(op.users) or 1)
    parts = [f"{kind}: {n}" for kind, n in kinds.items()]
    text = f"{len(result.operations)} sacctmgr call(s)" + (f" ({'; '.join(parts)})" if parts else "")
    text += f", {len(result.managed_users)} managed users"
    if result.kept_users:
        text += (f"; last association kept (not created by {MARKER}) for {len(result.kept_users)} user(s): "
                 f"{', '.join(sorted(result.kept_users))}")
    return text
