"""render: a policy Directory -> nsscache maps, checked through nsscache's own
files cache writer (``FilesCache._WriteData``), so the lines below are the
lines libnss-cache and the keys helper will read. Every map starts with the
run marker (marker.py).
"""

from __future__ import annotations

import io

import pytest
from nss_cache.caches import cache_factory
from nss_cache.maps import group, passwd, shadow, sshkey

from nss_cache_coreweave import marker, render
from nss_cache_coreweave.config import ShadowDefaults
from nss_cache_coreweave.policy import Account, Directory, PosixGroup
from support.keys import ed25519_key, rsa_key

ALICE_KEYS = (ed25519_key() + " alice@laptop", rsa_key(2048) + " alice@desk")
DIRECTORY = Directory(
    accounts=(
        Account("alice", 20001, 20001, "Alice Smith", "/mnt/home/alice", "/bin/bash", ALICE_KEYS),
        Account("bob", 20002, 20002, "Bob Jones", "/mnt/home/bob", "/bin/zsh", ()),
        Account("carol", 20003, 30001, "", "/home/carol", "/bin/bash", (ed25519_key("carol"),)),
    ),
    groups=(
        PosixGroup("slurm-sudo", 30002, ("alice",)),
        PosixGroup("slurm-users", 30001, ("alice", "bob", "carol")),
        PosixGroup("empty", 30003, ()),
    ),
    drops=(),
    missing_groups=(),
)
RUN = "20261202T194608Z-3f9ac2e1b7d0"
NO_SHADOW_DEFAULTS = ShadowDefaults()  # every coreweave_shadow_default_* unset
MARKERS = {
    "passwd": f"nsscache-coreweave:*{RUN}:65534:65534:run marker, not an account:/nonexistent:/usr/sbin/nologin",
    "group": f"nsscache-coreweave:*{RUN}:65534:",
    "shadow": f"nsscache-coreweave:*{RUN}:::::::",
    "sshkey": f"nsscache-coreweave:*{RUN}",
}


def written(map_name, directory, tmp_path, shadow_defaults=NO_SHADOW_DEFAULTS):
    cache = cache_factory.Create({"name": "files", "dir": str(tmp_path)}, map_name)
    target = io.BytesIO()
    for entry in render.render(map_name, directory, RUN, shadow_defaults):
        cache._WriteData(target, entry)
    lines = target.getvalue().decode("ascii").splitlines()
    assert lines[0] == MARKERS[map_name]
    return lines[1:]


def test_passwd_lines(tmp_path):
    assert written("passwd", DIRECTORY, tmp_path) == [
        "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash",
        "bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/zsh",
        "carol:x:20003:30001::/home/carol:/bin/bash",
    ]


def test_group_lines(tmp_path):
    assert written("group", DIRECTORY, tmp_path) == [
        "slurm-sudo:x:30002:alice",
        "slurm-users:x:30001:alice,bob,carol",
        "empty:x:30003:",
    ]


def test_shadow_line_is_a_locked_password_for_every_account(tmp_path):
    assert written("shadow", DIRECTORY, tmp_path) == ["alice:*:::::::", "bob:*:::::::", "carol:*:::::::"]


@pytest.mark.parametrize(
    "defaults, line",
    [
        pytest.param(ShadowDefaults(), "alice:*:::::::", id="none-set"),
        pytest.param(ShadowDefaults(lstchg=19000, min=1, max=99999, warn=7, inact=30, expire=20000, flag=3),
                     "alice:*:19000:1:99999:7:30:20000:3", id="all-set"),
        pytest.param(ShadowDefaults(max=99999, warn=7), "alice:*:::99999:7:::", id="the-fork-s-example"),
        pytest.param(ShadowDefaults(expire=2**31 - 1), "alice:*::::::2147483647:", id="highest"),
        # nsscache's writer turns a 0 into an empty field: never "change now" (lstchg) or "expired 1970" (expire).
        pytest.param(ShadowDefaults(*[0] * 7), "alice:*:::::::", id="zeros-are-written-empty"),
    ],
)
def test_shadow_defaults_are_the_same_fields_on_every_account_s_line(defaults, line, tmp_path):
    fields = line.split(":", 1)[1]
    lines = [f"{name}:{fields}" for name in ("alice", "bob", "carol")]
    assert written("shadow", DIRECTORY, tmp_path, defaults) == lines


def test_shadow_defaults_change_no_other_map(tmp_path):
    defaults = ShadowDefaults(lstchg=19000, max=99999, expire=20000)
    for map_name in ("passwd", "group", "sshkey"):
        assert written(map_name, DIRECTORY, tmp_path, defaults) == written(map_name, DIRECTORY, tmp_path)


def test_shadow_entries_carry_the_defaults_as_ints():
    entry = list(render.render("shadow", DIRECTORY, RUN, ShadowDefaults(lstchg=19000, warn=7)))[1]
    assert (entry.name, entry.passwd, entry.lstchg, entry.min, entry.max, entry.warn, entry.inact, entry.expire,
            entry.flag) == ("alice", "*", 19000, None, None, 7, None, None, None)


def test_sshkey_line_is_the_python_list_and_keyless_users_get_none(tmp_path):
    assert written("sshkey", DIRECTORY, tmp_path) == [
        f"alice:['{ALICE_KEYS[0]}', '{ALICE_KEYS[1]}']",
        f"carol:['{ed25519_key('carol')}']",
    ]


def test_sshkey_comment_with_a_quote_is_written_in_double_quotes(tmp_path):
    key = ed25519_key() + " it's-me"
    directory = Directory((Account("dave", 20004, 20004, "", "/home/dave", "/bin/bash", (key,)),), (), (), ())
    assert written("sshkey", directory, tmp_path) == [f'dave:["{key}"]']


@pytest.mark.parametrize(
    "map_name, kind, size",
    [("passwd", passwd.PasswdMap, 4), ("group", group.GroupMap, 4), ("shadow", shadow.ShadowMap, 4),
     ("sshkey", sshkey.SshkeyMap, 3)],
)
def test_render_returns_the_nsscache_map(map_name, kind, size):
    result = render.render(map_name, DIRECTORY, RUN)
    assert type(result) is kind
    assert len(result) == size


def test_passwd_entries_carry_ints_and_strings():
    entry = list(render.render("passwd", DIRECTORY, RUN))[1]
    assert (entry.name, entry.passwd, entry.uid, entry.gid, entry.gecos, entry.dir, entry.shell) == (
        "alice", "x", 20001, 20001, "Alice Smith", "/mnt/home/alice", "/bin/bash",
    )
    assert type(entry.uid) is int and type(entry.gid) is int


def test_group_members_are_a_list_of_names():
    entry = [e for e in render.render("group", DIRECTORY, RUN) if e.name == "slurm-users"][0]
    assert entry.members == ["alice", "bob", "carol"]


@pytest.mark.parametrize("map_name", sorted(render.MAPS))
def test_empty_directory_renders_the_marker_alone(map_name, tmp_path):
    # nsscache refuses to write a map with no entry: the marker lets a truthful empty map reach the disk.
    empty = Directory((), (), (), ())
    assert len(render.render(map_name, empty, RUN)) == 1
    assert written(map_name, empty, tmp_path) == []


@pytest.mark.parametrize("map_name", sorted(render.MAPS))
def test_the_marker_line_names_its_run(map_name, tmp_path):
    cache = cache_factory.Create({"name": "files", "dir": str(tmp_path)}, map_name)
    target = io.BytesIO()
    cache._WriteData(target, next(iter(render.render(map_name, DIRECTORY, RUN))))
    assert marker.run_of(target.getvalue().rstrip(b"\n")) == RUN


def test_the_four_maps():
    assert sorted(render.MAPS) == ["group", "passwd", "shadow", "sshkey"]
