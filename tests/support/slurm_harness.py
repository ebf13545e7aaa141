"""A real Slurm accounting stack in a temporary directory, without systemd.

``SlurmStack`` starts, as child processes of the test run and with all their
state under one temporary directory:

* ``munged`` with a fresh key (``--key-file``, ``--socket``, ``--pid-file``,
  ``--log-file``, ``--seed-file`` under the directory);
* ``mariadbd`` on a datadir made by ``mariadb-install-db``, on a free loopback
  TCP port and a unix socket in the directory, with a ``slurm`` database user;
* ``slurmdbd -D`` on a free loopback port, one per test (``start_dbd``), each on
  a fresh database so that tests do not see each other's accounts.

``SLURM_CONF`` points at a generated slurm.conf beside slurmdbd.conf; both name
the munge socket (``AccountingStoragePass``, ``AuthInfo``), so the host's /etc is
neither read nor written. Every process is stopped by pid in ``close()``, also
when a test fails. A missing program fails the tests (never a skip).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

PROGRAMS = {
    "munged": "munge",
    "munge": "munge",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-client",
    "slurmdbd": "slurmdbd",
    "sacctmgr": "slurm-client",
}
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
CLUSTER = "testcluster"


def which(program: str) -> Optional[str]:
    found = shutil.which(program)
    if found:
        return found
    for directory in SBIN:
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK):
            return path
    return None


def require_programs() -> Dict[str, str]:
    """Absolute paths of the programs; fail (never skip) naming the packages when one is missing."""
    paths = {p: which(p) for p in PROGRAMS}
    missing = sorted({PROGRAMS[p] for p, path in paths.items() if path is None})
    if missing:
        pytest.fail(
            "the Slurm integration tests need a real slurmdbd: apt-get install " + " ".join(missing)
            + " (make test installs them: scripts/system-packages)", pytrace=False)
    return paths  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready, timeout: float, log: Optional[Path] = None, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    state = f"exited with {process.returncode}" if process is not None and process.poll() is not None else "not ready"
    raise RuntimeError(f"{what} {state} after {timeout:g} s\n{tail}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class SlurmStack:
    """munged + MariaDB once, slurmdbd per test. See the module docstring."""

    def __init__(self, *, fast_storage: bool = True):
        self.programs = require_programs()
        # Not pytest's tmp_path: its 0700 parent would hide the config from a non-root sacctmgr.
        self.root = Path(tempfile.mkdtemp(prefix="slurm-stack-"))
        self.root.chmod(0o755)
        self.fast_storage = fast_storage
        self.processes: List[subprocess.Popen] = []
        self.dbd: Optional[subprocess.Popen] = None
        self.dbd_count = 0
        self.user = getpass.getuser()
        self.db_port = free_port()
        self.dbd_port = free_port()
        for sub in ("munge-key", "munge", "log", "etc", "mysql"):
            (self.root / sub).mkdir()
        (self.root / "munge-key").chmod(0o700)
        (self.root / "munge").chmod(0o755)  # munged: the socket's directory must be searchable by all
        (self.root / "etc").chmod(0o755)

    # -- paths ---------------------------------------------------------------
    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def slurm_conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> Dict[str, str]:
        """The environment for sacctmgr and for nsscache-coreweave slurm-sync."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.slurm_conf)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), *SBIN])
        return env

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "SlurmStack":
        try:
            self._start_munge()
            self._start_mariadb()
            self._write_slurm_conf()
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, argv: Sequence[str], log_name: str, env=None) -> subprocess.Popen:
        log = open(self.root / "log" / log_name, "ab")
        try:
            process = subprocess.Popen(
                [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )
        finally:
            log.close()
        self.processes.append(process)
        return process

    def _start_munge(self) -> None:
        key = self.root / "munge-key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        process = self._spawn([
            self.programs["munged"], "--foreground", f"--key-file={key}", f"--socket={self.munge_socket}",
            f"--pid-file={self.root / 'munge' / 'munged.pid'}", f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={self.root / 'munge-key' / 'munged.seed'}", "--num-threads=4",
        ], "munged.out")

        def ready():
            result = subprocess.run([self.programs["munge"], "-S", str(self.munge_socket), "-n"],
                                    capture_output=True, timeout=10)
            return result.returncode == 0

        wait_for("munged", ready, 20, self.root / "log" / "munged.log", process)

    def _start_mariadb(self) -> None:
        data = self.root / "mysql" / "data"
        result = subprocess.run(
            [self.programs["mariadb-install-db"], "--no-defaults", f"--datadir={data}", f"--user={self.user}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{result.stdout}\n{result.stderr}")
        self.db_socket = self.root / "mysql" / "mysqld.sock"
        options = [
            "--no-defaults", f"--datadir={data}", f"--user={self.user}", f"--socket={self.db_socket}",
            f"--port={self.db_port}", "--bind-address=127.0.0.1", f"--pid-file={self.root / 'mysql' / 'mysqld.pid'}",
            f"--log-error={self.root / 'log' / 'mariadb.err'}", "--skip-name-resolve", "--skip-log-bin",
            "--innodb-buffer-pool-size=256M", "--innodb-log-file-size=64M", "--innodb-lock-wait-timeout=900",
        ]
        if self.fast_storage:
            # Test data only: no fsync per commit.
            options += ["--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--sync-binlog=0"]
        process = self._spawn([self.programs["mariadbd"], *options], "mariadb.out")
        wait_for("mariadbd", lambda: self.db_socket.exists() and port_open(self.db_port), 60,
                 self.root / "log" / "mariadb.err", process)
        self.db_password = os.urandom(12).hex()
        self.mysql(f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}'; "
                   f"GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';")

    def mysql(self, sql: str) -> str:
        result = subprocess.run(
            [self.programs["mariadb"], "--no-defaults", "-S", str(self.db_socket), "-uroot", "-N", "-B", "-e", sql],
            capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mariadb: {sql}: {result.stderr}")
        return result.stdout

    def _write_slurm_conf(self) -> None:
        self.slurm_conf.write_text(
            f"ClusterName={CLUSTER}\n"
            "SlurmctldHost=localhost\n"
            f"SlurmUser={self.user}\n"
            "AuthType=auth/munge\n"
            f"AuthInfo=socket={self.munge_socket}\n"
            "AccountingStorageType=accounting_storage/slurmdbd\n"
            "AccountingStorageHost=127.0.0.1\n"
            f"AccountingStoragePort={self.dbd_port}\n"
            # For sacctmgr's connection to slurmdbd, the munge socket is read from here.
            f"AccountingStoragePass={self.munge_socket}\n"
        )
        self.slurm_conf.chmod(0o644)

    def start_dbd(self, *, cluster: Optional[str] = CLUSTER) -> None:
        """A fresh slurmdbd on a new, empty database; ``cluster`` is registered."""
        self.stop_dbd()
        self.dbd_count += 1
        conf = self.root / "etc" / "slurmdbd.conf"
        conf.write_text(
            "AuthType=auth/munge\n"
            f"AuthInfo=socket={self.munge_socket}\n"
            "DbdHost=localhost\n"
            "DbdAddr=127.0.0.1\n"
            f"DbdPort={self.dbd_port}\n"
            f"SlurmUser={self.user}\n"
            "StorageType=accounting_storage/mysql\n"
            "StorageHost=127.0.0.1\n"
            f"StoragePort={self.db_port}\n"
            "StorageUser=slurm\n"
            f"StoragePass={self.db_password}\n"
            f"StorageLoc=slurm_acct_{self.dbd_count}\n"
            f"PidFile={self.root / 'slurmdbd.pid'}\n"
            f"LogFile={self.root / 'log' / f'slurmdbd-{self.dbd_count}.log'}\n"
            "DebugLevel=info\n"
        )
        conf.chmod(0o600)  # slurmdbd refuses a readable slurmdbd.conf holding the password
        log = self.root / "log" / f"slurmdbd-{self.dbd_count}.log"
        self.dbd = self._spawn([self.programs["slurmdbd"], "-D"], f"slurmdbd-{self.dbd_count}.out", env=self.env)
        wait_for("slurmdbd", lambda: port_open(self.dbd_port), 60, log, self.dbd)
        if cluster:
            self.sacctmgr("-i", "add", "cluster", cluster, check=True)

    def stop_dbd(self) -> None:
        if self.dbd is not None:
            self._stop(self.dbd)
            self.dbd = None
            deadline = time.monotonic() + 10
            while port_open(self.dbd_port) and time.monotonic() < deadline:
                time.sleep(0.1)

    def _stop(self, process: subprocess.Popen, timeout: float = 20) -> None:
        if process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            except ProcessLookupError:
                pass
        if process in self.processes:
            self.processes.remove(process)

    def close(self) -> None:
        """Stop every process by pid (newest first) and remove the directory."""
        for process in reversed(list(self.processes)):
            self._stop(process)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- using it ----------------------------------------------------------------
    def sacctmgr(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run([self.programs["sacctmgr"], *args], capture_output=True, text=True,
                                env=self.env, timeout=300, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"sacctmgr {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")
        return result

    def show(self, *args: str) -> List[List[str]]:
        result = self.sacctmgr("-n", "-P", "show", *args, check=True)
        return [line.split("|") for line in result.stdout.splitlines() if line.strip()]

    def associations(self, cluster: str = CLUSTER) -> Dict[str, set]:
        """account -> users with an association on ``cluster`` (the account's own row left out)."""
        result: Dict[str, set] = {}
        for _cluster, account, user in self.show("association", f"cluster={cluster}", "format=cluster,account,user"):
            users = result.setdefault(account, set())
            if user:
                users.add(user)
        return result

    def users(self, cluster: str = CLUSTER) -> Dict[str, tuple]:
        """user -> (default account on ``cluster``, admin level)."""
        return {u: (d, a)
                for u, d, a in self.show("user", f"cluster={cluster}", "format=user,defaultaccount,adminlevel")}

    def accounts(self) -> Dict[str, tuple]:
        """account -> (organization, description)."""
        return {a: (o, d) for a, o, d in self.show("account", "format=account,organization,description")}
