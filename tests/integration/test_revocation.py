"""Every IAM change reaches the node, or the node fails closed.

Through the stock ``nsscache update --full`` (nsscache 0.49, this project's wheel
beside it) against tests/support/fakeiam.py on loopback, and the keys command sshd runs
(``nsscache-coreweave-keys``) reading the caches that run wrote:

* a key removed in IAM stops being served at the next run, also when it was the
  last key of the organisation or every key went at once (an sshkey map with no
  user in it must still reach the disk);
* a POSIX name given to someone else never carries the previous person's keys;
* an sshkey cache that is not from the same run as the passwd cache is not
  served at all;
* an emptied directory is refused as a whole, with or without an earlier run to
  compare with, and, once the operator accepts it, empties all four caches;
* the state file says what nsscache wrote, not what the source meant it to.
"""

from __future__ import annotations

import copy
import os
import shutil
import time

import pytest

from support.fakeiam import FakeIAM
from support.node import EXT, MAPS, TOKEN, Node, expected_caches, keys_of

MARKER = "nsscache-coreweave"
NO_ONE = {"passwd": "", "group": "slurm-admins:x:30002:\nslurm-users:x:30001:\n", "shadow": "", "sshkey": ""}


def user(org: dict, name: str) -> dict:
    return next(u for u in org["Users"] if u[EXT]["sunkPosixUsername"] == name)


def group(org: dict, name: str) -> dict:
    return next(g for g in org["Groups"] if g["sunkPosixGroupName"] == name)


@pytest.fixture
def org(demo_org):
    return copy.deepcopy(demo_org)


@pytest.fixture
def iam(org):
    with FakeIAM(org, token=TOKEN) as server:
        yield server


def keys_command(node: Node, name: str) -> tuple:
    """What sshd would get for ``name``: (exit status, stdout, stderr)."""
    result = node.run_keys(name)
    return result.returncode, result.stdout, result.stderr


def settled(node: Node) -> None:
    """Date both caches back past the keys command's 10-second settle window: a disagreement that
    old is a failed or foreign write, refused at once (one still being written is waited out:
    tests/unit/test_keys.py)."""
    then = time.time() - 60
    for name in ("passwd", "sshkey"):
        os.utime(node.root / "cache" / f"{name}.cache", (then, then))


def update(node: Node, *command: str) -> None:
    result = node.run(*(command or ("nsscache", "update", "--full")))
    assert result.returncode == 0, result.stderr


def only_alice_has_keys(org: dict) -> None:
    for name in ("bob", "frank"):
        user(org, name)[EXT]["sunkSshKeys"] = []


def test_revoked_last_key_of_the_organisation_no_longer_logs_in(node, iam, org, demo_org):
    only_alice_has_keys(org)
    iam.set_org(org)
    update(node)
    assert keys_command(node, "alice")[:2] == (0, "".join(k + "\n" for k in keys_of(org, "alice")))

    user(org, "alice")[EXT]["sunkSshKeys"] = []  # the organisation's last keys are revoked
    iam.set_org(org)
    update(node)

    assert keys_command(node, "alice") == (0, "", "nsscache-coreweave-keys: alice: no entry in "
                                                  f"{node.root}/cache/sshkey.cache: no keys\n")
    assert node.cache("sshkey") == ""
    assert node.cache("passwd") == expected_caches(demo_org)["passwd"]


def test_every_key_purged_at_once_is_served_to_nobody(node, iam, org):
    update(node)
    for record in org["Users"]:
        record[EXT]["sunkSshKeys"] = []
    iam.set_org(org)
    update(node)

    assert [keys_command(node, name)[:2] for name in ("alice", "bob", "frank")] == [(0, "")] * 3
    assert node.cache("sshkey") == ""
    last_run = node.state()["last_run"]
    assert (last_run["outcome"], last_run["keys"], last_run["maps_written"]) == ("ok", 0, list(MAPS))


def test_a_reused_name_never_inherits_the_previous_persons_keys(node, iam, org):
    only_alice_has_keys(org)
    iam.set_org(org)
    update(node)
    old_alice = user(org, "alice")
    # alice leaves; her POSIX name goes to another person, with another uid and no key yet.
    new_alice = copy.deepcopy(old_alice)
    new_alice.update(id="u-new-alice", displayName="Alice Newcomer")
    new_alice[EXT].update(sunkPosixUid=20077, sunkPosixGid=20077, sunkSshKeys=[])
    org["Users"].remove(old_alice)
    org["Users"].append(new_alice)
    for name in ("slurm-users", "slurm-admins"):
        members = group(org, name)["members"]
        members[:] = [{"value": "u-new-alice", "type": "User"} if m["value"] == old_alice["id"] else m for m in members]
    iam.set_org(org)
    update(node)

    assert node.cache("passwd").startswith("alice:x:20077:20077:Alice Newcomer:")
    assert keys_command(node, "alice")[:2] == (0, "")


def test_an_sshkey_cache_from_another_run_is_not_served(node, iam, org, tmp_path):
    update(node)
    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("sshkey.cache", "sshkey.cache.ixname"):
        shutil.copy2(node.root / "cache" / name, kept / name)
    user(org, "alice")[EXT]["sunkSshKeys"] = user(org, "alice")[EXT]["sunkSshKeys"][:1]
    iam.set_org(org)
    update(node)
    # Whatever left the sshkey cache behind (a map that failed, a copy restored by hand),
    # it is not from the run that wrote passwd.cache.
    for name in ("sshkey.cache", "sshkey.cache.ixname"):
        shutil.copy2(kept / name, node.root / "cache" / name)
    settled(node)

    status, out, err = keys_command(node, "alice")

    assert (status, out) == (1, "")
    assert "is from run" in err and "passwd.cache" in err and "no keys" in err


def test_caches_without_a_run_marker_are_not_served(node, iam, demo_org):
    update(node)
    # What an earlier version of the package, or another source, left behind.
    for name in ("passwd", "sshkey"):
        path = node.root / "cache" / f"{name}.cache"
        path.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                                if not line.startswith(MARKER + ":")))
    settled(node)

    status, out, err = keys_command(node, "alice")

    assert (status, out) == (1, "")
    assert "no run marker" in err


def test_every_cache_names_the_run_that_wrote_it_on_its_first_line(node):
    update(node)

    firsts = {name: (node.root / "cache" / f"{name}.cache").read_text().splitlines()[0] for name in MAPS}
    run = firsts["sshkey"].split(":", 1)[1]
    assert run.startswith("*") and len(run) > 20
    assert firsts == {
        "passwd": f"{MARKER}:{run}:65534:65534:run marker, not an account:/nonexistent:/usr/sbin/nologin",
        "group": f"{MARKER}:{run}:65534:",
        "shadow": f"{MARKER}:{run}:::::::",
        "sshkey": f"{MARKER}:{run}",
    }
    assert node.state()["last_run"]["run"] == run[1:]


def test_emptied_directory_without_an_earlier_run_to_compare_with_is_refused_whole(node, iam, org):
    update(node)
    (node.root / "state" / "coreweave-state.json").unlink()  # e.g. just switched from another source
    before = node.files()
    for name in ("slurm-users", "slurm-admins"):
        group(org, name)["members"] = []
    iam.set_org(org)

    result = node.run("nsscache", "update", "--full")

    assert result.returncode == 4, result.stderr
    assert "refusing an empty directory" in result.stderr
    assert node.files() == before


def test_accepted_emptied_directory_empties_all_four_caches(node, iam, org):
    update(node)
    for name in ("slurm-users", "slurm-admins"):
        group(org, name)["members"] = []
    iam.set_org(org)
    refused = node.run("nsscache", "update", "--full")

    update(node, "nsscache-coreweave", "update", "--accept-shrink")

    assert refused.returncode == 4, refused.stderr
    assert {name: node.cache(name) for name in MAPS} == NO_ONE
    assert [keys_command(node, name)[:2] for name in ("alice", "bob", "frank")] == [(0, "")] * 3
    last_run = node.state()["last_run"]
    assert (last_run["outcome"], last_run["users"], last_run["maps_written"]) == ("ok", 0, list(MAPS))
    # The empty directory is now the accepted one: the next plain run is not refused.
    update(node)


def test_state_records_the_maps_nsscache_did_not_write(node, iam, org):
    update(node)
    user(org, "alice")[EXT]["sunkSshKeys"] = []
    iam.set_org(org)
    # nsscache cannot put the new sshkey cache in place (a directory is in the way).
    (node.root / "cache" / "sshkey.cache").unlink()
    (node.root / "cache" / "sshkey.cache").mkdir()

    result = node.run("nsscache", "update", "--full")

    assert result.returncode != 0
    last_run = node.state()["last_run"]
    assert (last_run["outcome"], last_run["maps_written"], last_run["maps_not_written"]) == (
        "incomplete", ["passwd", "group", "shadow"], ["sshkey"]
    )
    status = node.run("nsscache-coreweave", "status", "--max-age", "600")
    assert status.returncode == 1, status.stdout
    assert "sshkey  failed" in status.stdout




def test_a_plain_update_over_a_stale_modify_timestamp_still_rewrites_every_cache(node, iam, org, demo_org):
    update(node)
    # Left by an earlier source (ldap, http ...): nsscache then merges into the old cache, which
    # only adds. Our source must make it fall back to a full rewrite.
    for name in MAPS:
        (node.root / "state" / f"timestamp-{name}-modify").write_text("2026-01-01T00:00:00Z\n")
    group(org, "slurm-users")["members"] = [m for m in group(org, "slurm-users")["members"]
                                            if m["value"] != user(org, "bob")["id"]]
    iam.set_org(org)

    result = node.run("nsscache", "update")  # no --full

    assert result.returncode == 0, result.stderr
    assert "nsscache asked to merge" in result.stderr
    assert "bob" not in "".join(node.cache(name) for name in MAPS)
    assert keys_command(node, "bob")[:2] == (0, "")
    assert node.cache("passwd") == expected_caches(demo_org)["passwd"].replace(
        "bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/zsh\n", "")
    node.run_marker()  # one run
    assert node.state()["last_run"]["maps_written"] == list(MAPS)


def test_per_map_options_still_give_the_caches_one_run(node, iam, org):
    # Only slurm-admins get keys: the sshkey map has its own coreweave_groups (and its own listing).
    node.configure(iam.base_url, "\n[sshkey]\ncoreweave_groups = slurm-admins\n")

    update(node)

    run = node.run_marker()
    assert keys_command(node, "alice")[:2] == (0, "".join(k + "\n" for k in keys_of(org, "alice")))
    assert keys_command(node, "bob")[:2] == (0, "")
    status = node.run("nsscache-coreweave", "status", "--max-age", "600")
    assert status.returncode == 0, status.stdout
    assert all(f"run {run[1:]}" in line for line in status.stdout.splitlines()[:4])


def test_updating_one_map_alone_is_recorded_incomplete(node, iam):
    update(node)

    result = node.run("nsscache", "update", "--full", "-m", "passwd")

    assert result.returncode == 0, result.stderr
    last_run = node.state()["last_run"]
    assert (last_run["outcome"], last_run["maps_written"], last_run["maps_not_written"]) == (
        "incomplete", ["passwd"], ["group", "shadow", "sshkey"])
    assert "still from an earlier run" in last_run["error"]
    settled(node)
    assert keys_command(node, "alice")[0] == 1  # the caches are not from one run: fail closed
