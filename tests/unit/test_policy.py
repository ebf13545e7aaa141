"""policy.decide: who and what reaches the node, and why the rest does not.

Only active members of the allowed groups become accounts. Every field is
checked; a bad entry is dropped with a Drop naming it and the reason, never
"last one wins"; GECOS alone is cleaned rather than dropped.
"""

from __future__ import annotations

import pytest

from nss_cache_coreweave import config, policy
from nss_cache_coreweave.policy import Account, Drop, LocalAccounts, PosixGroup
from nss_cache_coreweave.snapshot import GroupRecord, Member, Snapshot, UserRecord
from unit_http import BASE, TOKEN
from unit_keys import dsa_key, ed25519_key, rsa_key

NOT_POSIX = "is not a POSIX portable name (a-z 0-9 _ . -, at most 32, lower-case)"


def configure(allowed="slurm-users", **options):
    # Shells are listed here so that the host's /etc/shells does not matter.
    options.setdefault("allowed_shells", "/bin/bash, /bin/zsh, /usr/bin/fish")
    return config.parse({"base_url": BASE, "groups": allowed, **options}, environ={"NSSCACHE_COREWEAVE_TOKEN": TOKEN})


def user(id="u-alice", name="alice", uid=20001, gid=20001, *, active=True, gecos="Alice Smith", home=None, shell=None, keys=None):
    return UserRecord(id=id, active=active, name=name, uid=uid, gid=gid, gecos=gecos, home=home, shell=shell, ssh_keys=keys)


def group(id="g-users", name="slurm-users", gid=30001, members=("u-alice",)):
    return GroupRecord(id, name, gid, tuple(m if isinstance(m, Member) else Member(m, "User") for m in members))


def decide(users, groups=None, *, allowed="slurm-users", **options):
    """Decide over ``users`` and ``groups`` (default: one slurm-users group
    holding every user) with coreweave_groups = ``allowed``."""
    if groups is None:
        groups = [group(members=[u.id for u in users])]
    # An empty node: local-account clashes have their own tests.
    return policy.decide(Snapshot(tuple(users), tuple(groups), 0.0), configure(allowed, **options), local=LocalAccounts())


def names(directory):
    return [a.name for a in directory.accounts]


ALICE_ACCOUNT = Account("alice", 20001, 20001, "Alice Smith", "/home/alice", "/bin/bash", ())


def test_member_of_an_allowed_group_becomes_an_account():
    directory = decide([user()])
    assert directory.accounts == (ALICE_ACCOUNT,)
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("alice",)),)
    assert (directory.drops, directory.missing_groups) == ((), ())


# --- names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, who, reason",
    [
        pytest.param("Alice", "id u-x", f"name 'Alice' {NOT_POSIX}", id="upper-case"),
        pytest.param("alice@example.com", "id u-x", f"name 'alice@example.com' {NOT_POSIX}", id="e-mail"),
        pytest.param("a" * 33, "id u-x", f"name '{'a' * 33}' {NOT_POSIX}", id="33-characters"),
        pytest.param("a" * 100, "id u-x", f"name '{'a' * 56}... {NOT_POSIX}", id="100-characters-shown-cut"),
        pytest.param("-alice", "id u-x", f"name '-alice' {NOT_POSIX}", id="leading-dash"),
        pytest.param("12345", "12345", f"name '12345' {NOT_POSIX}", id="numeric"),
        pytest.param("al:ice", "id u-x", f"name 'al:ice' {NOT_POSIX}", id="colon"),
        pytest.param("al\nice", "id u-x", f"name 'al\\nice' {NOT_POSIX}", id="newline"),
        pytest.param("al,ice", "id u-x", f"name 'al,ice' {NOT_POSIX}", id="comma"),
        pytest.param("al ice", "id u-x", f"name 'al ice' {NOT_POSIX}", id="space"),
        pytest.param("ålice", "id u-x", f"name 'ålice' {NOT_POSIX}", id="non-ascii"),
        pytest.param("", "id u-x", f"name '' {NOT_POSIX}", id="empty"),
        pytest.param(".", ".", f"name '.' {NOT_POSIX}", id="dot"),
        pytest.param("..", "..", f"name '..' {NOT_POSIX}", id="dot-dot"),
        pytest.param(None, "id u-x", "has no POSIX name", id="missing"),
        pytest.param(5, "id u-x", "name is a JSON int, not a string", id="number"),
        pytest.param(True, "id u-x", "name is a JSON bool, not a string", id="bool"),
        pytest.param(["alice"], "id u-x", "name is a JSON list, not a string", id="list"),
    ],
)
def test_user_with_a_bad_name_is_dropped(name, who, reason):
    directory = decide([user("u-x", name)])
    assert directory.accounts == ()
    assert directory.drops == (Drop("user", who, reason),)
    assert directory.groups == (PosixGroup("slurm-users", 30001, ()),)


@pytest.mark.parametrize("name", ["a" * 32, "alice.smith", "_svc", "a-1", "1alice", "a_b-c.d", "x"])
def test_posix_portable_name_is_accepted(name):
    assert names(decide([user(name=name)])) == [name]


# --- uid and gid ------------------------------------------------------------


@pytest.mark.parametrize(
    "uid, reason",
    [
        pytest.param(0, "uid 0 (root) is never accepted", id="root"),
        pytest.param("0", "uid 0 (root) is never accepted", id="root-as-string"),
        pytest.param(65534, "uid 65534 (nobody) is never accepted", id="nobody"),
        pytest.param(999, "uid 999 is outside [1000, 4294967294]", id="below-min"),
        pytest.param(4294967295, "uid 4294967295 is outside [1000, 4294967294]", id="above-max"),
        pytest.param(-1, "uid -1 is outside [1000, 4294967294]", id="negative"),
        pytest.param("-5", "uid '-5' is missing or not an integer", id="negative-string"),
        pytest.param(True, "uid True is missing or not an integer", id="bool"),
        pytest.param(20001.0, "uid 20001.0 is missing or not an integer", id="float"),
        pytest.param("20001.0", "uid '20001.0' is missing or not an integer", id="float-string"),
        pytest.param("0x4e21", "uid '0x4e21' is missing or not an integer", id="hex-string"),
        pytest.param(" 20001", "uid ' 20001' is missing or not an integer", id="padded-string"),
        pytest.param("２０００１", "uid '２０００１' is missing or not an integer", id="fullwidth-digits"),
        pytest.param("12345678901", "uid '12345678901' is missing or not an integer", id="11-digit-string"),
        pytest.param(None, "uid None is missing or not an integer", id="missing"),
        pytest.param([20001], "uid [20001] is missing or not an integer", id="list"),
    ],
)
def test_user_with_a_bad_uid_is_dropped(uid, reason):
    directory = decide([user(uid=uid)])
    assert directory.accounts == ()
    assert directory.drops == (Drop("user", "alice", reason),)


@pytest.mark.parametrize(
    "uid, accepted",
    [
        pytest.param(1000, 1000, id="min"),
        pytest.param(4294967294, 4294967294, id="max"),
        pytest.param("20001", 20001, id="numeric-string"),
        pytest.param("0020001", 20001, id="leading-zeros"),
    ],
)
def test_uid_in_range_is_accepted_as_an_int(uid, accepted):
    (account,) = decide([user(uid=uid)]).accounts
    assert account.uid == accepted
    assert type(account.uid) is int


@pytest.mark.parametrize(
    "gid, reason",
    [
        pytest.param(0, "gid 0 (root) is never accepted", id="root"),
        pytest.param(65534, "gid 65534 (nobody) is never accepted", id="nogroup"),
        pytest.param(999, "gid 999 is outside [1000, 4294967294]", id="below-min"),
        pytest.param(False, "gid False is missing or not an integer", id="bool"),
        pytest.param(20001.5, "gid 20001.5 is missing or not an integer", id="float"),
        pytest.param(None, "gid None is missing or not an integer", id="missing"),
    ],
)
def test_bad_gid_drops_the_user_and_the_group(gid, reason):
    directory = decide([user(gid=gid)])
    assert (directory.accounts, directory.drops) == ((), (Drop("user", "alice", reason),))

    directory = decide([user()], [group(gid=gid)])
    assert (directory.accounts, directory.groups) == ((), ())
    assert directory.drops == (Drop("group", "slurm-users", reason),)
    assert directory.missing_groups == ("slurm-users",)


def test_configured_ranges_apply():
    directory = decide([user(uid=1999), user("u-bob", "bob", 2500, 40001)], min_uid=2000, max_uid=3000, max_gid=40000)
    assert directory.accounts == ()
    assert directory.drops == (
        Drop("user", "alice", "uid 1999 is outside [2000, 3000]"),
        Drop("user", "bob", "gid 40001 is outside [1000, 40000]"),
    )


# --- duplicates -------------------------------------------------------------


def test_users_sharing_a_name_are_all_dropped():
    directory = decide([user("u-1", "alice", 20001), user("u-2", "alice", 20002), user("u-3", "carol", 20003, gecos="")])
    assert names(directory) == ["carol"]
    assert directory.drops == (
        Drop("user", "alice", "name alice is shared by alice, alice"),
        Drop("user", "alice", "name alice is shared by alice, alice"),
    )


def test_users_sharing_a_uid_are_all_dropped():
    directory = decide([user("u-1", "alice", 20001), user("u-2", "bob", 20001), user("u-3", "carol", 20003)])
    assert names(directory) == ["carol"]
    assert directory.drops == (
        Drop("user", "alice", "uid 20001 is shared by alice, bob"),
        Drop("user", "bob", "uid 20001 is shared by alice, bob"),
    )
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("carol",)),)


def test_users_may_share_a_primary_gid():
    directory = decide([user("u-1", "alice", 20001, 30001), user("u-2", "bob", 20002, 30001)])
    assert names(directory) == ["alice", "bob"]


def test_inactive_user_does_not_knock_out_an_active_namesake():
    directory = decide([user("u-1", "alice", 20001, active=False), user("u-2", "alice", 20002)])
    assert [(a.name, a.uid) for a in directory.accounts] == [("alice", 20002)]


def test_groups_sharing_a_gid_are_all_dropped():
    groups = [group("g-1", "slurm-users", 30001), group("g-2", "slurm-sudo", 30001), group("g-3", "ops", 30003)]
    directory = decide([user()], groups, allowed="slurm-users, slurm-sudo, ops")
    assert directory.groups == (PosixGroup("ops", 30003, ("alice",)),)
    assert directory.drops == (
        Drop("group", "slurm-users", "gid 30001 is shared by slurm-sudo, slurm-users"),
        Drop("group", "slurm-sudo", "gid 30001 is shared by slurm-sudo, slurm-users"),
    )
    assert directory.missing_groups == ("slurm-users", "slurm-sudo")


def test_groups_sharing_a_name_are_all_dropped():
    directory = decide([user()], [group("g-1", "slurm-users", 30001), group("g-2", "slurm-users", 30002)])
    assert (directory.accounts, directory.groups) == ((), ())
    assert directory.drops == (
        Drop("group", "slurm-users", "name slurm-users is shared by slurm-users, slurm-users"),
        Drop("group", "slurm-users", "name slurm-users is shared by slurm-users, slurm-users"),
    )
    assert directory.missing_groups == ("slurm-users",)


def test_member_of_two_allowed_groups_gets_one_account():
    groups = [group("g-1", "slurm-users", 30001), group("g-2", "slurm-sudo", 30002)]
    directory = decide([user()], groups, allowed="slurm-users, slurm-sudo")
    assert directory.accounts == (ALICE_ACCOUNT,)
    assert directory.groups == (PosixGroup("slurm-sudo", 30002, ("alice",)), PosixGroup("slurm-users", 30001, ("alice",)))


# --- GECOS ------------------------------------------------------------------


@pytest.mark.parametrize(
    "gecos, cleaned",
    [
        pytest.param("Alice Smith", "Alice Smith", id="plain"),
        pytest.param("Eve: Ops", "Eve Ops", id="colon-removed"),
        pytest.param("a:b:c", "abc", id="colons-removed"),
        pytest.param("Bob\nJones", "BobJones", id="newline-removed"),
        pytest.param("Bob\x00\x07\x1b\x7fJones", "BobJones", id="control-characters-removed"),
        pytest.param("José Müller", "Jose Muller", id="accents-transliterated"),
        pytest.param("Ｆｕｌｌｗｉｄｔｈ", "Fullwidth", id="fullwidth-transliterated"),
        pytest.param("李雷", "", id="no-ascii-equivalent"),
        pytest.param("Zoë 李", "Zoe", id="mixed"),
        pytest.param("  Alice   Smith  ", "Alice Smith", id="spaces-collapsed"),
        pytest.param("O'Brien, Room 4, x123", "O'Brien, Room 4, x123", id="punctuation-kept"),
        pytest.param("x" * 300, "x" * 255, id="cut-at-255"),
        pytest.param(None, "", id="missing"),
        pytest.param(42, "", id="number"),
        pytest.param({"formatted": "Alice"}, "", id="object"),
    ],
)
def test_gecos_is_cleaned_never_dropped(gecos, cleaned):
    (account,) = decide([user(gecos=gecos)]).accounts
    assert account.gecos == cleaned
    assert account.gecos.isascii()


# --- home and shell ---------------------------------------------------------


@pytest.mark.parametrize(
    "template, attribute, home",
    [
        pytest.param("/mnt/home/%u", "/u/alice", "/mnt/home/alice", id="template-beats-attribute"),
        pytest.param("/mnt/home/%u", None, "/mnt/home/alice", id="template"),
        pytest.param("/srv/%u/home", None, "/srv/alice/home", id="template-inner"),
        pytest.param(None, "/u/alice", "/u/alice", id="attribute"),
        pytest.param(None, None, "/home/alice", id="default"),
    ],
)
def test_home_from_template_then_attribute_then_default(template, attribute, home):
    options = {"home_directory": template} if template else {}
    (account,) = decide([user(home=attribute)], **options).accounts
    assert account.home == home


@pytest.mark.parametrize(
    "home",
    [
        pytest.param("u/alice", id="relative"),
        pytest.param("/home/alice/", id="trailing-slash"),
        pytest.param("/home/../root", id="dot-dot"),
        pytest.param("/home/./alice", id="dot"),
        pytest.param("//home/alice", id="double-leading-slash"),
        pytest.param("/home//alice", id="double-slash"),
        pytest.param("/home/al:ice", id="colon"),
        pytest.param("/home/al,ice", id="comma"),
        pytest.param("/home/alice\n", id="newline"),
        pytest.param("/home/al\x00ice", id="nul"),
        pytest.param(5, id="number"),
        pytest.param(["/home/alice"], id="list"),
    ],
)
def test_unclean_home_drops_the_user(home):
    directory = decide([user(home=home)])
    assert directory.accounts == ()
    assert directory.drops == (Drop("user", "alice", f"home directory {home!r} is not an absolute, normalised path"),)


@pytest.mark.parametrize(
    "attribute, options, shell",
    [
        pytest.param("/bin/zsh", {}, "/bin/zsh", id="attribute"),
        pytest.param(None, {}, "/bin/bash", id="default"),
        pytest.param(None, {"default_shell": "/usr/bin/fish"}, "/usr/bin/fish", id="configured-default"),
    ],
)
def test_shell_from_attribute_else_default(attribute, options, shell):
    (account,) = decide([user(shell=attribute)], **options).accounts
    assert account.shell == shell


@pytest.mark.parametrize(
    "shell",
    [
        pytest.param("bash", id="relative"),
        pytest.param("/bin/bash\n", id="newline"),
        pytest.param("/bin/ba:sh", id="colon"),
        pytest.param("/bin/../bin/sh", id="dot-dot"),
        pytest.param("/bin/bash\x00", id="nul"),
        pytest.param(5, id="number"),
        pytest.param(["/bin/zsh"], id="list"),
    ],
)
def test_unclean_shell_is_replaced_by_the_default_and_logged(shell):
    directory = decide([user(shell=shell)])

    assert [a.shell for a in directory.accounts] == ["/bin/bash"]
    assert [(d.kind, d.who) for d in directory.drops] == [("shell", "alice")]
    assert str(directory.drops[0]).endswith("is not an allowed shell: /bin/bash used instead")


# --- activity ---------------------------------------------------------------


def test_inactive_user_is_dropped_quietly():
    directory = decide([user(active=False), user("u-bob", "bob", 20002)])
    assert names(directory) == ["bob"]
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("bob",)),)
    assert directory.drops == (Drop("user", "alice", "is inactive", expected=True),)


def test_inactive_user_with_a_bad_name_is_still_just_inactive():
    assert decide([user(name="Alice", active=False)]).drops == (Drop("user", "id u-alice", "is inactive", expected=True),)


@pytest.mark.parametrize(
    "active, shown",
    [("false", "'false'"), ("true", "'true'"), (None, "None"), (1, "1"), (0, "0")],
)
def test_active_that_is_not_a_boolean_drops_the_user(active, shown):
    directory = decide([user(active=active)])
    assert directory.accounts == ()
    assert directory.drops == (Drop("user", "alice", f"active is {shown}, not a boolean"),)


# --- allowed groups and members --------------------------------------------


def test_user_outside_allowed_groups_never_appears():
    users = [user(), user("u-eve", "eve", 20005)]
    groups = [group("g-1", "slurm-users", 30001, ["u-alice"]), group("g-2", "contractors", 30002, ["u-eve"])]
    directory = decide(users, groups)
    assert names(directory) == ["alice"]
    assert [g.name for g in directory.groups] == ["slurm-users"]
    assert directory.drops == ()


def test_user_in_no_group_never_appears():
    assert names(decide([user(), user("u-eve", "eve", 20005)], [group(members=["u-alice"])])) == ["alice"]


def test_group_names_are_matched_exactly():
    directory = decide([user()], [group(name="Slurm-Users")])
    assert (directory.accounts, directory.groups, directory.missing_groups) == ((), (), ("slurm-users",))


def test_star_allows_every_group():
    groups = [group("g-1", "slurm-users", 30001, ["u-alice"]), group("g-2", "contractors", 30002, ["u-eve"])]
    directory = decide([user(), user("u-eve", "eve", 20005)], groups, allowed="*")
    assert names(directory) == ["alice", "eve"]
    assert [g.name for g in directory.groups] == ["contractors", "slurm-users"]
    assert directory.missing_groups == ()


def test_star_still_drops_groups_with_bad_names():
    directory = decide([user()], [group(name="Slurm Users"), group("g-2", None, 30002)], allowed="*")
    assert directory.groups == ()
    assert directory.drops == (
        Drop("group", "id g-users", f"name 'Slurm Users' {NOT_POSIX}"),
        Drop("group", "id g-2", "has no POSIX name"),
    )


def test_missing_allowed_groups_are_reported_in_configured_order():
    directory = decide([user()], [group()], allowed="ghosts, slurm-users, phantoms")
    assert directory.missing_groups == ("ghosts", "phantoms")
    assert names(directory) == ["alice"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(["slurm-users"], id="list"),
        pytest.param({"value": "slurm-users"}, id="object"),
    ],
)
def test_group_name_that_is_not_a_string_is_dropped_not_a_crash(name):
    directory = decide([user()], [group(name=name)])
    assert (directory.accounts, directory.groups, directory.missing_groups) == ((), (), ("slurm-users",))


def test_member_that_does_not_resolve_is_dropped():
    members = ["u-alice", "u-ghost", Member(None, "User")]
    directory = decide([user()], [group(members=members)])
    assert names(directory) == ["alice"]
    assert directory.drops == (
        Drop("member", "slurm-users/u-ghost", "does not resolve to any listed user"),
        Drop("member", "slurm-users/None", "does not resolve to any listed user"),
    )


def test_nested_group_member_is_dropped_and_not_expanded():
    users = [user(), user("u-root", "admin", 20009)]
    groups = [
        group("g-1", "slurm-users", 30001, ["u-alice", Member("g-2", "Group")]),
        group("g-2", "admins", 30002, ["u-root"]),
    ]
    directory = decide(users, groups)
    assert names(directory) == ["alice"]
    assert directory.drops == (
        Drop("member", "slurm-users/g-2", "is a 'Group', not a User (nested groups are not supported)"),
    )


def test_member_without_a_type_is_a_user():
    assert names(decide([user()], [group(members=[Member("u-alice", None)])])) == ["alice"]


def test_member_type_is_case_insensitive():
    # RFC 7643 §8.7.1: members.type is "caseExact": false.
    assert names(decide([user()], [group(members=[Member("u-alice", "user")])])) == ["alice"]


def test_accounts_groups_and_members_are_sorted_by_name():
    users = [user("u-3", "carol", 20003), user("u-1", "alice", 20001), user("u-2", "bob", 20002)]
    groups = [group("g-2", "zeta", 30002, ["u-3", "u-1"]), group("g-1", "alpha", 30001, ["u-2", "u-3"])]
    directory = decide(users, groups, allowed="zeta, alpha")
    assert names(directory) == ["alice", "bob", "carol"]
    assert directory.groups == (PosixGroup("alpha", 30001, ("bob", "carol")), PosixGroup("zeta", 30002, ("alice", "carol")))


# --- keys -------------------------------------------------------------------


def test_valid_keys_are_kept_in_order():
    keys = [ed25519_key(), rsa_key(2048) + " alice@desk"]
    (account,) = decide([user(keys=keys)]).accounts
    assert account.keys == tuple(keys)


def test_invalid_key_is_dropped_and_the_user_kept():
    keys = [ed25519_key(), dsa_key(), rsa_key(1024), "ssh-ed25519 !!", f'command="/bin/sh" {ed25519_key()}']
    directory = decide([user(keys=keys)])
    (account,) = directory.accounts
    assert account.keys == (ed25519_key(),)
    assert directory.drops == (
        Drop("key", "alice", "key 2 is a DSA key, which is not accepted"),
        Drop("key", "alice", "key 3 is a 1024-bit RSA key, below the 2048-bit minimum"),
        Drop("key", "alice", "key 4 has a body that is not base64"),
        Drop("key", "alice", "key 5 has unknown type 'command=\"/bin/sh\"' or authorized_keys options, which are not accepted (coreweave_allow_key_options)"),
    )


def test_single_key_sent_as_a_bare_string_is_accepted():
    (account,) = decide([user(keys=ed25519_key() + " alice@laptop")]).accounts
    assert account.keys == (ed25519_key() + " alice@laptop",)


@pytest.mark.parametrize("raw, kind", [({"key": "x"}, "dict"), (5, "int"), (True, "bool")])
def test_keys_attribute_that_is_not_a_list_is_dropped(raw, kind):
    directory = decide([user(keys=raw)])
    assert directory.accounts[0].keys == ()
    assert directory.drops == (Drop("key", "alice", f"the SSH keys attribute is a JSON {kind}, not a list"),)


def test_duplicate_keys_are_removed():
    key = ed25519_key()
    (account,) = decide([user(keys=[key, key, f"  {key}  ", ed25519_key("b"), key])]).accounts
    assert account.keys == (key, ed25519_key("b"))


def test_same_key_with_another_comment_is_a_duplicate():
    # peers.md §3 (8): de-duplicate by fingerprint.
    key = ed25519_key()
    (account,) = decide([user(keys=[f"{key} alice@laptop", f"{key} alice@desk", key])]).accounts
    assert account.keys == (f"{key} alice@laptop",)


def test_keys_of_a_dropped_user_never_appear():
    directory = decide([user(uid=0, keys=[ed25519_key()])])
    assert directory.accounts == ()
