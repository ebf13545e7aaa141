"""bundle: the format ``publish`` writes and a node in mirror mode reads.

``manifest.json`` is parsed field by field and anything else is refused
(BundleError MALFORMED, naming what is wrong); the maps are nsscache's own
files format, and reading them back gives the Directory and the shadow
fields they were rendered from, every line checked against the others and
against the manifest's counts.
"""

from __future__ import annotations

import json

import pytest
from nss_cache.caches import files

from nss_cache_coreweave import bundle, render
from nss_cache_coreweave.bundle import FORMAT, MAPS, FileEntry, Manifest, Published
from nss_cache_coreweave.config import ShadowDefaults
from nss_cache_coreweave.errors import BundleError, BundleReason
from nss_cache_coreweave.policy import Account, Directory, PosixGroup
from support.keys import ed25519_key, rsa_key

RUN = "20261203T081145Z-0123456789ab"
OTHER_RUN = "20261203T091145Z-ba9876543210"
GENERATION = 1_780_000_000
CREATED = 1_780_000_000.5

ALICE = Account("alice", 20001, 20001, "Alice Smith", "/mnt/home/alice", "/bin/bash",
                (ed25519_key("alice"), rsa_key()))
BOB = Account("bob", 20002, 30001, "Bob Jones, ext. 42", "/mnt/home/bob", "/bin/zsh",
              (ed25519_key("bob") + " bob's laptop",))
ERIN = Account("erin", 20005, 20005, "", "/mnt/home/erin", "/bin/bash", ())
DIRECTORY = Directory(
    accounts=(ALICE, BOB, ERIN),
    groups=(PosixGroup("empty-team", 30009, ()), PosixGroup("slurm-admins", 30002, ("alice",)),
            PosixGroup("slurm-users", 30001, ("alice", "bob", "erin"))),
    drops=(), missing_groups=(),
)
SHADOW = ShadowDefaults(lstchg=19000, max=99999, warn=7, expire=20500)


def rendered(directory: Directory = DIRECTORY, shadow: ShadowDefaults = SHADOW, run: str = RUN) -> dict:
    return {name: bundle.map_bytes(name, render.render(name, directory, run, shadow)) for name in MAPS}


def manifest_of(maps: dict, directory: Directory = DIRECTORY, run: str = RUN, generation: int = GENERATION) -> Manifest:
    files_ = {name: FileEntry(f"generations/{generation}/{name}", bundle.sha256(data), len(data))
              for name, data in maps.items()}
    return Manifest(generation, CREATED, run, len(directory.accounts), len(directory.groups),
                    sum(len(a.keys) for a in directory.accounts), files_)


MAP_TEXTS = rendered()
MANIFEST = manifest_of(MAP_TEXTS)


# --- manifest.json ----------------------------------------------------------------------------------


def test_manifest_bytes_are_sorted_json_one_field_per_line():
    data = bundle.manifest_bytes(MANIFEST)

    assert data == (json.dumps(json.loads(data), sort_keys=True, indent=1) + "\n").encode("ascii")
    assert json.loads(data) == {
        "format": FORMAT, "generation": GENERATION, "created": CREATED, "run": RUN,
        "counts": {"users": 3, "groups": 3, "keys": 3},
        "files": {name: {"path": f"generations/{GENERATION}/{name}", "sha256": bundle.sha256(MAP_TEXTS[name]),
                         "bytes": len(MAP_TEXTS[name])} for name in MAPS},
    }


def test_a_manifest_reads_back_as_written():
    assert bundle.parse_manifest(bundle.manifest_bytes(MANIFEST)) == MANIFEST


def test_a_manifest_with_an_integer_creation_time_reads_as_a_float():
    document = json.loads(bundle.manifest_bytes(MANIFEST))
    document["created"] = GENERATION

    assert bundle.parse_manifest(json.dumps(document).encode()).created == float(GENERATION)


def hostile(**changes) -> bytes:
    """MANIFEST's document with ``changes`` applied: a value, or ``...`` to leave the field out
    (``files_passwd_path`` changes files.passwd.path, and so on)."""
    document = json.loads(bundle.manifest_bytes(MANIFEST))
    for name, value in changes.items():
        where, key = document, name
        if name.startswith("files_"):
            _, map_name, key = name.split("_")
            where = document["files"][map_name]
        elif name.startswith("counts_"):
            where, key = document["counts"], name[len("counts_"):]
        if value is ...:
            del where[key]
        else:
            where[key] = value
    return json.dumps(document).encode()


def without_map(name: str) -> bytes:
    document = json.loads(bundle.manifest_bytes(MANIFEST))
    del document["files"][name]
    return json.dumps(document).encode()


def with_extra_map(name: str) -> bytes:
    document = json.loads(bundle.manifest_bytes(MANIFEST))
    document["files"][name] = dict(document["files"]["passwd"], path=f"generations/{GENERATION}/{name}")
    return json.dumps(document).encode()


PASSWD_PATH = f"files.passwd.path must be 'generations/{GENERATION}/passwd'"
EXACTLY = "'files' must name exactly passwd, group, shadow, sshkey"


@pytest.mark.parametrize(
    "data, detail",
    [
        pytest.param(b"{", "not JSON", id="not-json"),
        pytest.param(b"\xff\xfe{}", "not JSON", id="not-utf-8"),
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(b"[]", f"not a manifest of format {FORMAT}", id="a-list"),
        pytest.param(b'"manifest"', f"not a manifest of format {FORMAT}", id="a-string"),
        pytest.param(hostile(format="nsscache-coreweave-bundle/2"), f"not a manifest of format {FORMAT}",
                     id="another-format"),
        pytest.param(hostile(format=...), f"not a manifest of format {FORMAT}", id="no-format"),
        pytest.param(hostile(generation=0), "generation 0 is not an integer >= 1", id="generation-0"),
        pytest.param(hostile(generation=-5), "generation -5 is not an integer >= 1", id="generation-negative"),
        pytest.param(hostile(generation=True), "generation True is not an integer >= 1", id="generation-bool"),
        pytest.param(hostile(generation=float(GENERATION)), f"generation {float(GENERATION)!r} is not an integer",
                     id="generation-float"),
        pytest.param(hostile(generation=str(GENERATION)), f"generation '{GENERATION}' is not an integer",
                     id="generation-string"),
        pytest.param(hostile(generation=2**53 + 1), f"generation {2**53 + 1} is not an integer", id="generation-huge"),
        pytest.param(hostile(generation=...), "generation None is not an integer >= 1", id="generation-missing"),
        pytest.param(hostile(created=...), "created None is not a time", id="created-missing"),
        pytest.param(hostile(created=True), "created True is not a time", id="created-bool"),
        pytest.param(hostile(created=-1.0), "created -1.0 is not a time", id="created-negative"),
        pytest.param(hostile(created=0), "created 0 is not a time", id="created-zero"),
        pytest.param(hostile(created="1780000000"), "created '1780000000' is not a time", id="created-string"),
        pytest.param(hostile(created=2**40), f"created {2**40} is not a time", id="created-huge"),
        pytest.param(bundle.manifest_bytes(MANIFEST).replace(b'"created": 1780000000.5', b'"created": NaN'),
                     "created nan is not a time", id="created-nan"),
        pytest.param(hostile(run="a:b"), "run 'a:b' is not a run id", id="run-colon"),
        pytest.param(hostile(run="a\nb"), "run 'a\\nb' is not a run id", id="run-newline"),
        pytest.param(hostile(run=""), "run '' is not a run id", id="run-empty"),
        pytest.param(hostile(run="x" * 65), "is not a run id", id="run-too-long"),
        pytest.param(hostile(run=5), "run 5 is not a run id", id="run-number"),
        pytest.param(hostile(counts=...), "'counts' is not an object", id="counts-missing"),
        pytest.param(hostile(counts=[3, 3, 3]), "'counts' is not an object", id="counts-a-list"),
        pytest.param(hostile(counts_users=...), "counts.users None is not an integer >= 0", id="users-missing"),
        pytest.param(hostile(counts_groups=-1), "counts.groups -1 is not an integer >= 0", id="groups-negative"),
        pytest.param(hostile(counts_keys=1.5), "counts.keys 1.5 is not an integer >= 0", id="keys-float"),
        pytest.param(hostile(files=...), EXACTLY, id="files-missing"),
        pytest.param(hostile(files=[]), EXACTLY, id="files-a-list"),
        pytest.param(without_map("sshkey"), EXACTLY, id="a-map-missing"),
        pytest.param(with_extra_map("netgroup"), EXACTLY, id="an-extra-map"),
        pytest.param(hostile(files_passwd_path=f"generations/{GENERATION}/../../etc/passwd"), PASSWD_PATH,
                     id="path-dot-dot"),
        pytest.param(hostile(files_passwd_path="../passwd"), PASSWD_PATH, id="path-above-the-root"),
        pytest.param(hostile(files_passwd_path="/etc/passwd"), PASSWD_PATH, id="path-absolute"),
        pytest.param(hostile(files_passwd_path=f"generations/{GENERATION - 1}/passwd"), PASSWD_PATH,
                     id="path-of-another-generation"),
        pytest.param(hostile(files_passwd_path=f"generations/{GENERATION}/shadow"), PASSWD_PATH,
                     id="path-of-another-map"),
        pytest.param(hostile(files_passwd_path=...), PASSWD_PATH, id="path-missing"),
        pytest.param(hostile(files_passwd_sha256=bundle.sha256(b"x").upper()),
                     "files.passwd.sha256 is not 64 hex digits", id="sha256-uppercase"),
        pytest.param(hostile(files_passwd_sha256=bundle.sha256(b"x")[:63]),
                     "files.passwd.sha256 is not 64 hex digits", id="sha256-short"),
        pytest.param(hostile(files_passwd_sha256=bundle.sha256(b"x") + "\n"),
                     "files.passwd.sha256 is not 64 hex digits", id="sha256-newline"),
        pytest.param(hostile(files_passwd_sha256=None), "files.passwd.sha256 is not 64 hex digits",
                     id="sha256-null"),
        pytest.param(hostile(files_passwd_bytes=-1), "files.passwd.bytes -1 is not an integer >= 0",
                     id="bytes-negative"),
        pytest.param(hostile(files_passwd_bytes="12"), "files.passwd.bytes '12' is not an integer >= 0",
                     id="bytes-string"),
    ],
)
def test_a_hostile_manifest_is_refused_as_malformed(data, detail):
    with pytest.raises(BundleError) as caught:
        bundle.parse_manifest(data)

    assert caught.value.reason is BundleReason.MALFORMED
    assert caught.value.kind == "bundle manifest.json"
    assert detail in caught.value.values["detail"]
    assert str(caught.value).endswith("refusing the bundle, the caches are kept")


def test_a_refused_manifest_names_where_it_came_from():
    with pytest.raises(BundleError) as caught:
        bundle.parse_manifest(b"{", where="mirror store accepted.json")

    assert str(caught.value) == "mirror store accepted.json: not JSON: refusing the bundle, the caches are kept"


# --- the maps ---------------------------------------------------------------------------------------------

CACHE_WRITERS = {
    "passwd": files.FilesPasswdMapHandler,
    "group": files.FilesGroupMapHandler,
    "shadow": files.FilesShadowMapHandler,
    "sshkey": files.FilesSshkeyMapHandler,
}


@pytest.mark.parametrize("map_name", MAPS)
def test_map_bytes_are_what_nsscaches_files_cache_writes(tmp_path, map_name):
    cache = CACHE_WRITERS[map_name]({"dir": str(tmp_path), "cache_filename_suffix": "cache"})

    assert cache.WriteMap(map_data=render.render(map_name, DIRECTORY, RUN, SHADOW)) == 0

    assert (tmp_path / f"{map_name}.cache").read_bytes() == MAP_TEXTS[map_name]


def test_map_bytes_start_with_the_run_marker():
    assert MAP_TEXTS["passwd"].split(b"\n")[:2] == [
        f"nsscache-coreweave:*{RUN}:65534:65534:run marker, not an account:/nonexistent:/usr/sbin/nologin".encode(),
        b"alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash",
    ]
    assert MAP_TEXTS["shadow"].split(b"\n")[:2] == [f"nsscache-coreweave:*{RUN}:::::::".encode(),
                                                     b"alice:*:19000::99999:7::20500:"]


def test_a_bundle_reads_back_as_the_directory_and_shadow_fields_it_was_rendered_from():
    assert bundle.read_bundle(MANIFEST, MAP_TEXTS) == Published(DIRECTORY, SHADOW)


def test_an_empty_bundle_reads_back_empty():
    empty = Directory((), (), (), ())
    maps = rendered(empty, ShadowDefaults())

    assert bundle.read_bundle(manifest_of(maps, empty), maps) == Published(empty, ShadowDefaults())


def test_a_bundle_without_shadow_fields_reads_back_without_them():
    maps = rendered(shadow=ShadowDefaults())

    assert bundle.read_bundle(manifest_of(maps), maps) == Published(DIRECTORY, ShadowDefaults())


def edited(map_name: str, old: str, new: str) -> dict:
    """MAP_TEXTS with ``old`` replaced by ``new`` (once, and it must be there) in ``map_name``."""
    text = MAP_TEXTS[map_name].decode()
    assert old in text, old
    return {**MAP_TEXTS, map_name: text.replace(old, new, 1).encode()}


def appended(map_name: str, line: str) -> dict:
    return {**MAP_TEXTS, map_name: MAP_TEXTS[map_name] + line.encode() + b"\n"}


def first_line_dropped(map_name: str) -> dict:
    return {**MAP_TEXTS, map_name: MAP_TEXTS[map_name].split(b"\n", 1)[1]}


ALICE_PASSWD = "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash"
ALICE_KEYS = f"alice:{list(ALICE.keys)!r}"
NOT_AN_ENTRY = "not an entry of a valid name and the format's fields"
UNPRINTABLE = "line 2: holds a control or non-ASCII character"
KEYS_REFUSED = "the keys are not a list of strings"


@pytest.mark.parametrize(
    "maps, where, detail",
    [
        pytest.param(first_line_dropped("passwd"), "passwd", f"line 1 is not the marker of run {RUN}",
                     id="passwd-marker-missing"),
        pytest.param(first_line_dropped("sshkey"), "sshkey", f"line 1 is not the marker of run {RUN}",
                     id="sshkey-marker-missing"),
        pytest.param(edited("group", RUN, OTHER_RUN), "group", f"line 1 is not the marker of run {RUN}",
                     id="marker-of-another-run"),
        pytest.param(edited("passwd", ALICE_PASSWD, ALICE_PASSWD.replace(":x:", ":$6$salt$hash:")), "passwd",
                     "line 2: the password field must be 'x'", id="passwd-password-hash"),
        pytest.param(edited("passwd", ALICE_PASSWD, ALICE_PASSWD.replace(":x:", "::")), "passwd",
                     "line 2: the password field must be 'x'", id="passwd-password-empty"),
        pytest.param(edited("group", "slurm-users:x:", "slurm-users::"), "group",
                     "the password field must be 'x'", id="group-password-empty"),
        pytest.param(edited("shadow", "alice:*:", "alice:$6$salt$hash:"), "shadow",
                     "line 2: the password field must be '*'", id="shadow-password-hash"),
        pytest.param(edited("shadow", "alice:*:", "alice::"), "shadow",
                     "line 2: the password field must be '*'", id="shadow-password-empty"),
        pytest.param(edited("passwd", ":20001:20001:", ":-1:20001:"), "passwd", "line 2: '-1' is not a number",
                     id="uid-negative"),
        pytest.param(edited("passwd", ":20001:20001:", ":2e4:20001:"), "passwd", "line 2: '2e4' is not a number",
                     id="uid-exponent"),
        pytest.param(edited("passwd", ":20001:20001:", ": 20001:20001:"), "passwd", "line 2: ' 20001' is not a number",
                     id="uid-space"),
        pytest.param(edited("passwd", ":20001:20001:", ":２0001:20001:"), "passwd",
                     "line 2: holds a control or non-ASCII character", id="uid-non-ascii-digit"),
        pytest.param(edited("passwd", "alice:x:", "0:x:"), "passwd", f"line 2: {NOT_AN_ENTRY}", id="name-digits"),
        pytest.param(edited("passwd", "alice:x:", "..:x:"), "passwd", f"line 2: {NOT_AN_ENTRY}", id="name-dot-dot"),
        pytest.param(edited("passwd", "Alice Smith", "Alicé Smith"), "passwd",
                     "line 2: holds a control or non-ASCII character", id="gecos-non-ascii"),
        pytest.param(edited("shadow", "alice:*:19000:", "alice:*:2147483648:"), "shadow",
                     "line 2: '2147483648' is not a number up to 2147483647", id="shadow-field-past-int"),
        pytest.param(edited("passwd", ":20001:20001:", ":20001::"), "passwd", "line 2: '' is not a number",
                     id="gid-empty"),
        pytest.param(edited("group", ":30001:", ":x30001:"), "group", "'x30001' is not a number", id="group-gid"),
        pytest.param(edited("shadow", "alice:*:19000:", "alice:*:-1:"), "shadow", "line 2: '-1' is not a number",
                     id="shadow-field"),
        pytest.param(edited("passwd", "Alice Smith", "Alice\tSmith"), "passwd", UNPRINTABLE, id="tab"),
        pytest.param(edited("passwd", "Alice Smith", "Alice\rSmith"), "passwd", UNPRINTABLE,
                     id="carriage-return"),
        pytest.param(edited("passwd", "Alice Smith", "Alice\x1b[2JSmith"), "passwd",
                     "line 2: holds a control or non-ASCII character", id="escape"),
        pytest.param(edited("passwd", ALICE_PASSWD, "alice:x:20001:20001:/mnt/home/alice:/bin/bash"), "passwd",
                     f"line 2: {NOT_AN_ENTRY}", id="passwd-a-field-missing"),
        pytest.param(edited("passwd", "alice:", "Alice:"), "passwd", f"line 2: {NOT_AN_ENTRY}",
                     id="not-a-posix-name"),
        pytest.param(appended("passwd", ""), "passwd", NOT_AN_ENTRY, id="blank-line"),
        pytest.param(appended("group", f"nsscache-coreweave:*{RUN}:65534:"), "group", f"line 5: {NOT_AN_ENTRY}",
                     id="a-second-marker"),
        pytest.param(edited("group", "alice,bob,erin", "alice,bob,erin,mallory"), "group",
                     "member 'mallory' has no passwd entry", id="member-without-passwd"),
        pytest.param(appended("shadow", "mallory:*:19000::99999:7::20500:"), "shadow",
                     "'mallory' is not in both passwd and shadow", id="shadow-without-passwd"),
        pytest.param(edited("shadow", "erin:*:19000::99999:7::20500:\n", ""), "shadow",
                     "'erin' is not in both passwd and shadow", id="passwd-without-shadow"),
        pytest.param(appended("sshkey", f"mallory:{[ed25519_key('mallory')]!r}"), "sshkey",
                     "'mallory' is not in both passwd and sshkey", id="sshkey-without-passwd"),
        pytest.param(appended("passwd", ALICE_PASSWD), "passwd", "a name appears twice", id="passwd-name-twice"),
        pytest.param(appended("group", "slurm-users:x:30001:alice"), "group", "a name appears twice",
                     id="group-name-twice"),
        pytest.param(appended("shadow", "alice:*:19000::99999:7::20500:"), "shadow", "a name appears twice",
                     id="shadow-name-twice"),
        pytest.param(appended("sshkey", f"alice:{[ed25519_key('m1'), ed25519_key('m2')]!r}"), "sshkey",
                     "a name appears twice",
                     id="sshkey-name-twice"),
        pytest.param(edited("shadow", "bob:*:19000:", "bob:*:19001:"), "shadow",
                     "the lines carry different shadow fields", id="shadow-fields-differ"),
        pytest.param(edited("sshkey", ALICE_KEYS, f"alice:{ALICE.keys[0]!r}"), "sshkey", KEYS_REFUSED,
                     id="keys-a-string"),
        pytest.param(edited("sshkey", ALICE_KEYS, "alice:[1, 2]"), "sshkey", KEYS_REFUSED, id="keys-numbers"),
        pytest.param(edited("sshkey", ALICE_KEYS, "alice:[]"), "sshkey", KEYS_REFUSED, id="keys-empty-list"),
        pytest.param(edited("sshkey", ALICE_KEYS, "alice:('a', 'b')"), "sshkey", KEYS_REFUSED, id="keys-a-tuple"),
        pytest.param(edited("sshkey", ALICE_KEYS, "alice:__import__('os')"), "sshkey", KEYS_REFUSED,
                     id="keys-not-a-literal"),
        pytest.param(edited("sshkey", ALICE_KEYS, "alice:" + "[" * 200), "sshkey", KEYS_REFUSED, id="keys-unbalanced"),
        pytest.param(edited("sshkey", ALICE_KEYS, "alice:['ssh-ed25519 AAAA\\nssh-rsa BBBB']"), "sshkey",
                     KEYS_REFUSED, id="keys-with-a-newline"),
        pytest.param(edited("passwd", ALICE_PASSWD + "\n", ""), "shadow", "'alice' is not in both passwd and shadow",
                     id="a-user-removed-from-passwd-only"),
        pytest.param({**MAP_TEXTS, "passwd": MAP_TEXTS["passwd"][:-1]}, "passwd", "does not end with a newline",
                     id="no-final-newline"),
        pytest.param({**MAP_TEXTS, "passwd": MAP_TEXTS["passwd"].replace(b"Alice Smith", b"Alice \xff Smith")},
                     "passwd", "not UTF-8", id="not-utf-8"),
    ],
)
def test_a_hostile_map_is_refused_as_malformed(maps, where, detail):
    with pytest.raises(BundleError) as caught:
        bundle.read_bundle(MANIFEST, maps)

    assert caught.value.reason is BundleReason.MALFORMED
    assert caught.value.kind == f"bundle {where}"
    assert detail in caught.value.values["detail"]


@pytest.mark.parametrize(
    "counts, detail",
    [
        pytest.param(dict(users=4), "counts users/groups/keys 4/3/3, the maps hold 3/3/3", id="users"),
        pytest.param(dict(groups=2), "counts users/groups/keys 3/2/3, the maps hold 3/3/3", id="groups"),
        pytest.param(dict(keys=2), "counts users/groups/keys 3/3/2, the maps hold 3/3/3", id="keys"),
    ],
)
def test_counts_that_do_not_match_the_manifest_are_refused(counts, detail):
    manifest = Manifest(**{**MANIFEST.__dict__, **counts})

    with pytest.raises(BundleError) as caught:
        bundle.read_bundle(manifest, MAP_TEXTS)

    assert (caught.value.kind, caught.value.reason, caught.value.values) == (
        "bundle manifest.json", BundleReason.MALFORMED, {"detail": detail})


def test_a_map_of_another_run_than_the_manifest_is_refused():
    maps = rendered(run=OTHER_RUN)

    with pytest.raises(BundleError) as caught:
        bundle.read_bundle(MANIFEST, maps)

    assert caught.value.values == {"detail": f"line 1 is not the marker of run {RUN}"}
