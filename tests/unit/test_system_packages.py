"""scripts/system-packages, the first step of `make test`: with a fake dpkg-query,
apt-get and id on PATH (the real ones would change this machine)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "system-packages"
INSTALLED = ("make", "python3-venv", "munge")


def fake_tools(bin_dir: Path, uid: int) -> Path:
    """dpkg-query knowing only INSTALLED; apt-get recording its arguments; id saying ``uid``."""
    log = bin_dir / "apt-get.log"
    bin_dir.mkdir()
    tools = {
        "dpkg-query": "case \" %s \" in *\" ${@: -1} \"*) echo 'install ok installed';; *) exit 1;; esac"
                      % " ".join(INSTALLED),
        "apt-get": f'echo "$*" >> "{log}"',
        "id": f"echo {uid}",
    }
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return log


def run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})


def listed() -> list:
    return subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True, check=True).stdout.split()


def test_the_list_names_every_real_component_the_suites_need():
    assert {"openssh-server", "libnss-cache", "slurmdbd", "mariadb-server", "munge", "lintian",
            "python3-venv", "systemd"} <= set(listed())


def test_as_root_the_missing_packages_are_installed(tmp_path):
    log = fake_tools(tmp_path / "bin", uid=0)

    result = run(tmp_path / "bin")

    missing = [p for p in listed() if p not in INSTALLED]
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq " + " ".join(missing)]


def test_as_another_user_it_stops_naming_the_missing_packages(tmp_path):
    log = fake_tools(tmp_path / "bin", uid=1000)

    result = run(tmp_path / "bin")

    missing = " ".join(p for p in listed() if p not in INSTALLED)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"system-packages: the tests need these Debian packages, not installed: {missing}",
        f"system-packages: install them as root: apt-get install {missing}",
    ]
    assert not log.exists()


@pytest.mark.parametrize("uid", [0, 1000])
def test_nothing_missing_is_nothing_to_do(tmp_path, uid):
    log = fake_tools(tmp_path / "bin", uid=uid)
    (tmp_path / "bin" / "dpkg-query").write_text("#!/bin/bash\necho 'install ok installed'\n")

    result = run(tmp_path / "bin")

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not log.exists()
