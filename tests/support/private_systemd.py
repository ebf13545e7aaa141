"""A private systemd: the units under a real service manager.

This machine's PID 1 is not systemd: :class:`PrivateSystemd` boots Debian's systemd as PID 1 of
its own namespaces (see SYSTEMD_BOOT), loads the units under test, starts them with their
sandbox exactly as on a host, and leaves nothing behind on the host (tests/packaging/test_deb.py).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import pytest

from support.host import require_root_and_tools

# PID 1 of new pid, mount, UTS and IPC namespaces (unshare), then of a cgroup namespace: a view of
# the host in which every write lands in a tmpfs, then `exec systemd`. $1: a work directory holding
# units/; $2: an empty cgroup2 directory for it; then SRC:DST files to bind-mount (sockets, say).
# /etc, /var and /usr are overlays on tmpfs; /run, /tmp, /var/tmp, /dev are new; the host's unit
# directories are replaced by units/ (stub targets, journald and the units under test), so that
# systemd starts nothing of the host's (no sysinit.target: no tmpfiles, sysctl, udev, ...).
SYSTEMD_BOOT = r"""
set -eu
W=$1; CG=$2; shift 2
mount --make-rprivate /
mount -t tmpfs -o mode=700 tmpfs "$W/scratch"
mkdir "$W/scratch/hostdev"
mount --bind /dev "$W/scratch/hostdev"
for d in etc var usr; do
  mkdir -p "$W/scratch/$d/upper" "$W/scratch/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/scratch/$d/upper,workdir=$W/scratch/$d/work" "/$d"
done
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /run/systemd/system /run/lock
for b in "$@"; do
  src=${b%%:*}; dst=${b#*:}
  mkdir -p "$(dirname "$dst")"; touch "$dst"; mount --bind "$src" "$dst"
done
for d in /usr/lib/systemd/system /usr/lib/systemd/system-generators \
         /usr/lib/systemd/system-environment-generators /etc/systemd/system; do
  mount -t tmpfs -o mode=755 tmpfs "$d"
done
cp -a "$W/units/." /usr/lib/systemd/system/
mount -t tmpfs -o mode=755,nosuid tmpfs /dev
for n in null zero full random urandom tty; do touch "/dev/$n"; mount --bind "$W/scratch/hostdev/$n" "/dev/$n"; done
umount "$W/scratch/hostdev"
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s null /dev/console
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"; done
echo $$ > "$CG/cgroup.procs"
exec unshare --cgroup sh -c '
  set -eu
  umount -R /sys/fs/cgroup
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  exec env -i container=nss-cache-coreweave-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system --unit=sandbox-idle.target --log-target=null --show-status=no
'
"""

# Host-wide kernel settings systemd raises when it starts as PID 1 (file-max; the unix socket
# backlog of the network namespace it shares with the host): put back when it is gone.
SYSTEMD_BUMPS = ("fs/file-max", "net/unix/max_dgram_qlen")
STUB_UNITS = ("sandbox-idle.target", "sysinit.target", "basic.target", "shutdown.target",
              "network.target", "network-online.target")
_INSTANCES = itertools.count()
JOURNALD_UNITS = ("systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket")


def _cgroup2_dir() -> Path:
    """This process's cgroup in the cgroup2 hierarchy (hybrid or unified host)."""
    mount = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        if after.split()[0] == "cgroup2":
            mount = before.split()[4]
    own = [line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")]
    if mount is None or not own:
        pytest.fail("no cgroup2 hierarchy: a private systemd needs one", pytrace=False)
    return Path(mount + own[0])


class PrivateSystemd:
    """systemd (Debian 12's: 252) as PID 1 of its own namespaces, to start the units with their
    sandbox exactly as on a host (this machine's PID 1 is not systemd). Nothing it writes reaches the
    host: see SYSTEMD_BOOT. ``units`` are loaded from /lib/systemd/system (with stub targets and
    journald); ``binds`` maps host files to paths inside (e.g. munged's socket). ``run`` executes a
    command inside; ``path`` names a file inside for reading from the test. ``close`` kills it by pid,
    removes its cgroups and restores SYSTEMD_BUMPS."""

    def __init__(self, work: Path, units: Sequence[Path], binds: Optional[Dict[Path, str]] = None):
        require_root_and_tools("unshare", "nsenter", "systemctl", "journalctl")
        self.work = work
        (work / "units").mkdir(parents=True)
        (work / "scratch").mkdir()
        for name in STUB_UNITS:
            (work / "units" / name).write_text("[Unit]\nDescription=stub\nDefaultDependencies=no\n")
        for unit in [Path("/lib/systemd/system", n) for n in JOURNALD_UNITS] + list(units):
            (work / "units" / unit.name).write_bytes(unit.read_bytes())
        self.binds = [f"{src}:{dst}" for src, dst in (binds or {}).items()]
        self.cgroup = _cgroup2_dir() / f"nss-cache-coreweave-test.{os.getpid()}.{next(_INSTANCES)}"
        self.saved = {k: Path("/proc/sys", k).read_text() for k in SYSTEMD_BUMPS}
        self.process: Optional[subprocess.Popen] = None
        self.pid1: Optional[int] = None

    def start(self) -> "PrivateSystemd":
        self.cgroup.mkdir()
        (self.work / "boot.sh").write_text(SYSTEMD_BOOT)
        log = open(self.work / "boot.log", "wb")
        self.process = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--propagation", "private",
             "--mount-proc", "sh", str(self.work / "boot.sh"), str(self.work), str(self.cgroup), *self.binds],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
                program = Path(f"/proc/{children[0]}/exe").resolve().name if children else ""
            except OSError:  # between two exec()s, or gone
                children, program = [], ""
            if program == "systemd":
                self.pid1 = int(children[0])
                state = self.run("systemctl", "is-system-running").stdout.strip()
                if state in ("running", "degraded"):
                    self.run("systemctl", "start", *JOURNALD_UNITS[1:], JOURNALD_UNITS[0], check=True)
                    return self
            time.sleep(0.2)
        boot = (self.work / "boot.log").read_text(errors="replace")
        self.close()
        pytest.fail(f"the private systemd did not come up (state {state!r}):\n{boot}", pytrace=False)

    def run(self, *args, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
        assert self.pid1 is not None
        result = subprocess.run(["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", "-i", "--", *map(str, args)],
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(map(str, args))} (exit {result.returncode}):\n{result.stdout}{result.stderr}",
                        pytrace=False)
        return result

    def path(self, inside: str) -> Path:
        return Path(f"/proc/{self.pid1}/root{inside}")

    def start_unit(self, unit: str) -> Tuple[Dict[str, str], str]:
        """systemctl start (a oneshot: returns when it ended); its properties and this run's journal."""
        shown = self.run("journalctl", "-n", "0", "--show-cursor").stdout
        cursor = re.search(r"^-- cursor: (\S+)", shown, re.M).group(1)
        self.run("systemctl", "start", unit)
        shown = self.run("systemctl", "show", unit, "-p", "Result,ExecMainStatus,ActiveState").stdout
        props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        props["cursor"] = cursor
        return props, self.journal(unit, cursor)

    def journal(self, unit: str, cursor: str, until: str = "", timeout: float = 10) -> str:
        """The unit's journal after ``cursor``; with ``until``, waited for until it holds that text
        (journald reads a service's output asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            # Filtered here: journalctl 252 with -u and --after-cursor can skip the first match.
            out = self.run("journalctl", "--no-pager", "-o", "json", f"--after-cursor={cursor}").stdout
            entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            text = "".join(f"{e.get('MESSAGE')}\n" for e in entries
                           if e.get("_SYSTEMD_UNIT") == unit or e.get("UNIT") == unit)
            if until in text or time.monotonic() > deadline:
                return text
            time.sleep(0.2)

    def close(self) -> None:
        if self.process is not None:
            if self.pid1 is not None:
                try:
                    os.kill(self.pid1, signal.SIGKILL)  # the pid namespace goes with its PID 1
                except ProcessLookupError:
                    pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
            self.process = None
        if self.cgroup.exists():
            for d in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            self.cgroup.rmdir()
        for key, value in self.saved.items():
            if Path("/proc/sys", key).read_text() != value:
                Path("/proc/sys", key).write_text(value)
