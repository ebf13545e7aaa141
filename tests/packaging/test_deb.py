"""The .deb: `make deb` builds it; `dpkg -i` installs it on this Debian 12 machine together with
trixie's nsscache; the stock /usr/bin/nsscache then writes the exact caches from a loopback
fake IAM; `dpkg --purge` leaves the host as it was (HostGuard)."""

from __future__ import annotations

import configparser
import grp
import json
import pwd
import re
import stat
import subprocess
from pathlib import Path

import pytest

from nss_cache_coreweave import install
from support.fakeiam import FakeIAM
from support.host import (
    KEYS_USER,
    OUR_DEPENDS,
    PACKAGE,
    REPO,
    SYSTEM_NSSCACHE,
    SYSTEM_PYTHON,
    HostGuard,
    deb_fields,
    deb_paths,
    dpkg_install,
    dpkg_purge,
    dpkg_status,
    require_installed,
    run,
    system_python_sees_package,
    trixie_nsscache_deb,
    user_exists,
)
from support.node import MARKER, TOKEN, Node, assert_stock_update_writes_the_demo_caches, expected_caches
from support.private_systemd import PrivateSystemd
from support.sshd_check import sshd_effective

DIST = "/usr/lib/python3/dist-packages"
EXAMPLES = "/usr/share/doc/nss-cache-coreweave/examples"
KEYS = "/usr/sbin/nsscache-coreweave-keys"
UNITS = "/lib/systemd/system"
# What the package must ship (more may be there: every module, metadata, docs).
SHIPPED = (
    f"{DIST}/nss_cache_coreweave.pth",
    f"{DIST}/nss_cache_coreweave.start",
    f"{DIST}/_nss_cache_coreweave_hook.py",
    f"{DIST}/nss_cache_coreweave/__init__.py",
    f"{DIST}/nss_cache_coreweave/source.py",
    f"{DIST}/nss_cache_coreweave/keys.py",
    f"{DIST}/nss_cache_coreweave/install.py",
    "/usr/bin/nsscache-coreweave",
    KEYS,
    f"{UNITS}/nsscache-coreweave.service",
    f"{UNITS}/nsscache-coreweave.timer",
    f"{UNITS}/nsscache-coreweave-slurm-sync.service",
    f"{UNITS}/nsscache-coreweave-slurm-sync.timer",
    f"{EXAMPLES}/nsscache.conf",
    f"{EXAMPLES}/nsswitch.conf.snippet",
    f"{EXAMPLES}/cron.d/nsscache-coreweave",
    f"{EXAMPLES}/sshd_config.d/nsscache-coreweave.conf",
    "/usr/share/doc/nss-cache-coreweave/copyright",
    # Uncompressed, so that the README's links resolve on the node.
    "/usr/share/doc/nss-cache-coreweave/README.md",
    "/usr/share/doc/nss-cache-coreweave/docs/configuration.md",
    "/etc/nsscache-coreweave",
)


@pytest.fixture(scope="module")
def host():
    guard = HostGuard()
    yield guard
    problems = guard.restore()
    assert not problems, "the host is not as before the packaging tests:\n  " + "\n  ".join(problems)


@pytest.fixture(scope="module")
def installed(host, built_deb):
    """Ours and trixie's nsscache, in one `dpkg -i` (or ours alone if nsscache is already installed)."""
    require_installed(OUR_DEPENDS, f"{PACKAGE} depends on them")
    debs = [built_deb]
    if dpkg_status("nsscache") != "installed":
        require_installed(("python3-pycurl", "python3-ldap", "python3-packaging"), "trixie's nsscache depends on them")
        debs.insert(0, trixie_nsscache_deb())
    dpkg_install(*debs)
    return built_deb


def test_control_fields(built_deb):
    fields = deb_fields(built_deb)
    version = configparser.ConfigParser()
    version.read(REPO / "setup.cfg")

    assert fields["Package"] == PACKAGE
    assert fields["Architecture"] == "all"
    assert fields["Version"].split("-")[0] == version["metadata"]["version"]
    depends = {d.strip().split(" ")[0] for d in fields["Depends"].split(",")}
    assert {"nsscache", "python3-requests", "python3-cryptography"} <= depends
    assert "python3:any" in depends or "python3" in depends


def test_lintian_finds_nothing(built_deb):
    # Debian's package checker; debian/*.lintian-overrides explains the two accepted tags.
    # No manual pages yet: `nsscache-coreweave --help` and docs/operations.md document the commands.
    result = run(["lintian", "--fail-on", "error,warning", "--suppress-tags", "no-manual-page", built_deb],
                 check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_contents(built_deb):
    paths = deb_paths(built_deb)

    missing = [p for p in SHIPPED if p not in paths]
    assert not missing, missing
    # The keys helper is in /usr/sbin only; nothing under /usr/local, nothing enabled in /etc.
    assert "/usr/bin/nsscache-coreweave-keys" not in paths
    assert not [p for p in paths if p.startswith(("/usr/local", "/etc/systemd", "/etc/cron.d", "/etc/ssh"))]
    assert "/etc/nsscache.conf" not in paths  # nsscache's conffile


def test_stock_nsscache_writes_exact_caches(installed, tmp_path, iam, demo_org):
    node = Node(tmp_path / "node", Path("/usr/bin"))
    node.configure(iam.base_url)

    result = assert_stock_update_writes_the_demo_caches(node, demo_org)

    assert "dropped key frank: key 2 does not decode as a ssh-ed25519 key" in result.stderr


def test_registration_from_the_system_python(installed):
    # What the hook file and .pth in dist-packages do for Debian's own interpreter.
    reg = install.check_registration(SYSTEM_NSSCACHE)

    assert reg.ok, reg.problem
    assert reg.registered and reg.package_dir == f"{DIST}/nss_cache_coreweave"
    assert reg.interpreter == ("/usr/bin/python3",)


def test_nsscache_coreweave_command(installed, tmp_path, iam):
    node = Node(tmp_path / "node", Path("/usr/bin"))
    node.configure(iam.base_url)

    result = node.run("nsscache-coreweave", "check")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "would write: 4 users, 2 groups, 4 SSH keys" in result.stdout


def test_keys_helper_is_usable_by_sshd(installed, tmp_path, iam, demo_org):
    node = Node(tmp_path / "node", Path("/usr/bin"))
    node.configure(iam.base_url)
    assert node.run("nsscache", "update", "--full").returncode == 0
    cache = node.root / "cache" / "sshkey.cache"

    paths = run([KEYS, "--check-path", KEYS], check=False)
    keys = run([KEYS, "--cache", cache, "alice"], check=False)

    assert paths.returncode == 0, paths.stdout + paths.stderr
    assert Path(KEYS).read_text().startswith("#!/usr/bin/python3 -I\n")
    from support.node import keys_of

    assert (keys.returncode, keys.stdout) == (0, "".join(k + "\n" for k in keys_of(demo_org, "alice"))), keys.stderr


def test_the_package_creates_the_keys_command_user_once(installed):
    # sshd_config(5): a dedicated AuthorizedKeysCommandUser with no other role on the host.
    user = pwd.getpwnam(KEYS_USER)
    reinstall = dpkg_install(installed)  # the postinst runs again: the user exists

    assert (user.pw_shell, user.pw_dir, grp.getgrgid(user.pw_gid).gr_name) == (
        "/usr/sbin/nologin", "/nonexistent", KEYS_USER)
    assert user.pw_uid < 1000  # a system user
    assert [g.gr_name for g in grp.getgrall() if KEYS_USER in g.gr_mem] == []  # no other group
    assert (reinstall.returncode, pwd.getpwnam(KEYS_USER)) == (0, user)


def test_packaged_sshd_example_points_at_the_packaged_helper(installed, tmp_path):
    effective = sshd_effective(Path(EXAMPLES) / "sshd_config.d" / "nsscache-coreweave.conf", tmp_path, user="alice")

    assert effective["authorizedkeyscommand"] == f"{KEYS} %u %f"
    assert effective["authorizedkeyscommanduser"] == "nsscache-keys"


def test_systemd_units_verify_and_the_timer_is_not_enabled(installed):
    units = ("nsscache-coreweave.service", "nsscache-coreweave.timer",
             "nsscache-coreweave-slurm-sync.service", "nsscache-coreweave-slurm-sync.timer")
    for name in units:
        assert Path(UNITS, name).read_bytes() == (REPO / "conf" / "systemd" / name).read_bytes()

    verify = run(["systemd-analyze", "verify", *(f"{UNITS}/{name}" for name in units)], check=False)

    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    for timer in ("nsscache-coreweave.timer", "nsscache-coreweave-slurm-sync.timer"):
        enabled = run(["systemctl", "is-enabled", timer], check=False)
        assert enabled.stdout.strip() == "disabled", enabled.stdout + enabled.stderr
        assert not Path(f"/etc/systemd/system/timers.target.wants/{timer}").exists()


def test_examples_are_the_conf_files(installed):
    for name in ("nsscache.conf", "nsswitch.conf.snippet", "cron.d/nsscache-coreweave"):
        assert Path(EXAMPLES, name).read_bytes() == (REPO / "conf" / name).read_bytes(), name


# --- the maintainer scripts and the units' sandbox (docs/hardening.md) ------------------------

TIMERS = ("nsscache-coreweave.timer", "nsscache-coreweave-slurm-sync.timer")
SERVICES = ("nsscache-coreweave.service", "nsscache-coreweave-slurm-sync.service")
MUNGE_SOCKET = "/run/munge/munge.socket.2"  # munge's default, which slurm.conf then need not name


def _maintainer_calls(deb: Path, tmp_path: Path) -> dict:
    """{script: [(condition, command)]}: each deb-systemd-invoke, deb-systemd-helper and systemctl
    call of the .deb's maintainer scripts, with the `if` lines it sits in."""
    control = tmp_path / "control"
    run(["dpkg-deb", "-e", deb, control], what="dpkg-deb -e")
    calls = {}
    for script in ("preinst", "postinst", "prerm", "postrm"):
        found, conditions = [], []
        path = control / script
        for line in (path.read_text().splitlines() if path.exists() else []):
            line = line.strip()
            if line.startswith("if "):
                conditions.append(line)
            elif line == "fi":
                conditions.pop()
            elif re.match(r"(deb-systemd-invoke|deb-systemd-helper|systemctl) ", line):
                command = re.sub(r"\s*(>/dev/null)?\s*\|\|\s*true$", "", line).replace("'", "")
                found.append((" && ".join(conditions), command))
        calls[script] = found
    return calls


def test_removal_stops_the_units_and_purge_disables_the_timers(built_deb, tmp_path):
    calls = _maintainer_calls(built_deb, tmp_path)
    units = " ".join(sorted(TIMERS + SERVICES))
    stop = f"deb-systemd-invoke stop {units}"

    # Removal: both timers and both services stopped; the enablement forgotten on purge.
    assert [c for c in calls["prerm"]] == [
        ('if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ] ; then', stop)]
    assert ('if [ "$1" = "purge" ]; then && if [ -x "/usr/bin/deb-systemd-helper" ]; then',
            f"deb-systemd-helper purge {' '.join(sorted(TIMERS))}") in calls["postrm"]
    assert [c for _, c in calls["postrm"]] == [
        "systemctl --system daemon-reload", f"deb-systemd-helper purge {' '.join(sorted(TIMERS))}"]
    # Upgrade: stopped before the new files are unpacked ...
    assert calls["preinst"] == [
        ('if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = upgrade ] && [ -d /run/systemd/system ] ; then', stop)]
    # ... and install/upgrade: nothing enabled unless it was before (was-enabled), and the one start
    # goes through deb-systemd-invoke, which starts no disabled or static unit (checked below).
    post = [c for _, c in calls["postinst"]]
    enables = [(cond, c) for cond, c in calls["postinst"] if " enable " in f" {c} "]
    assert sorted(c for _, c in enables) == sorted(f"deb-systemd-helper enable {t}" for t in TIMERS)
    assert all("was-enabled" in cond for cond, _ in enables)
    assert [c for c in post if c.startswith("deb-systemd-invoke")] == [f"deb-systemd-invoke start {units}"]
    assert not [c for c in post if c.startswith("systemctl") and c != "systemctl --system daemon-reload"]


@pytest.fixture(scope="module")
def sandbox_org() -> dict:
    return json.loads((REPO / "demo" / "org.json").read_text())


@pytest.fixture(scope="module")
def sandbox_iam(sandbox_org):
    with FakeIAM(sandbox_org, token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def slurm_stack():
    """munged, MariaDB and slurmdbd (tests/support/slurm_harness.py), with the test cluster."""
    from support.slurm_harness import SlurmStack

    stack = SlurmStack()
    try:
        stack.start()
        stack.start_dbd()
    except Exception as e:
        stack.close()
        pytest.fail(f"could not start munged/MariaDB/slurmdbd: {e}", pytrace=False)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def systemd(installed, sandbox_iam, slurm_stack, tmp_path_factory):
    """A private systemd loading the installed units, with an /etc/nsscache.conf made from
    conf/nsscache.conf (the fake IAM's URL; its shells listed), the token, a slurm.conf naming the
    test slurmdbd, and the test munged's socket at munge's default path."""
    from support.slurm_harness import CLUSTER

    box = PrivateSystemd(tmp_path_factory.mktemp("systemd"), [Path(UNITS, u) for u in SERVICES + TIMERS],
                          {slurm_stack.munge_socket: MUNGE_SOCKET}).start()
    try:
        conf = (REPO / "conf" / "nsscache.conf").read_text()
        conf = re.sub(r"(?m)^coreweave_base_url = .*$", f"coreweave_base_url = {sandbox_iam.base_url}", conf)
        conf = re.sub(r"(?m)^(coreweave_groups = .*)$", r"\1\ncoreweave_allowed_shells = /bin/bash, /bin/zsh", conf)
        box.path("/etc/nsscache.conf").write_text(conf)
        box.run("mkdir", "-p", "/etc/nsscache-coreweave", "/etc/slurm", check=True)
        token = box.path("/etc/nsscache-coreweave/token")
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        box.path("/etc/slurm/slurm.conf").write_text(
            f"ClusterName={CLUSTER}\nSlurmctldHost=localhost\nSlurmUser={slurm_stack.user}\n"
            "AuthType=auth/munge\nAccountingStorageType=accounting_storage/slurmdbd\n"
            f"AccountingStorageHost=127.0.0.1\nAccountingStoragePort={slurm_stack.dbd_port}\n")
        yield box
    finally:
        box.close()


def _mode_owner(path: Path):
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_the_update_service_writes_the_caches_in_its_sandbox(systemd, sandbox_org):
    # The installed unit, its ExecStart (the stock /usr/bin/nsscache) under its own sandbox.
    props, journal = systemd.start_unit("nsscache-coreweave.service")

    assert (props["Result"], props["ExecMainStatus"]) == ("success", "0"), journal
    for name, content in expected_caches(sandbox_org).items():
        first, _, rest = systemd.path(f"/etc/{name}.cache").read_text().partition("\n")
        assert first.startswith(MARKER + ":") and rest == content, name
    # UMask=0077 changes no mode: nsscache copies those of the files the caches stand beside.
    for name in ("passwd", "group", "shadow"):
        assert _mode_owner(systemd.path(f"/etc/{name}.cache")) == _mode_owner(systemd.path(f"/etc/{name}")), name
    assert _mode_owner(systemd.path("/etc/sshkey.cache")) == (0o444, 0, 0)
    for name in ("passwd", "group", "shadow", "sshkey"):
        assert _mode_owner(systemd.path(f"/var/lib/nsscache/timestamp-{name}-update"))[0] == 0o644
    assert _mode_owner(systemd.path("/var/lib/nsscache/coreweave-state.json"))[0] == 0o600
    assert systemd.path("/run/nsscache").is_file()  # the lock


def test_the_sandbox_is_enforced(systemd):
    # Without /etc in ReadWritePaths= the same run fails: the file system really is read-only.
    dropin = systemd.path("/etc/systemd/system/nsscache-coreweave.service.d")
    dropin.mkdir(exist_ok=True)
    (dropin / "test.conf").write_text("[Service]\nReadWritePaths=\nReadWritePaths=-/run/nsscache\n")
    systemd.run("systemctl", "daemon-reload", check=True)
    try:
        props, journal = systemd.start_unit("nsscache-coreweave.service")
    finally:
        (dropin / "test.conf").unlink()
        dropin.rmdir()
        systemd.run("systemctl", "daemon-reload", check=True)
        systemd.run("systemctl", "reset-failed")

    assert props["Result"] != "success"
    assert "Read-only file system" in journal, journal


PROBED = ("/etc/sandbox-probe", "/run/nsscache", "/run/sandbox-probe", "/run/munge/sandbox-probe",
          "/var/lib/nsscache/sandbox-probe", "/var/lib/sandbox-probe", "/usr/sandbox-probe", "/tmp/sandbox-probe")


@pytest.mark.parametrize("unit, writable", [
    ("nsscache-coreweave.service",
     {"/etc/sandbox-probe", "/run/nsscache", "/var/lib/nsscache/sandbox-probe", "/tmp/sandbox-probe"}),
    ("nsscache-coreweave-slurm-sync.service", {"/var/lib/nsscache/sandbox-probe", "/tmp/sandbox-probe"}),
])
def test_what_the_sandbox_leaves_writable(systemd, unit, writable):
    # The unit with a probe for its ExecStart: which of these it can open for writing (/tmp: its own).
    probe = systemd.path("/run/sandbox-probe.sh")
    probe.write_text("#!/bin/sh\n" + "".join(
        f'if (: >> {p}) 2>/dev/null; then echo "rw {p}"; else echo "ro {p}"; fi\n' for p in PROBED))
    probe.chmod(0o755)
    dropin = systemd.path(f"/etc/systemd/system/{unit}.d")
    dropin.mkdir(exist_ok=True)
    (dropin / "probe.conf").write_text("[Service]\nExecStart=\nExecStart=/run/sandbox-probe.sh\n")
    systemd.run("systemctl", "daemon-reload", check=True)
    try:
        props, journal = systemd.start_unit(unit)
    finally:
        (dropin / "probe.conf").unlink()
        dropin.rmdir()
        systemd.run("systemctl", "daemon-reload", check=True)

    journal = systemd.journal(unit, props["cursor"], until=PROBED[-1])
    results = dict(reversed(line.split(" ", 1)) for line in journal.splitlines() if line[:3] in ("rw ", "ro "))
    assert props["Result"] == "success" and set(results) == set(PROBED), journal
    assert {p for p, how in results.items() if how == "rw"} == writable


def test_the_slurm_sync_service_reconciles_slurm_in_its_sandbox(systemd, slurm_stack):
    # sacctmgr reaches munged through the read-only /run, slurmdbd over TCP; no capability at all.
    props, journal = systemd.start_unit("nsscache-coreweave-slurm-sync.service")
    associations = slurm_stack.associations()

    assert (props["Result"], props["ExecMainStatus"]) == ("success", "0"), journal
    assert associations["slurm-users"] == {"alice", "bob", "erin", "frank"}
    assert associations["slurm-admins"] == {"alice"}
    for name in ("coreweave-slurm-state.json", "coreweave-slurm.lock"):
        assert _mode_owner(systemd.path(f"/var/lib/nsscache/{name}"))[0] == 0o600


def test_maintainer_scripts_under_systemd(installed, built_deb, tmp_path):
    # The .deb's maintainer scripts against a running systemd (dpkg inside the private one: its
    # /usr, /etc and /var are overlays, so the host's package state does not change).
    box = PrivateSystemd(tmp_path / "systemd", [Path(UNITS, u) for u in SERVICES + TIMERS]).start()
    try:
        deb = box.path(f"/run/{built_deb.name}")
        deb.write_bytes(built_deb.read_bytes())
        box.run("rm", "-f", "/usr/sbin/policy-rc.d")  # a container's "start nothing" policy

        def dpkg(*args):
            box.run("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--force-confold", *args, check=True)

        def states():
            enabled = box.run("systemctl", "is-enabled", *TIMERS, *SERVICES).stdout.split()
            active = box.run("systemctl", "is-active", *TIMERS, *SERVICES).stdout.split()
            return enabled, active

        dpkg("--purge", PACKAGE)
        dpkg("-i", f"/run/{built_deb.name}")  # a first install
        assert states() == (["disabled"] * 2 + ["static"] * 2, ["inactive"] * 4)
        box.run("systemctl", "enable", "--now", *TIMERS, check=True)
        dpkg("-i", f"/run/{built_deb.name}")  # an upgrade: the enabled timers run on
        assert states() == (["enabled"] * 2 + ["static"] * 2, ["active"] * 2 + ["inactive"] * 2)
        dpkg("-r", PACKAGE)
        assert states()[1] == ["inactive"] * 4
        dpkg("--purge", PACKAGE)
        assert not box.path("/etc/systemd/system/timers.target.wants").exists() or not [
            p for p in box.path("/etc/systemd/system/timers.target.wants").iterdir() if p.name in TIMERS]
    finally:
        box.close()


def test_purge_removes_everything_and_registration_reports_it(installed, host):
    shipped = [p for p in deb_paths(installed) if Path(p).is_file() or not Path(p).exists()]

    dpkg_purge(PACKAGE)

    assert dpkg_status(PACKAGE) in (None, "not-installed")
    assert [p for p in shipped if Path(p).exists()] == []
    assert user_exists(KEYS_USER)  # Debian policy: a system user stays (HostGuard removes it afterwards)
    assert not system_python_sees_package()
    reg = install.check_registration(SYSTEM_NSSCACHE)
    assert not reg.ok and "cannot import nss_cache_coreweave" in reg.problem, reg
    # ... and the stock nsscache now fails exactly as the message says.
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c",
         "from nss_cache.sources import source_factory as f; print(sorted(f._source_implementations))"],
        capture_output=True, text=True, check=False, cwd="/",
    )
    assert "coreweave" not in result.stdout


def test_readme_names_the_files_the_install_uses(built_deb):
    from support.host import NSSCACHE_POOL_PATH

    readme = (REPO / "README.md").read_text()

    assert f"dist/{built_deb.name}" in readme
    assert NSSCACHE_POOL_PATH in readme and Path(NSSCACHE_POOL_PATH).name in readme


def test_make_test_installs_the_build_dependencies():
    # dpkg-buildpackage refuses to build without them (dpkg-checkbuilddeps); scripts/system-packages
    # (the first step of make test) installs them.
    control = (REPO / "debian" / "control").read_text()
    build_depends = control.split("Build-Depends:", 1)[1].split("\n\n", 1)[0].split("\nStandards-Version", 1)[0]
    names = {d.strip().split(" ")[0] for d in build_depends.replace("\n", " ").split(",") if d.strip()}
    listed = subprocess.run(["bash", str(REPO / "scripts" / "system-packages"), "--list"], capture_output=True,
                            text=True, check=True).stdout.split()

    names = {"debhelper" if n == "debhelper-compat" else n for n in names}
    assert names and names <= set(listed), names - set(listed)
