"""conf/: the files an operator installs on a login node, each checked by the tool that reads it
(conf/nsscache.conf by nsscache's own loader: tests/integration/test_docs.py; the nsswitch and
sshd snippets also through a real libnss-cache and sshd: tests/e2e)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from host import REPO
from sshd_check import sshd, sshd_effective, wrap

CONF = REPO / "conf"
SSHD_SNIPPET = CONF / "sshd_config.d" / "nsscache-coreweave.conf"
CRON = CONF / "cron.d" / "nsscache-coreweave"
UNITS = CONF / "systemd"
KEYS_COMMAND = "/usr/local/sbin/nsscache-coreweave-keys %u %f"


# --- sshd ------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["minimal", "debian"])
def test_sshd_accepts_the_snippet(tmp_path, base):
    alice = sshd_effective(SSHD_SNIPPET, tmp_path, user="alice", base=base)
    root = sshd_effective(SSHD_SNIPPET, tmp_path, user="root", base=base)

    assert alice["authorizedkeyscommand"] == KEYS_COMMAND
    assert alice["authorizedkeyscommanduser"] == "nobody"
    assert alice["authorizedkeysfile"] == "none"
    assert alice["usepam"] == "yes"
    assert root["authorizedkeysfile"] == ".ssh/authorized_keys"


def test_sshd_check_is_not_vacuous(tmp_path):
    broken = tmp_path / "broken.conf"
    broken.write_text("AuthorizedKeysCommandUserr nobody\n")

    result = sshd(wrap(broken, tmp_path), "-t")

    assert result.returncode != 0 and "Bad configuration option" in result.stderr


# --- systemd ---------------------------------------------------------------------------------


def _units_with_stub_program(tmp_path):
    """Copies of the units whose ExecStart program is a stub executable (systemd-analyze checks that
    it exists; the real /usr/bin/nsscache is checked in tests/packaging/test_deb.py, after dpkg -i)."""
    stub = tmp_path / "bin" / "nsscache"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("ExecStart=/usr/bin/nsscache ", f"ExecStart={stub} ")
        (units / unit.name).write_text(text)
    return units


def _verify(*paths):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd)", pytrace=False)
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True, check=False)


def test_systemd_units_verify(tmp_path):
    units = _units_with_stub_program(tmp_path)

    result = _verify(units / "nsscache-coreweave.timer", units / "nsscache-coreweave.service")

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_verify_is_not_vacuous(tmp_path):
    bad = tmp_path / "nsscache-coreweave.timer"
    bad.write_text("[Timer]\nRandomizedDelaySec=soon\n")

    result = _verify(bad)

    assert result.returncode != 0 and "Failed to parse sec value" in result.stderr


def _sections(path):
    """systemd unit file -> {section: {key: [values]}} (systemd's syntax is not ConfigParser's)."""
    sections, current = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_timer_runs_the_service_with_a_randomized_delay():
    timer = _sections(UNITS / "nsscache-coreweave.timer")
    service = _sections(UNITS / "nsscache-coreweave.service")

    assert "Unit" not in timer["Timer"]  # implicit: nsscache-coreweave.service
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Timer"]["OnBootSec"]
    assert re.fullmatch(r"[1-9]\d*(s|min)?", timer["Timer"]["RandomizedDelaySec"][0])
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    assert service["Service"]["Type"] == ["oneshot"]
    assert service["Service"]["ExecStart"][0].split()[:2] == ["/usr/bin/nsscache", "update"]
    assert "Install" not in service  # started by the timer only


# --- cron ------------------------------------------------------------------------------------

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


def _valid_field(text, low, high):
    for part in text.split(","):
        base, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        first, _, last = base.partition("-")
        numbers = [first] + ([last] if last else [])
        if not all(n.isdigit() and low <= int(n) <= high for n in numbers):
            return False
    return True


def _cron_jobs():
    """(schedule fields, user, command) of each job line; environment lines are skipped."""
    text = CRON.read_text()
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    jobs = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^[A-Za-z_]+=", line):
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, f"not 5 time fields, a user and a command: {line!r}"
        jobs.append((fields[:5], fields[5], fields[6]))
    return jobs


def test_cron_file_syntax():
    # Debian's cron has no syntax checker: check what cron(8) and crontab(5) require.
    jobs = _cron_jobs()
    mode = CRON.stat().st_mode

    assert jobs
    assert "." not in CRON.name  # run-parts naming: cron ignores /etc/cron.d files with a dot
    assert not mode & (stat.S_IWGRP | stat.S_IWOTH)  # cron ignores group/world-writable files
    for schedule, user, command in jobs:
        for value, (name, low, high) in zip(schedule, FIELDS):
            assert _valid_field(value, low, high), f"bad {name} field {value!r}"
        assert user == "root"
        assert not re.search(r"(?<!\\)%", command), "an unescaped % is a newline to cron"
        assert subprocess.run(["sh", "-n", "-c", command], check=False).returncode == 0


def test_cron_command_sleeps_up_to_two_minutes_then_runs_a_full_update(tmp_path):
    # Run the job's command with stub sleep and nsscache (shuf is the real one).
    (_, _, command), = _cron_jobs()
    log = tmp_path / "log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sleep", "nsscache"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        (bin_dir / name).chmod(0o755)
    path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"

    for _ in range(5):
        assert subprocess.run(["sh", "-c", command], env={"PATH": path}, check=False).returncode == 0

    calls = log.read_text().splitlines()
    assert calls[1::2] == ["nsscache update --full"] * 5
    delays = [int(c.split()[1]) for c in calls[0::2]]
    assert [c.split()[0] for c in calls[0::2]] == ["sleep"] * 5 and all(0 <= d <= 120 for d in delays)


# --- nsswitch --------------------------------------------------------------------------------


def test_nsswitch_snippet_puts_local_files_before_the_cache():
    lines = [l for l in (CONF / "nsswitch.conf.snippet").read_text().splitlines() if l.strip() and not l.startswith("#")]
    entries = {}
    for line in lines:
        database, _, sources = line.partition(":")
        entries[database.strip()] = sources.split()

    assert entries == {"passwd": ["files", "cache"], "group": ["files", "cache"], "shadow": ["files", "cache"]}
