"""Fixtures of the packaging tests: the .deb built by `make deb`, and a Python of another minor
version with nsscache beside it. The project wheel and venvs, and the loopback fake IAM, come
from tests/conftest.py; the private systemd that runs the units under their sandbox is
support.private_systemd.PrivateSystemd."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.host import REPO, SYSTEM_PYTHON, require_root_and_tools, run
from support.venvs import run_ok


@pytest.fixture(scope="session")
def built_deb(tmp_path_factory) -> Path:
    """The .deb, built with the README's one command (`make deb`) into a temporary directory."""
    require_root_and_tools("make", "dpkg-buildpackage", "dh", "dh_python3")
    tmp = tmp_path_factory.mktemp("deb")
    run(["make", "-C", REPO, "deb", f"DEB_BUILD={tmp / 'build'}", f"DEB_OUT={tmp / 'out'}"], what="make deb")
    debs = sorted((tmp / "out").glob("*.deb"))
    if len(debs) != 1:
        pytest.fail(f"make deb made {[d.name for d in debs]}, expected one .deb", pytrace=False)
    return debs[0]


def _minor(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def other_minor_python() -> str:
    """A CPython >= 3.9 whose minor version differs from Debian's /usr/bin/python3 (pyenv's on this image)."""
    system = _minor(SYSTEM_PYTHON)
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3.*")) + glob.glob("/usr/bin/python3.*")
    found = [p for p in found if re.search(r"python3\.\d+$", p)]
    # The newest first: what an OS upgrade brings (Debian 13 has 3.13).
    for python in sorted(found, key=lambda p: int(p.rsplit(".", 1)[1]), reverse=True):
        minor = _minor(python)
        if minor and minor != system and tuple(map(int, minor.split("."))) >= (3, 9):
            return python
    pytest.fail(f"no Python >= 3.9 other than {system} found (looked in {root}/versions and /usr/bin)", pytrace=False)


@pytest.fixture(scope="session")
def other_minor_nsscache(other_minor_python, tmp_path_factory) -> Path:
    """A venv of that other Python holding nsscache 0.49 but not this package: its `nsscache` is what
    /usr/bin/nsscache becomes after an OS upgrade changes python3."""
    root = tmp_path_factory.mktemp("other-minor")
    run_ok([other_minor_python, "-m", "venv", root], "creating a venv")
    run_ok([sys.executable, REPO / "scripts" / "install-nsscache", "--python", root / "bin" / "python"],
           "scripts/install-nsscache")
    return root / "bin" / "nsscache"
