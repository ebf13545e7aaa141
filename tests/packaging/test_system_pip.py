"""Install mode (a): `pip install --break-system-packages` into Debian's own Python beside the
distribution's nsscache (trixie's .deb here), then the stock /usr/bin/nsscache works; the
registration check names the breakage after a (simulated) Python upgrade; `pip uninstall`
(PIP_BREAK_SYSTEM_PACKAGES=1) and HostGuard leave the host as it was."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from nss_cache_coreweave import install
from support.host import OUR_DEPENDS, PACKAGE, SYSTEM_NSSCACHE, SYSTEM_PYTHON, HostGuard, require_installed, run
from support.node import Node, assert_stock_update_writes_the_demo_caches


def _system_purelib() -> str:
    out = run([SYSTEM_PYTHON, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], what="python3")
    return f"/usr/local/lib/python{out.stdout.strip()}/dist-packages"


@pytest.fixture(scope="module")
def host():
    guard = HostGuard()
    guard.install_nsscache()
    yield guard
    problems = guard.restore()
    assert not problems, "the host is not as before the packaging tests:\n  " + "\n  ".join(problems)


@pytest.fixture(scope="module")
def pip_installed(host, project_wheel):
    """The wheel, pip-installed into /usr/bin/python3 as docs/install.md's system-Python install says. --no-index: its
    dependencies must already come from Debian (python3-requests, python3-cryptography)."""
    require_installed(OUR_DEPENDS, "install mode (a) takes the dependencies from Debian")
    before = install.check_registration(SYSTEM_NSSCACHE)
    run(
        [SYSTEM_PYTHON, "-m", "pip", "install", "--break-system-packages", "--no-index",
         "--root-user-action=ignore", project_wheel],
        what="pip install --break-system-packages",
    )
    return before


def test_before_the_install_the_check_says_what_is_missing(pip_installed):
    before = pip_installed

    assert not before.ok
    assert f"{SYSTEM_NSSCACHE} runs /usr/bin/python3 (Python 3." in before.problem
    assert "cannot import nss_cache_coreweave, so nsscache will fail with" in before.problem
    assert "--break-system-packages nss-cache-coreweave`, or install the nss-cache-coreweave .deb" in before.problem


def test_files_land_in_usr_local(pip_installed):
    site = Path(_system_purelib())

    for name in ("nss_cache_coreweave.pth", "nss_cache_coreweave.start", "_nss_cache_coreweave_hook.py",
                 "nss_cache_coreweave/source.py"):
        assert (site / name).is_file(), name
    assert Path("/usr/local/bin/nsscache-coreweave").is_file()


def test_stock_nsscache_writes_exact_caches(pip_installed, tmp_path, iam, demo_org):
    node = Node(tmp_path / "node", Path("/usr/bin"))
    node.configure(iam.base_url)

    assert_stock_update_writes_the_demo_caches(node, demo_org)


def test_registration_check_passes(pip_installed):
    reg = install.check_registration(SYSTEM_NSSCACHE)

    assert reg.ok, reg.problem
    assert reg.package_dir == _system_purelib() + "/nss_cache_coreweave"


def test_after_a_python_upgrade_the_check_names_the_old_install(pip_installed, other_minor_nsscache, tmp_path, iam):
    # /usr/bin/nsscache after an upgrade to another python3: here a venv of another minor version with
    # nsscache 0.49 and without this package, the pip install above still in python3.11's dist-packages.
    reg = install.check_registration(str(other_minor_nsscache))
    node = Node(tmp_path / "node", other_minor_nsscache.parent)
    node.configure(iam.base_url)
    result = node.run("nsscache", "update", "--full")

    assert not reg.ok and reg.python_version != sysconfig.get_python_version()
    assert f"(Python {reg.python_version}), which cannot import nss_cache_coreweave" in reg.problem
    assert f"The package is installed for another Python: Python 3.11 ({_system_purelib()})" in reg.problem
    assert _system_purelib() in reg.installed_elsewhere
    # Debian's nsscache has other sources ("source not implemented: 'coreweave'"); this venv has none.
    assert result.returncode == 1 and "RuntimeError: no source implementations exist" in result.stderr


def test_pip_uninstall_removes_it(pip_installed):
    site = Path(_system_purelib())

    run([SYSTEM_PYTHON, "-m", "pip", "uninstall", "-y", PACKAGE], env={"PIP_BREAK_SYSTEM_PACKAGES": "1",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, what="pip uninstall")

    leftovers = sorted(str(p) for p in site.glob("*") if "coreweave" in p.name)
    leftovers += sorted(str(p) for p in site.glob("__pycache__/*coreweave*"))
    assert leftovers == []
    assert not Path("/usr/local/bin/nsscache-coreweave").exists()
    assert not install.check_registration(SYSTEM_NSSCACHE).ok
