"""``nsscache-coreweave``, run in process: ``cli.main(argv)`` returns the exit
status the command would exit with.

Exit statuses: 0 success; 1 a map failed or a problem was found; 2 usage or
configuration error (argparse exits 2 itself); 75 the directory is
unavailable (EX_TEMPFAIL, as nsscache). ``status --max-age`` is a check:
0 fresh, 1 stale or failed, 2 unknown (never updated); without --max-age it
only reports (0).

Each call is a new process as far as the package can tell (nothing listed
yet). The directory is the loopback fake IAM serving demo/org.json: alice,
bob, erin, frank in slurm-users (alice also in slurm-admins), carol only in
other-team, dave inactive; frank's second key is garbage. The subprocess
tests (tests/integration/test_status.py, test_update.py) run the installed
commands; these pin the output line by line and field by field.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

from nss_cache_coreweave import cli
from nss_cache_coreweave import run as run_module
from nss_cache_coreweave.shrink import ACCEPT_SHRINK_ENV
from nss_cache_coreweave.slurm import SlurmRun, SlurmState, save_state
from support.fakeiam import FakeIAM, Fault
from support.node import expected_caches

TOKEN = "cw-cli-unit-T0ken-71b4"
EXT = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
MAPS = ("passwd", "group", "shadow", "sshkey")
RUN_ID = r"\d{8}T\d{6}Z-[0-9a-f]{12}"  # marker.new_run
T0 = 1_780_000_000  # when nsscache last wrote the caches, in the status tests
T0_ISO = "2026-05-28T20:26:40Z"

# The first line of each cache: the run marker (marker.py), naming the run.
MARKER_LINES = {
    "passwd": "nsscache-coreweave:*{run}:65534:65534:run marker, not an account:/nonexistent:/usr/sbin/nologin",
    "group": "nsscache-coreweave:*{run}:65534:",
    "shadow": "nsscache-coreweave:*{run}:::::::",
    "sshkey": "nsscache-coreweave:*{run}",
}


@dataclass
class Result:
    status: int
    out: List[str]  # stdout, line by line
    err: str
    logged: List[Tuple[str, str]]  # (level, message) of the package's log records


@dataclass
class Node:
    """A login node in a temporary directory: nsscache.conf, token file,
    cache and state directories; ``cli(...)`` runs the command on its conf."""

    root: Path
    run: Callable[..., Result]

    def __post_init__(self):
        for sub in ("cache", "state"):
            (self.root / sub).mkdir(parents=True)
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)

    @property
    def conf(self) -> Path:
        return self.root / "nsscache.conf"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def configure(self, base_url: str, extra: str = "", maps: str = ", ".join(MAPS)) -> None:
        self.conf.write_text(
            "[DEFAULT]\n"
            "source = coreweave\n"
            "cache = files\n"
            f"maps = {maps}\n"
            f"timestamp_dir = {self.state_dir}\n"
            f"lockfile = {self.root / 'nsscache.lock'}\n"
            f"files_dir = {self.cache_dir}\n"
            "files_cache_filename_suffix = cache\n"
            f"coreweave_base_url = {base_url}\n"
            f"coreweave_token_file = {self.token_file}\n"
            "coreweave_groups = slurm-users, slurm-admins\n"
            "coreweave_home_directory = /mnt/home/%%u\n"
            f"coreweave_state_dir = {self.state_dir}\n"
            "coreweave_allowed_shells = /bin/bash, /bin/zsh\n"
            # No local accounts: the host's /etc/passwd cannot clash with the demo users.
            f"coreweave_local_passwd = {self.root / 'no-passwd'}\n"
            f"coreweave_local_group = {self.root / 'no-group'}\n"
            "coreweave_retries = 0\n" + extra
        )

    def cli(self, *args: str) -> Result:
        return self.run("-c", str(self.conf), *args)

    def written_at(self, epoch: int) -> None:
        """Make nsscache's update timestamps read as if it wrote every cache at ``epoch``."""
        for name in MAPS:
            (self.state_dir / f"timestamp-{name}-update").write_text(
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) + "\n")


@pytest.fixture(autouse=True)
def one_process(monkeypatch, caplog):
    """What one command changes in its process is undone after each test: the
    log handlers cli installs, the shrink override ``update --accept-shrink``
    exports. Logs go to stderr, never to the host's syslog."""
    for var in ("NSSCACHE_CONFIG", "NSSCACHE_COREWEAVE_TOKEN", "NSSCACHE_SCIM_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(ACCEPT_SHRINK_ENV, "")  # remembered as unset ...
    monkeypatch.delenv(ACCEPT_SHRINK_ENV)  # ... so it is unset again after the test, whoever set it
    monkeypatch.setattr(cli, "SYSLOG_SOCKET", "/nonexistent/dev-log")
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "nss_cache_coreweave", "urllib3")}
    yield
    for handler in [h for h in root.handlers if cli._REDACT in h.filters]:
        root.removeHandler(handler)
        handler.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def run(monkeypatch, capsys, caplog):
    """``run(*argv)``: one ``nsscache-coreweave`` command, as a new process."""

    def run(*argv: str) -> Result:
        monkeypatch.setattr(run_module, "_CACHE", {})  # nothing listed yet in this "process"
        capsys.readouterr()
        caplog.clear()
        status = cli.main(list(argv))
        out, err = capsys.readouterr()
        logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "nss_cache_coreweave"]
        return Result(status, out.splitlines(), err, logged)

    return run


@pytest.fixture
def iam(demo_org):
    with FakeIAM(demo_org, token=TOKEN) as server:
        yield server


@pytest.fixture
def node(tmp_path, run, iam):
    n = Node(tmp_path / "node", run)
    n.configure(iam.base_url)
    return n


@pytest.fixture
def closed_url():
    """A loopback URL nothing answers: the port is bound, never listened on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/scim/cw-test"


@pytest.fixture
def clock(monkeypatch):
    """``clock(t)``: time.time() returns t from now on."""
    return lambda t: monkeypatch.setattr(time, "time", lambda: t)


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def status_json(node, *args) -> Tuple[int, dict]:
    result = node.cli("status", "--json", *args)
    return result.status, json.loads("\n".join(result.out))


# --- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, error",
    [
        pytest.param([], "nsscache-coreweave: error: the following arguments are required: COMMAND", id="no-command"),
        pytest.param(["frobnicate"], "nsscache-coreweave: error: argument COMMAND: invalid choice: 'frobnicate'",
                     id="unknown-command"),
        pytest.param(["preview"], "nsscache-coreweave preview: error: the following arguments are required: map",
                     id="preview-without-map"),
        pytest.param(["preview", "hosts"], "nsscache-coreweave preview: error: argument map: invalid choice: 'hosts'",
                     id="preview-unknown-map"),
        pytest.param(["status", "--max-age", "soon"],
                     "nsscache-coreweave status: error: argument --max-age: invalid float value: 'soon'",
                     id="max-age-not-a-number"),
        pytest.param(["update", "--bogus"], "nsscache-coreweave: error: unrecognized arguments: --bogus",
                     id="unknown-option"),
    ],
)
def test_argument_errors_exit_2_with_usage(argv, error, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)

    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert out == ""
    assert err.startswith("usage: nsscache-coreweave")
    # The list of choices that follows is argparse's (its quoting differs between Python versions).
    assert err.splitlines()[-1].startswith(error)


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == "nsscache-coreweave 0.1.0\n"


# --- configuration errors: exit 2 with the message -------------------------------------------------


def test_a_missing_nsscache_conf_is_a_configuration_error(run, tmp_path):
    missing = tmp_path / "no-such.conf"

    result = run("-c", str(missing), "status")

    assert result.status == 2
    assert result.logged == [("ERROR", f"{missing}: no such file (use -c)")]
    assert result.out == []


def test_nsscache_config_names_the_default_conf(run, tmp_path, monkeypatch):
    missing = tmp_path / "from-env.conf"
    monkeypatch.setenv("NSSCACHE_CONFIG", str(missing))

    result = run("status")

    assert result.status == 2
    assert result.logged == [("ERROR", f"{missing}: no such file (use -c)")]


def test_an_unreadable_nsscache_conf_is_a_configuration_error(run, tmp_path):
    conf = tmp_path / "nsscache.conf"
    conf.write_text("maps = passwd\n")  # no [DEFAULT] section header

    result = run("-c", str(conf), "check")

    assert result.status == 2
    ((level, message),) = result.logged
    assert level == "ERROR"
    assert message.startswith(f"{conf}: MissingSectionHeaderError: File contains no section headers.")


GROUPS_REQUIRED = ("invalid configuration: coreweave_groups is required: the POSIX groups whose members may log in, "
                   "comma-separated, or *")


@pytest.mark.parametrize(
    "command, where",
    [
        pytest.param(("check",), "stdout", id="check"),
        pytest.param(("status",), "stderr", id="status"),
        pytest.param(("preview", "passwd"), "log", id="preview"),
        pytest.param(("slurm-sync", "--dry-run"), "log", id="slurm-sync"),
    ],
)
def test_an_invalid_coreweave_option_exits_2_with_the_message(node, iam, command, where):
    node.conf.write_text(node.conf.read_text().replace("coreweave_groups = slurm-users, slurm-admins\n", ""))

    result = node.cli(*command)

    assert result.status == 2
    assert iam.request_count() == 0
    said = {
        "stdout": result.out,
        "stderr": [line for line in result.err.splitlines() if line.startswith("configuration: ")],
        "log": [f"configuration: {message}" for level, message in result.logged if level == "ERROR"],
    }[where]
    assert said == [f"configuration: {GROUPS_REQUIRED}"]


def test_status_needs_no_token_but_check_does(node):
    node.token_file.unlink()

    status = node.cli("status")
    check = node.cli("check")

    assert status.status == 0
    assert check.status == 2
    assert check.out[0].startswith(f"configuration: invalid configuration: coreweave_token_file '{node.token_file}' "
                                   "cannot be read")


@pytest.mark.parametrize("command", [("check",), ("status",)], ids=" ".join)
def test_no_map_with_source_coreweave_is_a_configuration_error(node, iam, command):
    node.conf.write_text(node.conf.read_text().replace("source = coreweave", "source = ldap"))

    result = node.cli(*command)

    printed = result.out + [line for line in result.err.splitlines() if line.startswith("configuration: ")]
    assert result.status == 2
    assert printed == [f"configuration: {node.conf}: no map uses source = coreweave"]


def test_preview_of_a_map_with_another_source_is_a_configuration_error(node, iam):
    with node.conf.open("a") as f:
        f.write("[group]\nsource = ldap\n")

    result = node.cli("preview", "group")

    assert result.status == 2
    assert result.logged == [("ERROR", f"{node.conf}: no map group uses source = coreweave")]
    assert iam.request_count() == 0


# --- status before any run ---------------------------------------------------------------------------


def test_status_before_any_run_is_unknown(node, clock):
    clock(T0)

    result = node.cli("status", "--max-age", "600")

    assert result.status == 2
    assert result.out == [
        "passwd  unknown never updated, None entries, run -",
        "group   unknown never updated, None entries, run -",
        "shadow  unknown never updated, None entries, run -",
        "sshkey  unknown never updated, None entries, run -",
        f"last run: none recorded in {node.state_dir}",
        "status: unknown",
    ]


def test_status_json_before_any_run(node, clock):
    clock(T0)

    code, found = status_json(node, "--max-age", "600")

    assert code == 2
    assert found == {
        "status": "unknown",
        "exit_status": 2,
        "checked_at": T0,
        "max_age": 600.0,
        "maps": {
            name: {"status": "unknown", "updated": None, "age": None, "entries": None, "run": None,
                   "missed_last_run": False, "cache": str(node.cache_dir / f"{name}.cache")}
            for name in MAPS
        },
        "caches_agree": True,  # no cache to disagree
        "last_run": None,
        "last_success": None,
        "registration_problem": None,
        "shrink_refusals": 0,
        "slurm_sync": None,
        "last_publish": None,
    }


def test_status_without_max_age_only_reports(node):
    code, found = status_json(node)

    assert (code, found["status"], found["exit_status"], found["max_age"]) == (0, "unknown", 0, None)


# --- slurm-sync's record in status --------------------------------------------------------------------

SLURM_RUN = SlurmRun(time=T0 - 60, operations=3, conflicts=1, managed_users=4, kept_users=("bob", "erin"))


def test_status_shows_the_last_applied_slurm_sync(node):
    save_state(str(node.state_dir), SlurmState(frozenset({"alice"}), frozenset({"slurm-users"})), last_run=SLURM_RUN)

    result = node.cli("status")

    assert result.out[-3:] == [
        "slurm-sync: last applied 2026-05-28T20:25:40Z: 3 sacctmgr call(s), 4 managed users, 1 conflict(s)",
        "slurm-sync: last association kept (not created by nsscache-coreweave) for 2 user(s): bob, erin",
        "status: unknown",
    ]
    assert status_json(node)[1]["slurm_sync"] == {"time": T0 - 60, "operations": 3, "conflicts": 1,
                                                  "managed_users": 4, "kept_users": ["bob", "erin"]}


def test_status_names_no_kept_association_when_there_is_none(node):
    save_state(str(node.state_dir), SlurmState(), last_run=replace(SLURM_RUN, kept_users=(), conflicts=0))

    result = node.cli("status")

    assert result.out[-2:] == [
        "slurm-sync: last applied 2026-05-28T20:25:40Z: 3 sacctmgr call(s), 4 managed users, 0 conflict(s)",
        "status: unknown",
    ]


def test_status_says_nothing_of_slurm_sync_before_it_applied_a_run(node):
    save_state(str(node.state_dir), SlurmState(frozenset({"alice"}), frozenset()))  # no last_run

    result = node.cli("status")

    assert not [line for line in result.out if line.startswith("slurm-sync:")]
    assert status_json(node)[1]["slurm_sync"] is None


# --- status after a run ---------------------------------------------------------------------------------


@pytest.fixture
def updated(node):
    """The node after one good ``nsscache-coreweave update``, its caches written at T0."""
    result = node.cli("update")
    assert result.status == 0, result.logged
    node.written_at(T0)
    return node


def test_status_after_a_good_run(updated, clock):
    clock(T0 + 30)

    code, found = status_json(updated, "--max-age", "600")

    assert code == 0
    assert (found["status"], found["exit_status"], found["caches_agree"]) == ("fresh", 0, True)
    run = found["last_run"]
    assert re.fullmatch(RUN_ID, run["run"])
    assert found["maps"] == {
        name: {"status": "fresh", "updated": T0, "age": 30.0, "entries": entries, "run": run["run"],
               "missed_last_run": False, "cache": str(updated.cache_dir / f"{name}.cache")}
        for name, entries in (("passwd", 4), ("group", 2), ("shadow", 4), ("sshkey", 3))
    }
    assert {k: run[k] for k in ("outcome", "users", "groups", "keys", "maps_written", "maps_not_written", "drops",
                                "requests", "retries", "error_kind", "error")} == {
        "outcome": "ok", "users": 4, "groups": 2, "keys": 4,
        "maps_written": ["passwd", "group", "shadow", "sshkey"], "maps_not_written": [],
        # The fake IAM has no /ServiceProviderConfig (404): it does not filter, every user is listed.
        "drops": {"key/key": 1, "user/inactive": 1},
        "requests": {"Groups/2xx": 1, "ServiceProviderConfig/4xx": 1, "Users/2xx": 1},
        "retries": 0, "error_kind": "", "error": "",
    }
    assert found["last_success"] >= run["started"]
    assert (found["shrink_refusals"], found["registration_problem"], found["slurm_sync"]) == (0, None, None)


def test_status_text_after_a_good_run(updated, clock):
    run = status_json(updated)[1]["last_run"]
    clock(T0 + 30)

    result = updated.cli("status", "--max-age", "600")

    assert result.status == 0
    assert result.out == [
        f"passwd  fresh   updated {T0_ISO} (30 s ago), 4 entries, run {run['run']}",
        f"group   fresh   updated {T0_ISO} (30 s ago), 2 entries, run {run['run']}",
        f"shadow  fresh   updated {T0_ISO} (30 s ago), 4 entries, run {run['run']}",
        f"sshkey  fresh   updated {T0_ISO} (30 s ago), 3 entries, run {run['run']}",
        f"last run: {iso(run['started'])} ok in {run['duration']} s: 4 users, 2 groups, 4 SSH keys; "
        "nsscache wrote: passwd, group, shadow, sshkey",
        "users fetched: every user of the directory",
        "dropped key/key: 1",
        "dropped user/inactive: 1",
        "status: fresh",
    ]


@pytest.mark.parametrize("outcome, missed, verdict, code", [("ok", False, "fresh", 0), ("failed", True, "failed", 1)])
def test_a_run_record_of_an_earlier_version_naming_no_maps_counts_by_its_outcome(updated, clock, outcome, missed,
                                                                                 verdict, code):
    state_file = updated.state_dir / "coreweave-state.json"
    data = json.loads(state_file.read_text())
    for record in data["scopes"].values():
        record["last_run"] = {k: v for k, v in record["last_run"].items() if k not in ("maps_written",
                                                                                      "maps_not_written")}
        record["last_run"]["outcome"] = outcome
    state_file.write_text(json.dumps(data))
    clock(T0 + 30)

    status, found = status_json(updated, "--max-age", "600")

    assert (status, found["status"]) == (code, verdict)
    assert {name: m["missed_last_run"] for name, m in found["maps"].items()} == {name: missed for name in MAPS}
    assert (found["last_run"]["outcome"], found["last_run"]["maps_written"]) == (outcome, [])


@pytest.mark.parametrize(
    "age, max_age, verdict, code",
    [
        (30, "600", "fresh", 0),
        (600, "600", "fresh", 0),  # exactly max-age old: still fresh
        (600.5, "600", "stale", 1),
        (3600, "600", "stale", 1),
        (3600, "7200", "fresh", 0),
    ],
)
def test_max_age_decides_fresh_or_stale(updated, clock, age, max_age, verdict, code):
    clock(T0 + age)

    status, found = status_json(updated, "--max-age", max_age)

    assert (status, found["status"], found["exit_status"]) == (code, verdict, code)
    assert {m["status"] for m in found["maps"].values()} == {verdict}
    assert status_json(updated)[0] == 0  # without --max-age: a report, never a check


@pytest.fixture
def failed(updated, iam):
    """After the good run, one whose Groups listing gets HTTP 401."""
    iam.add_fault(Fault.error("Groups", page=1, status=401, times=None))
    result = updated.cli("update")
    assert result.status == 75, result.logged
    return updated


AUTH_ERROR = ("Groups page 1: HTTP 401 from {base_url} ('injected fault: HTTP 401'): the bearer token is missing, "
              "expired or lacks the SUNK/SCIM permissions: check coreweave_token_file or NSSCACHE_SCIM_AUTH_TOKEN")


def test_status_after_a_failed_run_is_failed(failed, iam, clock):
    good = status_json(failed)[1]  # the last success is still the good run's
    clock(T0 + 30)

    code, found = status_json(failed, "--max-age", "3600")

    assert code == 1
    assert (found["status"], found["exit_status"]) == ("failed", 1)
    assert {name: (m["status"], m["missed_last_run"], m["entries"]) for name, m in found["maps"].items()} == {
        "passwd": ("failed", True, 4), "group": ("failed", True, 2),
        "shadow": ("failed", True, 4), "sshkey": ("failed", True, 3),
    }
    run = found["last_run"]
    assert {k: run[k] for k in ("outcome", "error_kind", "error", "users", "groups", "keys", "maps_written")} == {
        "outcome": "failed", "error_kind": "AuthError", "error": AUTH_ERROR.format(base_url=iam.base_url),
        "users": 0, "groups": 0, "keys": 0, "maps_written": [],
    }
    assert found["last_success"] == good["last_success"]
    assert found["caches_agree"] is True  # the good run's caches are all still there


def test_status_text_after_a_failed_run_says_why(failed, iam, clock):
    clock(T0 + 30)

    result = failed.cli("status", "--max-age", "3600")

    assert result.status == 1
    assert [line.split()[:2] for line in result.out[:4]] == [[name, "failed"] for name in MAPS]
    assert all(line.endswith("  not updated by the last run") for line in result.out[:4])
    assert result.out[-2:] == [f"last error: AuthError: {AUTH_ERROR.format(base_url=iam.base_url)}", "status: failed"]
    assert TOKEN not in "\n".join(result.out) + result.err


def test_a_failed_run_outranks_stale_caches(failed, clock):
    clock(T0 + 7200)

    code, found = status_json(failed, "--max-age", "600")

    assert (code, found["status"]) == (1, "failed")


# --- preview ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MAPS)
def test_preview_prints_the_lines_the_map_would_get(node, demo_org, name):
    result = node.cli("preview", name)

    assert result.status == 0, result.logged
    marker = re.fullmatch(re.escape(MARKER_LINES[name]).replace(re.escape("{run}"), f"({RUN_ID})"), result.out[0])
    assert marker, result.out[0]
    assert "".join(line + "\n" for line in result.out[1:]) == expected_caches(demo_org)[name]


def test_preview_touches_no_cache_and_records_no_run(node, iam):
    assert node.cli("preview", "passwd").status == 0

    assert sorted(p.name for p in node.cache_dir.iterdir()) == []
    assert sorted(p.name for p in node.state_dir.iterdir()) == []
    assert (iam.request_count("Users"), iam.request_count("Groups")) == (1, 1)


def test_preview_uses_the_map_sections_own_options(node):
    with node.conf.open("a") as f:
        f.write("[group]\ncoreweave_groups = slurm-admins\n")

    result = node.cli("preview", "group")

    assert result.status == 0
    assert result.out[1:] == ["slurm-admins:x:30002:alice"]


# --- check --------------------------------------------------------------------------------------------

ATTRIBUTE = re.compile(r"attribute (\w+\.\w+) \((.+)\): present on (\d+) of (\d+)")


def test_check_reports_configuration_listing_attributes_and_drops(node, iam):
    result = node.cli("check")

    assert result.status == 0, result.out
    assert result.out[:3] == [
        f"configuration: {node.conf}: maps passwd, group, shadow, sshkey use source coreweave",
        f"directory: {iam.base_url} (index pagination, 1000 per page)",
        "listed: 6 users, 3 groups (token accepted)",
    ]
    attributes = {m[1]: (m[2], int(m[3]), int(m[4])) for m in map(ATTRIBUTE.fullmatch, result.out[3:12])}
    assert attributes == {
        "users.name": (f"{EXT}:sunkPosixUsername", 6, 6),
        "users.uid": (f"{EXT}:sunkPosixUid", 6, 6),
        "users.gid": (f"{EXT}:sunkPosixGid", 6, 6),
        "users.ssh_keys": (f"{EXT}:sunkSshKeys", 5, 6),
        "users.home": (f"{EXT}:sunkHomeDirectory", 1, 6),
        "users.shell": (f"{EXT}:sunkLoginShell", 2, 6),
        "users.gecos": ("displayName or name.formatted", 6, 6),
        "groups.name": ("sunkPosixGroupName or displayName", 3, 3),
        "groups.gid": ("sunkPosixGid", 3, 3),
    }
    assert result.out[12:] == [
        "would write: 4 users, 2 groups, 4 SSH keys",
        "dropped user dave: is inactive",
        "dropped key frank: key 2 does not decode as a ssh-ed25519 key (Invalid format)",
        "registration: the nsscache command finds source coreweave",
    ]
    assert TOKEN not in "\n".join(result.out) + result.err


def test_check_reports_a_missing_group_as_a_problem(node):
    node.conf.write_text(node.conf.read_text().replace("coreweave_groups = slurm-users, slurm-admins",
                                                       "coreweave_groups = slurm-users, no-such-group"))

    result = node.cli("check")

    assert result.status == 1
    assert "problem: group 'no-such-group' in coreweave_groups does not exist in the directory" in result.out
    assert "would write: 4 users, 1 groups, 4 SSH keys" in result.out


def test_check_reports_the_shrink_update_would_refuse(updated, iam, demo_org):
    for group in demo_org["Groups"]:
        group["members"] = group["members"][:1]  # 4 users -> 1
    iam.set_org(demo_org)

    result = updated.cli("check")

    assert result.status == 1
    (problem,) = [line for line in result.out if line.startswith("problem: ")]
    assert problem.startswith("problem: refusing to shrink users from 4 to 1 (-75%, more than coreweave_max_shrink "
                              "25% of the last accepted run)")
    assert "would write: 1 users, 2 groups, 2 SSH keys" in result.out


# --- the directory unavailable or refusing: exit statuses ------------------------------------------------


def test_check_exits_75_when_the_directory_is_unreachable(node, closed_url):
    node.configure(closed_url)

    result = node.cli("check")

    assert result.status == 75
    assert result.out == [
        f"configuration: {node.conf}: maps passwd, group, shadow, sshkey use source coreweave",
        f"directory: {closed_url} (index pagination, 1000 per page)",
        f"directory unavailable: Groups page 1: ConnectionError talking to {closed_url} (after 1 attempts): "
        "is the network or the server down?",
    ]


def test_check_exits_1_when_the_listing_is_refused(node, iam):
    iam.add_fault(Fault.not_json("Users", page=1))

    result = node.cli("check")

    assert result.status == 1
    assert result.out[-1] == "listing refused: Users page 1: the response is not JSON: refusing a malformed listing"


def unreachable(node, iam, closed_url):
    node.configure(closed_url)


def token_refused(node, iam, closed_url):
    node.token_file.write_text("wrong-token\n")


def listing_malformed(node, iam, closed_url):
    iam.add_fault(Fault.not_json("Users", page=1))


def configuration_invalid(node, iam, closed_url):
    node.configure(iam.base_url, "coreweave_pagination = sideways\n")


def nothing_wrong(node, iam, closed_url):
    pass


@pytest.mark.parametrize(
    "arrange, code, error",
    [
        pytest.param(nothing_wrong, 0, None, id="listed"),
        pytest.param(unreachable, 75, "Groups page 1: ConnectionError talking to {closed_url} (after 1 attempts): "
                     "is the network or the server down?", id="FetchError-unreachable"),
        pytest.param(token_refused, 75, "Groups page 1: HTTP 401 from {base_url} (", id="AuthError"),
        pytest.param(listing_malformed, 1, "Users page 1: the response is not JSON: refusing a malformed listing",
                     id="ListingError"),
        pytest.param(configuration_invalid, 2, "invalid configuration: coreweave_pagination must be index or "
                     "cursor, got 'sideways'", id="ConfigError"),
    ],
)
def test_preview_exit_status_by_error(node, iam, closed_url, arrange, code, error):
    arrange(node, iam, closed_url)

    result = node.cli("preview", "passwd")

    assert result.status == code
    if error is None:
        assert result.logged == [] and len(result.out) == 5
    else:
        ((level, message),) = result.logged
        assert level == "ERROR"
        assert message.startswith(error.format(closed_url=closed_url, base_url=iam.base_url))
        assert result.out == []


def test_update_writes_every_map_and_exits_0(node):
    result = node.cli("update", "--full")

    assert result.status == 0, result.logged
    assert sorted(p.name for p in node.state_dir.glob("timestamp-*-update")) == sorted(
        f"timestamp-{name}-update" for name in MAPS)
    (summary,) = [m for level, m in result.logged if m.startswith("coreweave: run ")]
    assert summary.startswith("coreweave: run ok in ")


def test_update_exits_75_when_the_directory_is_unreachable(node, closed_url):
    node.configure(closed_url)

    result = node.cli("update")

    assert result.status == 75
    assert ("ERROR", f"directory unavailable, remaining maps skipped: coreweave: Groups page 1: ConnectionError "
                     f"talking to {closed_url} (after 1 attempts): is the network or the server down?") in result.logged
    assert ("ERROR", "not updated this run: passwd, group, shadow, sshkey") in result.logged
    assert list(node.cache_dir.iterdir()) == []


def test_update_exits_1_when_the_shrink_guard_refuses_and_0_when_accepted(updated, iam, demo_org):
    for group in demo_org["Groups"]:
        group["members"] = group["members"][:1]  # 4 users -> 1
    iam.set_org(demo_org)

    refused = updated.cli("update")
    accepted = updated.cli("update", "--accept-shrink")

    assert refused.status == 1  # not nsscache's count of failed maps (4)
    assert ("ERROR", "not updated this run: passwd, group, shadow, sshkey") in refused.logged
    assert accepted.status == 0, accepted.logged
    assert status_json(updated)[1]["shrink_refusals"] == 1
