"""Properties (hypothesis): whatever JSON the directory sends, what reaches the
caches is well formed and means what policy accepted.

Arbitrary Users and Groups -- unicode, control characters, lone surrogates,
huge numbers, wrong types, nesting -- are served as SCIM pages over the
scripted transport and go the whole way: scim (paging, JSON) -> snapshot ->
policy.decide -> render -> nsscache's own files writer (``_WriteData`` into a
BytesIO). Then every written line must

* have exactly the right number of ``:`` fields and be one line (no newline
  inside an entry), valid UTF-8 without control characters;
* parse back, field by field, to the accepted value (nothing shifted);
* carry no uid or gid 0 or 65534, nothing out of range, no name twice;
* have an ASCII GECOS; and sshkey lines must be nsscache's list repr of keys
  that are single lines and parse again to themselves.

And nothing may raise but this package's typed errors (a refused listing).

Deterministic in CI (``CI`` set: derandomized, no example database); the
example counts keep the module under a few seconds.
"""

from __future__ import annotations

import ast
import io
import json
import os

from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from nss_cache.caches import cache_factory

from nss_cache_coreweave import config, marker, policy, render, scim, snapshot, sshkeys
from nss_cache_coreweave import keycache as keys_command
from nss_cache_coreweave.errors import CoreWeaveError
from nss_cache_coreweave.policy import POSIX_NAME, LocalAccounts
from support.keys import dsa_key, ecdsa_key, ed25519_key, rsa_key, sk_ed25519_key
from support.scripted_http import (
    BASE,
    LIST_RESPONSE,
    TOKEN,
    USER_EXTENSION,
    Reply,
    ScriptedTransport,
    scim_error,
    session_with,
)

CI = bool(os.environ.get("CI"))
PROPERTY = settings(
    max_examples=200,
    derandomize=CI,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
CHEAP = settings(PROPERTY, max_examples=400)

MAPS = ("passwd", "group", "shadow", "sshkey")
RUN = "20261202T194608Z-3f9ac2e1b7d0"
FIELDS = {"passwd": 7, "group": 4, "shadow": 9}
LOCAL = LocalAccounts(
    user_names=frozenset({"root", "daemon", "sshd"}),
    uids=frozenset({0, 1, 105}),
    group_names=frozenset({"root", "sudo"}),
    gids=frozenset({0, 27}),
)

# --- strategies ---------------------------------------------------------------

HOSTILE_CHARS = ["\x00", "\n", "\r", "\t", ":", ",", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\ud800", "\udfff",
                 "é", "李", "Ｆ", "\ufeff", "'", '"', "\\", "/", "."]
char = st.one_of(st.characters(), st.sampled_from(HOSTILE_CHARS))
text = st.text(char, max_size=16)
deep = st.integers(1, 60).map(lambda n: json.loads("[" * n + "]" * n))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), text,
)
json_values = st.one_of(
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(text, inner, max_size=2),
                 max_leaves=4),
    deep,
)

posix_names = st.from_regex(r"[a-z_][a-z0-9_.-]{0,10}", fullmatch=True)
names = st.one_of(
    st.sampled_from(["alice", "bob", "ali", "root", "daemon", "x", "a.b", "_svc", "12345", "-x", "Alice", "a" * 32,
                     "a" * 33]),
    posix_names,
    text,
    json_values,
)
ids_ = st.one_of(
    st.integers(-3, 70_000),
    st.sampled_from([0, 1, 27, 105, 999, 1000, 65534, 4294967294, 4294967295, 2**64, -(2**63)]),
    st.integers(0, 2**40).map(str),
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    json_values,
)
paths = st.one_of(
    st.none(),
    st.sampled_from(["/home/a", "/home/../root", "/", "//srv/a", "/home/a/", "/home/./a", "/home/\ud800", "/home/josé",
                     "/h:o", "/h\no", "/h,o", "home/a", "/bin/bash", "/bin/zsh", "/bin/sh", "/usr/bin/fish"]),
    text.map(lambda t: "/" + t),
    json_values,
)
VALID_KEYS = [ed25519_key("p1"), ed25519_key("p2"), ecdsa_key("nistp256"), rsa_key(2048), sk_ed25519_key()]
key_lines = st.one_of(
    st.sampled_from(VALID_KEYS),
    st.tuples(st.sampled_from(VALID_KEYS), text).map(lambda kc: f"{kc[0]} {kc[1]}"),
    st.tuples(st.sampled_from(['from="10.0.0.0/8"', "no-pty", 'command="/bin/sh"', "restrict,pty", "evil",
                               'permitopen="db:5432"']),
              st.sampled_from(VALID_KEYS)).map(lambda ok: f"{ok[0]} {ok[1]}"),
    st.sampled_from([dsa_key(), rsa_key(1024), "ssh-ed25519 AAAA", f"{VALID_KEYS[0]}\n{VALID_KEYS[1]}"]),
    text,
    json_values,
)
# As people enter them: one string of several lines (LF or CRLF, blank lines, spaces), SCIM
# multi-valued objects ({"value": ..., "primary": ...}).
key_texts = st.lists(st.tuples(key_lines, st.sampled_from(["\n", "\r\n", "\r\n\r\n", " \n", "\n\t"])), max_size=3).map(
    lambda parts: "".join(f"{k}{sep}" if isinstance(k, str) else sep for k, sep in parts)
)
key_objects = st.fixed_dictionaries({"value": st.one_of(key_lines, key_texts)},
                                    optional={"primary": st.booleans(), "display": text})
key_items = st.one_of(key_lines, key_texts, key_objects)
keys = st.one_of(st.none(), key_lines, key_texts, st.lists(key_items, max_size=4), json_values)
active = st.one_of(st.just(True), st.just(True), st.booleans(), st.sampled_from(["true", None, 1, 0, []]))


@st.composite
def users(draw):
    extension = {
        "sunkPosixUsername": draw(names),
        "sunkPosixUid": draw(ids_),
        "sunkPosixGid": draw(ids_),
        "sunkHomeDirectory": draw(paths),
        "sunkLoginShell": draw(paths),
        "sunkSshKeys": draw(keys),
    }
    resource = {
        "id": draw(st.one_of(st.sampled_from(["u1", "u2", "u3", "u4", "u5", "u6"]),
                             st.text(char, min_size=1, max_size=6))),
        "active": draw(active),
        "displayName": draw(st.one_of(text, json_values)),
        "name": draw(st.one_of(st.fixed_dictionaries({"givenName": text, "familyName": text}), json_values)),
        USER_EXTENSION: draw(st.one_of(st.fixed_dictionaries({k: st.just(v) for k, v in extension.items()}),
                                       json_values)),
    }
    for optional in draw(st.sets(st.sampled_from(["active", "displayName", "name"]))):
        resource.pop(optional)
    return resource


@st.composite
def groups(draw, user_ids):
    member = st.fixed_dictionaries(
        {"value": st.one_of(st.sampled_from(user_ids or ["ghost"]), st.just("ghost"), json_values)},
        optional={"type": st.sampled_from(["User", "user", "Group", None, 5]), "$ref": text},
    )
    return {
        "id": draw(st.text(char, min_size=1, max_size=6)),
        "sunkPosixGroupName": draw(st.one_of(
            st.sampled_from(["slurm-users", "ops", "sudo", "Slurm-Users", "ops:x", "a,b"]), names)),
        "sunkPosixGid": draw(ids_),
        "members": draw(st.one_of(st.lists(st.one_of(member, json_values), max_size=5), json_values)),
    }


@st.composite
def organisations(draw):
    user_list = draw(st.lists(users(), max_size=6, unique_by=lambda u: u["id"]))
    ids = [u["id"] for u in user_list]
    group_list = draw(st.lists(groups(ids), max_size=3, unique_by=lambda g: g["id"]))
    return {"Users": user_list, "Groups": group_list}


# --- the pipeline ---------------------------------------------------------------


def configure(allowed: str, allow_options: bool) -> config.Config:
    return config.parse(
        {"base_url": BASE, "groups": allowed, "allowed_shells": "/bin/bash, /bin/zsh", "page_size": 3,
         "allow_key_options": str(allow_options).lower(), "home_directory": ""},
        environ={"NSSCACHE_COREWEAVE_TOKEN": TOKEN},
    )


def serving(org: dict, ascii_json: bool) -> ScriptedTransport:
    """A transport answering index-paged requests from ``org``, as a server without
    /ServiceProviderConfig (404: it does not filter) that ignores ``attributes``."""

    def answer(sent):
        if sent.path.endswith("/ServiceProviderConfig"):
            return scim_error(404, "no such endpoint")
        resources = org["Users"] if sent.path.endswith("/Users") else org["Groups"]
        start, count = int(sent.params["startIndex"]), int(sent.params["count"])
        chunk = resources[start - 1 : start - 1 + count]
        body = {"schemas": [LIST_RESPONSE], "totalResults": len(resources), "itemsPerPage": len(chunk),
                "startIndex": start, "Resources": chunk}
        return Reply(200, json.dumps(body, ensure_ascii=ascii_json).encode("utf-8", "surrogatepass"))

    return ScriptedTransport(*[answer] * 20)


def no_sleep(seconds):
    raise AssertionError("nothing here should be retried")


def written_lines(map_name: str, nss_map, tmp_path) -> list:
    """What nsscache's files cache writes for ``nss_map``, entry by entry."""
    writer = cache_factory.Create({"name": "files", "dir": str(tmp_path)}, map_name)
    lines = []
    for entry in nss_map:
        target = io.BytesIO()
        writer._WriteData(target, entry)
        lines.append(target.getvalue())
    return lines


def check_directory(directory: policy.Directory, cfg: config.Config) -> None:
    """What policy accepted obeys the rules (so render may trust it)."""
    names_seen, uids_seen = set(), set()
    for account in directory.accounts:
        assert POSIX_NAME.fullmatch(account.name) and not account.name.isdigit()
        assert account.name not in names_seen and account.uid not in uids_seen
        names_seen.add(account.name)
        uids_seen.add(account.uid)
        assert type(account.uid) is int and cfg.min_uid <= account.uid <= cfg.max_uid and account.uid != 65534
        assert type(account.gid) is int and cfg.min_gid <= account.gid <= cfg.max_gid and account.gid != 65534
        assert account.name not in LOCAL.user_names and account.uid not in LOCAL.uids
        assert account.shell in cfg.allowed_shells | {cfg.default_shell}
        assert account.home.startswith("/") and "/../" not in account.home + "/"
        assert account.home not in policy.SYSTEM_HOMES and not account.home.startswith(policy.SYSTEM_TREES)
        assert account.gid not in LOCAL.gids and account.name != "nsscache-coreweave"
    assert len({a.home for a in directory.accounts}) == len(directory.accounts)
    group_names, gids = set(), set()
    for group in directory.groups:
        assert POSIX_NAME.fullmatch(group.name) and group.name not in LOCAL.group_names
        assert group.name not in group_names and group.gid not in gids
        group_names.add(group.name)
        gids.add(group.gid)
        assert type(group.gid) is int and group.gid != 0 and group.gid != 65534 and group.gid not in LOCAL.gids
        assert set(group.members) <= names_seen


def check_lines(map_name: str, lines: list, directory: policy.Directory) -> None:
    accounts = {a.name: a for a in directory.accounts}
    for raw in lines:
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw  # one entry, one line
        line = raw.decode("utf-8")[:-1]  # valid UTF-8
        assert all(c.isprintable() for c in line), line  # no control characters at all
        if map_name == "passwd":
            fields = line.split(":")
            assert len(fields) == FIELDS["passwd"], line
            name, password, uid, gid, gecos, home, shell = fields
            account = accounts[name]
            assert (password, int(uid), int(gid), gecos, home, shell) == (
                "x", account.uid, account.gid, account.gecos, account.home, account.shell
            )
            assert uid == str(account.uid) and uid not in ("0", "65534") and gid not in ("0", "65534")
            assert gecos.isascii()
        elif map_name == "group":
            fields = line.split(":")
            assert len(fields) == FIELDS["group"], line
            name, password, gid, members = fields
            (group,) = [g for g in directory.groups if g.name == name]
            assert (password, int(gid)) == ("x", group.gid) and gid not in ("0", "65534")
            assert (members.split(",") if members else []) == list(group.members)
        elif map_name == "shadow":
            fields = line.split(":")
            assert len(fields) == FIELDS["shadow"], line
            assert fields[0] in accounts and fields[1:] == ["*", "", "", "", "", "", "", ""]
        else:
            name, _, value = line.partition(":")
            written = ast.literal_eval(value)
            assert written == list(accounts[name].keys) and written
            for key_line in written:
                assert "\n" not in key_line and key_line.isascii()
    names_written = [raw.decode("utf-8").split(":", 1)[0] for raw in lines]
    assert len(names_written) == len(set(names_written))
    if map_name in ("passwd", "shadow"):
        assert names_written == [a.name for a in directory.accounts]
    if map_name == "group":
        assert names_written == [g.name for g in directory.groups]
    if map_name == "sshkey":
        assert names_written == [a.name for a in directory.accounts if a.keys]


LONE_SURROGATE_HOME = {
    "Users": [{"id": "u1", "active": True, "displayName": "A",
               USER_EXTENSION: {"sunkPosixUsername": "alice", "sunkPosixUid": 20001, "sunkPosixGid": 20001,
                                "sunkHomeDirectory": "/home/\ud800"}}],
    "Groups": [{"id": "g1", "sunkPosixGroupName": "slurm-users", "sunkPosixGid": 30001, "members": [{"value": "u1"}]}],
}


@PROPERTY
@given(org=organisations(), allowed=st.sampled_from(["slurm-users, ops, sudo", "*"]), allow_options=st.booleans(),
       ascii_json=st.booleans())
@example(org=LONE_SURROGATE_HOME, allowed="slurm-users", allow_options=False, ascii_json=True)
def test_whatever_the_directory_sends_the_caches_are_well_formed(org, allowed, allow_options, ascii_json,
                                                                 tmp_path_factory):
    cfg = configure(allowed, allow_options)
    transport = serving(org, ascii_json)
    try:
        snap = snapshot.take(cfg, session=session_with(transport, cfg.server), clock=scim.Clock(sleep=no_sleep))
    except CoreWeaveError as e:  # a refused listing: typed, never a crash
        note(f"refused: {e}")
        return
    directory = policy.decide(snap, cfg, local=LOCAL)
    check_directory(directory, cfg)
    tmp = tmp_path_factory.getbasetemp()
    for map_name in MAPS:
        marker_line, *lines = written_lines(map_name, render.render(map_name, directory, RUN), tmp)
        assert marker.run_of(marker_line.rstrip(b"\n")) == RUN
        check_lines(map_name, lines, directory)


def write_cache_files(directory: policy.Directory, tmp_path) -> keys_command.Settings:
    """passwd.cache and sshkey.cache (+ indexes) written by nsscache's own files cache."""
    from nss_cache.caches import files

    conf = {"dir": str(tmp_path), "cache_filename_suffix": "cache"}
    assert files.FilesPasswdMapHandler(conf).WriteMap(map_data=render.render("passwd", directory, RUN)) == 0
    assert files.FilesSshkeyMapHandler(conf).WriteMap(map_data=render.render("sshkey", directory, RUN)) == 0
    (tmp_path / "local-passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return keys_command.Settings(sshkey_cache=str(tmp_path / "sshkey.cache"),
                                 passwd_cache=str(tmp_path / "passwd.cache"),
                                 system_passwd=str(tmp_path / "local-passwd"))


@PROPERTY
@given(raw=keys, allow_options=st.booleans())
@example(raw=f"{VALID_KEYS[0]}\r\n{VALID_KEYS[1]}\r\n", allow_options=False)
@example(raw=[{"value": f"{VALID_KEYS[0]}\r\n\x00{VALID_KEYS[1]}", "primary": True}], allow_options=True)
def test_no_cr_lf_or_nul_reaches_sshkey_cache_or_the_keys_command(raw, allow_options, tmp_path_factory):
    user = {"id": "u1", "active": True, USER_EXTENSION: {"sunkPosixUsername": "alice", "sunkPosixUid": 20001,
                                                        "sunkPosixGid": 20001, "sunkSshKeys": raw}}
    org = {"Users": [user], "Groups": [{"id": "g1", "sunkPosixGroupName": "slurm-users", "sunkPosixGid": 30001,
                                        "members": [{"value": "u1"}]}]}
    cfg = configure("slurm-users", allow_options)
    snap = snapshot.take(cfg, session=session_with(serving(org, True), cfg.server), clock=scim.Clock(sleep=no_sleep))
    directory = policy.decide(snap, cfg, local=LOCAL)
    tmp = tmp_path_factory.mktemp("keys")
    settings = write_cache_files(directory, tmp)

    data = (tmp / "sshkey.cache").read_bytes()
    assert b"\r" not in data and b"\x00" not in data
    assert data.count(b"\n") == 1 + bool(directory.accounts[0].keys)  # the marker, and alice's one line
    answer = keys_command.authorized_keys("alice", settings)
    assert answer.keys == list(directory.accounts[0].keys)
    for key in answer.keys:
        assert not set(key) & {"\r", "\n", "\x00"} and key.isascii() and key.isprintable()


FORGED_LOG_LINE = {
    # A SCIM id is the directory's text: shown raw, it forges a second log line.
    "Users": [{"id": "u1\ncoreweave: run ok", USER_EXTENSION: {"sunkPosixUsername": "Mallory", "sunkPosixUid": 20100}}],
    "Groups": [
        {"id": "g1\x00", "sunkPosixGroupName": "Slurm-Users", "sunkPosixGid": 30001, "members": []},
        {"id": "g2", "sunkPosixGroupName": "ops", "sunkPosixGid": 30002,
         "members": [{"value": "u1\ncoreweave: run ok"}, {"value": "ghost\r\nx"}]},
    ],
}


@PROPERTY
@given(org=organisations())
@example(org=FORGED_LOG_LINE)
def test_decide_is_deterministic_and_drops_are_explained(org):
    cfg = configure("*", False)
    transport = serving(org, True)
    try:
        snap = snapshot.take(cfg, session=session_with(transport, cfg.server), clock=scim.Clock(sleep=no_sleep),
                             everyone=True)
    except CoreWeaveError:
        return
    first, second = policy.decide(snap, cfg, local=LOCAL), policy.decide(snap, cfg, local=LOCAL)
    assert first == second
    for drop in first.drops:
        text = str(drop)
        assert text.isprintable(), text  # one log line each: nothing forged, nothing hidden
        assert text.startswith(f"dropped {drop.kind} ")


@CHEAP
@given(line=st.one_of(key_lines, st.text(char, max_size=200)), allow_options=st.booleans())
def test_a_key_is_refused_or_a_single_printable_line_that_parses_to_itself(line, allow_options):
    try:
        key = sshkeys.parse(line, allow_options=allow_options)
    except sshkeys.InvalidKey as e:
        assert str(e) and "\n" not in str(e)
        return
    assert key.line.isascii() and key.line.isprintable() and "\n" not in key.line
    assert key.identity in key.line
    again = sshkeys.parse(key.line, allow_options=allow_options)
    assert (again.line, again.identity) == (key.line, key.identity)
    if not allow_options:
        assert key.line.split(" ", 1)[0] in sshkeys.KEY_TYPES


@CHEAP
@given(value=st.one_of(text, st.text(max_size=400), json_values))
def test_gecos_is_printable_ascii_without_colons(value):
    cleaned = policy._clean_gecos(value)
    assert cleaned.isascii() and cleaned.isprintable()
    assert ":" not in cleaned and "\n" not in cleaned and len(cleaned) <= 255
    assert cleaned == cleaned.strip() and "  " not in cleaned


@CHEAP
@given(name=st.one_of(names, st.text(char, max_size=40)))
def test_accepted_names_never_need_escaping(name):
    if policy._name_problem(name) is None:
        assert name.isascii() and name.isprintable() and len(name) <= 32
        assert not set(name) & set(":,\n\x00 /") and not name.startswith("-")


@CHEAP
@given(path=paths)
@example(path="/home/\ud800")
def test_accepted_paths_can_be_written(path):
    # A home or shell policy accepts must survive nsscache's writer
    # (str.encode(): UTF-8, strict) and never shift a field.
    if policy._clean_path(path):
        encoded = path.encode("utf-8")
        assert b":" not in encoded and b"\n" not in encoded and b"\x00" not in encoded


def test_settings_are_deterministic_in_ci():
    if CI:
        assert PROPERTY.derandomize and PROPERTY.database is None
    assert PROPERTY.max_examples <= 500
