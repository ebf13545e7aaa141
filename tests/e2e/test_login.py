"""End to end: who can ssh into a login node. The real chain, as root, in a private mount
namespace (tests/support/loginnode.py): FakeIAM on loopback (one that neither filters nor projects,
then one that does both: the full listing and the member-only fetch) -> the stock ``nsscache update --full``
-> /etc/*.cache -> the real libnss-cache (``passwd/group/shadow: files cache``) -> a real sshd
(Debian's sshd_config, ``UsePAM yes``, the shipped conf/sshd_config.d snippet:
``AuthorizedKeysFile none``, ``AuthorizedKeysCommand /usr/local/sbin/nsscache-coreweave-keys
%u %f`` as ``nsscache-keys``) -> ``ssh -i KEY USER@127.0.0.1 id``.

The organisation is demo/org.json with a fresh key pair per user, plus two IAM members named
to trap a careless helper: ``root`` (a local system account) and ``al`` (a prefix of alice, no
keys). The host's /etc is checked unchanged afterwards.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from support.fakeiam import FakeIAM
from support.loginnode import (
    ALICE_ID,
    FRANK_ID,
    KEYS_COMMAND,
    LoginNode,
    fingerprint,
    public_key,
    run,
)
from support.loginnode import group_of as _group
from support.loginnode import user_of as _user
from support.node import EXT, TOKEN


@pytest.fixture(scope="module", params=["full-listing", "members-by-id"])
def iam(request, org):
    """The directory as a server that neither filters nor projects (the node lists every user)
    and as one that does both (the default coreweave_fetch = auto asks for the allowed groups'
    members by id, with only the attributes read): every login below is proven on both paths."""
    filtering = request.param == "members-by-id"
    with FakeIAM(org, token=TOKEN, service_provider_config=filtering, filter_supported=filtering,
                 filter_mode="honour" if filtering else "ignore",
                 attributes_mode="honour" if filtering else "ignore") as server:
        yield server


@pytest.fixture(scope="module")
def node(host_before, installed_venv, keys_bin, iam):
    with LoginNode(installed_venv.python.parent, keys_bin, iam.base_url, TOKEN) as n:
        n.update()
        yield n


@pytest.fixture
def change_iam(node, iam, org):
    """Apply a changed organisation and run ``nsscache update --full``; the original is restored after."""

    def change(new_org):
        iam.set_org(new_org)
        node.update()

    yield change
    iam.set_org(org)
    node.update()


# --- the node resolves IAM users through libnss-cache -----------------------------------------


def test_the_node_fetched_users_the_way_the_server_allows(node, iam):
    filtered = {"filter" in r.params for r in iam.requests("Users")}
    assert filtered == {iam.filter_supported}  # by id on every request, or never


def test_nss_resolves_iam_users_through_libnss_cache(node):
    assert node.ns("getent", "passwd", "alice").stdout == "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash\n"
    assert node.ns("getent", "group", "slurm-admins").stdout == "slurm-admins:x:30002:alice\n"
    assert node.ns("getent", "shadow", "alice").stdout == "alice:*:::::::\n"
    assert node.ns("id", "alice").stdout == (
        "uid=20001(alice) gid=20001 groups=20001,30002(slurm-admins),30001(slurm-users)\n"
    )
    # Outside the listed groups, inactive: unknown to the node.
    assert [node.ns("getent", "passwd", name).returncode for name in ("carol", "dave", "ali")] == [2, 2, 2]
    # A local account wins over an IAM user of the same name (files before cache).
    assert node.ns("getent", "passwd", "root").stdout.startswith("root:x:0:0:")


def test_the_host_sees_none_of_it(node):
    assert node.ns("test", "-f", "/etc/sshkey.cache").returncode == 0
    assert not Path("/etc/sshkey.cache").exists()
    assert run(["getent", "passwd", "alice"]).returncode == 2


def test_effective_sshd_configuration(node):
    result = node.ns("/usr/sbin/sshd", "-T", "-C", "user=alice,host=client,addr=127.0.0.1")
    settings = set(result.stdout.splitlines())

    assert result.returncode == 0, result.stderr
    assert {
        "usepam yes",
        "authorizedkeysfile none",
        f"authorizedkeyscommand {KEYS_COMMAND} %u %f",
        "authorizedkeyscommanduser nsscache-keys",
    } <= settings
    # The snippet's Match block covers root only.
    root = node.ns("/usr/sbin/sshd", "-T", "-C", "user=root,host=client,addr=127.0.0.1").stdout.splitlines()
    assert "authorizedkeysfile .ssh/authorized_keys" in root


def test_keys_command_path_meets_sshd_rules(node):
    result = node.ns(KEYS_COMMAND, "--check-path", KEYS_COMMAND)

    assert (result.returncode, result.stdout) == (0, f"{KEYS_COMMAND}: sshd's ownership and permission rules are met\n")


# --- logins ----------------------------------------------------------------------------------


def test_member_of_a_listed_group_logs_in_with_iam_identity(sshd, keys):
    login = sshd.ssh("alice", keys["alice"])

    assert login.returncode == 0, login
    assert login.stdout == ALICE_ID
    assert login.sshd_logged("Accepted publickey for alice from 127.0.0.1"), login


def test_each_of_a_users_keys_works(sshd, keys):
    login = sshd.ssh("alice", keys["alice2"], "echo $HOME $SHELL")

    assert (login.returncode, login.stdout) == (0, "/mnt/home/alice /bin/bash\n"), login


def test_user_outside_the_listed_groups_is_refused(sshd, keys):
    login = sshd.ssh("carol", keys["carol"])

    assert login.refused, login
    assert login.sshd_logged("Invalid user carol"), login


def test_inactive_user_is_refused(sshd, keys):
    login = sshd.ssh("dave", keys["dave"])

    assert login.refused, login
    assert login.sshd_logged("Invalid user dave"), login


def test_iam_user_named_like_a_local_account_is_refused(sshd, node, keys):
    login = sshd.ssh("root", keys["root"])

    assert login.refused, login
    assert login.sshd_logged("Failed publickey for root"), login
    answer = node.keys("root")
    assert (answer.returncode, answer.stdout) == (0, "")
    assert answer.stderr == "nsscache-coreweave-keys: root: a local account in /etc/passwd: no keys\n"


def test_ali_gets_nothing_when_only_alice_exists(sshd, node, keys):
    login = sshd.ssh("ali", keys["alice"])

    assert login.refused, login
    assert login.sshd_logged("Invalid user ali"), login
    assert (node.keys("ali").returncode, node.keys("ali").stdout) == (0, "")


def test_prefix_of_a_name_never_gets_its_keys(sshd, node, keys):
    # "al" is an IAM member without keys: sshd asks the command, which must not answer with alice's.
    login = sshd.ssh("al", keys["alice"])

    assert login.refused, login
    assert login.sshd_logged("nsscache-coreweave-keys: al: no entry in /etc/sshkey.cache: no keys"), login


def test_key_with_another_fingerprint_is_refused(sshd, node, keys):
    login = sshd.ssh("alice", keys["mallory"])

    assert login.refused, login
    assert login.sshd_logged(
        f"nsscache-coreweave-keys: alice: no key with fingerprint {fingerprint(keys['mallory'])}: no keys"
    ), login


def test_keys_command_prints_only_the_key_offered(node, keys):
    answer = node.keys("alice", fingerprint(keys["alice2"]))

    assert (answer.returncode, answer.stdout) == (0, public_key(keys["alice2"]) + "\n")
    assert node.keys("alice").stdout == public_key(keys["alice"]) + "\n" + public_key(keys["alice2"]) + "\n"


def test_user_removed_from_the_group_is_refused_after_the_next_update(sshd, keys, org, change_iam):
    assert sshd.ssh("frank", keys["frank"]).stdout == FRANK_ID
    new_org = copy.deepcopy(org)
    frank_id = _user(new_org, "frank")["id"]
    users = _group(new_org, "slurm-users")
    users["members"] = [m for m in users["members"] if m["value"] != frank_id]

    change_iam(new_org)
    login = sshd.ssh("frank", keys["frank"])

    assert login.refused, login
    assert login.sshd_logged("Invalid user frank"), login


def test_removed_key_is_refused_after_the_next_update_and_the_other_still_works(sshd, keys, org, change_iam):
    new_org = copy.deepcopy(org)
    _user(new_org, "alice")[EXT]["sunkSshKeys"] = [public_key(keys["alice"])]

    change_iam(new_org)
    removed = sshd.ssh("alice", keys["alice2"])
    kept = sshd.ssh("alice", keys["alice"])

    assert removed.refused, removed
    assert (kept.returncode, kept.stdout) == (0, ALICE_ID), kept


def test_user_made_inactive_is_refused_after_the_next_update(sshd, keys, org, change_iam):
    new_org = copy.deepcopy(org)
    _user(new_org, "frank")["active"] = False

    change_iam(new_org)
    login = sshd.ssh("frank", keys["frank"])

    assert login.refused, login


def test_stale_cache_is_refused_when_max_age_is_set(node, keys):
    bounded = node.start_sshd(
        f"AuthorizedKeysCommand={KEYS_COMMAND} -c /etc/nsscache.conf --max-age 3600 %u %f"
    )
    stamp = node.state / "timestamp-sshkey-update"
    try:
        fresh = bounded.ssh("alice", keys["alice"])
        stamp.write_text("2020-01-01T00:00:00Z\n")  # the last successful update, long ago
        stale = bounded.ssh("alice", keys["alice"])
    finally:
        bounded.stop()
        node.update()  # a fresh timestamp for the tests after this one

    assert (fresh.returncode, fresh.stdout) == (0, ALICE_ID), fresh
    assert stale.refused, stale
    assert stale.sshd_logged("sshkey cache is stale: last successful update 2020-01-01T00:00:00Z"), stale


def test_failed_update_keeps_logins_working(sshd, node, iam, keys):
    # IAM refuses the token: nsscache exits 75 and keeps the old caches.
    iam_token = node.root / "token"
    iam_token.write_text("wrong-token\n")
    try:
        result = node.nsscache("update", "--full")
    finally:
        iam_token.write_text(TOKEN + "\n")

    assert result.returncode == 75, result.stderr
    assert sshd.ssh("alice", keys["alice"]).stdout == ALICE_ID


# --- every IAM change reaches the node, or the node fails closed ----------------------------------


def test_every_key_removed_at_once_logs_nobody_in(sshd, keys, org, change_iam):
    # sshkey.cache keeps no user at all: nsscache must still write it (the run marker's line).
    new_org = copy.deepcopy(org)
    for user in new_org["Users"]:
        user[EXT]["sunkSshKeys"] = []

    change_iam(new_org)
    logins = [sshd.ssh("alice", keys["alice"]), sshd.ssh("alice", keys["alice2"]), sshd.ssh("frank", keys["frank"])]

    assert all(login.refused for login in logins), logins
    assert logins[0].sshd_logged("nsscache-coreweave-keys: alice: no entry in /etc/sshkey.cache: no keys"), logins[0]


def test_a_reused_name_never_logs_in_with_the_previous_persons_key(sshd, node, keys, org, change_iam):
    # frank leaves; his name goes to someone else (another uid, no key yet). frank held the last
    # keys of the organisation, so the new sshkey map has no user in it.
    new_org = copy.deepcopy(org)
    for user in new_org["Users"]:
        user[EXT]["sunkSshKeys"] = []
    new_frank = _user(new_org, "frank")
    new_frank.update(id="00000000-0000-4000-8000-000000000077", displayName="Frank Newcomer")
    new_frank[EXT].update(sunkPosixUid=20077, sunkPosixGid=20077)
    _group(new_org, "slurm-users")["members"].append({"value": new_frank["id"], "type": "User"})

    change_iam(new_org)
    login = sshd.ssh("frank", keys["frank"])

    assert node.ns("getent", "passwd", "frank").stdout.startswith("frank:x:20077:20077:Frank Newcomer:")
    assert login.refused, login


def test_an_emptied_directory_is_refused_then_once_accepted_logs_nobody_in(sshd, node, keys, org, change_iam, iam):
    assert sshd.ssh("alice", keys["alice"]).stdout == ALICE_ID
    new_org = copy.deepcopy(org)
    for group in new_org["Groups"]:
        group["members"] = []
    iam.set_org(new_org)

    refused = node.nsscache("update", "--full")
    still_in = sshd.ssh("alice", keys["alice"])
    accepted = node.nsscache("update", "--accept-shrink", program="nsscache-coreweave")
    shut_out = [sshd.ssh(name, keys[name]) for name in ("alice", "bob", "frank")]
    change_iam(org)  # restored for the tests after this one

    assert refused.returncode == 4, refused.stderr
    assert still_in.stdout == ALICE_ID, still_in
    assert accepted.returncode == 0, accepted.stderr
    assert all(login.refused and login.sshd_logged(f"Invalid user {name}")
               for login, name in zip(shut_out, ("alice", "bob", "frank"))), shut_out


def test_a_user_whose_primary_gid_is_a_local_group_never_reaches_the_node(sshd, node, keys, org, change_iam):
    group_file = node.etc / "group"
    original = group_file.read_text()
    group_file.write_text(original + "hpc-admins:x:5000:\n")  # the site's own group, in the node's /etc
    new_org = copy.deepcopy(org)
    _user(new_org, "bob")[EXT]["sunkPosixGid"] = 5000
    try:
        change_iam(new_org)
        entry = node.ns("getent", "passwd", "bob")
        login = sshd.ssh("bob", keys["bob"])
    finally:
        group_file.write_text(original)

    assert entry.returncode == 2, entry.stdout
    assert login.refused and login.sshd_logged("Invalid user bob"), login
