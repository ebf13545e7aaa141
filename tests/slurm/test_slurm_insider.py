"""slurm-sync against an insider, on a real slurmdbd: a Slurm coordinator (who can
create sub-accounts and users and write their descriptions and organizations, but is
no administrator) must not be able to make slurm-sync take a hand-made account for
its own, hide a managed one, or get an account adopted; names that are sacctmgr
keywords, a lost record, a stop right after a creating call, and the IAM token in the
environment must not open a way either. The coordinator's writes are made here with
an administrator's sacctmgr: the data is what counts, not who wrote it."""

from __future__ import annotations

import json
import subprocess

from support.slurm_harness import CLUSTER
from support.slurm_site import CLI, MARKER, TOKEN, calls, make_org, managed_view, transactions, wrap, writes

STATE = "coreweave-slurm-state.json"


def hand_made_lab(stack) -> None:
    """A hand-made account ``lab`` with two users of its own."""
    stack.sacctmgr("-i", "add", "account", "name=lab", f"cluster={CLUSTER}", "organization=physics",
                   "description=by hand", check=True)
    stack.sacctmgr("-i", "add", "user", "name=frank,zoe", "account=lab", f"cluster={CLUSTER}", check=True)


def coordinator_sub_account(stack, **fields: str) -> None:
    """A sub-account whose free text a coordinator wrote."""
    stack.sacctmgr("-i", "add", "account", "name=sub", f"cluster={CLUSTER}", "parent=lab",
                   *(f"{k}={v}" for k, v in fields.items()), check=True)


def test_a_forged_row_in_a_description_cannot_claim_a_hand_made_account(site, iam):
    assert site.sync().returncode == 0
    hand_made_lab(site.stack)
    coordinator_sub_account(site.stack, description="notes\nlab|nsscache-coreweave|x")
    iam.set_org(make_org({"ml-team": ["alice", "bob", "carol", "frank"], "hpc": ["bob", "dave"]}))

    result = site.sync("--prune-accounts")

    # frank gets ml-team; his hand-made association and default account stay.
    assert result.returncode == 0, result.stderr
    view = site.stack.associations()
    assert (view["lab"], view["ml-team"]) == ({"frank", "zoe"}, {"alice", "bob", "carol", "frank"})
    assert {u: site.stack.users()[u][0] for u in ("frank", "zoe")} == {"frank": "lab", "zoe": "lab"}


def test_a_forged_row_in_an_organization_stops_the_run(site):
    assert site.sync().returncode == 0
    hand_made_lab(site.stack)
    coordinator_sub_account(site.stack, organization="x\nlab|nsscache-coreweave")
    state = (site.state_dir / STATE).read_bytes()
    before = transactions(site.stack)

    result = site.sync("--prune-accounts")

    assert result.returncode == 1
    assert "sacctmgr show account, line" in result.stderr
    assert "repeats 'lab'" in result.stderr
    assert "refusing to plan from an ambiguous listing, nothing was changed" in result.stderr
    assert transactions(site.stack) == before
    assert (site.state_dir / STATE).read_bytes() == state


def test_a_user_name_with_a_line_break_stops_the_run(site):
    assert site.sync().returncode == 0
    hand_made_lab(site.stack)
    site.stack.sacctmgr("-i", "add", "user", "name=x||\ntestcluster|ml-team|bob", "account=lab",
                        f"cluster={CLUSTER}", check=True)
    before = transactions(site.stack)

    result = site.sync()

    assert result.returncode == 1
    assert "refusing to plan from an ambiguous listing" in result.stderr
    assert transactions(site.stack) == before


def test_a_forged_row_cannot_hide_a_managed_account(site, iam):
    assert site.sync().returncode == 0
    hand_made_lab(site.stack)
    coordinator_sub_account(site.stack, description="notes\nml-team|physics|x")
    # ... and a coordinator of ml-team relabels it.
    site.stack.sacctmgr("-i", "modify", "account", "where", "name=ml-team", "set", "organization=physics",
                        check=True)
    iam.set_org(make_org({"ml-team": ["alice", "carol"], "hpc": ["bob", "dave"]}))

    result = site.sync()

    assert result.returncode == 0, result.stderr
    assert site.stack.associations()["ml-team"] == {"alice", "carol"}  # bob's association is gone


def test_an_account_pre_created_with_the_marker_is_not_adopted(site, iam):
    site.configure(groups=["ml-team"])
    assert site.sync().returncode == 0
    # Before IAM gets a group "hpc", a coordinator makes "hpc" with the marker, a limit and a user.
    site.stack.sacctmgr("-i", "add", "account", "name=hpc", f"cluster={CLUSTER}", f"organization={MARKER}",
                        "description=coreweave iam group hpc", "GrpJobs=1", check=True)
    site.stack.sacctmgr("-i", "add", "user", "name=zed", "account=hpc", f"cluster={CLUSTER}", check=True)
    site.configure(groups=["ml-team", "hpc"])
    before = transactions(site.stack)

    result = site.sync()

    assert result.returncode == 1
    assert "account 'hpc' (from group hpc) exists and was not created by nsscache-coreweave" in result.stderr
    assert "--adopt-account hpc" in result.stderr
    assert site.stack.associations()["hpc"] == {"zed"}
    assert transactions(site.stack) == before

    # An administrator hands it over: the limit and the extra user are reported.
    adopted = site.sync("--adopt-account", "hpc")

    assert adopted.returncode == 0, adopted.stderr
    assert "adopted account hpc: limits set before adoption are kept, review them: GrpJobs=1 on cluster " \
           f"{CLUSTER}" in adopted.stderr
    assert "adopted account hpc: users not in its IAM groups lose their association: zed" in adopted.stderr
    # zed was not created by the package: slurmdbd would delete him with his last association, so it stays,
    # reported in the run's summary.
    assert site.stack.associations()["hpc"] == {"bob", "dave", "zed"}
    assert "last association kept (not created by nsscache-coreweave) for 1 user(s): zed" in adopted.stderr
    assert json.loads((site.state_dir / STATE).read_text())["accounts"] == ["hpc", "ml-team"]


def test_an_unreadable_record_stops_the_run(site, iam):
    assert site.sync().returncode == 0
    (site.state_dir / STATE).write_text('{"users": ["alice"')
    iam.set_org(make_org({"ml-team": ["alice", "bob"], "hpc": ["bob", "dave"]}))
    before = transactions(site.stack)

    result = site.sync()

    assert result.returncode == 1
    assert f"{site.state_dir / STATE}: cannot be read (JSONDecodeError): nothing was changed" in result.stderr
    assert "Restore it from a backup" in result.stderr
    assert (site.state_dir / STATE).read_text() == '{"users": ["alice"'
    assert transactions(site.stack) == before
    assert site.stack.associations()["ml-team"] == {"alice", "bob", "carol"}


def test_a_lost_record_stops_the_run_until_accounts_are_handed_over(site, iam):
    assert site.sync().returncode == 0
    (site.state_dir / STATE).unlink()
    iam.set_org(make_org({"ml-team": ["alice", "bob"], "hpc": ["bob", "dave"]}))
    before = transactions(site.stack)

    lost = site.sync()

    assert lost.returncode == 1
    assert "is missing, yet slurmdbd holds accounts labelled nsscache-coreweave (hpc, ml-team)" in lost.stderr
    assert "nsscache-coreweave slurm-sync --adopt-account hpc --adopt-account ml-team" in lost.stderr
    assert not (site.state_dir / STATE).exists()
    assert transactions(site.stack) == before

    adopted = site.sync("--adopt-account", "hpc", "--adopt-account", "ml-team")

    # carol's association goes only if she were ours: she now counts as hand-made, and is reported.
    assert adopted.returncode == 0, adopted.stderr
    assert "last association kept (not created by nsscache-coreweave) for 1 user(s): carol" in adopted.stderr
    assert site.stack.associations()["ml-team"] == {"alice", "bob", "carol"}
    status = subprocess.run([str(CLI), "-c", str(site.conf), "status"], capture_output=True, text=True,
                            env=site.stack.env, timeout=60)
    assert "slurm-sync: last association kept (not created by nsscache-coreweave) for 1 user(s): carol" \
        in status.stdout.splitlines()


STOP_AFTER_ADD_USER = """#!/bin/sh
# The real sacctmgr, then, after the first `add user`, the caller is stopped (systemctl stop).
"{sacctmgr}" "$@"
status=$?
case "$*" in *"add user"*) kill -TERM $PPID;; esac
exit $status
"""


def test_a_run_stopped_right_after_creating_users_has_recorded_them(site, iam):
    script = site.root / "sacctmgr-then-sigterm"
    script.write_text(STOP_AFTER_ADD_USER.format(sacctmgr=site.stack.programs["sacctmgr"]))
    script.chmod(0o755)
    site.configure(site.extra + f"coreweave_slurm_sacctmgr = {script}\n")

    stopped = site.sync()

    assert stopped.returncode == -15
    assert site.stack.associations()["ml-team"] == {"alice", "bob", "carol"}
    assert json.loads((site.state_dir / STATE).read_text())["users"] == ["alice", "bob", "carol"]

    # carol leaves IAM: she was created by the package, so she goes (not "kept").
    site.configure(site.extra.replace(f"coreweave_slurm_sacctmgr = {script}\n", ""))
    iam.set_org(make_org({"ml-team": ["alice", "bob"], "hpc": ["bob", "dave"]}))
    result = site.sync("--accept-shrink")

    assert result.returncode == 0, result.stderr
    assert "carol" not in site.stack.users()
    assert "last association kept" not in result.stderr


ENV_DUMP = """#!/bin/sh
env >> "{log}"
exec "{sacctmgr}" "$@"
"""


def test_sacctmgr_never_sees_the_token(site):
    dump = site.root / "sacctmgr-env"
    script = site.root / "sacctmgr-env-dump"
    script.write_text(ENV_DUMP.format(log=dump, sacctmgr=site.stack.programs["sacctmgr"]))
    script.chmod(0o755)
    site.configure(site.extra + f"coreweave_slurm_sacctmgr = {script}\n")

    result = site.sync(env={"NSSCACHE_COREWEAVE_TOKEN": TOKEN, "SECRET_ELSEWHERE": "x"})

    assert result.returncode == 0, result.stderr
    seen = dump.read_text()
    assert seen.count("SLURM_CONF=") == 8  # every call: 4 reads, 4 writes
    assert TOKEN not in seen and "NSSCACHE" not in seen and "SECRET_ELSEWHERE" not in seen


# Every word sacctmgr(1) of Slurm 22.05 prints in bold (commands, entities, options, keywords): each is a
# valid POSIX name, so it can be an IAM group (hence a Slurm account) and a user.
SACCTMGR_WORDS = """
account accounts action active actor add admincomment adminlevel all allocated archive association associations
cancel classification clean clear cluster clusternodes clusters comment condflags configuration cons controlhost
controlport coordinator coordinators count create defaultaccount defaultqos defaultwckey delete denyonlimit
derivedexitcode description descriptions directory drain dump duration end endtime enforceusagethreshold event
eventraw events exit fairshare features federation fedstate fedstateraw file flags gang gracetime grpjobs
grpjobsaccrue grpnodes grpsubmit grpsubmitjobs grptres grptresmins grptresrunmins grpwall help id inactive index
info insert job jobid jobs lft limitfactor list load maxcpus maxjobs maxjobsaccrue maxjobsaccruepa
maxjobsaccrueperaccount maxjobsaccrueperuser maxjobsaccruepu maxjobspa maxjobsperaccount maxjobsperuser maxjobspu
maxnodesperjob maxsubmit maxsubmitjobs maxsubmitjobspa maxsubmitjobsperaccount maxsubmitjobsperuser
maxsubmitjobspu maxtres maxtresmins maxtresminsperjob maxtrespa maxtresperaccount maxtresperjob maxtrespernode
maxtresperuser maxtrespu maxwall maxwalldurationperjob mincpus minpriothreshold mintres mintresperjob modify must
name names newname newwckey nodecay nodecount nodename nodenames nodes noreserve note off onlydefaults open
operator organization other overpartqos parent parentid parentname partition partitionmaxnodes partitionminnodes
partitiontimelimit percentallowed pluginidselect preempt preemptexempttime preemptmode preempttype priority
problem purgeeventafter purgejobafter purgestepafter purgesuspendafter qos qoslevel qosraw quiet quit rawusage
reason reconfigure remove requeue requiresreservation reservation resource rgt rpc runawayjobs sacctmgr script
server servertype set share show shutdown slurm slurmdbd start starttime state stateraw states stats steps
suspend systemcomment timeend timestamp timestart transaction tree tres type unusedwall usagefactor
usagefactorsafe usagethreshold user users verbose version wckey wckeys where withassoc withclusters withcoord
withdeleted withfed within withrawqoslevel withsubaccounts wolimits wopinfo woplimits
""".split()


# The keywords of sacctmgr's account, user and association grammar (add/modify/remove/show, their
# conditions and settings; sacctmgr also takes any unambiguous prefix): each becomes an account. One
# call per account (~0.5 s each here), so this list, not every word above.
GRAMMAR = """
account accounts acct adminlevel clusters cluster defaultaccount defaultqos defaultwckey description descriptions
fairshare format grpjobs grpjobsaccrue grpsubmit grpsubmitjobs grptres grptresmins grptresrunmins grpwall id
maxjobs maxjobsaccrue maxsubmit maxsubmitjobs maxtres maxtresmins maxtresperjob maxtrespernode maxwall name names
newname onlydefaults organization parent parentname partition priority qos qoslevel rawusage set share tree user
users where withassoc withcoord withdeleted withsubaccounts wolimits wopinfo woplimits
""".split()


def test_every_sacctmgr_keyword_works_as_an_account_and_a_user_name(site, iam):
    # "where" holds every word as a user; the other grammar keywords are (empty) accounts.
    iam.set_org(make_org({"where": SACCTMGR_WORDS, **{word: [] for word in GRAMMAR if word != "where"}}))
    site.configure(groups=GRAMMAR)

    result = site.sync()

    assert result.returncode == 0, result.stderr
    assert managed_view(site.stack) == {word: set(SACCTMGR_WORDS) if word == "where" else set() for word in GRAMMAR}
    users = site.stack.users()
    assert {word: users[word][0] for word in SACCTMGR_WORDS} == {word: "where" for word in SACCTMGR_WORDS}

    # Every word-named user leaves: one call removes them all, and slurmdbd deletes them.
    iam.set_org(make_org({word: [] for word in GRAMMAR}, extra_users=SACCTMGR_WORDS))
    log = wrap(site)

    result = site.sync("--accept-shrink")

    assert result.returncode == 0, result.stderr
    assert writes(log) == [["-i", "remove", "user", "where", f"name={','.join(sorted(SACCTMGR_WORDS))}",
                            "account=where", f"cluster={CLUSTER}"]]
    assert set(site.stack.users()) == {"root"}
    log.write_text("")
    assert site.sync().returncode == 0
    assert writes(log) == [] and len(calls(log)) == 4
