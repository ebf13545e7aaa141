"""slurm: planning from (what IAM wants, what slurmdbd holds) to sacctmgr operations,
every ownership rule, the shrink guard, batching, the sacctmgr runner's error
classification, the state file, and the coreweave_slurm_* keys. No sacctmgr runs
here (tests/slurm has the real slurmdbd)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from types import SimpleNamespace
from typing import Dict, Iterable, Optional, Sequence

import pytest

from nss_cache_coreweave import config as config_mod
from nss_cache_coreweave import slurm
from nss_cache_coreweave.errors import ConfigError, GuardError
from nss_cache_coreweave.policy import Directory, PosixGroup
from nss_cache_coreweave.slurm import (
    ADD_ACCOUNT,
    ADD_USERS,
    MARKER,
    REMOVE_ACCOUNT,
    REMOVE_USERS,
    SET_DEFAULT,
    SET_PARENT,
    AccountRow,
    AssocRow,
    Current,
    Operation,
    PlanError,
    Sacctmgr,
    SlurmError,
    SlurmPermissionError,
    SlurmState,
    SlurmStepError,
    SlurmUnavailable,
    UserRow,
    Wanted,
    WantedAccount,
)

C1, C2 = "c1", "c2"


# --- builders ---------------------------------------------------------------------------------------


def want(*accounts) -> Wanted:
    """want(("ml", ["alice", "bob"]), ("hpc", ["bob"])): accounts in configuration order."""
    return Wanted(tuple(WantedAccount(name, (name,), frozenset(members)) for name, members in accounts))


def current(members: Dict[str, Iterable[str]] = None, *, orgs: Dict[str, str] = None,
            defaults: Dict[str, str] = None, admins: Sequence[str] = (), clusters=(C1,),
            parents: Dict[str, str] = None, other_clusters: Dict[str, Dict[str, Iterable[str]]] = None,
            partition_only: Sequence[tuple] = ()) -> Current:
    """A slurmdbd holding ``members`` (account -> users) on every cluster in ``clusters``.
    Accounts are labelled MARKER unless ``orgs`` says otherwise; root/root always exists."""
    members = dict(members or {})
    orgs = dict(orgs or {})
    accounts = {"root": AccountRow("root", "root")}
    for name in members:
        accounts[name] = AccountRow(name, orgs.get(name, MARKER))
    assocs = []
    everywhere = {c: members for c in clusters}
    everywhere.update(other_clusters or {})
    for cluster, per_account in everywhere.items():
        assocs += [AssocRow(cluster, "root", "", "", ""), AssocRow(cluster, "root", "root", "", "")]
        for name, users in per_account.items():
            accounts.setdefault(name, AccountRow(name, orgs.get(name, MARKER)))
            assocs.append(AssocRow(cluster, name, "", "", (parents or {}).get(name, "root")))
            assocs += [AssocRow(cluster, name, u, "", "") for u in sorted(users)]
    for cluster, name, user, partition in partition_only:
        assocs.append(AssocRow(cluster, name, user, partition, ""))
    return Current(tuple(clusters), accounts, users_of(everywhere, members, admins, defaults or {}), tuple(assocs))


def users_of(everywhere: Dict[str, Dict[str, Iterable[str]]], members: Dict[str, Iterable[str]],
             admins: Sequence[str], defaults: Dict[str, str]) -> Dict[str, UserRow]:
    """current()'s users: root, and each user of ``everywhere`` (cluster -> account -> users) with
    their default account on every cluster: ``defaults``, else the first account of ``members``
    holding them."""
    users = {"root": UserRow("root", "Administrator", tuple((c, "root") for c in everywhere))}
    names = dict.fromkeys(u for per_account in everywhere.values() for users_ in per_account.values() for u in users_)
    for user in names:
        if user == "root":
            continue
        level = "Administrator" if user in admins else "None"
        mine = defaults.get(user)
        if mine is None:  # first account holding the user
            mine = next((a for a, us in members.items() if user in us), "")
        users[user] = UserRow(user, level, tuple((c, mine) for c in everywhere if mine))
    return users


def plan(wanted_: Wanted, cur: Current, **options) -> slurm.Plan:
    """slurm.plan, with the package's record holding every account labelled MARKER
    (what it created) unless ``managed_accounts`` says otherwise."""
    options.setdefault("managed_accounts", {n for n, row in cur.accounts.items() if row.organization == MARKER})
    return slurm.plan(wanted_, cur, **options)


def ops_of(result, kind=None):
    return [(op.kind, op.cluster, op.account, op.users) for op in result.operations if kind in (None, op.kind)]


def apply_in_memory(cur: Current, result) -> Current:
    """What slurmdbd would hold after the plan (enough for idempotency checks)."""
    assocs = list(cur.assocs)
    accounts = dict(cur.accounts)
    users = dict(cur.users)
    for op in result.operations:
        if op.kind in (ADD_USERS, SET_DEFAULT, REMOVE_USERS):
            assocs = _apply_user_op(op, assocs, users)
        else:
            assocs = _apply_account_op(op, assocs, accounts)
    return Current(cur.clusters, accounts, users, tuple(assocs))


def _apply_user_op(op, assocs: list, users: dict) -> list:
    """apply_in_memory's ADD_USERS, SET_DEFAULT and REMOVE_USERS: updates ``users``, returns the associations."""
    if op.kind == ADD_USERS:
        for u in op.users:
            had = any(r.user == u and r.cluster == op.cluster for r in assocs)
            assocs.append(AssocRow(op.cluster, op.account, u, "", ""))
            row = users.get(u, UserRow(u, "None"))
            if not had:
                row = UserRow(u, row.admin_level, tuple(d for d in row.defaults if d[0] != op.cluster)
                              + ((op.cluster, op.account),))
            users[u] = row
    elif op.kind == SET_DEFAULT:
        for u in op.users:
            row = users[u]
            users[u] = UserRow(u, row.admin_level,
                               tuple(d for d in row.defaults if d[0] != op.cluster) + ((op.cluster, op.account),))
    elif op.kind == REMOVE_USERS:
        assocs = [r for r in assocs if not (r.cluster == op.cluster and r.account == op.account
                                            and r.user in op.users)]
        for u in op.users:
            if not any(r.user == u for r in assocs):
                users.pop(u, None)
    return assocs


def _apply_account_op(op, assocs: list, accounts: dict) -> list:
    """apply_in_memory's ADD_ACCOUNT, REMOVE_ACCOUNT and SET_PARENT: updates ``accounts``, returns the associations."""
    if op.kind == ADD_ACCOUNT:
        accounts.setdefault(op.account, AccountRow(op.account, MARKER))
        assocs.append(AssocRow(op.cluster, op.account, "", "", op.parent))
    elif op.kind == REMOVE_ACCOUNT:
        clusters = [op.cluster] if op.cluster else sorted({r.cluster for r in assocs})
        assocs = [r for r in assocs if not (r.account == op.account and r.cluster in clusters)]
        if not op.cluster:
            accounts.pop(op.account)
    elif op.kind == SET_PARENT:
        assocs = [AssocRow(r.cluster, r.account, r.user, r.partition, op.parent)
                  if (r.cluster, r.account, r.user) == (op.cluster, op.account, "") else r for r in assocs]
    return assocs


# --- planning -----------------------------------------------------------------------------------------


def test_an_empty_slurm_gets_accounts_then_users_in_configuration_order():
    result = plan(want(("ml", ["alice", "bob"]), ("hpc", ["bob", "dave"])), current(), parent="root")

    assert ops_of(result) == [
        (ADD_ACCOUNT, C1, "ml", ()),
        (ADD_ACCOUNT, C1, "hpc", ()),
        (ADD_USERS, C1, "ml", ("alice", "bob")),
        (ADD_USERS, C1, "hpc", ("bob", "dave")),
    ]
    # bob's first association is ml: slurmdbd makes it his default, so no modify is needed.
    assert [op.new_users for op in result.operations if op.kind == ADD_USERS] == [("alice", "bob"), ("dave",)]
    assert result.new_users == {"alice", "bob", "dave"}
    first = result.operations[0]
    assert first.args() == ["add", "account", "name=ml", "cluster=c1", "parent=root", f"organization={MARKER}",
                            "description=coreweave iam group ml"]
    assert first.creates_account
    assert result.operations[2].args() == ["add", "user", "name=alice,bob", "account=ml", "cluster=c1"]
    assert result.conflicts == () and result.managed_users == frozenset()


def test_a_second_plan_is_empty():
    wanted_ = want(("ml", ["alice", "bob"]), ("hpc", ["bob", "dave"]))
    first = plan(wanted_, current(), parent="root")
    after = apply_in_memory(current(), first)

    again = plan(wanted_, after, parent="root", created_users=first.new_users)

    assert again.operations == ()
    assert again.losing_users == frozenset() and again.conflicts == ()


def test_a_hand_made_account_is_never_filled_modified_or_emptied():
    cur = current({"hpc": ["zed"], "lab": ["frank"]}, orgs={"hpc": "physics", "lab": "physics"})

    result = plan(want(("hpc", ["bob"]), ("ml", ["alice"])), cur, parent="root")

    assert all(op.account not in ("hpc", "lab") for op in result.operations)
    assert ops_of(result) == [(ADD_ACCOUNT, C1, "ml", ()), (ADD_USERS, C1, "ml", ("alice",))]
    assert len(result.conflicts) == 1
    assert "account 'hpc' (from group hpc) exists and was not created by nsscache-coreweave (organization " \
           "'physics'" in result.conflicts[0]
    assert "nsscache-coreweave slurm-sync --adopt-account hpc" in result.conflicts[0]


def test_an_account_labelled_by_hand_is_not_managed():
    # A coordinator can set any organization, ours included: only the record makes an account ours.
    cur = current({"hpc": ["zed"], "lab": ["frank"]})  # both labelled MARKER

    result = plan(want(("hpc", ["bob"])), cur, parent="root", created_users={"zed", "frank"},
                  managed_accounts=(), prune_accounts=True)

    assert result.operations == ()
    assert "account 'hpc' (from group hpc) exists and was not created by nsscache-coreweave" in result.conflicts[0]
    assert result.managed_users == frozenset()


def test_an_account_in_the_record_is_managed_whatever_its_label():
    # A coordinator relabelling a managed account does not hide it: zed still leaves.
    cur = current({"hpc": ["zed"]}, orgs={"hpc": "physics"})

    result = plan(want(("hpc", ["bob"])), cur, parent="root", created_users={"zed"}, managed_accounts={"hpc"})

    assert ops_of(result) == [(ADD_USERS, C1, "hpc", ("bob",)), (REMOVE_USERS, C1, "hpc", ("zed",))]


@pytest.mark.parametrize("name", ["root", "top"])
def test_root_and_the_parent_account_are_never_managed(name):
    cur = current({"top": []}, orgs={"top": MARKER})

    result = plan(want((name, ["alice"])), cur, parent="top")

    assert result.operations == ()
    assert "is root or the parent account" in result.conflicts[0]


def test_root_and_administrators_are_left_alone():
    cur = current({"ml": ["ops", "alice"], "lab": ["boss"]}, orgs={"lab": "physics"}, admins=("ops", "boss"))

    # ops leaves ml, boss and root are IAM members: nothing happens to any of them.
    result = plan(want(("ml", ["alice", "boss", "root"])), cur, parent="root", created_users={"ops"})

    assert result.operations == ()
    assert result.notes == ("boss, root: root or a Slurm administrator, left alone (account ml)",)
    assert "ops" not in result.managed_users


def test_leaving_a_group_removes_only_managed_associations():
    cur = current({"ml": ["alice", "bob"], "hpc": ["bob"], "lab": ["bob"]}, orgs={"lab": "physics"},
                  defaults={"bob": "ml"})

    result = plan(want(("ml", ["alice"]), ("hpc", ["bob"])), cur, parent="root",
                        created_users={"alice", "bob"})

    # bob's default (ml) goes: it moves to his first remaining wanted account first.
    assert ops_of(result) == [(SET_DEFAULT, C1, "hpc", ("bob",)), (REMOVE_USERS, C1, "ml", ("bob",))]
    assert result.operations[0].args() == ["modify", "user", "where", "name=bob", "cluster=c1", "set",
                                           "defaultaccount=hpc"]
    assert result.operations[1].args() == ["remove", "user", "where", "name=bob", "account=ml", "cluster=c1"]
    assert result.losing_users == frozenset() and result.deleted_users == frozenset()


def test_a_created_user_without_associations_is_deleted_with_its_last_one():
    cur = current({"ml": ["alice", "carol"]})

    result = plan(want(("ml", ["alice"])), cur, parent="root", created_users={"alice", "carol"})

    assert ops_of(result) == [(REMOVE_USERS, C1, "ml", ("carol",))]
    assert result.deleted_users == {"carol"}
    assert result.losing_users == {"carol"}


def test_the_last_association_of_a_user_it_did_not_create_is_kept():
    cur = current({"ml": ["alice", "dave", "frank"], "lab": ["frank"]}, orgs={"lab": "physics"})

    result = plan(want(("ml", ["alice"])), cur, parent="root", created_users={"alice"})

    # dave: only ml, not ours -> kept (slurmdbd would delete him); frank also holds lab -> removed,
    # his default moving to lab first.
    assert ops_of(result) == [(SET_DEFAULT, C1, "lab", ("frank",)), (REMOVE_USERS, C1, "ml", ("frank",))]
    assert any(n.startswith("dave: not created by nsscache-coreweave; its last association is kept")
               for n in result.notes)
    assert result.deleted_users == frozenset()


def test_default_accounts_follow_configuration_order_only_for_created_users():
    # alice (created) and erin (hand-made) are in ml and hpc with hpc as default; ml comes first.
    cur = current({"ml": ["alice", "erin"], "hpc": ["alice", "erin"]}, defaults={"alice": "hpc", "erin": "hpc"})

    result = plan(want(("ml", ["alice", "erin"]), ("hpc", ["alice", "erin"])), cur, parent="root",
                        created_users={"alice"})

    assert ops_of(result) == [(SET_DEFAULT, C1, "ml", ("alice",))]


def test_an_existing_user_new_to_the_accounts_keeps_its_default():
    cur = current({"lab": ["erin"]}, orgs={"lab": "physics"})

    result = plan(want(("ml", ["erin"])), cur, parent="root")

    assert ops_of(result) == [(ADD_ACCOUNT, C1, "ml", ()), (ADD_USERS, C1, "ml", ("erin",))]
    assert result.new_users == frozenset()


def test_a_missing_default_is_repaired():
    cur = current({"ml": ["alice"]}, defaults={"alice": ""})

    result = plan(want(("ml", ["alice"])), cur, parent="root", created_users={"alice"})

    assert ops_of(result) == [(SET_DEFAULT, C1, "ml", ("alice",))]


def test_removals_for_which_the_account_is_the_default_go_in_their_own_call():
    # slurmdbd refuses one call removing bob (ml not his default) and dave (ml his default, his last).
    cur = current({"ml": ["bob", "dave"], "hpc": ["bob"]}, defaults={"bob": "hpc", "dave": "ml"})

    result = plan(want(("hpc", ["bob"])), cur, parent="root", created_users={"bob", "dave"})

    assert ops_of(result, REMOVE_USERS) == [(REMOVE_USERS, C1, "ml", ("bob",)), (REMOVE_USERS, C1, "ml", ("dave",))]


def test_empty_managed_accounts_are_kept_unless_pruned():
    cur = current({"ml": ["alice"], "old": ["bob"], "busy": ["carol"], "parent": []},
                  parents={"sub": "parent"}, other_clusters=None)
    cur = Current(cur.clusters, {**cur.accounts, "sub": AccountRow("sub", "physics")},
                  cur.users, cur.assocs + (AssocRow(C1, "sub", "", "", "parent"),))
    wanted_ = want(("ml", ["alice"]))

    kept = plan(wanted_, cur, parent="root", created_users={"bob"}, prune_accounts=False)
    pruned = plan(wanted_, cur, parent="root", created_users={"bob"}, prune_accounts=True)

    assert ops_of(kept, REMOVE_ACCOUNT) == []
    # old empties now -> removed; busy keeps carol (not ours, her last) -> kept; parent has a sub-account.
    assert ops_of(pruned, REMOVE_ACCOUNT) == [(REMOVE_ACCOUNT, "", "old", ())]
    assert pruned.operations[-1].args() == ["remove", "account", "where", "name=old"]
    assert any("managed account busy on c1 is kept: it still holds carol" in n for n in pruned.notes)
    assert any("managed account parent on c1 is kept: it still holds sub" in n for n in pruned.notes)


def test_an_account_also_on_an_unreconciled_cluster_is_pruned_on_ours_only():
    cur = current({"old": []}, other_clusters={"far": {"old": ["zed"]}})

    result = plan(want(), cur, parent="root", prune_accounts=True)

    assert ops_of(result) == [(REMOVE_ACCOUNT, C1, "old", ())]
    assert result.operations[0].args() == ["remove", "account", "where", "name=old", "cluster=c1"]


def test_a_managed_account_under_another_parent_is_moved():
    cur = current({"ml": ["alice"], "top": []}, orgs={"top": "site"}, parents={"ml": "root"})

    result = plan(want(("ml", ["alice"])), cur, parent="top")

    assert ops_of(result) == [(SET_PARENT, C1, "ml", ())]
    assert result.operations[0].args() == ["modify", "account", "where", "name=ml", "cluster=c1", "set",
                                           "parent=top"]


def test_a_missing_parent_account_stops_the_plan():
    with pytest.raises(PlanError, match="coreweave_slurm_parent_account 'top' does not exist on cluster 'c1'"):
        plan(want(("ml", ["alice"])), current(), parent="top")


def test_every_cluster_gets_the_same_accounts_and_users_are_created_once():
    cur = current(clusters=(C1, C2))

    result = plan(want(("ml", ["alice"])), cur, parent="root")

    assert ops_of(result) == [(ADD_ACCOUNT, C1, "ml", ()), (ADD_ACCOUNT, C2, "ml", ()),
                              (ADD_USERS, C1, "ml", ("alice",)), (ADD_USERS, C2, "ml", ("alice",))]
    assert [op.creates_account for op in result.operations[:2]] == [True, True]
    assert [op.new_users for op in result.operations[2:]] == [("alice",), ()]


def test_a_partition_only_association_gets_the_general_one():
    cur = current({"ml": []}, partition_only=[(C1, "ml", "alice", "gpu")])
    cur = Current(cur.clusters, cur.accounts, {**cur.users, "alice": UserRow("alice", "None", ((C1, "ml"),))},
                  cur.assocs)

    result = plan(want(("ml", ["alice"])), cur, parent="root")

    assert ops_of(result) == [(ADD_USERS, C1, "ml", ("alice",))]


def test_calls_grow_with_accounts_not_users():
    members = [f"user{i:05d}" for i in range(10_000)]
    wanted_ = want(*((f"acct{k}", members[k::5]) for k in range(5)))

    result = plan(wanted_, current(), parent="root")

    assert len(result.operations) == 5 + 5  # accounts, then one add per account
    assert sum(len(op.users) for op in result.operations) == 10_000


def test_names_are_batched_by_bytes():
    members = [f"user{i:05d}" for i in range(100)]  # 9 bytes each, 10 with the comma

    result = plan(want(("ml", members)), current(), parent="root", arg_bytes=99)

    adds = [op for op in result.operations if op.kind == ADD_USERS]
    assert [len(op.users) for op in adds] == [10] * 10
    assert all(len(",".join(op.users)) <= 99 for op in adds)
    assert [u for op in adds for u in op.users] == members
    assert adds[0].args()[:3] == ["add", "user", "name=" + ",".join(members[:10])]


@pytest.mark.parametrize("op, argv", [
    (Operation(ADD_ACCOUNT, C1, "where", parent="set", description="coreweave iam group where"),
     ["add", "account", "name=where", "cluster=c1", "parent=set", f"organization={MARKER}",
      "description=coreweave iam group where"]),
    (Operation(SET_PARENT, C1, "set", parent="where"),
     ["modify", "account", "where", "name=set", "cluster=c1", "set", "parent=where"]),
    (Operation(ADD_USERS, C1, "set", ("set", "where", "withassoc")),
     ["add", "user", "name=set,where,withassoc", "account=set", "cluster=c1"]),
    (Operation(SET_DEFAULT, C1, "where", ("set", "where")),
     ["modify", "user", "where", "name=set,where", "cluster=c1", "set", "defaultaccount=where"]),
    (Operation(REMOVE_USERS, C1, "where", ("set", "where")),
     ["remove", "user", "where", "name=set,where", "account=where", "cluster=c1"]),
    (Operation(REMOVE_ACCOUNT, C1, "set"), ["remove", "account", "where", "name=set", "cluster=c1"]),
    (Operation(REMOVE_ACCOUNT, "", "where"), ["remove", "account", "where", "name=where"]),
], ids=lambda v: v.kind if isinstance(v, Operation) else "")
def test_names_that_are_sacctmgr_keywords_are_passed_as_values(op, argv):
    # A bare `where` or `set` would be taken for sacctmgr's keyword (`add account where` fails).
    assert op.args() == argv


# --- planning stages -----------------------------------------------------------------------------------


def test_an_operation_kind_reads_as_the_words_of_the_log_and_the_summary():
    assert [str(kind) for kind in slurm.Kind] == ["add account", "set parent", "add users", "set default account",
                                                  "remove associations", "remove account"]
    op = Operation(slurm.Kind.ADD_USERS, C1, "ml", ("alice", "bob"))
    assert (f"{op.kind}", str(op)) == ("add users", "add users ml 2 user(s) on cluster c1")
    assert str(Operation(SET_PARENT, "", "ml", parent="top")) == "set parent ml -> top on every cluster"
    assert slurm.Kind("remove associations") is REMOVE_USERS


def test_the_scope_is_the_record_less_root_the_parent_and_administrators():
    cur = current({"ml": ["alice", "ops"], "lab": ["bob"], "top": []}, orgs={"lab": "physics"}, admins=("ops",))

    scope = slurm._scope(want(("ml", ["alice", "ops"]), ("lab", ["bob"]), ("new", ["carol"])), cur, "top",
                         created_users=["alice", "gone"], managed_accounts=["ml", "top", "root", "vanished"])

    assert (scope.managed, scope.protected, scope.created) == ({"ml"}, {"root", "ops"}, {"alice", "gone"})
    assert [a.name for a in scope.usable] == ["ml", "new"]
    assert len(scope.conflicts) == 1
    assert scope.conflicts[0].startswith("account 'lab' (from group lab) exists and was not created by")
    assert scope.notes == ("ops: root or a Slurm administrator, left alone (account ml)",)
    assert sorted(["zzz", "new", "lab", "ml", "aaa"], key=scope.rank) == ["ml", "lab", "new", "aaa", "zzz"]
    assert scope.accounts_of("carol") == ["new"]


def test_holdings_cover_every_cluster_and_partition_and_a_cluster_view_tells_them_apart():
    cur = current({"ml": ["alice"]}, other_clusters={"far": {"ml": ["bob"]}},
                  partition_only=[(C1, "ml", "bob", "gpu")])

    assert slurm._holdings(cur) == {"root": {(C1, "root"), ("far", "root")}, "alice": {(C1, "ml")},
                                    "bob": {("far", "ml"), (C1, "ml")}}
    holds = slurm._cluster_holds(C1, cur)
    assert holds.parents == {"root": "", "ml": "root"}
    assert holds.general == {"root": {"root"}, "ml": {"alice"}}
    assert holds.anywhere == {"root": {"root"}, "ml": {"alice", "bob"}}


def test_a_cluster_s_changes_create_move_add_and_remove():
    cur = current({"ml": ["alice", "zed", "ops"], "hpc": [], "top": []}, parents={"ml": "top"}, admins=("ops",),
                  partition_only=[(C1, "hpc", "bob", "gpu")])
    scope = slurm._scope(want(("ml", ["alice", "bob"]), ("hpc", ["bob"]), ("new", ["carol", "ops"])), cur, "top",
                         created_users=(), managed_accounts=("ml", "hpc"))

    changes = slurm._cluster_changes(slurm._cluster_holds(C1, cur), scope, cur.accounts)

    # ml is under top already; hpc moves there; new is created. bob's partition-only association
    # in hpc is not the general one: he gets it. zed holds ml without being a member; ops is an administrator.
    assert [(op.kind, op.account, op.parent, op.creates_account) for op in changes.accounts] == [
        (SET_PARENT, "hpc", "top", False), (ADD_ACCOUNT, "new", "top", True)]
    assert changes.adds == {(C1, "ml"): {"bob"}, (C1, "hpc"): {"bob"}, (C1, "new"): {"carol"}}
    assert changes.removes == {(C1, "ml"): {"zed"}}


def test_the_outcome_keeps_every_association_of_a_hand_made_user_who_would_lose_them_all():
    cur = current({"ml": ["dave", "carol", "erin"], "hpc": ["dave"], "lab": ["erin"]}, orgs={"lab": "physics"})
    proposed = slurm.Changes(adds={(C1, "hpc"): frozenset({"alice"})},
                             removes={(C1, "ml"): frozenset({"dave", "carol", "erin"}),
                                      (C1, "hpc"): frozenset({"dave"})})

    outcome = slurm._outcome(slurm._holdings(cur), proposed, created=frozenset({"carol"}))

    # dave (hand-made) would be left with nothing: slurmdbd would delete him. carol was created by the
    # package; erin keeps lab.
    assert outcome.kept == {"dave"}
    assert outcome.changes.removes == {(C1, "ml"): {"carol", "erin"}}
    assert outcome.changes.adds == proposed.adds
    assert [outcome.after(u) for u in ("dave", "carol", "erin", "alice")] == [
        {(C1, "ml"), (C1, "hpc")}, set(), {(C1, "lab")}, {(C1, "hpc")}]


def test_fates_name_who_loses_every_managed_association_and_who_slurmdbd_deletes():
    cur = current({"ml": ["alice", "carol", "erin"], "lab": ["erin"]}, orgs={"lab": "physics"})
    scope = slurm._scope(want(("ml", ["alice"])), cur, "root", created_users=("carol", "erin"),
                         managed_accounts=("ml",))
    outcome = slurm._outcome(slurm._holdings(cur), slurm._changes(cur, scope), scope.created)

    fates = slurm._fates(cur, scope, outcome)

    # erin keeps lab (hand-made): she loses every managed association but is not deleted.
    assert fates == slurm.Fates(managed={"alice", "carol", "erin"}, losing={"carol", "erin"}, deleted={"carol"})


def test_defaults_follow_configuration_order_for_created_users_and_leave_a_removed_association():
    # alice (created) has hpc as default but ml comes first; frank (hand-made) loses ml, his default, and
    # keeps lab; erin is new to the cluster: her first added account (ml) becomes her default by itself.
    cur = current({"ml": ["alice", "frank"], "hpc": ["alice"], "lab": ["frank"]}, orgs={"lab": "physics"},
                  defaults={"alice": "hpc", "frank": "ml"})
    scope = slurm._scope(want(("ml", ["alice", "erin"]), ("hpc", ["alice", "erin"])), cur, "root",
                         created_users=("alice",), managed_accounts=("ml", "hpc"))
    outcome = slurm._outcome(slurm._holdings(cur), slurm._changes(cur, scope), scope.created)

    defaults = slurm._defaults(C1, scope, outcome, cur.users)

    assert defaults.moves == {"ml": {"alice"}, "lab": {"frank"}}
    assert defaults.final == {"alice": "ml", "erin": "ml", "frank": "lab"}


def test_removals_put_the_users_whose_default_the_account_stays_in_their_own_call():
    scope = slurm._scope(want(("hpc", []), ("ml", [])), current(), "root", created_users=(), managed_accounts=())
    removes = {(C1, "ml"): {"bob", "dave", "zed"}, (C1, "hpc"): {"bob"}, (C2, "ml"): {"other"}}

    ops = slurm._removals(C1, scope, removes, final={"dave": "ml", "zed": "ml", "bob": "hpc"}, arg_bytes=3)

    # Accounts in configuration order; "dave" alone exceeds 3 bytes: one name per call.
    assert ops_of(SimpleNamespace(operations=ops)) == [
        (REMOVE_USERS, C1, "hpc", ("bob",)), (REMOVE_USERS, C1, "ml", ("bob",)),
        (REMOVE_USERS, C1, "ml", ("dave",)), (REMOVE_USERS, C1, "ml", ("zed",))]


def test_the_first_call_adding_a_user_unknown_to_slurm_creates_it():
    ops = (Operation(ADD_ACCOUNT, C1, "ml", parent="root"), Operation(ADD_USERS, C1, "ml", ("alice", "bob")),
           Operation(ADD_USERS, C2, "ml", ("alice", "carol")), Operation(REMOVE_USERS, C1, "hpc", ("dave",)))

    marked = slurm._mark_new_users(ops, existing={"bob"})

    assert [op.new_users for op in marked] == [(), ("alice",), ("carol",), ()]
    assert [(op.kind, op.cluster, op.account, op.users) for op in marked] == ops_of(SimpleNamespace(operations=ops))


def test_prunes_come_with_the_notes_of_the_accounts_kept():
    cur = current({"old": [], "busy": ["carol", "dan"]})

    prunes = slurm._prunes({"old", "busy"}, cur, {(C1, "busy"): frozenset({"carol"})})

    assert prunes == slurm.Prunes((Operation(REMOVE_ACCOUNT, "", "old"),),
                                  ("managed account busy on c1 is kept: it still holds dan",))


def test_chunks_keep_the_order_and_count_bytes():
    assert list(slurm._chunks(["ab", "cd", "ef", "toolong", "g"], 5)) == [["ab", "cd"], ["ef"], ["toolong"], ["g"]]
    assert list(slurm._chunks(["é", "x"], 3)) == [["é"], ["x"]]  # 2 bytes + "," + 1 byte > 3
    assert list(slurm._chunks([], 5)) == []


# --- the shrink guard --------------------------------------------------------------------------------


def test_shrink_guard_counts_users_leaving_every_managed_account():
    cur = current({"ml": ["a", "b", "c", "d"]})

    small = plan(want(("ml", ["a", "b", "c"])), cur, parent="root", created_users="abcd")
    large = plan(want(("ml", ["a", "b"])), cur, parent="root", created_users="abcd")
    everyone = plan(want(), cur, parent="root", created_users="abcd")

    assert slurm.shrink_problem(small, 0.25) is None
    refusal = slurm.shrink_problem(large, 0.25)
    assert (refusal.what, refusal.before, refusal.now, refusal.max_shrink, refusal.command) == (
        "users", 4, 2, 0.25, "slurm-sync")
    assert str(refusal).startswith(
        "refusing to remove 2 of 4 users from every managed Slurm account (-50%, more than coreweave_max_shrink 25%)")
    # Emptying every managed account is refused even with the ratio guard off.
    emptied = slurm.shrink_problem(everyone, 1.0)
    assert (emptied.before, emptied.now, emptied.max_shrink) == (4, 0, 1.0)
    assert str(emptied).startswith("refusing to remove all 4 users from every managed Slurm account")
    assert slurm.shrink_problem(plan(want(("ml", ["a"])), current(), parent="root"), 0.0) is None


def test_moving_between_managed_accounts_is_not_a_shrink():
    cur = current({"ml": ["a", "b"], "hpc": []})

    result = plan(want(("ml", []), ("hpc", ["a", "b"])), cur, parent="root", created_users="ab")

    assert result.losing_users == frozenset()
    assert slurm.shrink_problem(result, 0.0) is None


# --- wanted() ------------------------------------------------------------------------------------------


def directory(*groups):
    return Directory(accounts=(), groups=tuple(PosixGroup(n, 30000 + i, tuple(m)) for i, (n, m) in enumerate(groups)),
                     drops=(), missing_groups=())


def test_every_listed_group_becomes_an_account_in_configuration_order():
    d = directory(("a-team", ["x"]), ("b-team", ["y"]))

    assert [a.name for a in slurm.wanted(d, None, ("b-team", "a-team", "gone")).accounts] == ["b-team", "a-team"]
    assert [a.name for a in slurm.wanted(d, None, None).accounts] == ["a-team", "b-team"]  # '*': alphabetical


def test_groups_map_to_accounts_and_merge():
    d = directory(("a-team", ["x"]), ("b-team", ["y"]), ("c-team", ["z"]))

    result = slurm.wanted(d, (("c-team", "shared"), ("a-team", "shared"), ("b-team", "b"), ("gone", "g")), None)

    assert result.accounts == (WantedAccount("shared", ("c-team", "a-team"), frozenset({"x", "z"})),
                               WantedAccount("b", ("b-team",), frozenset({"y"})))


# --- sacctmgr ------------------------------------------------------------------------------------------


def runner(outputs: Dict[str, object], seen: Optional[list] = None):
    """A subprocess.run stand-in: the first key found in the joined argv picks the answer
    (stdout text, (returncode, stdout, stderr), or an exception to raise)."""

    def run(argv, **kwargs):
        if seen is not None:
            seen.append(list(argv))
        text = " ".join(argv)
        for key, answer in outputs.items():
            if key in text:
                if isinstance(answer, BaseException):
                    raise answer
                if isinstance(answer, tuple):
                    return subprocess.CompletedProcess(argv, answer[0], answer[1], answer[2])
                return subprocess.CompletedProcess(argv, 0, answer, "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    return run


@pytest.mark.parametrize("answer, error, words", [
    ((1, "", "sacctmgr: error: slurm_persist_conn_open_without_init: failed to open persistent connection to "
             "host:127.0.0.1:6819: Connection refused\nsacctmgr: error: Problem talking to the database: "
             "Connection refused"), SlurmUnavailable, "reading clusters: slurmdbd is unreachable"),
    ((1, "", "sacctmgr: error: Munge encode failed: Failed to access \"/run/munge/munge.socket.2\""),
     SlurmUnavailable, "slurmdbd is unreachable"),
    ((1, " Error with request: Access/permission denied\n", ""), SlurmPermissionError,
     "slurmdbd refused (permission denied)"),
    ((1, " Nothing new added.\n", ""), SlurmError, "sacctmgr failed (exit status 1): Nothing new added."),
    ((0, "", "sacctmgr: error: something odd"), SlurmError, "sacctmgr failed (exit status 0)"),
    (FileNotFoundError(), SlurmError, "'sacctmgr' not found: install slurm-client"),
    (subprocess.TimeoutExpired("sacctmgr", 5), SlurmUnavailable, "did not answer within coreweave_slurm_timeout (5 s)"),
])
def test_sacctmgr_failures_are_named_and_classified(answer, error, words):
    s = Sacctmgr(timeout=5, run=runner({"show": answer}))

    with pytest.raises(error) as caught:
        s.read(["show", "cluster"], "reading clusters", 1)

    assert words in str(caught.value)
    assert str(caught.value).startswith("reading clusters: ")


SLURMDBD = {
    "show cluster": "c1\nc2\n",
    "show account": "root|root\nml|nsscache-coreweave\nodd|x\n",
    "show association": "c1|root|||\nc1|root|root||\nc1|ml|||root\nc1|ml|alice||\nc2|ml|bob|gpu|\n",
    "show user cluster=c1": "root|root|Administrator\nalice|ml|None\nbob||None\n",
}


def test_read_builds_the_current_state_with_few_calls():
    seen = []
    s = Sacctmgr(run=runner(SLURMDBD, seen))

    cur = slurm.read(s, ("c1",), environ={})

    assert cur.clusters == ("c1",)
    assert cur.accounts == {"root": AccountRow("root", "root"), "ml": AccountRow("ml", MARKER),
                            "odd": AccountRow("odd", "x")}
    assert AssocRow("c2", "ml", "bob", "gpu", "") in cur.assocs  # every cluster's associations
    assert cur.users["alice"] == UserRow("alice", "None", (("c1", "ml"),))
    assert cur.users["root"].protected and not cur.users["bob"].protected
    assert s.reads == 4 and s.writes == 0
    assert seen[0] == ["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"]
    # No free text is read: a description can hold anything.
    assert seen[1] == ["sacctmgr", "-n", "-P", "show", "account", "format=account,organization"]


@pytest.mark.parametrize("listing, output, line, problem", [
    # An organization holding a line break and a forged row naming an existing account.
    ("account", "root|root\nlab|physics\nsub|x\nlab|nsscache-coreweave\n", 4, "repeats 'lab'"),
    # ... or a forged row with a third field (a description-shaped tail).
    ("account", "root|root\nsub|notes\nlab|nsscache-coreweave|x\n", 3, "has 3 fields, not 2"),
    ("account", "root|root\na|b|a|b\n", 2, "has 4 fields, not 2"),
    ("account", "root|root\ntab\tx|y\n", 2, "holds a control character"),
    ("account", "root|root\nml|x\r\n", 2, "holds a control character"),
    ("account", "root|root\n|x\n", 2, "has an empty name"),
    # A user name holding a line break splits its association row.
    ("association", "c1|root|||\nc1|lab|u\nv||\n", 2, "has 3 fields, not 5"),
    ("association", "c1|root|||\nc1|lab|x||\nc1|lab|x||\n", 3, "repeats 'c1|lab|x|'"),
    ("user", "root|root|Administrator\nu|v|lab|None\n", 2, "has 4 fields, not 3"),
])
def test_an_ambiguous_listing_stops_the_run(listing, output, line, problem):
    answers = {k: v for k, v in SLURMDBD.items() if not k.startswith(f"show {listing}")}
    s = Sacctmgr(run=runner({**answers, f"show {listing}": output}))

    with pytest.raises(slurm.SlurmListingError) as caught:
        slurm.read(s, ("c1",), environ={})

    assert (caught.value.listing, caught.value.line) == (listing, line)
    assert caught.value.problem.startswith(problem)
    assert s.writes == 0


def test_sacctmgr_runs_without_the_token():
    seen_env = []

    def run(argv, **kwargs):
        seen_env.append(kwargs["env"])
        return subprocess.CompletedProcess(argv, 0, "c1\n", "")

    environ = {"PATH": "/usr/bin", "SLURM_CONF": "/etc/slurm/slurm.conf", "SLURM_TIME_FORMAT": "standard",
               "NSSCACHE_COREWEAVE_TOKEN": "cw-secret", "HTTPS_PROXY": "http://user:pw@proxy", "LANG": "C.UTF-8"}
    Sacctmgr(run=run, environ=environ).read(["show", "cluster", "format=cluster"], "reading clusters", 1)

    assert seen_env == [{"PATH": "/usr/bin", "SLURM_CONF": "/etc/slurm/slurm.conf", "SLURM_TIME_FORMAT": "standard",
                         "LANG": "C.UTF-8"}]


def test_clusters_default_to_slurmdbd_then_slurm_conf(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("# x\nSlurmctldHost=h\nClusterName=Prod # comment\n")
    env = {"SLURM_CONF": str(conf)}

    assert slurm.resolve_clusters(None, ["a", "b"], env) == ("a", "b")
    assert slurm.resolve_clusters(("b",), ["a", "b"], env) == ("b",)
    assert slurm.cluster_name_from_slurm_conf(env) == "prod"
    with pytest.raises(PlanError, match=r"cluster prod is not registered in slurmdbd \(known: none\)"):
        slurm.resolve_clusters(None, [], env)
    with pytest.raises(PlanError, match="cluster x is not registered in slurmdbd"):
        slurm.resolve_clusters(("x",), ["a"], env)
    with pytest.raises(PlanError, match="slurmdbd knows no cluster and slurm.conf names none"):
        slurm.resolve_clusters(None, [], {"SLURM_CONF": str(tmp_path / "missing")})


# --- state and apply -------------------------------------------------------------------------------------


def test_state_is_written_atomically_and_root_only(tmp_path):
    slurm.save_state(str(tmp_path / "state"), SlurmState(frozenset({"b", "a"}), frozenset({"ml"})))

    path = tmp_path / "state" / slurm.STATE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert (data["users"], data["accounts"]) == (["a", "b"], ["ml"])
    assert slurm.load_state(str(tmp_path / "state")) == SlurmState(frozenset({"a", "b"}), frozenset({"ml"}))
    assert [p.name for p in (tmp_path / "state").iterdir()] == [slurm.STATE_FILE]


def test_the_last_run_is_kept_for_status_in_the_format_of_the_previous_version(tmp_path):
    last = slurm.SlurmRun(time=1_780_000_000.5, operations=3, conflicts=1, managed_users=4, kept_users=("b", "e"))
    slurm.save_state(str(tmp_path), SlurmState(), last_run=last)

    assert json.loads((tmp_path / slurm.STATE_FILE).read_text())["last_run"] == {
        "time": 1_780_000_000.5, "operations": 3, "conflicts": 1, "managed_users": 4, "kept_users": ["b", "e"]}
    assert slurm.last_run_of(str(tmp_path)) == last


@pytest.mark.parametrize("content", [
    pytest.param('{"users": [], "accounts": []}', id="no-last-run"),
    pytest.param('{"users": [], "accounts": [], "last_run": null}', id="last-run-null"),
    pytest.param('{"last_run": {"time": 1, "operations": "many", "conflicts": 0, "managed_users": 1}}',
                 id="operations-a-word"),
    pytest.param("[1]", id="a-list"),
    pytest.param("{not json", id="not-json"),
])
def test_no_readable_last_run_is_none(tmp_path, content):
    (tmp_path / slurm.STATE_FILE).write_text(content)

    assert slurm.last_run_of(str(tmp_path)) is None


def test_an_unreadable_state_stops_the_run(tmp_path):
    (tmp_path / slurm.STATE_FILE).write_text("{not json")

    with pytest.raises(slurm.SlurmStateError) as caught:
        slurm.load_state(str(tmp_path))

    assert caught.value.path == str(tmp_path / slurm.STATE_FILE)
    assert caught.value.problem == "cannot be read (JSONDecodeError)"
    assert "Restore it from a backup" in caught.value.fix
    assert (tmp_path / slurm.STATE_FILE).read_text() == "{not json"


def test_no_state_is_no_record():
    assert slurm.load_state("/nonexistent/state") is None


def test_apply_records_created_users_and_accounts_before_creating_them():
    plan_ = slurm.Plan(operations=(
        Operation(ADD_ACCOUNT, C1, "ml", parent="root", creates_account=True),
        Operation(ADD_USERS, C1, "ml", ("alice", "bob"), new_users=("alice",)),
    ))
    events = []
    s = Sacctmgr(run=runner({}, events))

    slurm.apply(plan_, s, SlurmState(), events.append)

    # A run stopped right after a creating call (SIGTERM, a timeout) has it recorded already.
    assert events == [
        SlurmState(frozenset(), frozenset({"ml"})),
        ["sacctmgr", "-i", "add", "account", "name=ml", "cluster=c1", "parent=root", f"organization={MARKER}",
         "description="],
        SlurmState(frozenset({"alice"}), frozenset({"ml"})),
        ["sacctmgr", "-i", "add", "user", "name=alice,bob", "account=ml", "cluster=c1"],
    ]


def test_a_failed_step_is_named_and_what_it_did_not_create_is_forgotten():
    plan_ = slurm.Plan(operations=(
        Operation(ADD_USERS, C1, "ml", ("alice", "bob"), new_users=("alice", "bob")),
        Operation(ADD_USERS, C1, "hpc", ("carol", "dave"), new_users=("carol", "dave")),
    ))
    saved = []
    s = Sacctmgr(run=runner({"account=hpc": (1, "", "sacctmgr: error: boom"), "show user": "alice\nbob\ncarol\n",
                             "show account": "ml\nhpc\n"}))

    with pytest.raises(SlurmStepError) as caught:
        slurm.apply(plan_, s, SlurmState(), saved.append)

    assert str(caught.value).startswith("step 2 of 2 (add users hpc 2 user(s) on cluster c1): sacctmgr failed")
    assert "a rerun continues from there" in str(caught.value)
    # carol was created before the failure: kept; dave was not: forgotten.
    assert saved[-1] == SlurmState(frozenset({"alice", "bob", "carol"}), frozenset())


def test_a_failed_step_keeps_the_record_when_slurmdbd_cannot_say():
    plan_ = slurm.Plan(operations=(Operation(ADD_USERS, C1, "ml", ("alice",), new_users=("alice",)),))
    saved = []
    s = Sacctmgr(run=runner({"account=ml": (1, "", "sacctmgr: error: boom"),
                             "show user": (1, "", "sacctmgr: error: Connection refused")}))

    with pytest.raises(SlurmStepError):
        slurm.apply(plan_, s, SlurmState(), saved.append)

    assert saved == [SlurmState(frozenset({"alice"}), frozenset())]


# --- sync() ------------------------------------------------------------------------------------------------


FAKE_SLURMDBD = {
    "show cluster": "c1\n",
    "show account": "root|root\nml|nsscache-coreweave\n",
    "show association": "c1|root|||\nc1|root|root||\nc1|ml|||root\nc1|ml|a||\nc1|ml|b||\nc1|ml|c||\n",
    "show user": "root|root|Administrator\na|ml|None\nb|ml|None\nc|ml|None\n",
}


def fake_slurmdbd(seen, **answers):
    """slurmdbd with account ml holding a, b and c; ``answers`` come first."""
    return Sacctmgr(run=runner({**answers, **FAKE_SLURMDBD}, seen))


def settings(tmp_path, **slurm_keys):
    return SimpleNamespace(slurm=config_mod.SlurmSync(**slurm_keys), state_dir=str(tmp_path), max_shrink=0.25,
                           allowed_groups=("ml",))


def record(tmp_path, users: Iterable[str] = (), accounts: Iterable[str] = ("ml",)) -> bytes:
    """The package's record in ``tmp_path``; returns the file's bytes."""
    slurm.save_state(str(tmp_path), SlurmState(frozenset(users), frozenset(accounts)))
    return (tmp_path / slurm.STATE_FILE).read_bytes()


def test_sync_dry_run_prints_commands_and_writes_nothing(tmp_path, capsys):
    seen = []
    before = record(tmp_path)

    result = slurm.sync(directory(("ml", ["a", "b", "c", "d"])), settings(tmp_path), sacctmgr=fake_slurmdbd(seen),
                        dry_run=True, out=None)

    assert capsys.readouterr().out == "sacctmgr -i add user name=d account=ml cluster=c1\n"
    assert [op.kind for op in result.operations] == [ADD_USERS]
    assert all(argv[1] == "-n" for argv in seen)
    assert [p.name for p in tmp_path.iterdir()] == [slurm.STATE_FILE]
    assert (tmp_path / slurm.STATE_FILE).read_bytes() == before


def test_sync_dry_run_shows_keyword_names_as_name_values(tmp_path, capsys):
    # Accounts "where" and "set" (set under where), users "set" and "where": set leaves where, alice comes.
    s = Sacctmgr(run=runner({
        "show cluster": "c1\n",
        "show account": "root|root\nwhere|nsscache-coreweave\nset|nsscache-coreweave\n",
        "show association": "c1|root|||\nc1|root|root||\nc1|where|||root\nc1|where|set||\nc1|where|where||\n"
                            "c1|set|||where\n",
        "show user": "root|root|Administrator\nset|where|None\nwhere|where|None\n",
    }))
    config = SimpleNamespace(**{**vars(settings(tmp_path)), "allowed_groups": ("where", "set")})
    record(tmp_path, accounts=("where", "set"))

    slurm.sync(directory(("where", ["where"]), ("set", ["set", "alice"])), config, sacctmgr=s, dry_run=True)

    assert capsys.readouterr().out.splitlines() == [
        "sacctmgr -i modify account where name=set cluster=c1 set parent=root",
        "sacctmgr -i add user name=alice,set account=set cluster=c1",
        "sacctmgr -i modify user where name=set cluster=c1 set defaultaccount=set",
        "sacctmgr -i remove user where name=set account=where cluster=c1",
    ]
    assert s.writes == 0


def test_sync_dry_run_shows_new_keyword_accounts_as_name_values(tmp_path, capsys):
    s = Sacctmgr(run=runner({
        "show cluster": "c1\n",
        "show account": "root|root\n",
        "show association": "c1|root|||\nc1|root|root||\n",
        "show user": "root|root|Administrator\n",
    }))
    config = SimpleNamespace(**{**vars(settings(tmp_path)), "allowed_groups": ("where", "set")})

    slurm.sync(directory(("where", ["set", "where"]), ("set", ["set"])), config, sacctmgr=s, dry_run=True)

    assert capsys.readouterr().out.splitlines() == [
        f"sacctmgr -i add account name=where cluster=c1 parent=root organization={MARKER} "
        "'description=coreweave iam group where'",
        f"sacctmgr -i add account name=set cluster=c1 parent=root organization={MARKER} "
        "'description=coreweave iam group set'",
        "sacctmgr -i add user name=set,where account=where cluster=c1",
        "sacctmgr -i add user name=set account=set cluster=c1",
    ]


def test_sync_applies_and_records(tmp_path):
    seen = []
    record(tmp_path, users={"a", "gone"})

    slurm.sync(directory(("ml", ["a", "b", "c", "d"])), settings(tmp_path), sacctmgr=fake_slurmdbd(seen))

    assert seen[-1] == ["sacctmgr", "-i", "add", "user", "name=d", "account=ml", "cluster=c1"]
    # "gone" no longer exists in Slurm: forgotten, so a namesake made by hand later is not ours.
    assert slurm.load_state(str(tmp_path)).users == {"a", "d"}


def test_sync_refuses_a_large_shrink_unless_accepted(tmp_path):
    seen = []
    record(tmp_path, users="abc")
    with pytest.raises(GuardError, match="refusing to remove 2 of 3 users"):
        slurm.sync(directory(("ml", ["a"])), settings(tmp_path), sacctmgr=fake_slurmdbd(seen))
    assert all(argv[1] == "-n" for argv in seen)

    slurm.sync(directory(("ml", ["a"])), settings(tmp_path), sacctmgr=fake_slurmdbd(seen), accept_shrink=True)
    assert ["sacctmgr", "-i", "remove", "user", "where", "name=b,c", "account=ml", "cluster=c1"] in seen


def test_sync_runs_one_at_a_time(tmp_path):
    import fcntl

    fd = os.open(tmp_path / slurm.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(SlurmUnavailable, match="another slurm-sync is running"):
            slurm.sync(directory(("ml", ["a"])), settings(tmp_path), sacctmgr=fake_slurmdbd([]))
    finally:
        os.close(fd)


# --- the coreweave_slurm_* keys ---------------------------------------------------------------------------


BASE_OPTIONS = {"base_url": "https://iam.example/scim/x", "groups": "ml-team, hpc", "allowed_shells": "/bin/bash"}
TOKEN_ENV = {"NSSCACHE_COREWEAVE_TOKEN": "t"}


def parse(**options):
    return config_mod.parse({**BASE_OPTIONS, **options}, environ=TOKEN_ENV)


def test_slurm_keys_are_parsed():
    c = parse(slurm_accounts="hpc, ml-team=ml", slurm_cluster="c1, c2", slurm_parent_account="iam",
              slurm_sacctmgr="/opt/slurm/bin/sacctmgr", slurm_timeout="30")

    assert c.slurm == config_mod.SlurmSync(accounts=(("hpc", "hpc"), ("ml-team", "ml")), clusters=("c1", "c2"),
                                           parent_account="iam", sacctmgr="/opt/slurm/bin/sacctmgr", timeout=30.0)
    assert parse().slurm == config_mod.SlurmSync()
    assert config_mod.parse({**BASE_OPTIONS, "groups": "*", "slurm_accounts": "any"},
                            environ=TOKEN_ENV).slurm.accounts == (("any", "any"),)


@pytest.mark.parametrize("key, value, message", [
    ("slurm_accounts", "other", "coreweave_slurm_accounts names group 'other', which is not in coreweave_groups"),
    ("slurm_accounts", "hpc=ML", "'hpc=ML' is not `group` or `group=account`"),
    ("slurm_accounts", "hpc, hpc=x", "names group 'hpc' twice"),
    ("slurm_accounts", " , ", "coreweave_slurm_accounts names no group"),
    ("slurm_cluster", "Big Cluster", "coreweave_slurm_cluster must list lower-case Slurm names"),
    ("slurm_parent_account", "a,b", "coreweave_slurm_parent_account must be a Slurm account name"),
    ("slurm_sacctmgr", "bin/sacctmgr", "coreweave_slurm_sacctmgr must be a command name or an absolute path"),
    ("slurm_timeout", "0", "coreweave_slurm_timeout must be between 1 and 86400"),
])
def test_slurm_key_mistakes_are_reported(key, value, message):
    with pytest.raises(ConfigError) as caught:
        parse(**{key: value})
    (refused,) = caught.value.problems
    assert refused.key == f"coreweave_{key}"
    assert message in refused.message


def test_the_slurm_keys_do_not_warn_in_the_maps():
    assert parse(slurm_cluster="c1").warnings == ()


def test_a_missing_record_with_labelled_accounts_stops_the_run(tmp_path):
    with pytest.raises(slurm.SlurmStateError) as caught:
        slurm.sync(directory(("ml", ["a"])), settings(tmp_path), sacctmgr=fake_slurmdbd([]))

    assert caught.value.problem.startswith("is missing, yet slurmdbd holds accounts labelled nsscache-coreweave (ml)")
    assert "nsscache-coreweave slurm-sync --adopt-account ml" in caught.value.fix
    assert not (tmp_path / slurm.STATE_FILE).exists()


def test_a_first_run_needs_no_record(tmp_path):
    s = Sacctmgr(run=runner({"show cluster": "c1\n", "show account": "root|root\nlab|physics\n",
                             "show association": "c1|root|||\nc1|lab|||root\n",
                             "show user": "root|root|Administrator\n"}))

    slurm.sync(directory(("ml", ["a"])), settings(tmp_path), sacctmgr=s)

    assert slurm.load_state(str(tmp_path)) == SlurmState(frozenset({"a"}), frozenset({"ml"}))
    assert slurm.last_run_of(str(tmp_path)).operations == 2


@pytest.mark.parametrize("name, problem", [
    ("root", "--adopt-account root: root and the parent account are never managed"),
    ("nosuch", "--adopt-account nosuch: no such Slurm account"),
])
def test_only_an_existing_ordinary_account_can_be_adopted(tmp_path, name, problem):
    with pytest.raises(PlanError, match=problem):
        slurm.sync(directory(("ml", ["a"])), settings(tmp_path), sacctmgr=fake_slurmdbd([]), adopt_accounts=[name])


def test_an_adopted_account_reports_its_limits_and_extra_users(tmp_path):
    seen = []
    limits = ["|".join(["ml", "c1", "", "1"] + [""] * 9), "|".join(["ml", "c1", "b"] + [""] * 7 + ["cpu=4", "", ""])]
    s = fake_slurmdbd(seen, **{"show association where": "\n".join(limits) + "\n"})

    result = slurm.sync(directory(("ml", ["a"])), settings(tmp_path), sacctmgr=s, adopt_accounts=["ml"],
                        accept_shrink=True, dry_run=True)

    assert result.notes[:3] == (
        "adopted account ml: users not in its IAM groups lose their association: b, c",
        "adopted account ml: limits set before adoption are kept, review them: GrpJobs=1 on cluster c1",
        "adopted account ml: limits set before adoption are kept, review them: MaxTRES=cpu=4 on cluster c1 for user b",
    )
    assert ["sacctmgr", "-n", "-P", "show", "association", "where", "account=ml",
            "format=account,cluster,user," + ",".join(slurm.LIMITS)] in seen


def test_the_summary_names_users_whose_last_association_is_kept():
    result = slurm.Plan(operations=(Operation(REMOVE_USERS, C1, "ml", ("b",)),), managed_users=frozenset("abc"),
                        kept_users=frozenset({"c", "a"}))

    assert slurm.summary(result) == ("1 sacctmgr call(s) (remove associations: 1), 3 managed users; last association "
                                     "kept (not created by nsscache-coreweave) for 2 user(s): a, c")
