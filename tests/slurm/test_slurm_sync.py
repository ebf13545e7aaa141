"""``nsscache-coreweave slurm-sync`` against a real slurmdbd (MariaDB, munge), started by
the fixtures without systemd. Every sacctmgr call the command makes goes through a
wrapper that records its argv, so the tests can count calls and see exactly what ran;
slurmdbd's own transaction table proves that an idle run modifies nothing."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from support.fakeiam import FakeIAM
from support.slurm_harness import CLUSTER, which
from support.slurm_site import MARKER, TOKEN, Site, calls, make_org, managed_view, transactions, wrap, writes


def test_first_sync_creates_accounts_users_and_associations_exactly(site):
    log = wrap(site)

    result = site.sync()

    assert result.returncode == 0, result.stderr
    assert managed_view(site.stack) == {"ml-team": {"alice", "bob", "carol"}, "hpc": {"bob", "dave"}}
    accounts = site.stack.accounts()
    assert accounts["ml-team"] == (MARKER, "coreweave iam group ml-team")
    assert accounts["hpc"] == (MARKER, "coreweave iam group hpc")
    users = site.stack.users()
    # Default account: the first of theirs in configuration order (ml-team, hpc).
    assert {u: users[u][0] for u in ("alice", "bob", "carol", "dave")} == {
        "alice": "ml-team", "bob": "ml-team", "carol": "ml-team", "dave": "hpc"}
    assert "erin" not in users  # only in "other", which is not listed
    assert site.stack.associations()["root"] == {"root"}  # root untouched
    # The users it created, recorded root-only.
    state_file = site.state_dir / "coreweave-slurm-state.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    recorded = json.loads(state_file.read_text())
    assert recorded["users"] == ["alice", "bob", "carol", "dave"]
    assert recorded["accounts"] == ["hpc", "ml-team"]
    # Bounded calls: 4 reads, 2 accounts, one add per account; never one per user.
    assert [c[1:3] for c in writes(log)] == [["add", "account"]] * 2 + [["add", "user"]] * 2
    assert len(calls(log)) == 4 + 4
    assert ["-i", "add", "user", "name=alice,bob,carol", "account=ml-team", f"cluster={CLUSTER}"] in writes(log)


def test_second_sync_plans_nothing_and_modifies_nothing(site):
    assert site.sync().returncode == 0
    log = wrap(site)
    before = transactions(site.stack)
    view = site.stack.associations()

    result = site.sync()

    assert result.returncode == 0, result.stderr
    assert "in sync" in result.stderr
    assert writes(log) == []
    assert len(calls(log)) == 4  # the reads only
    assert transactions(site.stack) == before
    assert site.stack.associations() == view


def test_leaving_a_group_removes_the_association_and_the_created_user(site, iam):
    assert site.sync().returncode == 0
    # bob leaves hpc (keeps ml-team); carol leaves every listed group.
    iam.set_org(make_org({"ml-team": ["alice", "bob"], "hpc": ["dave"], "other": ["erin", "carol"]}))

    result = site.sync()

    assert result.returncode == 0, result.stderr
    assert managed_view(site.stack) == {"ml-team": {"alice", "bob"}, "hpc": {"dave"}}
    users = site.stack.users()
    assert "carol" not in users  # created by the package, no association left: gone
    assert users["bob"][0] == "ml-team"
    recorded = json.loads((site.state_dir / "coreweave-slurm-state.json").read_text())
    assert recorded["users"] == ["alice", "bob", "dave"]
    # ... and a third run is idle again.
    log = wrap(site)
    assert site.sync().returncode == 0
    assert writes(log) == []


def test_hand_made_accounts_users_and_admins_are_left_alone(site, iam):
    stack = site.stack
    # A hand-made account named like an IAM group, another one, their users, and an administrator.
    stack.sacctmgr("-i", "add", "account", "hpc", "lab", f"cluster={CLUSTER}", "organization=physics",
                   "description=by hand", check=True)
    stack.sacctmgr("-i", "add", "user", "frank,dave", "account=lab", f"cluster={CLUSTER}", check=True)
    stack.sacctmgr("-i", "add", "user", "zed", "account=hpc", f"cluster={CLUSTER}", check=True)
    stack.sacctmgr("-i", "add", "user", "ops", "account=lab", "adminlevel=Administrator", f"cluster={CLUSTER}",
                   check=True)
    iam.set_org(make_org({"ml-team": ["alice", "dave", "ops"], "hpc": ["bob"]}))
    before_accounts = stack.accounts()

    result = site.sync()

    # The group mapping to a hand-made account is a conflict: reported, exit 1, the rest applied.
    assert result.returncode == 1
    assert "account 'hpc' (from group hpc) exists and was not created by nsscache-coreweave" in result.stderr
    assert "ops: root or a Slurm administrator, left alone" in result.stderr
    view = stack.associations()
    assert view["hpc"] == {"zed"}  # no bob: not ours to fill
    assert view["lab"] == {"frank", "dave", "ops"}
    assert view["ml-team"] == {"alice", "dave"}  # the admin is not added
    accounts = stack.accounts()
    assert accounts["hpc"] == before_accounts["hpc"] == ("physics", "by hand")
    assert accounts["lab"] == before_accounts["lab"]
    users = stack.users()
    assert users["dave"][0] == "lab"  # a user it did not create keeps its default account
    assert users["ops"] == ("lab", "Administrator")
    recorded = json.loads((site.state_dir / "coreweave-slurm-state.json").read_text())
    assert recorded["users"] == ["alice"]  # dave existed already

    # dave leaves ml-team: the managed association goes, the hand-made user and account stay.
    iam.set_org(make_org({"ml-team": ["alice", "ops"], "hpc": ["bob"]}))
    result = site.sync("--accept-shrink")
    assert result.returncode == 1  # the conflict is still there
    view = stack.associations()
    assert view["ml-team"] == {"alice"}
    assert view["lab"] == {"frank", "dave", "ops"} and view["hpc"] == {"zed"}
    assert "dave" in stack.users() and "frank" in stack.users()


def test_dry_run_prints_the_exact_commands_and_changes_nothing(site):
    log = wrap(site)
    before = transactions(site.stack)

    dry = site.sync("--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert writes(log) == []
    assert transactions(site.stack) == before
    assert set(site.stack.accounts()) == {"root"}
    assert not (site.state_dir / "coreweave-slurm-state.json").exists()
    printed = dry.stdout.splitlines()
    assert printed[0] == (f"{site.root / 'sacctmgr-recording'} -i add account name=ml-team cluster={CLUSTER} "
                          f"parent=root organization={MARKER} 'description=coreweave iam group ml-team'")
    assert len(printed) == 4

    # The real run runs exactly what the dry run printed.
    assert site.sync().returncode == 0
    import shlex
    assert [shlex.split(line)[1:] for line in printed] == writes(log)


def test_slurmdbd_stopped_is_a_clear_error_and_changes_nothing(site):
    site.stack.stop_dbd()

    result = site.sync()

    assert result.returncode == 75
    assert "reading clusters: slurmdbd is unreachable" in result.stderr
    assert not (site.state_dir / "coreweave-slurm-state.json").exists()


def test_a_failed_step_names_it_and_a_rerun_converges(site):
    log = wrap(site)
    Path(f"{log}.fail-on").write_text("account=hpc")

    failed = site.sync()

    assert failed.returncode == 1
    assert "step 4 of 4 (add users hpc 2 user(s) on cluster testcluster): sacctmgr failed" in failed.stderr
    assert "injected failure" in failed.stderr
    assert "a rerun continues from there" in failed.stderr
    assert site.stack.associations().get("hpc") == set()  # created, empty
    assert json.loads((site.state_dir / "coreweave-slurm-state.json").read_text())["users"] == ["alice", "bob", "carol"]

    Path(f"{log}.fail-on").unlink()
    rerun = site.sync()

    assert rerun.returncode == 0, rerun.stderr
    assert managed_view(site.stack) == {"ml-team": {"alice", "bob", "carol"}, "hpc": {"bob", "dave"}}
    assert site.stack.users()["dave"][0] == "hpc"
    assert json.loads((site.state_dir / "coreweave-slurm-state.json").read_text())["users"] == [
        "alice", "bob", "carol", "dave"]


def test_shrink_guard_refuses_a_large_removal_until_accepted(site, iam):
    assert site.sync().returncode == 0
    iam.set_org(make_org({"ml-team": ["alice"], "hpc": []}, extra_users=["bob", "carol", "dave"]))
    view = site.stack.associations()

    refused = site.sync()

    assert refused.returncode == 1
    assert "refusing to remove 3 of 4 users from every managed Slurm account" in refused.stderr
    assert site.stack.associations() == view

    accepted = site.sync(env={"NSSCACHE_COREWEAVE_ACCEPT_SHRINK": "1"})

    assert accepted.returncode == 0, accepted.stderr
    assert managed_view(site.stack) == {"ml-team": {"alice"}, "hpc": set()}  # the empty account is kept
    assert set(site.stack.users()) == {"root", "alice"}


def test_an_account_no_longer_wanted_is_emptied_then_pruned(site):
    assert site.sync().returncode == 0
    site.configure(groups=["ml-team"])  # hpc is no longer listed

    kept = site.sync("--accept-shrink")

    assert kept.returncode == 0, kept.stderr
    assert managed_view(site.stack) == {"ml-team": {"alice", "bob", "carol"}, "hpc": set()}
    assert "dave" not in site.stack.users()

    pruned = site.sync("--prune-accounts")

    assert pruned.returncode == 0, pruned.stderr
    assert "hpc" not in site.stack.accounts()
    assert managed_view(site.stack) == {"ml-team": {"alice", "bob", "carol"}}


def test_without_slurm_admin_rights_it_says_permission_denied(site):
    if os.geteuid() != 0:
        pytest.fail("this test runs sacctmgr as nobody: run the suite as root (as CI does)", pytrace=False)
    setpriv = which("setpriv")
    assert setpriv, "setpriv (util-linux) is missing"
    wrap(site, prefix=f"{setpriv} --reuid=65534 --regid=65534 --clear-groups ")

    result = site.sync()

    assert result.returncode == 1
    assert "step 1 of 4 (add account ml-team -> root on cluster testcluster): slurmdbd refused (permission " \
           "denied)" in result.stderr
    assert set(site.stack.accounts()) == {"root"}


def test_configured_cluster_must_exist(site):
    site.configure(site.extra + "coreweave_slurm_cluster = nosuchcluster\n")

    result = site.sync()

    assert result.returncode == 1
    assert "cluster nosuchcluster is not registered in slurmdbd" in result.stderr


def test_calls_grow_with_accounts_not_members(tmp_path, dbd):
    names = [f"u{i:04d}" for i in range(1000)]
    groups = {f"team{k}": names[k::5] for k in range(5)}
    with FakeIAM(make_org(groups), token=TOKEN) as iam:
        site = Site(tmp_path / "site", iam, dbd, list(groups))
        log = wrap(site)

        assert site.sync().returncode == 0

        # 4 reads, 5 accounts, one `add user` of 200 names per account.
        assert len(calls(log)) == 4 + 5 + 5
        assert managed_view(dbd) == {g: set(m) for g, m in groups.items()}


def test_every_cluster_slurmdbd_knows_is_reconciled_by_default(site):
    site.stack.sacctmgr("-i", "add", "cluster", "second", check=True)
    log = wrap(site)

    result = site.sync()

    assert result.returncode == 0, result.stderr
    wanted = {"ml-team": {"alice", "bob", "carol"}, "hpc": {"bob", "dave"}}
    accounts = site.stack.accounts()
    for cluster in (CLUSTER, "second"):
        view = site.stack.associations(cluster)
        assert {a: u for a, u in view.items() if accounts[a][0] == MARKER} == wanted, cluster
        assert site.stack.users(cluster)["dave"][0] == "hpc"
    assert len(writes(log)) == 2 * 4  # per cluster: 2 accounts, 2 adds
    log.write_text("")
    assert site.sync().returncode == 0
    assert writes(log) == []


def test_names_that_are_sacctmgr_keywords_are_passed_as_name_values(site, iam):
    # Groups (so accounts) and users named like sacctmgr's keywords: every name goes as name=...
    iam.set_org(make_org({"where": ["alice", "set", "where"], "set": ["bob", "set", "where"]}))
    site.configure(groups=["where", "set"])
    log = wrap(site)

    result = site.sync()

    assert result.returncode == 0, result.stderr
    assert managed_view(site.stack) == {"where": {"alice", "set", "where"}, "set": {"bob", "set", "where"}}
    assert {a: site.stack.accounts()[a] for a in ("where", "set")} == {
        "where": (MARKER, "coreweave iam group where"), "set": (MARKER, "coreweave iam group set")}
    users = site.stack.users()
    assert {u: users[u][0] for u in ("alice", "bob", "set", "where")} == {
        "alice": "where", "bob": "set", "set": "where", "where": "where"}
    assert writes(log) == [
        ["-i", "add", "account", "name=where", f"cluster={CLUSTER}", "parent=root", f"organization={MARKER}",
         "description=coreweave iam group where"],
        ["-i", "add", "account", "name=set", f"cluster={CLUSTER}", "parent=root", f"organization={MARKER}",
         "description=coreweave iam group set"],
        ["-i", "add", "user", "name=alice,set,where", "account=where", f"cluster={CLUSTER}"],
        ["-i", "add", "user", "name=bob,set,where", "account=set", f"cluster={CLUSTER}"],
    ]
    recorded = json.loads((site.state_dir / "coreweave-slurm-state.json").read_text())
    assert (recorded["users"], recorded["accounts"]) == (["alice", "bob", "set", "where"], ["set", "where"])

    # The users "set" and "where" leave the group "where": their default moves to "set", then the
    # associations go; both users stay (they keep "set").
    iam.set_org(make_org({"where": ["alice"], "set": ["bob", "set", "where"]}))
    log.write_text("")

    result = site.sync()

    assert result.returncode == 0, result.stderr
    assert managed_view(site.stack) == {"where": {"alice"}, "set": {"bob", "set", "where"}}
    users = site.stack.users()
    assert {u: users[u][0] for u in ("alice", "bob", "set", "where")} == {
        "alice": "where", "bob": "set", "set": "set", "where": "set"}
    assert writes(log) == [
        ["-i", "modify", "user", "where", "name=set,where", f"cluster={CLUSTER}", "set", "defaultaccount=set"],
        ["-i", "remove", "user", "where", "name=set,where", "account=where", f"cluster={CLUSTER}"],
    ]

    # The group "where" is no longer listed: alice's association goes (she is deleted), then the account.
    site.configure(groups=["set"])
    log.write_text("")

    result = site.sync("--accept-shrink", "--prune-accounts")

    assert result.returncode == 0, result.stderr
    assert "where" not in site.stack.accounts()
    assert managed_view(site.stack) == {"set": {"bob", "set", "where"}}
    assert set(site.stack.users()) == {"root", "bob", "set", "where"}
    assert writes(log) == [
        ["-i", "remove", "user", "where", "name=alice", "account=where", f"cluster={CLUSTER}"],
        ["-i", "remove", "account", "where", "name=where"],
    ]
    log.write_text("")
    assert site.sync().returncode == 0
    assert writes(log) == []
