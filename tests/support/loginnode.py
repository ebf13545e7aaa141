"""A Slurm login node inside a private mount namespace, for the end-to-end login tests.

The host's /etc is never written. A copy of it (``cp -a``) is bind-mounted over /etc in a
namespace held open by one ``sleep`` process (``unshare -m --propagation private``); inside it:

* ``/etc/nsswitch.conf`` gets the shipped ``conf/nsswitch.conf.snippet`` lines
  (``passwd/group/shadow: files cache``), so glibc loads the real libnss-cache;
* ``/etc/nsscache.conf`` is the shipped ``conf/nsscache.conf`` pointed at a FakeIAM on
  loopback, and the real ``nsscache update --full`` writes ``/etc/*.cache`` (in the copy);
* ``/etc/ssh/sshd_config.d/`` gets the shipped ``conf/sshd_config.d/nsscache-coreweave.conf``
  beside Debian's own sshd_config (``UsePAM yes``);
* ``/run`` is a fresh tmpfs (sshd's privilege-separation directory ``/run/sshd``) and
  ``/usr/local/sbin`` a root-owned 0755 directory that receives the keys wrapper
  (``nsscache-coreweave-keys --install-wrapper``), so sshd's path rules hold;
* the shipped snippet's AuthorizedKeysCommandUser, ``nsscache-keys``, is created with the
  ``useradd --system`` line of docs/login-node.md (in the copy of /etc). The keys venv lives under a
  root-owned 0755 directory (:data:`KEYS_VENV_PARENT`), as ``--install-wrapper`` requires
  of the interpreter and package the wrapper runs.

Every process started here is stopped by pid (``close()``), also when a test fails.
Anything missing (root, unshare, sshd, libnss-cache) fails the test: nothing is skipped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pty
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from support.node import EXT

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
KEYS_COMMAND = "/usr/local/sbin/nsscache-coreweave-keys"
SSHD = "/usr/sbin/sshd"
LIBNSS_CACHE = "/usr/lib/x86_64-linux-gnu/libnss_cache.so.2"
HOST_STATE_DIR = "/var/lib/nsscache"  # nsscache's and the source's state on a real node
KEYS_USER = "nsscache-keys"  # the shipped snippet's AuthorizedKeysCommandUser
# Root-owned 0755 on Debian, every parent too: not /tmp or /var/tmp (world-writable), whose
# venvs --install-wrapper refuses.
KEYS_VENV_PARENT = "/opt"
REQUIRED = ("unshare", "nsenter", "mount", "ssh", "ssh-keygen", SSHD)


def require_environment() -> None:
    """Fail (never skip) when the e2e prerequisites are missing."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the end-to-end tests run as root (mount namespaces, sshd)")
    for tool in REQUIRED:
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed (apt-get install openssh-server openssh-client util-linux)")
    if not Path(LIBNSS_CACHE).exists() and not list(Path("/usr/lib").glob("*/libnss_cache.so.2")):
        problems.append("libnss-cache is not installed (apt-get install libnss-cache)")
    if not Path("/usr/bin/python3").exists():
        problems.append("/usr/bin/python3 is missing")
    if problems:
        pytest.fail("end-to-end prerequisites missing:\n  " + "\n  ".join(problems), pytrace=False)


def run(args: Sequence[object], *, timeout: float = 120, check: bool = False, what: str = "",
        **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(
            f"{what or args[0]} failed (exit {result.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}",
            pytrace=False,
        )
    return result


def snapshot(*roots: str) -> Dict[str, tuple]:
    """Every entry under roots: type, mode, owner, size, mtime and content hash (or link target)."""
    entries: Dict[str, tuple] = {}
    for root in roots:
        for directory, dirs, files in os.walk(root):
            for name in sorted(dirs + files) + ([""] if directory == root else []):
                path = os.path.join(directory, name) if name else directory
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        content = hashlib.sha256(f.read()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    content = os.readlink(path)
                else:
                    content = ""
                entries[path] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid,
                                 st.st_size, st.st_mtime_ns, content)
    return entries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: Optional[subprocess.Popen], timeout: float = 5) -> None:
    """Stop one process we started, by its pid."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def make_key(directory: Path, name: str) -> Path:
    """A fresh ed25519 key pair: directory/name (private, 0600) and name.pub."""
    path = directory / name
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@e2e", "-f", path], check=True)
    return path


def public_key(private: Path) -> str:
    return Path(f"{private}.pub").read_text().strip()


def fingerprint(private: Path) -> str:
    return run(["ssh-keygen", "-lf", f"{private}.pub"], check=True).stdout.split()[1]


class LoginNode:
    """The namespace, its /etc copy, nsscache and sshd. Use as a context manager."""

    def __init__(self, nsscache_bin: Path, keys_bin: Path, base_url: str, token: str,
                 mirror: Optional[Tuple[str, Path]] = None):
        self.nsscache_bin = nsscache_bin  # venv bin/ with the stock nsscache script (run as root)
        self.keys_bin = keys_bin  # venv bin/ readable by KEYS_USER, with nsscache-coreweave-keys
        self.base_url = base_url
        self.token = token
        # Mirror mode (issue 15): (the bundle's URL, the publisher's public key) instead of IAM.
        self.mirror = mirror
        # Not under pytest's tmp_path (0700): KEYS_USER must reach the timestamp directory.
        self.root = Path(tempfile.mkdtemp(prefix="nsscache-e2e-"))
        self.root.chmod(0o755)
        self.holder: Optional[subprocess.Popen] = None
        self.sshds: List[subprocess.Popen] = []

    # --- set-up and tear-down -------------------------------------------------------------

    def __enter__(self) -> "LoginNode":
        try:
            self._prepare()
            self._enter_namespace()
            self.ns("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", KEYS_USER, check=True, what=f"creating {KEYS_USER}")
            self.ns(self.keys_bin / "nsscache-coreweave-keys", "--install-wrapper", KEYS_COMMAND,
                    check=True, what="installing the keys wrapper")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.sshds:
            stop(proc)
        self.sshds.clear()
        stop(self.holder)
        self.holder = None
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def etc(self) -> Path:
        return self.root / "etc"  # the namespace's /etc, seen from the host

    @property
    def state(self) -> Path:
        return self.root / "state"  # nsscache's timestamp_dir

    def _prepare(self) -> None:
        run(["cp", "-a", "/etc", self.etc], check=True, what="copying /etc")
        for sub in ("sbin", "state"):
            (self.root / sub).mkdir(mode=0o755)
        token = self.root / "token"
        token.write_text(self.token + "\n")
        token.chmod(0o600)
        # nsswitch.conf: the shipped lines replace the passwd, group and shadow lines.
        snippet = {line.split(":")[0]: line for line in (CONF / "nsswitch.conf.snippet").read_text().splitlines()
                   if line and not line.startswith("#")}
        nsswitch = self.etc / "nsswitch.conf"
        lines = [snippet.get(line.split(":")[0].strip(), line) for line in nsswitch.read_text().splitlines()]
        for db in ("passwd", "group", "shadow"):
            if not any(line.startswith(db + ":") for line in lines):
                lines.append(snippet[db])
        nsswitch.write_text("\n".join(lines) + "\n")
        # nsscache.conf: the shipped example, pointed at the FakeIAM; what it keeps in /var/lib/nsscache
        # (timestamps, the shrink guard's state) goes to this node's state directory instead.
        conf = [self._conf_line(line, token) for line in (CONF / "nsscache.conf").read_text().splitlines()]
        (self.etc / "nsscache.conf").write_text("\n".join(conf) + "\n")
        # sshd: Debian's sshd_config (it includes sshd_config.d/*.conf) plus the shipped snippet.
        dropin = self.etc / "ssh" / "sshd_config.d"
        dropin.mkdir(exist_ok=True)
        shutil.copy(CONF / "sshd_config.d" / "nsscache-coreweave.conf", dropin / "nsscache-coreweave.conf")

    def _conf_line(self, line: str, token: Path) -> str:
        """A line of the shipped nsscache.conf as this node has it: IAM's URL and the token
        file, or in mirror mode the mirror and the publisher's key in their place."""
        if line.startswith("coreweave_base_url ="):
            if self.mirror is not None:
                return f"coreweave_mirror_url = {self.mirror[0]}\ncoreweave_mirror_public_key = {self.mirror[1]}"
            return f"coreweave_base_url = {self.base_url}"
        if line.startswith("coreweave_token_file ="):
            return "" if self.mirror is not None else f"coreweave_token_file = {token}"
        if not line.startswith("#"):
            return line.replace(f"= {HOST_STATE_DIR}", f"= {self.state}")
        return line

    def _enter_namespace(self) -> None:
        script = (
            f"mount --bind {self.etc} /etc"
            f" && mount -t tmpfs -o mode=0755 nsscache-e2e-run /run && mkdir -m 0755 /run/sshd"
            f" && mount --bind {self.root / 'sbin'} /usr/local/sbin"
            " && echo ready && exec sleep infinity"
        )
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        ready = self.holder.stdout.readline().strip()
        if ready != "ready":
            stop(self.holder)
            pytest.fail(f"could not set up the mount namespace: {self.holder.stderr.read()}", pytrace=False)
        # Host keys: the copy has Debian's (made when openssh-server was installed); make any missing.
        self.ns("ssh-keygen", "-A", check=True)

    # --- commands inside the namespace ----------------------------------------------------

    def ns(self, *args: object, user: Optional[str] = None, **kwargs) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (as root, or as user via setpriv)."""
        prefix: List[object] = ["nsenter", "-t", self.holder.pid, "-m", "--"]
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user if user != 'nobody' else 'nogroup'}",
                       "--clear-groups", "--"]
        return run([*prefix, *args], **kwargs)

    def nsscache(self, *args: str, program: str = "nsscache") -> subprocess.CompletedProcess:
        """The stock ``nsscache`` (or ``program``, e.g. nsscache-coreweave) with /etc/nsscache.conf, as
        cron runs it. stdin is a terminal so that it logs to stderr (there is no /dev/log)."""
        primary, secondary = pty.openpty()
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("NSSCACHE_")}
            return self.ns(self.nsscache_bin / program, *args, stdin=secondary, env=env)
        finally:
            os.close(primary)
            os.close(secondary)

    def update(self) -> None:
        result = self.nsscache("update", "--full")
        if result.returncode != 0:
            pytest.fail(f"nsscache update --full failed (exit {result.returncode}):\n{result.stderr}", pytrace=False)

    def keys(self, *args: str) -> subprocess.CompletedProcess:
        """The AuthorizedKeysCommand as sshd runs it: the installed wrapper, as KEYS_USER."""
        return self.ns(KEYS_COMMAND, *args, user=KEYS_USER)

    # --- sshd and ssh ---------------------------------------------------------------------

    def start_sshd(self, *options: str) -> "Sshd":
        """A real sshd (Debian's sshd_config + the shipped snippet) on a free loopback port;
        options: extra ``-o`` settings, which win over the files."""
        port = free_port()
        log = self.root / f"sshd-{port}.log"
        args = [SSHD, "-D", "-e", "-p", str(port), "-o", "ListenAddress=127.0.0.1", "-o", "LogLevel=DEBUG1",
                "-o", "PidFile=none"]
        for option in options:
            args += ["-o", option]
        with open(log, "wb") as out:
            proc = subprocess.Popen(["nsenter", "-t", str(self.holder.pid), "-m", "--", *args],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.sshds.append(proc)
        sshd = Sshd(proc, port, log)
        sshd.wait_listening()
        return sshd


class Sshd:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.port, self.log = proc, port, log

    def wait_listening(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"Server listening on 127.0.0.1 port {self.port}" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"sshd did not start (exit {self.proc.poll()}):\n{self.log.read_text(errors='replace')}",
                    pytrace=False)

    def stop(self) -> None:
        stop(self.proc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def ssh(self, user: str, key: Path, command: str = "id") -> "Login":
        """``ssh -i key user@127.0.0.1 command``: public key only, no agent, no config files."""
        start = len(self.log.read_bytes())
        result = run([
            "ssh", "-F", "/dev/null", "-i", key, "-p", self.port,
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
            "-o", "PreferredAuthentications=publickey", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            f"{user}@127.0.0.1", command,
        ], timeout=60)
        return Login(result, self, start)


class Login:
    """One ssh attempt: exit status, output and what sshd logged for it."""

    def __init__(self, result: subprocess.CompletedProcess, sshd: Sshd, log_start: int):
        self.returncode, self.stdout, self.stderr = result.returncode, result.stdout, result.stderr
        self._sshd, self._start = sshd, log_start

    @property
    def refused(self) -> bool:
        return self.returncode == 255 and "Permission denied (publickey" in self.stderr and not self.stdout

    def sshd_logged(self, text: str, timeout: float = 5) -> bool:
        """Whether sshd logged text for this attempt (waits briefly: its children log asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            if text in self._sshd.log.read_bytes()[self._start:].decode(errors="replace"):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def __repr__(self) -> str:
        log = self._sshd.log.read_bytes()[self._start:].decode(errors="replace")
        return f"Login(exit {self.returncode}, stdout={self.stdout!r}, stderr={self.stderr!r})\n--- sshd\n{log}"


def make_keys_venv(wheel: Path) -> Path:
    """A venv of Debian's /usr/bin/python3 in a fresh root-owned 0755 directory under
    KEYS_VENV_PARENT, with only the project's wheel (``--no-deps``: the keys command needs
    nothing but the standard library). Returns its bin/."""
    for directory in [KEYS_VENV_PARENT, *map(str, Path(KEYS_VENV_PARENT).parents)]:
        st = os.stat(directory)
        if st.st_uid != 0 or st.st_mode & 0o022:
            pytest.fail(f"{directory} must be root-owned and not group- or world-writable for the keys venv "
                        f"(mode {st.st_mode & 0o7777:04o}, uid {st.st_uid})", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="nsscache-e2e-keys-", dir=KEYS_VENV_PARENT))
    root.chmod(0o755)
    run(["/usr/bin/python3", "-m", "venv", root], check=True, what="creating a venv from /usr/bin/python3")
    run([root / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", wheel],
        check=True, what=f"installing {wheel.name}")
    run(["chmod", "-R", "a+rX", root], check=True)
    return root / "bin"


__all__ = ["HOST_STATE_DIR", "KEYS_USER", "LoginNode", "Login", "Sshd", "make_key", "make_keys_venv", "public_key",
           "fingerprint", "snapshot", "require_environment", "run", "stop", "KEYS_COMMAND"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit("import this module from tests/e2e")


# --- the organisation of the login tests (tests/e2e) ------------------------------------------

ALICE_ID = "uid=20001(alice) gid=20001 groups=20001,30001(slurm-users),30002(slurm-admins)\n"
FRANK_ID = "uid=20006(frank) gid=20006 groups=20006,30001(slurm-users)\n"


def user_of(org, name):
    return next(u for u in org["Users"] if u[EXT]["sunkPosixUsername"] == name)


def group_of(org, name):
    return next(g for g in org["Groups"] if g["sunkPosixGroupName"] == name)


def build_org(keys):
    """demo/org.json with our public keys, plus IAM members ``root`` and ``al``."""
    org = json.loads((REPO / "demo" / "org.json").read_text())
    for name in ("alice", "bob", "carol", "dave", "frank"):
        user_of(org, name)[EXT]["sunkSshKeys"] = [public_key(keys[name])]
    user_of(org, "alice")[EXT]["sunkSshKeys"].append(public_key(keys["alice2"]))
    for number, (name, user_keys) in enumerate((("root", [public_key(keys["root"])]), ("al", [])), start=7):
        user = copy.deepcopy(user_of(org, "erin"))
        user["id"] = f"00000000-0000-4000-8000-00000000000{number}"
        user["userName"] = f"{name}@example.com"
        user["displayName"] = f"IAM {name}"
        user[EXT].update(sunkPosixUsername=name, sunkPosixUid=20000 + number, sunkPosixGid=20000 + number,
                         sunkSshKeys=user_keys)
        org["Users"].append(user)
        group_of(org, "slurm-users")["members"].append({"value": user["id"], "type": "User"})
    return org
