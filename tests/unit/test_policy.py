"""policy.decide: who and what reaches the node, and why the rest does not.

Only active members of the allowed groups become accounts. Every field is
checked; a bad entry is dropped with a Drop naming it and the reason, never
"last one wins"; GECOS alone is cleaned rather than dropped.
"""

from __future__ import annotations

import dataclasses

import pytest

from nss_cache_coreweave import config, policy, state
from nss_cache_coreweave.policy import Account, Drop, LocalAccounts, PosixGroup
from nss_cache_coreweave.snapshot import GroupRecord, Member, Snapshot, UserRecord
from support.keys import dsa_key, ed25519_key, rsa_key
from support.scripted_http import BASE, TOKEN

NOT_POSIX = "is not a POSIX portable name (a-z 0-9 _ . -, at most 32, lower-case)"


def configure(allowed="slurm-users", **options):
    # Shells are listed here so that the host's /etc/shells does not matter.
    options.setdefault("allowed_shells", "/bin/bash, /bin/zsh, /usr/bin/fish")
    return config.parse({"base_url": BASE, "groups": allowed, **options}, environ={"NSSCACHE_COREWEAVE_TOKEN": TOKEN})


PRIVATE = object()


def user(id="u-alice", name="alice", uid=20001, gid=PRIVATE, *, active=True, gecos="Alice Smith", home=None, shell=None,
         keys=None):
    """A UserRecord; its primary gid defaults to a private one, equal to the uid."""
    gid = uid if gid is PRIVATE else gid
    return UserRecord(id=id, active=active, name=name, uid=uid, gid=gid, gecos=gecos, home=home, shell=shell,
                      ssh_keys=keys)


def group(id="g-users", name="slurm-users", gid=30001, members=("u-alice",)):
    return GroupRecord(id, name, gid, tuple(m if isinstance(m, Member) else Member(m, "User") for m in members))


def decide(users, groups=None, *, allowed="slurm-users", **options):
    """Decide over ``users`` and ``groups`` (default: one slurm-users group
    holding every user) with coreweave_groups = ``allowed``."""
    if groups is None:
        groups = [group(members=[u.id for u in users])]
    # An empty node: local-account clashes have their own tests.
    return policy.decide(Snapshot(tuple(users), tuple(groups), 0.0), configure(allowed, **options),
                         local=LocalAccounts())


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
    directory = decide([user("u-1", "alice", 20001), user("u-2", "alice", 20002),
                        user("u-3", "carol", 20003, gecos="")])
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


def test_users_may_share_the_primary_gid_of_an_iam_group_of_theirs():
    directory = decide([user("u-1", "alice", 20001, 30001), user("u-2", "bob", 20002, 30001)])
    assert names(directory) == ["alice", "bob"]


def test_users_sharing_a_primary_gid_no_iam_group_carries_are_all_dropped():
    # Not a private group any more: each would reach the other's group-readable files.
    directory = decide([user("u-1", "alice", 20001, 7001), user("u-2", "bob", 20002, 7001),
                        user("u-3", "carol", 20003)])
    assert names(directory) == ["carol"]
    assert directory.drops == (
        Drop("user", "alice", "primary gid 7001 is shared by alice, bob and no IAM group carries it"),
        Drop("user", "bob", "primary gid 7001 is shared by alice, bob and no IAM group carries it"),
    )


def test_a_home_inside_another_users_home_is_dropped():
    directory = decide([user(home="/home/bob/alice"), user("u-bob", "bob", 20002, home="/home/bob"),
                        user("u-carol", "carol", 20003, home="/home/carol")])
    assert names(directory) == ["bob", "carol"]
    assert directory.drops == (Drop("user", "alice", "home /home/bob/alice is inside /home/bob, the home of bob"),)


def test_a_home_inside_a_local_accounts_home_is_dropped():
    local = LocalAccounts(homes=frozenset({"/", "/var/lib/slurm", "/home/localadmin"}))
    directory = decide_on_node([user(home="/var/lib/slurm/alice"), user("u-bob", "bob", 20002, home="/home/bob")],
                               local=local)
    assert names(directory) == ["bob"]
    assert directory.drops == (
        Drop("user", "alice", "home /var/lib/slurm/alice is inside /var/lib/slurm, the home of a local account"),)


def test_at_most_100_lines_of_keys_are_read():
    directory = decide([user(keys="x\n" * 150)])
    assert len(directory.drops) == 101
    assert directory.drops[0] == Drop("key", "alice",
                                      "keys 101 to 150 are ignored: at most 100 lines of keys are read per user")


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
    assert directory.groups == (PosixGroup("slurm-sudo", 30002, ("alice",)),
                                PosixGroup("slurm-users", 30001, ("alice",)))


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
    assert decide([user(name="Alice", active=False)]).drops == (
        Drop("user", "id u-alice", "is inactive", expected=True),)


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


def test_group_named_with_a_listed_prefix_stays_off_the_node():
    """coreweave_groups names whole groups: neither slurm-users-evil (which a listed name
    prefixes) nor slurm (a prefix of a listed name) is slurm-users, so neither is
    written, and a member of only those gets no account."""
    users = [user(), user("u-eve", "eve", 20005)]
    groups = [
        group("g-1", "slurm-users", 30001, ["u-alice"]),
        group("g-2", "slurm-users-evil", 30066, ["u-alice", "u-eve"]),
        group("g-3", "slurm", 30067, ["u-eve"]),
    ]
    directory = decide(users, groups)
    assert directory.accounts == (ALICE_ACCOUNT,)
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("alice",)),)
    assert (directory.drops, directory.missing_groups) == ((), ())


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


# --- coreweave_member_match: members by id, by POSIX name, or either ---------


def by_name(name):
    """A member as a name mode reads it (value/display/userName hold the POSIX name)."""
    return Member(None, "User", name)


def either(value):
    """A member as auto reads it: its value may be a user's id or a POSIX name."""
    return Member(value, "User", value)


def test_auto_takes_values_as_names_when_none_is_a_listed_users_id():
    users = [user(), user("u-bob", "bob", 20002)]
    directory = decide(users, [group(members=[either("alice"), either("bob")])])
    assert names(directory) == ["alice", "bob"]
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("alice", "bob")),)
    assert (directory.drops, directory.warnings) == ((), ())


MIXED_WARNING = ("coreweave_member_match = auto: this listing's group members are user ids (RFC 7643), so {} "
                 "member value(s) equal to a listed user's POSIX name and to no listed user's id are not taken")


def test_auto_reads_ids_only_once_a_value_is_a_listed_users_id_and_warns_of_the_names():
    users = [user(), user("u-bob", "bob", 20002), user("u-carol", "carol", 20003)]
    members = [either("u-bob"), either("alice"), either("carol"), either("ghost")]
    directory = decide(users, [group(members=members), group("g-2", "team", 30002, [either("alice")])],
                       allowed="slurm-users, team")
    assert names(directory) == ["bob"]
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("bob",)), PosixGroup("team", 30002, ()))
    not_taken = "is a listed user's POSIX name, but this listing's members are user ids: not taken"
    assert directory.drops == (
        Drop("member", "slurm-users/alice", not_taken), Drop("member", "slurm-users/carol", not_taken),
        Drop("member", "slurm-users/ghost", "does not resolve to any listed user"),
        Drop("member", "team/alice", not_taken),
    )
    assert [d.code for d in directory.drops] == ["not_an_id", "not_an_id", "unresolved", "not_an_id"]
    assert directory.warnings == (MIXED_WARNING.format(2),)


def test_auto_never_gives_an_unlisted_users_id_to_the_user_of_that_name():
    # John (id "jsmith") is not in the Users listing (a users query filtered him, or he was
    # deleted between the listings); Jane's POSIX name is "jsmith". The other members are ids:
    # "jsmith" is John's id, never Jane's name, for the admins group and for team's gid.
    jane = user("u-jane", "jsmith", 20002, 30004)
    users = [user(), jane]
    groups = [group(members=[either("u-alice"), either("u-jane")]),
              group("g-admins", "admins", 30002, [either("jsmith")]),
              GroupRecord("g-team", "team", 30004, (), frozenset({"jsmith"}), frozenset({"jsmith"}))]
    directory = decide_on_node(users, groups, allowed="slurm-users, admins", local=SLURM_NODE)
    assert names(directory) == ["alice"]
    assert directory.groups == (PosixGroup("admins", 30002, ()), PosixGroup("slurm-users", 30001, ("alice",)))
    assert [(d.who, d.code) for d in directory.drops] == [("admins/jsmith", "not_an_id"), ("jsmith", "gid_not_member")]

    jane = dataclasses.replace(jane, gid=20002)
    directory = decide_on_node([user(), jane], groups, allowed="slurm-users, admins", local=SLURM_NODE)
    assert directory.groups == (PosixGroup("admins", 30002, ()), PosixGroup("slurm-users", 30001, ("alice", "jsmith")))


@pytest.mark.parametrize(
    "evidence, members",
    [
        pytest.param(None, ("bob",), id="no-listed-id-names"),
        pytest.param("other-group", (), id="an-id-in-another-group"),
        pytest.param("user-without-record", (), id="an-id-of-a-user-kept-only-as-its-id"),
    ],
)
def test_auto_decides_one_convention_for_the_whole_listing(evidence, members):
    """A member "bob" in slurm-users is the user named bob unless some member of any group is
    the id of any listed user: then every member is read as an id."""
    users = [user("u-bob", "bob", 20002)]
    groups = [group(members=[either("bob")])]
    listed = frozenset()
    if evidence == "other-group":
        users.append(user("u-carol", "carol", 20003))
        groups.append(GroupRecord("g-x", "other", 30009, (), frozenset({"u-carol"})))
    elif evidence == "user-without-record":
        listed = frozenset({"u-dave"})  # snapshot.take: the listed users' ids members give
    snap = Snapshot(tuple(users), tuple(groups), 0.0, listed)
    directory = policy.decide(snap, configure(), local=LocalAccounts())
    assert directory.groups == (PosixGroup("slurm-users", 30001, members),)
    assert directory.warnings == (() if evidence is None else (MIXED_WARNING.format(1),))


def test_auto_never_takes_an_id_for_another_users_name():
    # A's id is "bob", B's POSIX name is "bob": the member "bob" is A, and B is nobody's member.
    users = [user("bob", "alice", 20001), user("u-b", "bob", 20002)]
    directory = decide(users, [group(members=[either("bob")])])
    assert names(directory) == ["alice"]
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("alice",)),)


@pytest.mark.parametrize("mode", ["auto", "value"])
def test_a_name_two_listed_users_carry_names_neither(mode):
    users = [user("u-1", "bob", 20001), user("u-2", "bob", 20002), user("u-3", "carol", 20003)]
    member = either if mode == "auto" else by_name
    directory = decide(users, [group(members=[member("bob"), member("carol")])], member_match=mode)
    assert names(directory) == ["carol"]
    assert directory.drops == (
        Drop("member", "slurm-users/bob", "is the POSIX name of 2 listed users: ambiguous, none is taken"),
    )
    assert directory.drops[0].code == "ambiguous"


@pytest.mark.parametrize("mode", ["value", "display", "userName"])
def test_name_modes_take_the_name_even_where_it_is_another_users_id(mode):
    users = [user("bob", "alice", 20001), user("u-b", "bob", 20002)]
    directory = decide(users, [group(members=[by_name("bob")])], member_match=mode)
    assert names(directory) == ["bob"]


@pytest.mark.parametrize("mode", ["value", "display", "userName"])
def test_name_modes_never_read_an_id(mode):
    directory = decide([user()], [group(members=[Member("u-alice", "User", None), by_name("ghost")])],
                       member_match=mode)
    assert (names(directory), directory.drops) == ([], (
        Drop("member", "slurm-users/u-alice", "does not resolve to any listed user"),
        Drop("member", "slurm-users/ghost", "does not resolve to any listed user"),
    ))


def test_id_mode_reads_ids_only():
    directory = decide([user()], [group(members=[by_name("alice"), either("alice")])], member_match="id")
    assert (names(directory), [d.code for d in directory.drops]) == ([], ["unresolved", "unresolved"])


@pytest.mark.parametrize("mode", ["auto", "value"])
def test_a_primary_gid_held_through_members_by_name(mode):
    member = either if mode == "auto" else by_name
    groups = [group(members=[member("alice"), member("bob")]), group("g-other", "other-team", 30003, ()),
              GroupRecord("g-team", "team", 30004, (), member_names=frozenset({"bob"}))]
    users = [user(gid=30001), user("u-bob", "bob", 20002, 30004), user("u-carol", "carol", 20003, 30003)]
    directory = decide_on_node(users, groups, local=SLURM_NODE, member_match=mode)
    assert names(directory) == ["alice", "bob"]


def test_auto_never_takes_an_id_for_a_name_in_other_groups_either():
    # team lists "bob", which is A's id: B, named bob, is not its member and may not hold its gid.
    users = [user("bob", "alice", 20001), user("u-b", "bob", 20002, 30004)]
    groups = [group(members=[either("bob"), either("u-b")]),
              GroupRecord("g-team", "team", 30004, (), frozenset({"bob"}), frozenset({"bob"}))]
    directory = decide_on_node(users, groups, local=SLURM_NODE)
    assert names(directory) == ["alice"]
    assert directory.drops[0].code == "gid_not_member"


def test_accounts_groups_and_members_are_sorted_by_name():
    users = [user("u-3", "carol", 20003), user("u-1", "alice", 20001), user("u-2", "bob", 20002)]
    groups = [group("g-2", "zeta", 30002, ["u-3", "u-1"]), group("g-1", "alpha", 30001, ["u-2", "u-3"])]
    directory = decide(users, groups, allowed="zeta, alpha")
    assert names(directory) == ["alice", "bob", "carol"]
    assert directory.groups == (PosixGroup("alpha", 30001, ("bob", "carol")),
                                PosixGroup("zeta", 30002, ("alice", "carol")))


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
        Drop("key", "alice", "key 5 has unknown type 'command=\"/bin/sh\"' or authorized_keys options, "
                             "which are not accepted (coreweave_allow_key_options)"),
    )


def test_single_key_sent_as_a_bare_string_is_accepted():
    (account,) = decide([user(keys=ed25519_key() + " alice@laptop")]).accounts
    assert account.keys == (ed25519_key() + " alice@laptop",)


@pytest.mark.parametrize("raw, reason", [
    ({"key": "x"}, "is a JSON object without a string 'value'"),
    ({"value": 5}, "is a JSON int, not a string"),
    (5, "is a JSON int, not a string"),
    (True, "is a JSON bool, not a string"),
    ([None], "is JSON null, not a string"),
    ([["ssh-ed25519 x"]], "is a JSON list, not a string"),
])
def test_keys_of_another_shape_are_dropped_with_the_reason(raw, reason):
    directory = decide([user(keys=raw)])
    assert directory.accounts[0].keys == ()
    assert directory.drops == (Drop("key", "alice", f"key 1 {reason}"),)


@pytest.mark.parametrize("raw", [
    pytest.param("{a}\r\n", id="crlf-pasted-on-windows"),
    pytest.param(["{a}\r\n"], id="crlf-in-a-list"),
    pytest.param("\n  {a}  \n\n", id="blank-lines-and-spaces"),
    pytest.param("{a}\t", id="trailing-tab"),
    pytest.param([{"value": "{a}", "primary": True, "type": "work"}], id="scim-multi-valued-object"),
    pytest.param([{"Value": "{a}"}], id="scim-object-any-case"),
    pytest.param({"value": "{a}"}, id="one-scim-object"),
])
def test_a_key_as_people_enter_it_is_kept(raw):
    key = ed25519_key() + " alice@laptop"
    shaped = raw.format(a=key) if isinstance(raw, str) else _formatted(raw, key)
    directory = decide([user(keys=shaped)])
    assert directory.accounts[0].keys == (key,)
    assert directory.drops == ()


def _formatted(raw, key):
    if isinstance(raw, dict):
        return {k: v.format(a=key) if isinstance(v, str) else v for k, v in raw.items()}
    return [_formatted(item, key) if isinstance(item, dict) else item.format(a=key) for item in raw]


def test_one_string_of_several_lines_gives_each_valid_key():
    # The Cloud Console asks for "one key per line".
    a, b = ed25519_key(), ed25519_key("b")
    directory = decide([user(keys=f"{a} laptop\r\n\r\n{b} desk\r\nnot a key\r\n")])
    assert directory.accounts[0].keys == (f"{a} laptop", f"{b} desk")
    assert directory.drops == (Drop("key", "alice",
                                    "key 3 has unknown type 'not' or authorized_keys options, which are "
                                    "not accepted (coreweave_allow_key_options)", code="key"),)


def test_a_carriage_return_inside_a_line_is_still_refused():
    directory = decide([user(keys=[ed25519_key() + " a\rb"])])
    assert directory.accounts[0].keys == ()
    assert directory.drops == (Drop("key", "alice", "key 1 contains a line break or NUL"),)


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


# --- the node's own accounts --------------------------------------------------

NODE = LocalAccounts(
    user_names=frozenset({"root", "daemon", "sshd", "localadmin"}),
    uids=frozenset({0, 1, 105, 1000}),
    group_names=frozenset({"root", "sudo", "docker", "localadmin"}),
    gids=frozenset({0, 27, 999, 1000}),
)


def decide_on_node(users, groups=None, *, allowed="slurm-users", local=NODE, **options):
    if groups is None:
        groups = [group(members=[u.id for u in users])]
    return policy.decide(Snapshot(tuple(users), tuple(groups), 0.0), configure(allowed, **options), local=local)


@pytest.mark.parametrize(
    "name, uid, reason",
    [
        pytest.param("root", 20009, "name 'root' is a local account of this node (/etc/passwd)", id="root"),
        pytest.param("daemon", 20009, "name 'daemon' is a local account of this node (/etc/passwd)", id="daemon"),
        pytest.param("sshd", 20009, "name 'sshd' is a local account of this node (/etc/passwd)", id="sshd"),
        pytest.param("mallory", 1000, "uid 1000 belongs to a local account of this node", id="local-uid"),
    ],
)
def test_user_clashing_with_a_local_account_is_dropped(name, uid, reason):
    directory = decide_on_node([user(), user("u-x", name, uid, 20009)])
    assert names(directory) == ["alice"]
    assert directory.drops == (Drop("user", name, reason),)
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("alice",)),)


# A node whose local uids are no local gids and the reverse: svc-backup's uid 20105
# is no group's gid, hpc-admins' gid 20999 no account's uid.
UNPAIRED_IDS_NODE = LocalAccounts(
    user_names=frozenset({"root", "svc-backup"}),
    uids=frozenset({0, 20105}),
    group_names=frozenset({"root", "hpc-admins"}),
    gids=frozenset({0, 20999}),
)


def test_user_holding_the_uid_of_a_local_account_is_dropped_though_no_local_group_has_it_as_gid():
    directory = decide_on_node([user(), user("u-x", "mallory", 20105, 20009)], local=UNPAIRED_IDS_NODE)
    assert names(directory) == ["alice"]
    assert directory.drops == (Drop("user", "mallory", "uid 20105 belongs to a local account of this node"),)
    assert directory.drops[0].code == "local_clash"


def test_user_whose_uid_is_only_the_gid_of_a_local_group_is_kept():
    # uids and gids are separate numbers: only the primary gid is checked against local groups.
    directory = decide_on_node([user(), user("u-bob", "bob", 20999, 20998, gecos="Bob Jones")], local=UNPAIRED_IDS_NODE)
    assert directory.accounts == (ALICE_ACCOUNT,
                                  Account("bob", 20999, 20998, "Bob Jones", "/home/bob", "/bin/bash", ()))
    assert directory.drops == ()


def test_group_holding_the_gid_of_a_local_group_is_dropped_though_no_local_account_has_it_as_uid():
    groups = [group(), group("g-x", "admins", 20999, ["u-alice"])]
    directory = decide_on_node([user()], groups, allowed="slurm-users, admins", local=UNPAIRED_IDS_NODE)
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("alice",)),)
    assert directory.drops == (Drop("group", "admins", "gid 20999 belongs to a local group of this node"),)
    assert directory.drops[0].code == "local_clash"


def test_group_whose_gid_is_only_the_uid_of_a_local_account_is_kept():
    groups = [group(), group("g-x", "admins", 20105, ["u-alice"])]
    directory = decide_on_node([user()], groups, allowed="slurm-users, admins", local=UNPAIRED_IDS_NODE)
    assert directory.groups == (PosixGroup("admins", 20105, ("alice",)), PosixGroup("slurm-users", 30001, ("alice",)))
    assert directory.drops == ()


def test_root_with_uid_0_is_dropped_for_its_uid_first():
    directory = decide_on_node([user("u-root", "root", 0, 0, keys=[ed25519_key()])])
    assert directory.accounts == ()
    assert directory.drops == (Drop("user", "root", "uid 0 (root) is never accepted"),)


@pytest.mark.parametrize(
    "name, gid, reason",
    [
        pytest.param("sudo", 30009, "name 'sudo' is a local group of this node (/etc/group)", id="sudo"),
        pytest.param("docker", 30009, "name 'docker' is a local group of this node (/etc/group)", id="docker"),
        pytest.param("admins", 1000, "gid 1000 belongs to a local group of this node", id="local-gid"),
    ],
)
def test_group_clashing_with_a_local_group_is_dropped(name, gid, reason):
    groups = [group(), group("g-x", name, gid, ["u-alice"])]
    directory = decide_on_node([user()], groups, allowed=f"slurm-users, {name}")
    assert directory.groups == (PosixGroup("slurm-users", 30001, ("alice",)),)
    assert directory.drops == (Drop("group", name, reason),)
    assert directory.missing_groups == (name,)


def test_member_of_only_a_local_clashing_group_gets_no_account():
    groups = [group("g-sudo", "sudo", 30027, ["u-alice"])]
    directory = decide_on_node([user()], groups, allowed="sudo")
    assert (directory.accounts, directory.groups) == ((), ())


def test_local_clash_drops_only_the_clashing_party():
    # A local-account clash is not a duplicate: the other IAM users stay.
    users = [user(), user("u-2", "root", 20002), user("u-3", "bob", 20003)]
    directory = decide_on_node(users)
    assert names(directory) == ["alice", "bob"]


def test_an_empty_node_clashes_with_nothing():
    directory = decide_on_node([user("u-x", "root", 20009)], local=LocalAccounts())
    assert names(directory) == ["root"]


def test_local_accounts_default_to_the_configured_files(tmp_path):
    passwd, group_file = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1500:1500::/home/alice:/bin/sh\n")
    group_file.write_text("root:x:0:\nslurm-users:x:27:\n")
    cfg = configure(local_passwd=str(passwd), local_group=str(group_file))
    directory = policy.decide(Snapshot((user(),), (group(),), 0.0), cfg)
    assert directory.accounts == ()
    assert directory.groups == ()
    assert directory.drops == (
        Drop("group", "slurm-users", "name 'slurm-users' is a local group of this node (/etc/group)"),
    )


@pytest.fixture
def node_files(tmp_path):
    passwd, group_file = tmp_path / "passwd", tmp_path / "group"

    def write(passwd_text="", group_text=""):
        passwd.write_text(passwd_text)
        group_file.write_text(group_text)
        return configure(local_passwd=str(passwd), local_group=str(group_file))

    return write


def test_read_local_accounts_reads_names_and_ids(node_files):
    cfg = node_files(
        "root:x:0:0:root:/root:/bin/bash\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n",
        "root:x:0:\nsudo:x:27:admin\nusers:x:100:\n",
    )
    assert policy.read_local_accounts(cfg) == LocalAccounts(
        user_names=frozenset({"root", "daemon", "_apt"}),
        uids=frozenset({0, 1, 42}),
        group_names=frozenset({"root", "sudo", "users"}),
        gids=frozenset({0, 27, 100}),
        homes=frozenset({"/root", "/usr/sbin", "/nonexistent"}),
    )


def test_read_local_accounts_skips_comments_nis_markers_blank_and_odd_lines(node_files):
    cfg = node_files(
        "# comment\n\n+nisuser::::::\n-excluded::::::\nroot:x:0:0::/root:/bin/sh\nshort\nbaduid:x:abc:0::/:/bin/sh\n",
        "+:::\nwheel:x:10:\n",
    )
    local = policy.read_local_accounts(cfg)
    assert local.user_names == frozenset({"root", "short", "baduid"})
    assert local.uids == frozenset({0})
    assert (local.group_names, local.gids) == (frozenset({"wheel"}), frozenset({10}))


def test_missing_local_files_count_as_empty(tmp_path):
    cfg = configure(local_passwd=str(tmp_path / "none"), local_group=str(tmp_path / "none2"))
    assert policy.read_local_accounts(cfg) == LocalAccounts()


def test_unreadable_local_file_is_an_error_not_an_empty_node(tmp_path):
    cfg = configure(local_passwd=str(tmp_path), local_group=str(tmp_path / "none"))  # a directory
    with pytest.raises(OSError):
        policy.read_local_accounts(cfg)


def test_the_real_etc_passwd_holds_root():
    # The default: the node's own files.
    assert "root" in policy.read_local_accounts(configure()).user_names


# --- allowed shells -----------------------------------------------------------


@pytest.mark.parametrize(
    "shell, allowed, used, logged",
    [
        pytest.param("/bin/zsh", "/bin/bash, /bin/zsh", "/bin/zsh", False, id="listed"),
        pytest.param("/usr/bin/zsh", "/bin/bash, /bin/zsh", "/bin/bash", True, id="not-listed"),
        pytest.param("/bin/sh", "/bin/bash", "/bin/bash", True, id="sh-not-listed"),
        pytest.param("/usr/sbin/nologin", "/bin/bash, /usr/sbin/nologin", "/usr/sbin/nologin", False,
                     id="nologin-listed"),
        pytest.param("/tmp/evil", "/bin/bash", "/bin/bash", True, id="tmp"),
        pytest.param("/bin/bash/", "/bin/bash/", "/bin/bash", True, id="listed-but-unclean"),
    ],
)
def test_only_allowed_shells_are_kept(shell, allowed, used, logged):
    directory = decide([user(shell=shell)], allowed_shells=allowed)
    assert [a.shell for a in directory.accounts] == [used]
    expected = ((Drop("shell", "alice", f"shell {shell!r} is not an allowed shell: /bin/bash used instead"),)
                if logged else ())
    assert directory.drops == expected


def test_replacement_shell_is_the_configured_default():
    directory = decide([user(shell="/bin/csh")], allowed_shells="/bin/zsh", default_shell="/bin/zsh")
    assert [a.shell for a in directory.accounts] == ["/bin/zsh"]
    assert directory.drops == (Drop("shell", "alice",
                                    "shell '/bin/csh' is not an allowed shell: /bin/zsh used instead"),)


def test_shell_replacement_does_not_drop_the_user():
    directory = decide([user(shell="/bin/evil")])
    assert names(directory) == ["alice"]
    assert [d.kind for d in directory.drops] == ["shell"]


# --- SSH key rules and options -----------------------------------------------


def test_key_options_are_refused_by_default():
    directory = decide([user(keys=[f'from="10.0.0.0/8" {ed25519_key()}', ed25519_key("b")])])
    assert directory.accounts[0].keys == (ed25519_key("b"),)
    assert [d.reason for d in directory.drops] == [
        "key 1 has unknown type 'from=\"10.0.0.0/8\"' or authorized_keys options, which are not accepted "
        "(coreweave_allow_key_options)"
    ]


@pytest.mark.parametrize(
    "options",
    [
        'from="10.0.0.0/8"',
        "no-pty",
        "restrict,pty",
        'command="/usr/bin/true",no-agent-forwarding,no-port-forwarding',
        'permitopen="db:5432",environment="A=1"',
        'from="10.0.0.0/8,192.168.0.0/16",expiry-time="20301231"',
        'command="echo \\"hi there\\""',
        "NO-PTY",
    ],
)
def test_key_options_with_openssh_names_are_kept_when_allowed(options):
    line = f"{options} {ed25519_key()} alice@laptop"
    directory = decide([user(keys=[line])], allow_key_options="true")
    assert directory.accounts[0].keys == (line,)
    assert directory.drops == ()


@pytest.mark.parametrize(
    "options, reason",
    [
        pytest.param("evil-option", "has unknown option 'evil-option'", id="unknown-name"),
        pytest.param('no-pty,exec="/bin/sh"', "has unknown option 'exec'", id="unknown-among-known"),
        pytest.param('command="/bin/sh', "has options with an unterminated quote", id="unterminated-quote"),
        pytest.param('command="é"', "has options with control or non-ASCII characters", id="non-ascii"),
        pytest.param('command="a\tb"', "has options with control or non-ASCII characters", id="tab"),
        pytest.param("no-pty,,no-user-rc", "has unknown type or malformed options 'no-pty,,no-user-rc'",
                     id="empty-option"),
        pytest.param('from=10.0.0.0/8', "has unknown type or malformed options 'from=10.0.0.0/8'", id="unquoted-value"),
    ],
)
def test_malformed_or_unknown_key_options_are_refused_even_when_allowed(options, reason):
    directory = decide([user(keys=[f"{options} {ed25519_key()}"])], allow_key_options="true")
    assert directory.accounts[0].keys == ()
    assert directory.drops == (Drop("key", "alice", f"key 1 {reason}"),)


def test_options_on_one_line_never_apply_to_the_next():
    # Each line is a key of its own: the options line is dropped, the key below it carries none.
    line = f'command="x"\n{ed25519_key("b")} {ed25519_key()}'
    directory = decide([user(keys=[line])], allow_key_options="true")
    assert directory.accounts[0].keys == (f'{ed25519_key("b")} {ed25519_key()}',)
    assert directory.drops == (Drop("key", "alice", "key 1 is not 'type base64 [comment]'"),)


def test_options_in_front_of_a_dsa_key_do_not_make_it_acceptable():
    directory = decide([user(keys=[f"no-pty {dsa_key()}"])], allow_key_options="true")
    assert directory.drops == (Drop("key", "alice", "key 1 is a DSA key, which is not accepted"),)


def test_the_same_key_with_other_options_or_comments_is_one_key():
    key = ed25519_key()
    lines = [f'from="10.0.0.0/8" {key} laptop', f"{key} desk", f"no-pty {key}", key, ed25519_key("b")]
    (account,) = decide([user(keys=lines)], allow_key_options="true").accounts
    assert account.keys == (f'from="10.0.0.0/8" {key} laptop', ed25519_key("b"))


@pytest.mark.parametrize(
    "types, kept",
    [
        pytest.param("ed25519", ["ed25519"], id="ed25519-only"),
        pytest.param("rsa", ["rsa"], id="rsa-only"),
        pytest.param("ed25519, rsa", ["ed25519", "rsa"], id="both"),
    ],
)
def test_configured_key_types_decide_which_keys_stay(types, kept):
    keys = {"ed25519": ed25519_key(), "rsa": rsa_key(2048)}
    directory = decide([user(keys=list(keys.values()))], ssh_key_types=types)
    assert directory.accounts[0].keys == tuple(keys[k] for k in kept)
    refused = [f"key {i} has type {keys[k].split()[0]}, which is not allowed here"
               for i, k in enumerate(keys, 1) if k not in kept]
    assert [d.reason for d in directory.drops] == refused


def test_configured_rsa_minimum_applies():
    directory = decide([user(keys=[rsa_key(2048)])], min_rsa_bits=3072)
    assert directory.accounts[0].keys == ()
    assert [d.reason for d in directory.drops] == ["key 1 is a 2048-bit RSA key, below the 3072-bit minimum"]


# --- the shrink guard ---------------------------------------------------------


def counts(users, groups):
    return state.Counts(users, groups, 0.0)


def directory_of(n_users, n_groups):
    accounts = tuple(Account(f"u{i}", 20000 + i, 20000, "", f"/home/u{i}", "/bin/bash", ()) for i in range(n_users))
    groups = tuple(PosixGroup(f"g{i}", 30000 + i, ()) for i in range(n_groups))
    return policy.Directory(accounts, groups, (), ())


EMPTIED = (
    "refusing to remove all {n} {what} of the last accepted run: the previous caches are kept. If this removal is "
    "intended, run `nsscache-coreweave update --accept-shrink` once "
    "(or set NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1 for one run)"
)


FIRST_EMPTY = (
    "refusing an empty directory: no active member of coreweave_groups (*) is left to write (no earlier accepted run "
    "to compare with); the previous caches are kept. If this removal is intended, run `nsscache-coreweave update "
    "--accept-shrink` once (or set NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1 for one run)"
)


def shrink_message(what, before, now, share, limit="25%"):
    return (
        f"refusing to shrink {what} from {before} to {now} (-{share}, more than coreweave_max_shrink {limit} of the "
        "last accepted run): the previous caches are kept. If this removal is intended, run "
        "`nsscache-coreweave update --accept-shrink` once (or set NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1 for one run)"
    )


@pytest.mark.parametrize(
    "previous, now, max_shrink, expected",
    [
        pytest.param(None, (3, 2), 0.25, None, id="first-run"),
        pytest.param(None, (0, 2), 1.0, FIRST_EMPTY, id="first-run-empty-even-with-the-ratio-off"),
        pytest.param((4, 2), (3, 2), 0.25, None, id="exactly-25-percent"),
        pytest.param((4, 2), (2, 2), 0.25, shrink_message("users", 4, 2, "50%"), id="half-the-users"),
        pytest.param((3, 2), (1, 2), 0.25, shrink_message("users", 3, 1, "67%"), id="3-users-to-1"),
        pytest.param((3, 2), (0, 2), 0.25, shrink_message("users", 3, 0, "100%"), id="every-user-gone"),
        pytest.param((4, 4), (4, 2), 0.25, shrink_message("groups", 4, 2, "50%"), id="half-the-groups"),
        pytest.param((4, 4), (1, 1), 0.25, shrink_message("users", 4, 1, "75%"), id="users-named-first"),
        pytest.param((4, 2), (400, 20), 0.25, None, id="growth"),
        pytest.param((0, 0), (0, 0), 0.25, None, id="was-empty"),
        pytest.param((100, 2), (99, 2), 0.0, shrink_message("users", 100, 99, "1%", "0%"), id="zero-tolerance"),
        pytest.param((100, 2), (50, 2), 0.5, None, id="configured-half"),
        pytest.param((100, 2), (1, 1), 1.0, None, id="one-disables-the-ratio"),
        pytest.param((100, 2), (0, 2), 1.0, EMPTIED.format(n=100, what="users"),
                     id="emptied-users-even-with-the-ratio-off"),
        pytest.param((100, 2), (5, 0), 1.0, EMPTIED.format(n=2, what="groups"),
                     id="emptied-groups-even-with-the-ratio-off"),
    ],
)
def test_shrink_problem(previous, now, max_shrink, expected):
    before = None if previous is None else counts(*previous)
    refusal = policy.shrink_problem(directory_of(*now), before, max_shrink)
    assert (refusal if refusal is None else str(refusal)) == expected


# --- the primary gid grants a group's access ----------------------------------------------------

SLURM_NODE = LocalAccounts(gids=frozenset({0, 64030, 5000}),
                           homes=frozenset({"/root", "/home/localadmin", "/nonexistent"}))


@pytest.mark.parametrize(
    "gid, reason",
    [
        pytest.param(64030, "primary gid 64030 belongs to a local group of this node", id="debian-slurm-group"),
        pytest.param(5000, "primary gid 5000 belongs to a local group of this node", id="site-hpc-admins"),
        pytest.param(30002, "primary gid 30002 is the gid of IAM group slurm-admins, which the user is not a member of",
                     id="listed-group-not-a-member"),
        pytest.param(30003, "primary gid 30003 is the gid of IAM group other-team, which the user is not a member of",
                     id="unlisted-group-not-a-member"),
    ],
)
def test_a_primary_gid_the_user_may_not_hold_drops_the_user(gid, reason):
    groups = [group(members=["u-alice", "u-bob"]), group("g-admins", "slurm-admins", 30002, ["u-alice"]),
              group("g-other", "other-team", 30003, ["u-alice"])]
    directory = decide_on_node([user(), user("u-bob", "bob", 20002, gid)], groups, allowed="slurm-users, slurm-admins",
                               local=SLURM_NODE)
    assert names(directory) == ["alice"]
    assert directory.drops == (Drop("user", "bob", reason),)
    assert directory.drops[0].code in ("gid_local", "gid_not_member")


@pytest.mark.parametrize(
    "gid",
    [
        pytest.param(20002, id="private-gid-no-group-uses"),
        pytest.param(30001, id="gid-of-a-listed-group-of-hers"),
        pytest.param(30003, id="gid-of-an-unlisted-group-of-hers"),
    ],
)
def test_a_primary_gid_the_user_may_hold_is_kept(gid):
    groups = [group(members=["u-alice", "u-bob"]), group("g-other", "other-team", 30003, ["u-bob"])]
    directory = decide_on_node([user(), user("u-bob", "bob", 20002, gid)], groups, local=SLURM_NODE)
    assert names(directory) == ["alice", "bob"]
    assert directory.drops == ()


def test_a_gid_shared_by_two_groups_needs_membership_of_both():
    groups = [group(members=["u-alice", "u-bob"]), group("g-a", "team-a", 30005, ["u-bob"]),
              group("g-b", "team-b", 30005, ["u-alice"])]
    directory = decide_on_node([user(), user("u-bob", "bob", 20002, 30005)], groups, local=SLURM_NODE)
    assert names(directory) == ["alice"]
    assert directory.drops == (Drop(
        "user", "bob", "primary gid 30005 is the gid of IAM group team-b, which the user is not a member of"),)


# --- homes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "home, reason",
    [
        pytest.param("/", "home directory '/' is a system directory", id="slash"),
        pytest.param("/root", "home directory '/root' is a system directory", id="root"),
        pytest.param("/etc", "home directory '/etc' is a system directory", id="etc"),
        pytest.param("/etc/ssh", "home directory '/etc/ssh' is a system directory", id="below-etc"),
        pytest.param("/lib64", "home directory '/lib64' is a system directory", id="lib64"),
        pytest.param("/usr", "home directory '/usr' is a system directory", id="usr"),
        pytest.param("/var", "home directory '/var' is a system directory", id="var"),
        pytest.param("/tmp", "home directory '/tmp' is a system directory", id="tmp"),
        pytest.param("/proc/self", "home directory '/proc/self' is a system directory", id="below-proc"),
        pytest.param("/run/user", "home directory '/run/user' is a system directory", id="below-run"),
        pytest.param("/tmp/bob", "home directory '/tmp/bob' is a system directory", id="below-tmp"),
        pytest.param("/var/tmp/bob", "home directory '/var/tmp/bob' is a system directory", id="below-var-tmp"),
        pytest.param("/home/localadmin",
                     "home directory '/home/localadmin' is the home of a local account of this node",
                     id="a-local-accounts-home"),
        pytest.param("/nonexistent", "home directory '/nonexistent' is the home of a local account of this node",
                     id="nobodys-home"),
    ],
)
def test_a_home_that_is_not_the_users_own_drops_the_user(home, reason):
    directory = decide_on_node([user(), user("u-bob", "bob", 20002, 20002, home=home)], local=SLURM_NODE)
    assert names(directory) == ["alice"]
    assert directory.drops == (Drop("user", "bob", reason),)


@pytest.mark.parametrize("home", ["/var/lib/bob", "/usr/local/home/bob", "/home/bob", "/libraries/bob", "/srv/bob"])
def test_a_home_below_a_shared_tree_is_kept(home):
    directory = decide_on_node([user(), user("u-bob", "bob", 20002, 20002, home=home)], local=SLURM_NODE)
    assert names(directory) == ["alice", "bob"]


def test_users_sharing_a_home_are_all_dropped():
    directory = decide([user(home="/home/team"), user("u-bob", "bob", 20002, 20002, home="/home/team"),
                        user("u-carol", "carol", 20003, 20003)])
    assert names(directory) == ["carol"]
    assert directory.drops == (
        Drop("user", "alice", "home /home/team is shared by alice, bob"),
        Drop("user", "bob", "home /home/team is shared by alice, bob"),
    )


def test_users_sharing_a_name_are_dropped_once_each():
    directory = decide([user("u-1", "alice", 20001), user("u-2", "alice", 20001)])
    assert [d.reason for d in directory.drops] == ["name alice is shared by alice, alice"] * 2


# --- the run marker's name ------------------------------------------------------------------------


def test_the_run_markers_name_is_never_an_iam_user_or_group():
    reason = "name 'nsscache-coreweave' is reserved for the run marker on the first line of every cache"
    users = [user(), user("u-x", "nsscache-coreweave", 20009, 20009)]
    groups = [group(members=["u-alice", "u-x"]), group("g-x", "nsscache-coreweave", 30009, ["u-alice"])]
    directory = decide(users, groups, allowed="slurm-users, nsscache-coreweave")
    assert names(directory) == ["alice"]
    assert [g.name for g in directory.groups] == ["slurm-users"]
    assert directory.drops == (Drop("group", "nsscache-coreweave", reason), Drop("user", "nsscache-coreweave", reason))


# --- policy.narrow: a published Directory under the node's own rules (mirror mode) -------------------------

CAROL_ACCOUNT = Account("carol", 20003, 20003, "Carol White", "/home/carol", "/bin/bash", ())
BOB_ACCOUNT = Account("bob", 20002, 20002, "Bob Jones", "/home/bob", "/bin/zsh", (ed25519_key("bob"),))
PUBLISHED = policy.Directory(
    accounts=(dataclasses.replace(ALICE_ACCOUNT, keys=(ed25519_key(),)), BOB_ACCOUNT, CAROL_ACCOUNT),
    groups=(PosixGroup("other-team", 30003, ("carol",)), PosixGroup("slurm-admins", 30002, ("alice",)),
            PosixGroup("slurm-users", 30001, ("alice", "bob"))),
    drops=(), missing_groups=(),
)


EMPTY_NODE = LocalAccounts()


def narrow(published=PUBLISHED, allowed="*", local=EMPTY_NODE, **options):
    """``published`` narrowed by a node with coreweave_groups = ``allowed`` ("*": every published group)."""
    return policy.narrow(published, configure(allowed, **options), local=local)


def drops_with_codes(directory):
    return [(d.kind, d.who, d.reason, d.code) for d in directory.drops]


def test_narrow_keeps_a_published_directory_nothing_node_local_touches():
    assert narrow() == PUBLISHED


def test_narrow_in_mirror_mode_without_coreweave_groups_keeps_every_published_group(tmp_path):
    public = tmp_path / "publisher.pub"
    public.write_text(ed25519_key("publisher") + "\n")
    cfg = config.parse({"mirror_url": "https://mirror.example.com/bundle", "mirror_public_key": str(public),
                        "allowed_shells": "/bin/bash, /bin/zsh"}, environ={})

    assert cfg.allowed_groups is None
    assert policy.narrow(PUBLISHED, cfg, local=LocalAccounts()) == PUBLISHED


def test_narrow_leaves_what_decide_published_unchanged():
    users = [user(keys=[ed25519_key()]), user("u-bob", "bob", 20002, 30001, gecos="Bob Jones", shell="/bin/zsh"),
             user("u-carol", "carol", 20003, gecos="Carol White", home="/srv/carol")]
    groups = [group(members=["u-alice", "u-bob"]), group("g-admins", "slurm-admins", 30002, ["u-alice", "u-carol"])]
    decided = decide(users, groups, allowed="slurm-users, slurm-admins")
    assert (decided.drops, decided.warnings, len(decided.accounts)) == ((), (), 3)

    narrowed = policy.narrow(decided, configure("slurm-users, slurm-admins"), local=LocalAccounts())

    assert narrowed == decided
    assert policy.narrow(narrowed, configure("slurm-users, slurm-admins"), local=LocalAccounts()) == decided


@pytest.mark.parametrize(
    "local, reason",
    [
        pytest.param(LocalAccounts(user_names=frozenset({"bob"})),
                     "name 'bob' is a local account of this node (/etc/passwd)", id="name"),
        pytest.param(LocalAccounts(uids=frozenset({20002})), "uid 20002 belongs to a local account of this node",
                     id="uid"),
    ],
)
def test_narrow_drops_an_account_clashing_with_a_local_one(local, reason):
    narrowed = narrow(local=local)

    assert names(narrowed) == ["alice", "carol"]
    assert drops_with_codes(narrowed) == [("user", "bob", reason, "local_clash")]
    assert narrowed.groups[2] == PosixGroup("slurm-users", 30001, ("alice",))


@pytest.mark.parametrize(
    "local, reason",
    [
        pytest.param(LocalAccounts(group_names=frozenset({"other-team"})),
                     "name 'other-team' is a local group of this node (/etc/group)", id="name"),
        pytest.param(LocalAccounts(gids=frozenset({30003})), "gid 30003 belongs to a local group of this node",
                     id="gid"),
    ],
)
def test_narrow_drops_a_group_clashing_with_a_local_one_and_its_only_members(local, reason):
    narrowed = narrow(allowed="slurm-users, slurm-admins, other-team", local=local)

    assert [g.name for g in narrowed.groups] == ["slurm-admins", "slurm-users"]
    assert names(narrowed) == ["alice", "bob"]  # carol's only group is not on this node
    assert drops_with_codes(narrowed) == [("group", "other-team", reason, "local_clash")]
    assert narrowed.missing_groups == ("other-team",)


def test_narrow_drops_an_account_whose_primary_gid_is_a_local_group():
    narrowed = narrow(local=LocalAccounts(gids=frozenset({20002})))

    assert names(narrowed) == ["alice", "carol"]
    assert drops_with_codes(narrowed) == [
        ("user", "bob", "primary gid 20002 belongs to a local group of this node", "gid_local")]


@pytest.mark.parametrize(
    "options, drops",
    [
        pytest.param(dict(min_uid="20002"), [("user", "alice", "uid 20001 is outside [20002, 4294967294]", "uid")],
                     id="uid-below"),
        pytest.param(dict(max_uid="20002"), [("user", "carol", "uid 20003 is outside [1000, 20002]", "uid")],
                     id="uid-above"),
        pytest.param(dict(min_gid="20002"), [("user", "alice", "gid 20001 is outside [20002, 4294967294]", "gid")],
                     id="primary-gid-below"),
        pytest.param(dict(max_gid="30002"), [("group", "other-team", "gid 30003 is outside [1000, 30002]", "gid")],
                     id="group-gid-above"),
    ],
)
def test_narrow_applies_the_nodes_id_ranges(options, drops):
    narrowed = narrow(**options)

    assert drops_with_codes(narrowed) == drops
    assert drops[0][1] not in names(narrowed) + [g.name for g in narrowed.groups]


def test_narrow_drops_an_account_whose_uid_range_leaves_its_group_empty_but_keeps_the_group():
    narrowed = narrow(min_uid="20002")

    assert narrowed.groups[1] == PosixGroup("slurm-admins", 30002, ())


@pytest.mark.parametrize(
    "home, local_homes, reason, code",
    [
        pytest.param("/home/localadmin", {"/home/localadmin"},
                     "home directory '/home/localadmin' is the home of a local account of this node", "home_local",
                     id="a-local-accounts-home"),
        pytest.param("/srv/shared/bob", {"/srv/shared"}, "home /srv/shared/bob is inside /srv/shared, the home of "
                     "a local account", "home_nested", id="inside-a-local-accounts-home"),
        pytest.param("/etc/bob", set(), "home directory '/etc/bob' is a system directory", "home_system",
                     id="a-system-tree"),
    ],
)
def test_narrow_drops_an_account_whose_home_is_not_its_own_on_this_node(home, local_homes, reason, code):
    published = dataclasses.replace(PUBLISHED, accounts=(PUBLISHED.accounts[0], dataclasses.replace(
        BOB_ACCOUNT, home=home), CAROL_ACCOUNT))

    narrowed = narrow(published, local=LocalAccounts(homes=frozenset(local_homes)))

    assert names(narrowed) == ["alice", "carol"]
    assert drops_with_codes(narrowed) == [("user", "bob", reason, code)]


def test_narrow_replaces_a_shell_the_node_does_not_allow_by_its_default():
    narrowed = narrow(allowed_shells="/bin/bash, /bin/sh", default_shell="/bin/sh")

    assert narrowed.accounts[1] == dataclasses.replace(BOB_ACCOUNT, shell="/bin/sh")
    assert drops_with_codes(narrowed) == [
        ("shell", "bob", "shell '/bin/zsh' is not an allowed shell: /bin/sh used instead", "shell")]


def test_narrow_to_the_nodes_coreweave_groups():
    narrowed = narrow(allowed="slurm-users")

    assert narrowed.groups == (PosixGroup("slurm-users", 30001, ("alice", "bob")),)
    assert names(narrowed) == ["alice", "bob"]  # carol, in other-team only, is not kept
    assert (narrowed.drops, narrowed.missing_groups) == ((), ())


def test_narrow_keeps_a_member_of_a_listed_group_in_no_other_listed_group():
    narrowed = narrow(allowed="other-team")

    assert (names(narrowed), narrowed.groups) == (["carol"], (PosixGroup("other-team", 30003, ("carol",)),))


def test_narrow_names_a_listed_group_the_bundle_lacks():
    narrowed = narrow(allowed="gpu-users, slurm-users, hpc")

    assert [g.name for g in narrowed.groups] == ["slurm-users"]
    assert narrowed.missing_groups == ("gpu-users", "hpc")


def test_narrow_drops_every_party_to_a_clash_a_bundle_should_never_hold():
    twin = dataclasses.replace(BOB_ACCOUNT, name="bobby", home="/home/bobby")  # bob's uid
    published = dataclasses.replace(
        PUBLISHED, accounts=PUBLISHED.accounts + (twin,),
        groups=PUBLISHED.groups[:2] + (PosixGroup("slurm-users", 30001, ("alice", "bob", "bobby")),
                                        PosixGroup("twins", 30001, ("carol",))))

    narrowed = narrow(published)

    assert names(narrowed) == ["alice", "carol"]
    assert [(d.kind, d.who, d.code) for d in narrowed.drops] == [
        ("user", "bob", "duplicate"), ("user", "bobby", "duplicate"),
        ("group", "slurm-users", "duplicate"), ("group", "twins", "duplicate")]
