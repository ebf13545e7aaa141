"""The .deb: `make deb` builds it; `dpkg -i` installs it on this Debian 12 machine together with
trixie's nsscache; the stock /usr/bin/nsscache then writes the exact caches from a loopback
fake IAM; `dpkg --purge` leaves the host as it was (HostGuard)."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest

from host import (
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
)
from node import Node, assert_stock_update_writes_the_demo_caches
from sshd_check import sshd_effective

from nss_cache_coreweave import install

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
    # No manual pages yet: `nsscache-coreweave --help` and README document the commands.
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
    from node import keys_of

    assert (keys.returncode, keys.stdout) == (0, "".join(k + "\n" for k in keys_of(demo_org, "alice"))), keys.stderr


def test_packaged_sshd_example_points_at_the_packaged_helper(installed, tmp_path):
    effective = sshd_effective(Path(EXAMPLES) / "sshd_config.d" / "nsscache-coreweave.conf", tmp_path, user="alice")

    assert effective["authorizedkeyscommand"] == f"{KEYS} %u %f"
    assert effective["authorizedkeyscommanduser"] == "nobody"


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


def test_purge_removes_everything_and_registration_reports_it(installed, host):
    shipped = [p for p in deb_paths(installed) if Path(p).is_file() or not Path(p).exists()]

    dpkg_purge(PACKAGE)

    assert dpkg_status(PACKAGE) in (None, "not-installed")
    assert [p for p in shipped if Path(p).exists()] == []
    assert not system_python_sees_package()
    reg = install.check_registration(SYSTEM_NSSCACHE)
    assert not reg.ok and "cannot import nss_cache_coreweave" in reg.problem, reg
    # ... and the stock nsscache now fails exactly as the message says.
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", "from nss_cache.sources import source_factory as f; print(sorted(f._source_implementations))"],
        capture_output=True, text=True, check=False, cwd="/",
    )
    assert "coreweave" not in result.stdout


def test_readme_names_the_files_the_install_uses(built_deb):
    from host import NSSCACHE_POOL_PATH

    readme = (REPO / "README.md").read_text()

    assert f"dist/{built_deb.name}" in readme
    assert NSSCACHE_POOL_PATH in readme and Path(NSSCACHE_POOL_PATH).name in readme


def test_ci_installs_the_build_dependencies():
    # dpkg-buildpackage refuses to build without them (dpkg-checkbuilddeps); .ci/run installs them.
    control = (REPO / "debian" / "control").read_text()
    build_depends = control.split("Build-Depends:", 1)[1].split("\n\n", 1)[0].split("\nStandards-Version", 1)[0]
    names = {d.strip().split(" ")[0] for d in build_depends.replace("\n", " ").split(",") if d.strip()}
    ci = (REPO / ".ci" / "run").read_text()

    names = {"debhelper" if n == "debhelper-compat" else n for n in names}
    assert names and all(re.search(rf"[ (]{re.escape(n)}[ )\n]", ci) for n in names), names
