"""Fixtures: this project's wheel, and fresh venvs with nsscache 0.49 and that wheel installed.

Import the fixtures into a test module (``from _venv import project_wheel, make_venv, installed_venv``).
Everything fails loudly (``pytest.fail`` with the command's output): a missing tool must never turn into a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

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


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory) -> Path:
    """The project's wheel, built once per session with `pip wheel --no-deps` from a copy of the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "src"
    shutil.copytree(REPO, tree, ignore=_NOT_COPIED, symlinks=True)
    out = tmp / "dist"
    run_ok([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, tree], "building the project wheel")
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        pytest.fail(f"expected one wheel in {out}, found {[w.name for w in wheels]}", pytrace=False)
    return wheels[0]


@pytest.fixture(scope="session")
def make_venv(project_wheel, tmp_path_factory) -> Callable[[], Venv]:
    """Factory: a fresh venv with nsscache (scripts/install-nsscache) and the project wheel (non-editable)."""

    def make() -> Venv:
        root = tmp_path_factory.mktemp("venv")
        run_ok([sys.executable, "-m", "venv", root], "creating a venv")
        python = root / "bin" / "python"
        run_ok([sys.executable, INSTALL_NSSCACHE, "--python", python], "scripts/install-nsscache")
        run_ok([python, "-m", "pip", "install", project_wheel], f"installing {project_wheel.name}")
        purelib = run_ok(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], "locating site-packages"
        ).stdout.strip()
        return Venv(root=root, python=python, site_packages=Path(purelib))

    return make


@pytest.fixture(scope="session")
def installed_venv(make_venv) -> Venv:
    """One shared venv with nsscache and the wheel: treat it as read-only (use make_venv() to modify one)."""
    return make_venv()


__all__ = ["REPO", "Venv", "clean_env", "run", "run_ok", "project_wheel", "make_venv", "installed_venv"]
