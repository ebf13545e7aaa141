"""The shipped slurm-sync schedules: conf/cron.d/nsscache-coreweave-slurm and
conf/systemd/nsscache-coreweave-slurm-sync.{service,timer}."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "conf"
CRON = CONF / "cron.d" / "nsscache-coreweave-slurm"
SERVICE = CONF / "systemd" / "nsscache-coreweave-slurm-sync.service"
TIMER = CONF / "systemd" / "nsscache-coreweave-slurm-sync.timer"


def test_cron_line_runs_slurm_sync_as_root():
    assert "." not in CRON.name  # cron ignores /etc/cron.d files whose name has a dot
    jobs = [line for line in CRON.read_text().splitlines()
            if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(jobs) == 1
    fields = jobs[0].split(None, 6)
    assert fields[:6] == ["*/10", "*", "*", "*", "*", "root"]
    assert re.search(r"nsscache-coreweave -c /etc/nsscache.conf slurm-sync$", fields[6])


def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd)", pytrace=False)
    stub = tmp_path / "nsscache-coreweave"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    service_text = SERVICE.read_text()
    assert "ExecStart=/usr/bin/nsscache-coreweave -c /etc/nsscache.conf slurm-sync\n" in service_text
    (tmp_path / SERVICE.name).write_text(service_text.replace("ExecStart=/usr/bin/nsscache-coreweave ",
                                                              f"ExecStart={stub} "))
    shutil.copy(TIMER, tmp_path / TIMER.name)

    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / TIMER.name), str(tmp_path / SERVICE.name)],
                            capture_output=True, text=True)

    assert (result.returncode, result.stdout + result.stderr) == (0, "")
