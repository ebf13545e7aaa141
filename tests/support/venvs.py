"""This project's wheel, and fresh venvs with nsscache 0.49 and that wheel installed.

The fixtures built on these (``project_wheel``, ``make_venv``, ``installed_venv``) are in tests/conftest.py.
Everything fails loudly (``pytest.fail`` with the command's output): a missing tool must never turn into a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_NSSCACHE = REPO / "scripts" / "install-nsscache"
DIST_NAME = "nss-cache-coreweave"
# Variables that would let the calling environment leak into the venv's interpreter.
_SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONWARNINGS", "PYTHONSAFEPATH")
HOOK_DISABLE_ENV = "NSS_CACHE_COREWEAVE_DISABLE_HOOK"
# Copying the checkout keeps setuptools' build/ and *.egg-info out of the shared tree (and stale build/lib
# files out of the wheel).
_NOT_COPIED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", ".pytest_cache", ".cache", "*.whl"
)


def clean_env(**extra: str) -> Dict[str, str]:
    """os.environ without PYTHON* overrides, user site-packages or the hook's disable switch, plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and k != HOOK_DISABLE_ENV}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def run(args: List[str], env: Optional[Dict[str, str]] = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, env=env or clean_env(), **kwargs
    )


def run_ok(args: List[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """run() that fails the test, showing the output, unless the command exits 0."""
    result = run(args, **kwargs)
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}",
            pytrace=False,
        )
    return result


@dataclass(frozen=True)
class Venv:
    root: Path
    python: Path
    site_packages: Path

    def run(self, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        return run([self.python, *args], env=env)


def build_wheel(tmp: Path) -> Path:
    """The project's wheel, built in ``tmp`` with `pip wheel --no-deps` from a copy of the checkout."""
    tree = tmp / "src"
    shutil.copytree(REPO, tree, ignore=_NOT_COPIED, symlinks=True)
    out = tmp / "dist"
    run_ok([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, tree], "building the project wheel")
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        pytest.fail(f"expected one wheel in {out}, found {[w.name for w in wheels]}", pytrace=False)
    return wheels[0]


def new_venv(root: Path, project_wheel: Path) -> Venv:
    """A fresh venv at ``root`` with nsscache (scripts/install-nsscache) and the project wheel (non-editable)."""
    run_ok([sys.executable, "-m", "venv", root], "creating a venv")
    python = root / "bin" / "python"
    run_ok([sys.executable, INSTALL_NSSCACHE, "--python", python], "scripts/install-nsscache")
    run_ok([python, "-m", "pip", "install", project_wheel], f"installing {project_wheel.name}")
    purelib = run_ok(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], "locating site-packages"
    ).stdout.strip()
    return Venv(root=root, python=python, site_packages=Path(purelib))
