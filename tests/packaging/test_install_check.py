"""nss_cache_coreweave.install: does the interpreter running `nsscache` register the source?
Real interpreters and venvs (tests/support/venvs.py), including a Python of another minor
version; the system-Python cases are in test_system_pip.py and test_deb.py.

Then `nsscache-coreweave-keys --install-wrapper` and `--check-path` (sshd_path.py): real venvs
of Debian's python3 with the project's wheel, in a root-owned directory under /srv, real
users (useradd) owning parts of them, and the wrapper run as a temporary system user standing
in for the AuthorizedKeysCommandUser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nss_cache_coreweave import __version__, install
from nss_cache_coreweave.keys import wrapper_text
from support.host import SYSTEM_PYTHON, root_only_directory, run, temporary_user
from support.venvs import run_ok


def _script(path: Path, first_line: str, rest: str = "") -> Path:
    path.write_text(first_line + "\n" + rest)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    "first_line, second_line, argv",
    [
        ("#!/usr/bin/python3", "", ["/usr/bin/python3"]),
        ("#! /usr/bin/python3", "", ["/usr/bin/python3"]),
        ("#!/usr/bin/python3 -I", "", ["/usr/bin/python3", "-I"]),
        ("#!/usr/bin/python3 -s -E", "", ["/usr/bin/python3", "-s -E"]),  # Linux: one argument
        ("#!/usr/bin/python3\t-I", "", ["/usr/bin/python3", "-I"]),
        ("#!/usr/bin/env python3", "", ["/usr/bin/env", "python3"]),
        ("#!/opt/nsscache/bin/python  ", "", ["/opt/nsscache/bin/python"]),
        ("#!/bin/sh", "'''exec' \"/a long/path/bin/python\" \"$0\" \"$@\"", ["/a long/path/bin/python"]),
        ("#!/bin/sh", "exec /usr/bin/python3 \"$0\"", ["/bin/sh"]),
    ],
)
def test_script_interpreter(tmp_path, first_line, second_line, argv):
    assert install.script_interpreter(str(_script(tmp_path / "nsscache", first_line, second_line))) == argv


def test_installed_venv_registers(installed_venv):
    reg = install.check_registration(str(installed_venv.root / "bin" / "nsscache"))

    assert reg.ok and reg.problem is None, reg.problem
    assert reg.registered and reg.nss_cache_importable
    assert reg.python_version == "3.11"
    assert reg.package_dir == str(installed_venv.site_packages / "nss_cache_coreweave")
    assert reg.interpreter == (str(installed_venv.python),)


def test_find_nsscache_prefers_the_one_beside_the_interpreter(installed_venv):
    result = installed_venv.run("-c", "from nss_cache_coreweave.install import find_nsscache as f; print(f())")

    assert result.stdout.strip() == str(installed_venv.root / "bin" / "nsscache"), result.stderr


def test_registration_problem_is_none_when_fine(installed_venv):
    assert install.registration_problem(str(installed_venv.root / "bin" / "nsscache")) is None


def test_another_minor_version_is_named(other_minor_nsscache, installed_venv):
    # nsscache run by another minor version (no package there); the package installed for 3.11.
    reg = install.check_registration(str(other_minor_nsscache), search_patterns=[str(installed_venv.site_packages)])

    assert not reg.ok
    assert reg.python_version not in (None, "3.11") and reg.nss_cache_importable and not reg.registered
    assert reg.problem == (
        f"{other_minor_nsscache} runs {other_minor_nsscache.parent / 'python'} (Python {reg.python_version}), "
        "which cannot import nss_cache_coreweave, so nsscache will fail with \"source not implemented: "
        "'coreweave'\" (or \"no source implementations exist\"). The package is installed for another Python: "
        f"Python 3.11 ({installed_venv.site_packages}) (installed before an OS or Python upgrade, or with another "
        f"pip?). Install it for Python {reg.python_version}: "
        f"`{other_minor_nsscache.parent / 'python'} -m pip install nss-cache-coreweave`"
    )
    assert str(installed_venv.site_packages) in reg.installed_elsewhere


def _venv_reading(tmp_path: Path, installed_venv, name: str) -> Path:
    """A bare venv (no pip) whose sys.path reaches installed_venv's site-packages through a .pth
    line. Python reads .pth files only in site directories, so the project's
    nss_cache_coreweave.pth there is not read: the package imports but the hook is not installed."""
    root = tmp_path / name
    run_ok([sys.executable, "-m", "venv", "--without-pip", root], "creating a venv")
    site = Path(run_ok([root / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       "locating site-packages").stdout.strip())
    (site / "reach.pth").write_text(f"{installed_venv.site_packages}\n")
    nsscache = _script(root / "bin" / "nsscache", f"#!{root / 'bin' / 'python'}", "import nss_cache.app\n")
    return nsscache


def test_hook_not_read(tmp_path, installed_venv):
    nsscache = _venv_reading(tmp_path, installed_venv, "no-pth")

    reg = install.check_registration(str(nsscache))

    assert reg.package_dir == str(installed_venv.site_packages / "nss_cache_coreweave")
    assert reg.nss_cache_importable and not reg.registered
    assert reg.problem.endswith(
        f"which imports nss_cache_coreweave {__version__} from {installed_venv.site_packages / 'nss_cache_coreweave'} "
        "but does not register the 'coreweave' source (nss_cache_coreweave.pth beside it was not read at start-up: "
        f"{installed_venv.site_packages} is not a site directory of this Python (reached through PYTHONPATH or a "
        ".pth line?); install the package into this Python), so nsscache will fail with \"source not "
        "implemented: 'coreweave'\" (or \"no source implementations exist\")"
    ), reg.problem


def test_hook_file_missing(tmp_path, installed_venv):
    # A partial install: the package without its .pth (copied into a bare venv's own site-packages).
    nsscache = _venv_reading(tmp_path, installed_venv, "partial")
    site = nsscache.parent.parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "reach.pth").unlink()
    shutil.copytree(installed_venv.site_packages / "nss_cache_coreweave", site / "nss_cache_coreweave")
    (site / "reach.pth").write_text(f"{installed_venv.site_packages}\n")  # nss_cache, requests ... after ours

    reg = install.check_registration(str(nsscache))

    assert reg.package_dir == str(site / "nss_cache_coreweave")
    assert "(nss_cache_coreweave.pth is missing beside it (a partial install: reinstall nss-cache-coreweave))" in (
        reg.problem
    ), reg.problem


def test_hook_registration_failure_is_quoted(tmp_path, installed_venv):
    # The hook is read (the .pth is in this venv's own site-packages), but a dependency is broken:
    # a `requests` that fails to import shadows the real one.
    nsscache = _venv_reading(tmp_path, installed_venv, "broken-requests")
    site = nsscache.parent.parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "nss_cache_coreweave.pth").write_bytes(
        (installed_venv.site_packages / "nss_cache_coreweave.pth").read_bytes())
    (site / "requests").mkdir()
    (site / "requests" / "__init__.py").write_text("raise ImportError('requests is broken here')\n")

    reg = install.check_registration(str(nsscache))

    assert reg.nss_cache_importable and reg.package_dir and not reg.registered
    assert (
        "does not register the 'coreweave' source (registration failed: cannot register the coreweave nsscache "
        "source: ImportError: requests is broken here)" in reg.problem
    ), reg.problem


def test_interpreter_without_site(installed_venv, tmp_path):
    nsscache = _script(tmp_path / "nsscache", f"#!{installed_venv.python} -S", "import sys\n")

    reg = install.check_registration(str(nsscache))

    assert not reg.ok and not reg.nss_cache_importable
    assert ("which cannot import nsscache's nss_cache (ModuleNotFoundError: No module named 'nss_cache'): "
            "reinstall nsscache" in reg.problem)


def test_missing_interpreter(tmp_path):
    nsscache = _script(tmp_path / "nsscache", "#!/usr/bin/python3.99")

    reg = install.check_registration(str(nsscache))

    assert reg.problem == (
        f"{nsscache} runs /usr/bin/python3.99, which does not exist (removed by an OS upgrade?): reinstall nsscache"
    )


def test_not_a_script(tmp_path):
    nsscache = tmp_path / "nsscache"
    nsscache.write_bytes(b"\x7fELF\x02\x01")

    assert install.check_registration(str(nsscache)).problem == (
        f"cannot read the interpreter of {nsscache}: {nsscache} does not start with #!"
    )


def test_interpreter_that_is_not_python(tmp_path):
    fake = _script(tmp_path / "python", "#!/bin/sh", "echo 'not json'; echo oops >&2; exit 3\n")
    nsscache = _script(tmp_path / "nsscache", f"#!{fake}")

    reg = install.check_registration(str(nsscache))

    assert reg.problem == (
        f"{fake} (the interpreter of {nsscache}) failed to run the registration probe (exit 3): oops"
    )


def test_no_nsscache_anywhere(monkeypatch):
    monkeypatch.setattr(install, "find_nsscache", lambda: None)

    problem = install.registration_problem()

    assert problem.startswith("nsscache not found (not beside ")


def test_the_module_is_stdlib_only():
    # check/status may run where requests or cryptography are broken: install.py must not need them.
    code = (
        "import sys; import nss_cache_coreweave.install; "
        "bad = [m for m in ('requests', 'cryptography', 'nss_cache') if m in sys.modules]; print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)

    assert result.stdout.strip() == "[]", result.stderr


def test_command_line(installed_venv, tmp_path):
    good = installed_venv.run("-m", "nss_cache_coreweave.install", str(installed_venv.root / "bin" / "nsscache"))
    bad = installed_venv.run("-m", "nss_cache_coreweave.install", str(_script(tmp_path / "nsscache", "#!/nope")))
    default = installed_venv.run("-m", "nss_cache_coreweave.install")  # the nsscache beside that python
    usage = installed_venv.run("-m", "nss_cache_coreweave.install", "--help")

    assert (good.returncode, good.stdout) == (
        0,
        f"ok: {installed_venv.root / 'bin' / 'nsscache'} runs {installed_venv.python} (Python 3.11), which "
        f"registers the 'coreweave' source (nss_cache_coreweave {__version__} from "
        f"{installed_venv.site_packages / 'nss_cache_coreweave'})\n",
    ), good.stderr
    assert (bad.returncode, bad.stdout) == (1, f"problem: {tmp_path / 'nsscache'} runs /nope, which does not exist "
                                               "(removed by an OS upgrade?): reinstall nsscache\n")
    assert default.returncode == 0 and default.stdout.startswith(f"ok: {installed_venv.root / 'bin' / 'nsscache'} ")
    assert usage.returncode == 2


# --- the keys wrapper: sshd's rules for everything it runs, then a run as the keys user ------

ALICE = "nsscache-test-alice"  # an ordinary user
KEYS_USER = "nsscache-test-keys"  # stands in for the AuthorizedKeysCommandUser (nsscache-keys)
INJECTABLE = "whoever can write to it chooses the code sshd runs at every login"


@dataclass(frozen=True)
class Site:
    """A root-owned 0755 directory under /srv holding a root-owned venv with the package
    (``venv``) and an empty ``sbin`` for wrappers."""

    root: Path
    venv: Path

    def copy_venv(self, name: str, parent: Path = None) -> Path:
        copy = (parent or self.root) / name
        run(["cp", "-a", self.venv, copy], what="copying the venv")
        return copy

    def keys(self, *args: object) -> subprocess.CompletedProcess:
        """nsscache-coreweave-keys of the good venv, as root."""
        return run([self.venv / "bin" / "nsscache-coreweave-keys", *args], check=False)

    def install_and_check(self, name: str, python: Path) -> tuple:
        """--install-wrapper with python (refused: was anything written?), then --check-path of
        the wrapper for that python written by hand (root:root 0755), both as KEYS_USER."""
        wrapper = self.root / "sbin" / name
        installed = self.keys("--install-wrapper", wrapper, "--python", python, "--user", KEYS_USER)
        written = wrapper.exists()
        wrapper.write_text(wrapper_text(str(python)))
        wrapper.chmod(0o755)
        checked = self.keys("--check-path", wrapper, "--user", KEYS_USER)
        return wrapper, installed, written, checked


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3.*/site-packages"))
    assert len(found) == 1, found
    return found[0]


def _stderr(*lines: str) -> str:
    return "".join(f"nsscache-coreweave-keys: {line}\n" for line in lines)


def _refused(wrapper: Path, *problems: str) -> tuple:
    """(installed, checked) as install_and_check's results must be: exit 1, the problems, nothing on stdout."""
    return (
        (1, "", _stderr(*problems, f"{wrapper} not written")),
        (1, "", _stderr(*problems, f"sshd must not run {wrapper} as it is")),
    )


def _outcome(result: subprocess.CompletedProcess) -> tuple:
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def alice():
    with temporary_user(ALICE) as user:
        yield user


@pytest.fixture(scope="module")
def site(project_wheel):
    with temporary_user(KEYS_USER, system=True), root_only_directory() as root:
        venv = root / "venv"
        run([SYSTEM_PYTHON, "-m", "venv", venv], what="creating a venv of Debian's python3")
        run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", project_wheel],
            what=f"installing {project_wheel.name}")
        run(["chmod", "-R", "a+rX", venv])  # whatever the umask of the test run
        (root / "sbin").mkdir(mode=0o755)
        yield Site(root, venv)


def test_a_root_owned_venv_passes_and_its_wrapper_runs_as_the_keys_command_user(site):
    python = site.venv / "bin" / "python"
    wrapper = site.root / "sbin" / "nsscache-coreweave-keys"

    installed = site.keys("--install-wrapper", wrapper, "--python", python, "--user", KEYS_USER)
    checked = site.keys("--check-path", wrapper, "--user", KEYS_USER)
    as_sshd_runs_it = run(["setpriv", f"--reuid={KEYS_USER}", f"--regid={KEYS_USER}", "--init-groups", "--",
                           wrapper, "(install-check)"], check=False, cwd="/")

    assert _outcome(installed) == (0, f"wrote {wrapper} (#!{python} -I)\n", "")
    assert _outcome(checked) == (0, f"{wrapper}: sshd's ownership and permission rules are met\n", "")
    assert _outcome(as_sshd_runs_it) == (0, "", _stderr("(install-check): not a valid user name: no keys"))


def test_venv_owned_by_an_ordinary_user_is_refused(site, alice):
    venv = site.copy_venv("alice-venv")
    run(["chown", "-R", f"{ALICE}:{ALICE}", venv])
    python = venv / "bin" / "python"

    wrapper, installed, written, checked = site.install_and_check("alice-keys", python)

    # One line for the venv: its fix mends bin/ and pyvenv.cfg too.
    assert (_outcome(installed), _outcome(checked)) == _refused(
        wrapper,
        f"{venv} (a directory on the way to the interpreter {python}) is owned by {ALICE}, not root "
        f"({ALICE}:{ALICE} 0755): {INJECTABLE}; fix: chown -R root:root {venv}",
    )
    assert not written


def test_a_root_only_venv_is_refused_because_the_keys_command_user_cannot_run_it(site):
    venv = site.copy_venv("root-only-venv")
    venv.chmod(0o700)
    python = venv / "bin" / "python"

    wrapper, installed, written, checked = site.install_and_check("root-only-keys", python)

    assert (_outcome(installed), _outcome(checked)) == _refused(
        wrapper,
        f"{KEYS_USER} cannot run {python} -I (importing nss_cache_coreweave.keys): [Errno 13] Permission denied: "
        f"'{python}'; no key login works",
        f"{venv} (a directory on the way to the interpreter {python}) is root:root 0700: {KEYS_USER} cannot search "
        f"it; fix: chmod -R o+rX {venv}",
    )
    assert not written


def test_a_site_directory_the_keys_command_user_cannot_list_is_refused(site):
    venv = site.copy_venv("closed-site-venv")
    site_packages = _site_packages(venv)
    site_packages.chmod(0o700)
    python = venv / "bin" / "python"

    wrapper, installed, written, checked = site.install_and_check("closed-site-keys", python)

    assert (_outcome(installed), _outcome(checked)) == _refused(
        wrapper,
        f"{KEYS_USER} cannot run {python} -I (importing nss_cache_coreweave.keys): exit 1: ModuleNotFoundError: No "
        "module named 'nss_cache_coreweave'; no key login works",
        f"{site_packages} (a directory of {venv}) is root:root 0700: {KEYS_USER} cannot search it; fix: chmod -R "
        f"o+rX {venv}",
    )
    assert not written


def test_a_group_writable_directory_above_the_interpreter_is_refused(site):
    shared = site.root / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    venv = site.copy_venv("venv", parent=shared)
    python = venv / "bin" / "python"

    wrapper, installed, written, checked = site.install_and_check("shared-keys", python)

    assert (_outcome(installed), _outcome(checked)) == _refused(
        wrapper,
        f"{shared} (a directory on the way to the interpreter {python}) is group-writable (root:root 0775): "
        f"{INJECTABLE}; fix: chmod go-w {shared}",
    )
    assert not written


def test_a_symlinked_interpreter_whose_target_is_in_a_user_owned_directory_is_refused(site, alice):
    alice_bin = site.root / "alice-bin"
    alice_bin.mkdir()
    real_python = Path(os.path.realpath(SYSTEM_PYTHON))
    shutil.copy2(real_python, alice_bin / real_python.name)  # root's file, in a directory alice can write to
    run(["chown", f"{ALICE}:{ALICE}", alice_bin])
    venv = site.copy_venv("linked-venv")
    (venv / "bin" / "python3").unlink()
    (venv / "bin" / "python3").symlink_to(alice_bin / real_python.name)  # bin/python -> python3 -> there
    python = venv / "bin" / "python"

    wrapper, installed, written, checked = site.install_and_check("linked-keys", python)

    assert (_outcome(installed), _outcome(checked)) == _refused(
        wrapper,
        f"{alice_bin} (a directory on the way to the interpreter {python}) is owned by {ALICE}, not root "
        f"({ALICE}:{ALICE} 0755): {INJECTABLE}; fix: chown root:root {alice_bin}",
    )
    assert not written


def test_a_package_an_ordinary_user_can_change_is_refused(site, alice):
    # Everything the kernel runs is root's; the code imported is alice's.
    venv = site.copy_venv("alice-package-venv")
    package = _site_packages(venv) / "nss_cache_coreweave"
    run(["chown", "-R", f"{ALICE}:{ALICE}", package])
    python = venv / "bin" / "python"

    wrapper, installed, written, checked = site.install_and_check("alice-package-keys", python)

    assert (_outcome(installed), _outcome(checked)) == _refused(
        wrapper,
        f"{package} (the package nss_cache_coreweave) is owned by {ALICE}, not root ({ALICE}:{ALICE} 0755): "
        f"{INJECTABLE}; fix: chown -R root:root {venv}",
    )
    assert not written


def test_an_unknown_keys_command_user_is_named(site):
    wrapper = site.root / "sbin" / "unknown-user-keys"
    wrapper.write_text(wrapper_text(str(site.venv / "bin" / "python")))
    wrapper.chmod(0o755)

    checked = site.keys("--check-path", wrapper, "--user", "nsscache-test-absent")

    assert _outcome(checked) == (1, "", _stderr(
        "user nsscache-test-absent does not exist, and sshd runs the command as its AuthorizedKeysCommandUser: "
        "create it (useradd --system --user-group --no-create-home --home-dir /nonexistent --shell "
        "/usr/sbin/nologin nsscache-test-absent) or name yours with --user",
        f"sshd must not run {wrapper} as it is",
    ))
