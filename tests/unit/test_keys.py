"""keys and keycache: sshd's AuthorizedKeysCommand (``nsscache-coreweave-keys USER [FINGERPRINT]``),
the command line (keys) and the lookup (keycache).

Caches are written by nsscache's own files writer (both sshkey line formats, the name
indexes), so the formats read here are the ones nsscache produces. Fingerprints are checked
against ``ssh-keygen -l``. Keys are generated per run (support.keys).
"""

from __future__ import annotations

import ast
import calendar
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nss_cache.caches import files
from nss_cache.maps import passwd as passwd_map
from nss_cache.maps import sshkey as sshkey_map

from nss_cache_coreweave import keycache, keys, sshd_path, sshkeys
from nss_cache_coreweave.keycache import (
    KEY_TYPES,
    CacheUnreadable,
    MalformedEntry,
    NotOneRun,
    Settings,
    StaleCache,
    UsageError,
    authorized_keys,
    find_line,
    fingerprint,
    parse_keys,
    parse_timestamp,
)
from nss_cache_coreweave.keys import read_settings, sshd_path_problems, wrapper_text
from support.keys import (
    body,
    dsa_key,
    ecdsa_key,
    ecdsa_key_naming_another_curve,
    ed25519_key,
    rsa_key,
    sk_ecdsa_key,
    sk_ed25519_key,
)

NOW = 1_800_000_000
REPO = Path(__file__).resolve().parents[2]


RUN = "20261202T194608Z-3f9ac2e1b7d0"


def write_caches(directory: Path, sshkeys: dict, uids: dict, runs=(RUN, RUN)) -> Settings:
    """sshkey.cache and passwd.cache (+ .ixname) as nsscache writes them, each starting with
    the run marker of runs[0] (passwd) and runs[1] (sshkey), None: no marker; a local passwd
    file with root and a system account; settings pointing at them."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = {"dir": str(directory), "cache_filename_suffix": "cache"}
    pmap = passwd_map.PasswdMap()
    if runs[0] is not None:
        pmap.Add(passwd_map.PasswdMapEntry(
            {"name": "nsscache-coreweave", "uid": 65534, "gid": 65534, "passwd": "*" + runs[0],
             "gecos": "run marker, not an account", "dir": "/nonexistent", "shell": "/usr/sbin/nologin"}
        ))
    for name, uid in uids.items():
        pmap.Add(passwd_map.PasswdMapEntry(
            {"name": name, "uid": uid, "gid": uid, "passwd": "x", "gecos": name, "dir": f"/home/{name}",
             "shell": "/bin/bash"}
        ))
    assert files.FilesPasswdMapHandler(conf).WriteMap(map_data=pmap) == 0
    smap = sshkey_map.SshkeyMap()
    if runs[1] is not None:
        smap.Add(sshkey_map.SshkeyMapEntry({"name": "nsscache-coreweave", "sshkey": "*" + runs[1]}))
    for name, value in sshkeys.items():
        smap.Add(sshkey_map.SshkeyMapEntry({"name": name, "sshkey": value}))
    assert files.FilesSshkeyMapHandler(conf).WriteMap(map_data=smap) == 0
    local = directory / "local-passwd"
    local.write_text("root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n")
    state = directory / "state"
    state.mkdir(exist_ok=True)
    (state / "timestamp-sshkey-update").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime(NOW - 60)))
    return Settings(
        sshkey_cache=str(directory / "sshkey.cache"), passwd_cache=str(directory / "passwd.cache"),
        system_passwd=str(local), timestamp_dir=str(state),
    )


def ssh_keygen_fingerprint(key: str, hash_name: str = "sha256") -> str:
    result = subprocess.run(["ssh-keygen", "-E", hash_name, "-lf", "-"], input=key + "\n", capture_output=True,
                            text=True, check=True)
    return result.stdout.split()[1]


A1, A2, BOB, MALLORY = ed25519_key("alice-1"), ecdsa_key("nistp256"), ed25519_key("bob"), ed25519_key("mallory")


@pytest.fixture
def node(tmp_path):
    return write_caches(
        tmp_path / "etc",
        {"alice": [f"{A1} alice@laptop", f"{A2} alice@desk"], "bob": f"{BOB} bob@ws", "erin": []},
        {"alice": 20001, "bob": 20002, "erin": 20005, "ali": 20009, "low": 999, "root": 20007},
    )


# --- the answer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user, expected",
    [
        pytest.param("alice", [f"{A1} alice@laptop", f"{A2} alice@desk"], id="list-format"),
        pytest.param("bob", [f"{BOB} bob@ws"], id="string-format"),
    ],
)
def test_prints_every_key_of_the_user(node, user, expected):
    assert authorized_keys(user, node).keys == expected


@pytest.mark.parametrize(
    "user, refusal",
    [
        pytest.param("carol", "not in {passwd}", id="not-in-passwd-cache"),
        pytest.param("ali", "no entry in {sshkey}", id="prefix-of-alice"),
        pytest.param("alic", "not in {passwd}", id="prefix-unknown"),
        pytest.param("alicex", "not in {passwd}", id="alice-prefixes-it"),
        pytest.param("ALICE", "not in {passwd}", id="case-differs"),
        pytest.param("erin", "no keys in {sshkey}", id="empty-list"),
        pytest.param("root", "a local account in {local}", id="local-root"),
        pytest.param("sshd", "a local account in {local}", id="local-system-account"),
        pytest.param("low", "uid 999 is below the minimum 1000", id="uid-below-minimum"),
        pytest.param("alice:x", "not a valid user name", id="colon"),
        pytest.param("", "not a valid user name", id="empty"),
        pytest.param("-alice", "not a valid user name", id="leading-dash"),
        pytest.param("al ice", "not a valid user name", id="space"),
        pytest.param("alice\n", "not a valid user name", id="newline"),
    ],
)
def test_refuses_without_printing_a_key(node, user, refusal):
    answer = authorized_keys(user, node)

    assert answer.keys == []
    assert answer.refusal == refusal.format(passwd=node.passwd_cache, sshkey=node.sshkey_cache,
                                            local=node.system_passwd)


def test_min_uid_is_configurable(node):
    node.min_uid = 20002
    assert authorized_keys("alice", node).refusal == "uid 20001 is below the minimum 20002"
    assert authorized_keys("bob", node).keys == [f"{BOB} bob@ws"]


def test_fingerprint_selects_only_the_offered_key(node):
    assert authorized_keys("alice", node, ssh_keygen_fingerprint(A2)).keys == [f"{A2} alice@desk"]
    assert authorized_keys("alice", node, ssh_keygen_fingerprint(A1, "md5")).keys == [f"{A1} alice@laptop"]


def test_fingerprint_of_another_key_prints_nothing(node):
    fp = ssh_keygen_fingerprint(MALLORY)
    assert authorized_keys("alice", node, fp).refusal == f"no key with fingerprint {fp}"
    # bob's key is no key of alice's.
    assert authorized_keys("alice", node, ssh_keygen_fingerprint(BOB)).keys == []


@pytest.mark.parametrize("fp", ["SHA1:abc", "abc", "", "sha256:abc"])
def test_unknown_fingerprint_form_is_a_usage_error(node, fp):
    with pytest.raises(UsageError):
        authorized_keys("alice", node, fp)


# --- fail closed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("alice:['ssh-ed25519 AAAA", id="unterminated-list"),
        pytest.param("alice:['{a1}' '{a2}']", id="no-comma"),
        pytest.param("alice:[{a1}]", id="unquoted"),
        pytest.param("alice:['{a1}', ]", id="trailing-comma"),
        pytest.param("alice:['{a1}'] x", id="text-after-list"),
        pytest.param("alice:['{a1}', 'ssh-dss AAAAB3NzaC1kc3MAAACBAP']", id="one-bad-key-spoils-all"),
        pytest.param("alice:ssh-ed25519 !!notbase64!!", id="not-base64"),
        pytest.param("alice:ssh-rsa {a1body}", id="body-of-another-type"),
        pytest.param("alice:ssh-ed25519", id="no-body"),
        pytest.param("alice:['{a1} caf\\xe9']", id="escape-non-ascii"),
        pytest.param("alice:__import__('os').system('id')", id="code"),
    ],
)
def test_malformed_entry_for_the_user_fails_closed(node, line):
    a1body = A1.split()[1]
    text = line.format(a1=A1, a2=A2, a1body=a1body)
    data = Path(node.sshkey_cache)
    data.chmod(0o644)
    data.write_text(f"nsscache-coreweave:*{RUN}\n" + text + "\nbob:" + BOB + "\n")

    with pytest.raises(MalformedEntry):
        authorized_keys("alice", node)
    # Another user's entry is unaffected.
    assert authorized_keys("bob", node).keys == [BOB]


def alices_line_is(node: Settings, value: str) -> None:
    """Replace alice's sshkey.cache line (as a hand edit or another writer would), keeping the run marker and bob."""
    data = Path(node.sshkey_cache)
    data.chmod(0o644)
    data.write_text(f"nsscache-coreweave:*{RUN}\nalice:{value}\nbob:{BOB}\n")


def test_a_well_formed_dsa_key_is_never_served(node, capsys):
    """DSA is no type the keys command serves: a real ssh-dss key (valid base64, a DSA
    blob ssh-keygen reads) in alice's entry fails the entry closed, her other key with it."""
    dsa = dsa_key()
    assert ssh_keygen_fingerprint(dsa).startswith("SHA256:")  # a well-formed DSA key
    alices_line_is(node, repr([f"{A1} alice@laptop", f"{dsa} alice@old"]))

    with pytest.raises(MalformedEntry) as raised:
        authorized_keys("alice", node)
    assert str(raised.value) == f"{node.sshkey_cache}: malformed entry: a key has an unknown type"
    with pytest.raises(MalformedEntry):
        authorized_keys("alice", node, ssh_keygen_fingerprint(dsa))
    assert keys.main(_argv(node, "alice")) == 1
    assert capsys.readouterr() == (
        "",
        f"nsscache-coreweave-keys: alice: {node.sshkey_cache}: malformed entry: a key has an unknown type: no keys\n"
    )
    assert authorized_keys("bob", node).keys == [BOB]


@pytest.mark.parametrize(
    "declared, make_inner",
    [
        pytest.param("ssh-rsa", dsa_key, id="ssh-rsa-declared-ssh-dss-blob"),
        pytest.param("ecdsa-sha2-nistp256", lambda: ecdsa_key("nistp384"), id="nistp256-declared-nistp384-blob"),
    ],
)
def test_a_key_whose_blob_names_another_type_of_the_same_length_is_never_served(node, capsys, declared, make_inner):
    """The type inside the blob must be the declared type itself, not just as long as it:
    ssh-rsa and ssh-dss are both 7 characters, ecdsa-sha2-nistp256 and -nistp384 both 19
    (and their curve names, nistp256 and nistp384, both 8)."""
    inner = make_inner()
    assert len(inner.split()[0]) == len(declared) and inner.split()[0] != declared
    alices_line_is(node, f"{declared} {body(inner)} alice@laptop")

    with pytest.raises(MalformedEntry) as raised:
        authorized_keys("alice", node)
    assert str(raised.value) == f"{node.sshkey_cache}: malformed entry: a {declared} key does not decode as {declared}"
    assert keys.main(_argv(node, "alice")) == 1
    assert capsys.readouterr() == (
        "", f"nsscache-coreweave-keys: alice: {node.sshkey_cache}: malformed entry: a {declared} key does not "
            f"decode as {declared}: no keys\n"
    )
    assert authorized_keys("bob", node).keys == [BOB]


def test_an_ecdsa_key_naming_another_curve_is_never_served(node, capsys):
    alices_line_is(node, f"{ecdsa_key_naming_another_curve('ecdsa-sha2-nistp256', 'nistp384')} alice@laptop")

    with pytest.raises(MalformedEntry) as raised:
        authorized_keys("alice", node)
    assert str(raised.value) == f"{node.sshkey_cache}: malformed entry: a ecdsa-sha2-nistp256 key names another curve"
    assert keys.main(_argv(node, "alice")) == 1
    assert capsys.readouterr().out == ""
    alices_line_is(node, f"{ecdsa_key('nistp256')} alice@laptop")
    assert len(authorized_keys("alice", node).keys) == 1


def test_malformed_passwd_entry_fails_closed(node):
    Path(node.passwd_cache).write_text(f"nsscache-coreweave:*{RUN}:65534:65534::/:/x\nalice:x:notanumber:1:a:/h:/bin/sh\n")
    with pytest.raises(MalformedEntry):
        authorized_keys("alice", node)


@pytest.mark.parametrize("which", ["sshkey_cache", "passwd_cache", "system_passwd"])
def test_unreadable_file_fails_closed(node, which):
    os.unlink(getattr(node, which))
    with pytest.raises(CacheUnreadable):
        authorized_keys("alice", node)


# --- one run: sshkey.cache and passwd.cache written together -----------------------------------

OTHER_RUN = "20261202T194500Z-000000000001"


class FakeClock:
    """time() and sleep() for the settle wait; ``on_sleep`` runs at each sleep (a writer)."""

    def __init__(self, now: float, on_sleep=lambda: None):
        self.now, self.on_sleep, self.sleeps = now, on_sleep, 0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        self.on_sleep()


def caches_of_runs(tmp_path, passwd_run, sshkey_run) -> Settings:
    return write_caches(tmp_path / "etc", {"alice": [A1]}, {"alice": 20001}, runs=(passwd_run, sshkey_run))


def newest_write(settings: Settings) -> float:
    return max(os.stat(settings.passwd_cache).st_mtime, os.stat(settings.sshkey_cache).st_mtime)


def test_keys_are_served_when_both_caches_name_the_same_run(tmp_path):
    settings = caches_of_runs(tmp_path, RUN, RUN)

    assert authorized_keys("alice", settings, clock=FakeClock(time.time())).keys == [A1]


def test_an_sshkey_cache_of_another_run_fails_closed_once_the_settle_time_is_over(tmp_path):
    settings = caches_of_runs(tmp_path, RUN, OTHER_RUN)
    clock = FakeClock(newest_write(settings) + settings.settle)

    with pytest.raises(NotOneRun) as raised:
        authorized_keys("alice", settings, clock=clock)

    assert clock.sleeps == 0
    assert f"sshkey.cache is from run {OTHER_RUN}" in str(raised.value)
    assert f"passwd.cache from run {RUN}" in str(raised.value)


def test_a_disagreement_younger_than_the_settle_time_is_waited_out(tmp_path):
    settings = caches_of_runs(tmp_path, RUN, OTHER_RUN)

    def nsscache_writes_sshkey():
        if clock.sleeps == 3:
            write_caches(tmp_path / "etc", {"alice": [A2]}, {"alice": 20001}, runs=(RUN, RUN))

    clock = FakeClock(newest_write(settings), nsscache_writes_sshkey)

    assert authorized_keys("alice", settings, clock=clock).keys == [A2]
    assert clock.sleeps == 3


def test_a_disagreement_that_outlasts_the_settle_time_fails_closed(tmp_path):
    settings = caches_of_runs(tmp_path, RUN, OTHER_RUN)
    settings.settle = 2
    start = newest_write(settings)
    clock = FakeClock(start)

    with pytest.raises(NotOneRun):
        authorized_keys("alice", settings, clock=clock)

    # It waited the whole settle time, and not one poll more.
    assert start + 2 <= clock.now < start + 2 + keycache.SETTLE_POLL


@pytest.mark.parametrize("runs", [(RUN, None), (None, RUN), (None, None)], ids=["sshkey", "passwd", "both"])
def test_a_cache_without_a_run_marker_fails_closed(tmp_path, runs):
    settings = caches_of_runs(tmp_path, *runs)

    with pytest.raises(NotOneRun, match="has no run marker"):
        authorized_keys("alice", settings, clock=FakeClock(time.time() + 3600))


def test_a_cache_written_in_the_future_is_waited_on_no_longer_than_the_settle_time(tmp_path):
    # A cache mtime ahead of the clock (written before the clock was stepped back) must not
    # stretch the wait: sshd does not time the command out.
    settings = caches_of_runs(tmp_path, RUN, OTHER_RUN)
    start = newest_write(settings) - 3600
    clock = FakeClock(start)

    with pytest.raises(NotOneRun):
        authorized_keys("alice", settings, clock=clock)

    assert start + settings.settle <= clock.now < start + settings.settle + keycache.SETTLE_POLL


def test_the_run_marker_is_no_account(node):
    assert authorized_keys("nsscache-coreweave", node).refusal == "the run marker of the caches, not an account"


def test_caches_of_different_runs_exit_1_with_the_reason(tmp_path, capsys):
    settings = caches_of_runs(tmp_path, RUN, OTHER_RUN)

    status = keys.main(["--cache", settings.sshkey_cache, "--system-passwd", settings.system_passwd,
                        "--settle", "0", "alice"])

    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert err.startswith(f"nsscache-coreweave-keys: alice: {settings.sshkey_cache} is from run {OTHER_RUN}")


# --- bounded staleness ----------------------------------------------------------------------


def test_max_age_off_by_default_serves_an_old_cache(node):
    (Path(node.timestamp_dir) / "timestamp-sshkey-update").write_text("2001-01-01T00:00:00Z\n")
    assert authorized_keys("bob", node, now=NOW).keys == [f"{BOB} bob@ws"]


def test_max_age_serves_a_fresh_cache(node):
    node.max_age = 3600
    assert authorized_keys("bob", node, now=NOW).keys == [f"{BOB} bob@ws"]


@pytest.mark.parametrize(
    "stamp, message",
    [
        pytest.param("2001-01-01T00:00:00Z\n", "sshkey cache is stale: last successful update 2001-01-01T00:00:00Z",
                     id="old"),
        pytest.param(None, "no last update time", id="missing"),
        pytest.param("yesterday\n", "unparseable timestamp", id="garbage"),
    ],
)
def test_max_age_refuses_a_stale_or_unknown_cache(node, stamp, message):
    node.max_age = 3600
    path = Path(node.timestamp_dir) / "timestamp-sshkey-update"
    if stamp is None:
        path.unlink()
    else:
        path.write_text(stamp)
    with pytest.raises(StaleCache, match=message):
        authorized_keys("bob", node, now=NOW)


def test_max_age_boundary(node):
    node.max_age = 60
    assert authorized_keys("bob", node, now=NOW).keys  # exactly 60 s old
    with pytest.raises(StaleCache):
        authorized_keys("bob", node, now=NOW + 1)


@pytest.mark.parametrize("when", [0, 86401, 951782400, 1709251199, 1_800_000_000, 4102444800, 253402300799])
def test_parse_timestamp_agrees_with_the_calendar(when):
    text = time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime(when))
    assert parse_timestamp(text) == calendar.timegm(time.gmtime(when)) == when


@pytest.mark.parametrize("text", ["", "2026-01-01 00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00",
                                  "２０２６-01-01T00:00:00Z", "2026-01-01T24:00:00Z"])
def test_parse_timestamp_rejects_other_forms(text):
    with pytest.raises(StaleCache):
        parse_timestamp(text)


# --- line formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param("", [], id="empty-string"),
        pytest.param("[]", [], id="empty-list"),
        pytest.param("{k}", ["{k}"], id="string"),
        pytest.param("['{k}']", ["{k}"], id="list-of-one"),
        pytest.param("['{k} a', '{k} b']", ["{k} a", "{k} b"], id="list-of-two"),
        pytest.param('["{k} it\'s mine"]', ["{k} it's mine"], id="double-quoted-repr"),
        pytest.param("['{k} say \"hi\" it\\'s']", ["{k} say \"hi\" it's"], id="escaped-repr"),
        pytest.param("['{k} back\\\\slash']", ["{k} back\\slash"], id="backslash-repr"),
        pytest.param('[\'from="10.0.0.0/8 x",no-pty {k}\']', ['from="10.0.0.0/8 x",no-pty {k}'], id="options"),
    ],
)
def test_parse_keys_reads_what_nsscache_writes(value, expected):
    k = ed25519_key()
    assert parse_keys(value.format(k=k)) == [e.format(k=k) for e in expected]


@pytest.mark.parametrize(
    "value",
    [
        ["{k} it's \"quoted\"", "{k} plain"],
        ["{k} back\\slash"],
        "{k} string form",
    ],
)
def test_nsscache_writer_round_trip(tmp_path, value):
    k = ed25519_key()
    value = [v.format(k=k) for v in value] if isinstance(value, list) else value.format(k=k)
    settings = write_caches(tmp_path, {"alice": value}, {"alice": 20001})
    assert authorized_keys("alice", settings).keys == (value if isinstance(value, list) else [value])


@pytest.mark.parametrize(
    "make", [ed25519_key, ecdsa_key, lambda: ecdsa_key("nistp384"), lambda: ecdsa_key("nistp521"), rsa_key,
             sk_ed25519_key, sk_ecdsa_key],
    ids=["ed25519", "ecdsa256", "ecdsa384", "ecdsa521", "rsa", "sk-ed25519", "sk-ecdsa"],
)
def test_fingerprints_match_ssh_keygen(make):
    key = make()
    assert fingerprint(key) == ssh_keygen_fingerprint(key)
    assert fingerprint(f"{key} comment") == ssh_keygen_fingerprint(key)
    assert fingerprint(key, "MD5") == ssh_keygen_fingerprint(key, "md5")


KEY_OF_TYPE = {
    "ssh-ed25519": ed25519_key,
    "ecdsa-sha2-nistp256": lambda: ecdsa_key("nistp256"),
    "ecdsa-sha2-nistp384": lambda: ecdsa_key("nistp384"),
    "ecdsa-sha2-nistp521": lambda: ecdsa_key("nistp521"),
    "sk-ssh-ed25519@openssh.com": sk_ed25519_key,
    "sk-ecdsa-sha2-nistp256@openssh.com": sk_ecdsa_key,
    "ssh-rsa": rsa_key,
}


@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
def test_every_key_type_sshkeys_lets_in_is_served(key_type):
    """One table, keycache.KEY_TYPES, says what sshkeys lets into sshkey.cache and what the command reads back."""
    line = sshkeys.normalise(KEY_OF_TYPE[key_type]() + " someone@host")
    assert line.split(" ", 1)[0] == key_type
    assert parse_keys(line) == [line]
    assert fingerprint(line) == ssh_keygen_fingerprint(line)


def test_a_type_outside_the_table_is_neither_let_in_nor_served():
    key = dsa_key()
    assert key.split(" ", 1)[0] not in KEY_TYPES
    with pytest.raises(sshkeys.InvalidKey):
        sshkeys.normalise(key)
    with pytest.raises(MalformedEntry):
        parse_keys(key)


# --- the index and its fallbacks ------------------------------------------------------------


@pytest.fixture
def big(tmp_path):
    """5,000 users with one key each (u00000 ... u04999), written by nsscache."""
    names = [f"u{i:05d}" for i in range(5000)]
    k = ed25519_key()
    settings = write_caches(tmp_path, {n: [f"{k} {n}@x"] for n in names}, {n: 30000 + i for i, n in enumerate(names)})
    return settings, k


def test_fresh_index_answers_with_a_logarithmic_number_of_reads(big, monkeypatch):
    settings, k = big
    reads = []
    real = os.pread
    monkeypatch.setattr(keycache.os, "pread", lambda fd, n, off: reads.append(n) or real(fd, n, off))

    for name in ("u00000", "u02500", "u04999"):
        reads.clear()
        line, method = find_line(settings.sshkey_cache, name, settings.sshkey_cache + ".ixname")
        assert (line.decode(), method) == (f"{name}:['{k} {name}@x']", "index")
        # The index's head, at most ceil(log2(5001)) = 13 probes (5000 users and the run marker), the data line.
        assert len(reads) <= 15
    for name in ("u", "u05000", "u0249", "zzz", "a"):
        assert find_line(settings.sshkey_cache, name, settings.sshkey_cache + ".ixname") == (None, "index")


def _age(path: str, seconds: int) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda ix: _age(ix, 10), id="older-than-data"),
        pytest.param(os.unlink, id="missing"),
        pytest.param(lambda ix: Path(ix).write_bytes(b"garbage"), id="not-fixed-width"),
        pytest.param(lambda ix: Path(ix).write_bytes(b""), id="empty"),
        pytest.param(lambda ix: Path(ix).write_bytes(b"u02500\x0099999999\x00\n"), id="offset-past-end"),
        pytest.param(lambda ix: Path(ix).write_bytes(b"u02500\x0000000003\x00\n"), id="offset-mid-line"),
        pytest.param(lambda ix: Path(ix).write_bytes(b"u02500\x000\x00\x00\x00\n"), id="offset-of-another-user"),
    ],
)
def test_untrusted_index_falls_back_to_a_scan(big, spoil):
    settings, k = big
    spoil(settings.sshkey_cache + ".ixname")

    line, method = find_line(settings.sshkey_cache, "u02500", settings.sshkey_cache + ".ixname")

    assert (line.decode(), method) == (f"u02500:['{k} u02500@x']", "scan")
    assert authorized_keys("u02500", settings).keys == [f"{k} u02500@x"]


def test_character_offsets_after_a_non_ascii_line_fall_back_to_a_scan(tmp_path):
    # nsscache counts characters: after "é" (2 bytes) every later offset is one byte short.
    k = ed25519_key()
    cache = tmp_path / "c"
    cache.mkdir()
    smap = sshkey_map.SshkeyMap()
    smap.Add(sshkey_map.SshkeyMapEntry({"name": "aaron", "sshkey": "x é"}))
    smap.Add(sshkey_map.SshkeyMapEntry({"name": "bob", "sshkey": [f"{k} bob"]}))
    handler = files.FilesSshkeyMapHandler({"dir": str(cache), "cache_filename_suffix": "cache"})
    assert handler.WriteMap(map_data=smap) == 0

    line, method = find_line(str(cache / "sshkey.cache"), "bob", str(cache / "sshkey.cache.ixname"))

    assert (line.decode(), method) == (f"bob:['{k} bob']", "scan")


def test_last_line_without_newline(tmp_path):
    data = tmp_path / "sshkey.cache"
    data.write_bytes(b"alice:x\nbob:y")
    assert find_line(str(data), "bob") == (b"bob:y", "scan")


# --- settings -------------------------------------------------------------------------------


def test_settings_from_nsscache_conf(tmp_path):
    conf = tmp_path / "nsscache.conf"
    conf.write_text(
        "[DEFAULT]\nsource = coreweave\ncache = files\nmaps = passwd, sshkey\n"
        "timestamp_dir = /var/lib/ns\nfiles_dir = /srv/cache\nfiles_cache_filename_suffix = 'db'\n"
        "coreweave_min_uid = 5000\ncoreweave_home_directory = /home/%%u\n"
        "[sshkey]\nfiles_dir = /srv/keys\n"
    )

    assert read_settings(str(conf)) == Settings(
        sshkey_cache="/srv/keys/sshkey.db", passwd_cache="/srv/cache/passwd.db", timestamp_dir="/var/lib/ns",
        min_uid=5000,
    )
    assert read_settings(str(conf), min_uid=7, max_age=60).min_uid == 7


def test_default_settings_are_libnss_caches_paths():
    assert read_settings() == Settings(
        sshkey_cache="/etc/sshkey.cache", passwd_cache="/etc/passwd.cache", system_passwd="/etc/passwd",
        timestamp_dir="/var/lib/nsscache", min_uid=1000, max_age=None,
    )


def test_cache_option_finds_the_passwd_cache_beside_it():
    assert read_settings(sshkey_cache="/x/sshkey.cache").passwd_cache == "/x/passwd.cache"
    with pytest.raises(UsageError):
        read_settings(sshkey_cache="/x/keys")


# --- the command ----------------------------------------------------------------------------


def _argv(settings: Settings, *args: str):
    return ["--cache", settings.sshkey_cache, "--system-passwd", settings.system_passwd,
            "--timestamp-dir", settings.timestamp_dir, *args]


def test_main_prints_one_key_per_line(node, capsys):
    assert keys.main(_argv(node, "alice")) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"{A1} alice@laptop\n{A2} alice@desk\n", "")


def test_main_with_fingerprint(node, capsys):
    assert keys.main(_argv(node, "alice", ssh_keygen_fingerprint(A2))) == 0
    assert capsys.readouterr().out == f"{A2} alice@desk\n"


def test_main_refusal_exits_0_with_one_line(node, capsys):
    assert keys.main(_argv(node, "ali")) == 0
    assert capsys.readouterr() == ("", f"nsscache-coreweave-keys: ali: no entry in {node.sshkey_cache}: no keys\n")


def test_main_fails_closed_with_one_line(node, capsys):
    Path(node.sshkey_cache).chmod(0o644)
    Path(node.sshkey_cache).write_text("alice:['broken\n")
    for cache in (node.sshkey_cache, node.passwd_cache):
        os.utime(cache, (0, 0))  # a disagreement that old is no write in progress: no settle wait

    assert keys.main(_argv(node, "alice")) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("nsscache-coreweave-keys: alice: ") and err.endswith(": no keys\n")


def test_main_stale_cache_exits_1(node, capsys):
    (Path(node.timestamp_dir) / "timestamp-sshkey-update").write_text("2001-01-01T00:00:00Z\n")
    assert keys.main(_argv(node, "--max-age", "86400", "alice")) == 1
    out, err = capsys.readouterr()
    assert out == "" and "sshkey cache is stale" in err


@pytest.mark.parametrize(
    "argv",
    [[], ["a", "b", "c"], ["--bogus", "alice"], ["--max-age", "soon", "alice"], ["--min-uid", "-1", "alice"],
     ["--cache"], ["alice", "MD4:xx"]],
)
def test_main_usage_errors_exit_2_and_print_nothing(node, capsys, argv):
    assert keys.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1


def test_main_unreadable_config_exits_1(tmp_path, capsys):
    assert keys.main(["-c", str(tmp_path / "missing.conf"), "alice"]) == 1
    assert capsys.readouterr().out == ""


# --- sshd's path rules and the wrapper ------------------------------------------------------


def test_sshd_path_rules():
    assert sshd_path_problems("/usr/bin/env") == []
    assert sshd_path_problems("relative") == ["relative is not an absolute path"]


def test_sshd_path_rules_refuse_a_world_writable_parent(tmp_path):
    script = tmp_path / "keys"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    problems = sshd_path_problems(str(script))
    assert problems == [
        "/tmp (a directory on the way to the AuthorizedKeysCommand) is group- and world-writable (root:root 1777): "
        "sshd refuses to run the command, so no key login works; fix: use a directory only root can write to "
        "(/tmp is shared on purpose: leave its mode)"
    ]


def test_path_lookups_include_every_directory_holding_a_symlink(tmp_path):
    # /a/link -> ../b/python -> /real/python: a/ and b/ hold links, so whoever can write
    # there can swap what the path runs, although neither is above the real file.
    for name in ("a", "b", "real"):
        (tmp_path / name).mkdir()
    (tmp_path / "real" / "python").write_text("")
    (tmp_path / "b" / "python").symlink_to(tmp_path / "real" / "python")
    (tmp_path / "a" / "link").symlink_to("../b/python")

    real, searched = sshd_path.lookups(str(tmp_path / "a" / "link"))

    assert real == str(tmp_path / "real" / "python")
    parents = [str(p) for p in reversed(tmp_path.parents)]
    assert searched == parents + [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "real")]


def test_path_lookups_stop_at_a_missing_component(tmp_path):
    assert sshd_path.lookups(str(tmp_path / "missing" / "python")) == (
        None, [str(p) for p in reversed(tmp_path.parents)] + [str(tmp_path)]
    )


@pytest.mark.parametrize("argv", [["--user", "nsscache-keys", "alice"], ["--python", "/usr/bin/python3", "alice"]])
def test_user_and_python_options_belong_to_the_install_check(argv, capsys):
    assert keys.main(argv) == 2
    assert capsys.readouterr() == (
        "", "nsscache-coreweave-keys: --python and --user go with --install-wrapper or --check-path (see --help): "
            "no keys\n"
    )


def test_wrapper_runs_the_command(tmp_path, node):
    wrapper = tmp_path / "nsscache-coreweave-keys"
    problems = keys.install_wrapper(str(wrapper), sys.executable)

    assert wrapper.read_text() == wrapper_text(sys.executable)
    assert wrapper.read_text().splitlines()[0] == f"#!{sys.executable} -I"
    assert wrapper.stat().st_mode & 0o7777 == 0o755
    assert problems  # under /tmp: sshd would refuse it there
    result = subprocess.run([str(wrapper), *_argv(node, "bob")], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{BOB} bob@ws\n", "")


def test_wrapper_mode_and_owner_are_set_on_the_open_descriptor(tmp_path, mocker):
    """The temporary file is made 0755 (and root-owned, as root) through the
    descriptor it was written through, never by path: between the write and
    the rename, another user of a shared directory could have swapped the
    path for a link to a file of their choosing. That race cannot be staged
    deterministically, so os.chown and os.chmod by path are made to fail."""
    by_path = mocker.patch("os.chown", side_effect=AssertionError("os.chown by path"))
    by_path_mode = mocker.patch("os.chmod", side_effect=AssertionError("os.chmod by path"))
    fchown = mocker.spy(os, "fchown")
    fchmod = mocker.spy(os, "fchmod")
    wrapper = tmp_path / "nsscache-coreweave-keys"

    keys.install_wrapper(str(wrapper), sys.executable)

    st = wrapper.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o755, 0, 0)  # the tests run as root
    assert wrapper.read_text() == wrapper_text(sys.executable)
    assert sorted(p.name for p in tmp_path.iterdir()) == [wrapper.name]  # no temporary file left
    assert (by_path.call_count, by_path_mode.call_count) == (0, 0)
    assert [c.args[1:] for c in fchown.call_args_list] == [(0, 0)]
    assert [c.args[1:] for c in fchmod.call_args_list] == [(0o755,)]


def test_wrapper_left_behind_by_a_failed_write_is_removed(tmp_path, mocker):
    mocker.patch("os.fchmod", side_effect=PermissionError(1, "Operation not permitted"))
    wrapper = tmp_path / "nsscache-coreweave-keys"

    with pytest.raises(PermissionError):
        keys.install_wrapper(str(wrapper), sys.executable)

    assert list(tmp_path.iterdir()) == []


def test_wrapper_refuses_an_interpreter_path_with_spaces():
    with pytest.raises(UsageError):
        wrapper_text("/opt/my env/bin/python")


# --- what it imports ------------------------------------------------------------------------


def test_lookup_imports_only_the_standard_library_it_needs(node):
    code = (
        "import sys; before = set(sys.modules)\n"
        "from nss_cache_coreweave import keys\n"
        f"status = keys.main({_argv(node, 'alice', ssh_keygen_fingerprint(A1))!r})\n"
        "print(status, sorted(m for m in set(sys.modules) - before if not m.startswith('nss_cache_coreweave')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)

    key, last = result.stdout.splitlines()
    status, imported = last.split(" ", 1)
    assert (key, status) == (f"{A1} alice@laptop", "0")
    assert set(ast.literal_eval(imported)) <= {"binascii", "_sha256", "_sha2"}, imported


def test_lookup_never_imports_the_install_checks(node):
    code = (
        "import sys\n"
        "from nss_cache_coreweave import keys\n"
        f"status = keys.main({_argv(node, 'alice')!r})\n"
        "print(status, sorted(m for m in sys.modules if m.startswith('nss_cache_coreweave')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)

    assert result.stdout.splitlines()[-1] == (
        "0 ['nss_cache_coreweave', 'nss_cache_coreweave.keycache', 'nss_cache_coreweave.keys', "
        "'nss_cache_coreweave.marker']"
    )
