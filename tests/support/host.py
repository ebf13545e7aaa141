"""Installing into this machine's /usr for the packaging tests, and leaving it as it was.

The packaging tests install Debian packages (``dpkg -i``) and pip-install into Debian's
own Python (``/usr/bin/python3``): that is the point of them. CI runs them as root on a
throwaway Debian 12 machine. :class:`HostGuard` records every path the installs can
touch before the first one, removes what the tests installed afterwards
(``dpkg --purge``, ``pip uninstall``), puts back a pre-existing ``/etc/nsscache.conf``
(which trixie's nsscache ships as a conffile), and fails the module when anything differs.
The package's postinst creates the system user ``nsscache-keys`` (sshd's
AuthorizedKeysCommandUser), which Debian leaves on purge: the guard deletes it when the
host had no such user before.

trixie's ``nsscache`` package (Debian 12 has none) comes from the machine's configured
Debian mirror, read from the apt sources at run time (``scripts/install-nsscache``'s
``debian_mirror()``; ``NSSCACHE_DEBIAN_MIRROR`` overrides it), and is checked against a
pinned sha256.

Anything missing (root, dpkg, nsscache's dependencies, the mirror) fails: nothing is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "nss-cache-coreweave"
SYSTEM_PYTHON = "/usr/bin/python3"
SYSTEM_NSSCACHE = "/usr/bin/nsscache"

# trixie's nsscache. Checked on 2026-11-26: Filename and SHA256 from the nsscache stanza of
# dists/trixie/main/binary-all/Packages.xz on deb.debian.org (trixie's InRelease there verified
# with gpgv against bookworm's debian-archive-keyring; note that the mirror's Packages.xz did not
# match InRelease's hash at that moment, hence the pin rather than a live chain of checksums).
# When trixie moves on (a point release replaces 0.49-5 in the pool), this download fails
# with a 404: take the new Filename and SHA256 from that stanza and update both.
NSSCACHE_POOL_PATH = "pool/main/n/nsscache/nsscache_0.49-5_all.deb"
NSSCACHE_SHA256 = "0db10facbb5ac1ceef1b206ecb1b970bc4143756ac964adfb08761047505b147"
# Depends of that package (all in bookworm): installed by scripts/system-packages.
NSSCACHE_DEPENDS = ("python3-pycurl", "python3-ldap", "python3-packaging")
# Depends of ours that dpkg -i needs already installed (make test installs them: scripts/system-packages).
OUR_DEPENDS = ("python3-requests", "python3-cryptography")

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nss-cache-coreweave"

# Where the installs write. Under these roots every entry whose path matches WATCHED is
# recorded; under WATCHED_TREES every entry is.
ROOTS = (
    "/etc",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib/python3/dist-packages",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/local/lib",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/var/lib/systemd/deb-systemd-helper-enabled",
    "/var/lib/systemd/deb-systemd-helper-masked",
    "/var/lib/nsscache",
)
WATCHED = re.compile(r"nss|coreweave")
WATCHED_TREES = ("/etc/ssh", "/etc/cron.d", "/etc/systemd/system", "/etc/nsscache-coreweave")
# Host files a package may overwrite (conffiles): restored byte for byte if they existed.
RESTORED = ("/etc/nsscache.conf",)
# The AuthorizedKeysCommandUser the package's postinst creates (and leaves on purge).
KEYS_USER = "nsscache-keys"


def run(args: Sequence, check: bool = True, what: Optional[str] = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; with check, fail the test (showing its output) unless it exits 0."""
    env = kwargs.pop("env", None)
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and not k.startswith("PIP_")}
        env["DEBIAN_FRONTEND"] = "noninteractive"
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, env=env, timeout=300, **kwargs
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{what or 'command'} failed (exit {result.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}",
            pytrace=False,
        )
    return result


def require_root_and_tools(*tools: str) -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("the packaging tests install into /usr: run them as root (CI does)")
    for tool in ("dpkg", "dpkg-deb", *tools):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed")
    if not Path(SYSTEM_PYTHON).exists():
        problems.append(f"{SYSTEM_PYTHON} is missing (Debian's python3)")
    if problems:
        pytest.fail("packaging prerequisites missing:\n  " + "\n  ".join(problems), pytrace=False)


def dpkg_status(package: str) -> Optional[str]:
    """dpkg's status word for package ('installed', 'config-files', ...), or None if unknown."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return result.stdout.split()[-1]


def require_installed(packages: Sequence[str], why: str) -> None:
    missing = [p for p in packages if dpkg_status(p) != "installed"]
    if missing:
        pytest.fail(
            f"{why}: {' '.join(missing)} not installed (apt-get install {' '.join(missing)}; "
            "make test does: scripts/system-packages)",
            pytrace=False,
        )


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def delete_user(name: str) -> List[str]:
    """userdel name, and its group of the same name; the problems, if any."""
    problems = []
    for command in (["userdel", name], ["groupdel", name]):
        if command[0] == "groupdel" and run(["getent", "group", name], check=False).returncode != 0:
            break  # userdel removed the user-private group (USERGROUPS_ENAB)
        result = run(command, check=False)
        if result.returncode != 0:
            problems.append(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return problems


@contextlib.contextmanager
def temporary_user(name: str, system: bool = False) -> Iterator[pwd.struct_passwd]:
    """A user (and its group) that exists for the block only: no home, no login shell;
    system: a system account (uid below 1000), as an AuthorizedKeysCommandUser is."""
    if user_exists(name):
        pytest.fail(f"user {name} exists already (left by an interrupted run?): userdel {name}", pytrace=False)
    run(["useradd", *(["--system"] if system else []), "--user-group", "--no-create-home", "--home-dir",
         "/nonexistent", "--shell", "/usr/sbin/nologin", name], what=f"useradd {name}")
    try:
        yield pwd.getpwnam(name)
    finally:
        problems = delete_user(name)
        assert not problems, problems


@contextlib.contextmanager
def root_only_directory(parent: str = "/srv") -> Iterator[Path]:
    """A fresh root-owned 0755 directory whose every parent is root-owned and not group- or
    world-writable, as sshd requires of an AuthorizedKeysCommand's directories (so not under
    /tmp or /var/tmp, which are world-writable, nor /root, which other users cannot search)."""
    for directory in [parent, *map(str, Path(parent).parents)]:
        st = os.stat(directory)
        if st.st_uid != 0 or st.st_mode & 0o022:
            pytest.fail(f"{directory} is not root-owned and closed to writes by others (mode "
                        f"{st.st_mode & 0o7777:04o}, uid {st.st_uid}): needed for sshd's path rules", pytrace=False)
    path = Path(tempfile.mkdtemp(prefix="nsscache-test-", dir=parent))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path)


# --- trixie's nsscache ----------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian archive URI from this machine's apt sources, as scripts/install-nsscache reads it."""
    loader = importlib.machinery.SourceFileLoader("install_nsscache", str(REPO / "scripts" / "install-nsscache"))
    spec = importlib.util.spec_from_loader("install_nsscache", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    try:
        return module.debian_mirror()
    except module.InstallError as e:
        pytest.fail(f"cannot find the Debian mirror: {e}", pytrace=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def trixie_nsscache_deb() -> Path:
    """trixie's nsscache_0.49-*_all.deb, downloaded once into CACHE_DIR and sha256-checked."""
    path = CACHE_DIR / os.path.basename(NSSCACHE_POOL_PATH)
    if path.exists() and _sha256(path) == NSSCACHE_SHA256:
        return path
    url = f"{debian_mirror()}/{NSSCACHE_POOL_PATH}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=CACHE_DIR)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        actual = _sha256(Path(tmp))
        if actual != NSSCACHE_SHA256:
            pytest.fail(f"{url}: sha256 {actual}, expected {NSSCACHE_SHA256}", pytrace=False)
        os.replace(tmp, path)
    except urllib.error.HTTPError as e:
        pytest.fail(
            f"cannot download {url}: {e} (if 404: trixie's nsscache was updated; take the new Filename and "
            f"SHA256 from dists/trixie/main/binary-all/Packages.xz and update tests/support/host.py)",
            pytrace=False,
        )
    except OSError as e:
        pytest.fail(f"cannot download {url}: {e}", pytrace=False)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fields = deb_fields(path)
    assert fields["Package"] == "nsscache" and fields["Version"].startswith("0.49-"), fields
    return path


def deb_fields(deb: Path) -> Dict[str, str]:
    """The control fields of a .deb (first line of each)."""
    text = run(["dpkg-deb", "-f", deb], what="dpkg-deb -f").stdout
    fields, key = {}, None
    for line in text.splitlines():
        if line[:1].isspace() and key:
            fields[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def deb_paths(deb: Path) -> List[str]:
    """Absolute paths in a .deb's data (dpkg -c), directories without the trailing slash."""
    import io
    import tarfile

    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = (os.path.normpath(m.name) for m in tar.getmembers())
        return sorted("/" + name for name in names if name != ".")


# --- the host, before and after ---------------------------------------------------------------


def _entry(path: str) -> tuple:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        content = _sha256(Path(path))
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(path)
    else:
        content = ""  # a directory's size and mtime change with its entries: not compared
    return (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid, content)


def snapshot() -> Dict[str, tuple]:
    """Every watched entry: type, mode, owner, content hash (or link target)."""
    entries: Dict[str, tuple] = {}
    for root in ROOTS + WATCHED_TREES:
        if not os.path.lexists(root):
            continue
        whole = root in WATCHED_TREES
        for directory, dirs, files in os.walk(root):
            for name in dirs + files + ([""] if directory == root else []):
                path = os.path.join(directory, name) if name else directory
                if whole or WATCHED.search(path):
                    try:
                        entries[path] = _entry(path)
                    except OSError:
                        pass
    return entries


def system_python_sees_package() -> bool:
    result = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c",
         "import importlib.util as u; print(u.find_spec('nss_cache_coreweave') is not None)"],
        capture_output=True, text=True, check=False, cwd="/",
    )
    return result.stdout.strip() == "True"


class HostGuard:
    """Record the host; undo the packaging tests' installs; assert that the host is as before."""

    def __init__(self):
        require_root_and_tools("dpkg-query")
        if dpkg_status(PACKAGE) not in (None, "not-installed"):
            pytest.fail(f"{PACKAGE} is already installed here: dpkg --purge {PACKAGE} first", pytrace=False)
        if system_python_sees_package():
            pytest.fail(
                f"{SYSTEM_PYTHON} already imports nss_cache_coreweave (a pip install?): "
                f"{SYSTEM_PYTHON} -m pip uninstall --break-system-packages {PACKAGE} first",
                pytrace=False,
            )
        self.nsscache_before = dpkg_status("nsscache")
        self.keys_user_before = user_exists(KEYS_USER)
        self.saved = {p: (Path(p).read_bytes(), os.stat(p)) for p in RESTORED if os.path.isfile(p)}
        self.before = snapshot()

    def install_nsscache(self) -> None:
        """trixie's nsscache, unless this machine already has an nsscache package installed."""
        if dpkg_status("nsscache") == "installed":
            return
        require_installed(NSSCACHE_DEPENDS, "trixie's nsscache needs its dependencies")
        dpkg_install(trixie_nsscache_deb())

    def restore(self) -> List[str]:
        """Remove what the tests installed, put back saved files; return what still differs."""
        problems = []
        to_purge = [PACKAGE] if dpkg_status(PACKAGE) not in (None, "not-installed") else []
        if self.nsscache_before in (None, "not-installed") and dpkg_status("nsscache") not in (None, "not-installed"):
            to_purge.append("nsscache")
        if to_purge:
            result = run(["dpkg", "--purge", *to_purge], check=False)
            if result.returncode != 0:
                problems.append(f"dpkg --purge {' '.join(to_purge)} failed: {result.stderr.strip()}")
        if system_python_sees_package():  # a pip install left behind
            result = run(
                [SYSTEM_PYTHON, "-m", "pip", "uninstall", "-y", "--break-system-packages", PACKAGE], check=False
            )
            if result.returncode != 0:
                problems.append(f"pip uninstall {PACKAGE} failed: {result.stderr.strip()}")
        problems.extend(self._remove_keys_user())
        for path, (content, st) in self.saved.items():
            if not os.path.isfile(path) or Path(path).read_bytes() != content:
                Path(path).write_bytes(content)
                os.chmod(path, stat.S_IMODE(st.st_mode))
                os.chown(path, st.st_uid, st.st_gid)
        after = snapshot()
        for path in sorted(set(self.before) | set(after)):
            if self.before.get(path) != after.get(path):
                what = "added" if path not in self.before else "removed" if path not in after else "changed"
                problems.append(f"{path} {what}")
        return problems

    def _remove_keys_user(self) -> List[str]:
        """The postinst's system user, which the purge leaves (Debian policy), unless the host had it."""
        if self.keys_user_before or not user_exists(KEYS_USER):
            return []
        return delete_user(KEYS_USER)


def dpkg_install(*debs: Path) -> subprocess.CompletedProcess:
    """dpkg -i, keeping any configuration file already on the host."""
    return run(
        ["dpkg", "--force-confold", "--force-confdef", "-i", *debs], what="dpkg -i " + " ".join(d.name for d in debs)
    )


def dpkg_purge(*packages: str) -> subprocess.CompletedProcess:
    return run(["dpkg", "--purge", *packages], what="dpkg --purge " + " ".join(packages))


__all__ = [
    "REPO", "PACKAGE", "SYSTEM_PYTHON", "SYSTEM_NSSCACHE", "OUR_DEPENDS", "KEYS_USER", "HostGuard", "deb_fields",
    "deb_paths", "delete_user", "dpkg_install", "dpkg_purge", "dpkg_status", "require_installed",
    "require_root_and_tools", "root_only_directory", "run", "system_python_sees_package", "temporary_user",
    "trixie_nsscache_deb", "user_exists",
]
