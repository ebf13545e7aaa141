"""`sshd -t` and `sshd -T` on an sshd_config snippet wrapped in a complete configuration.

sshd needs its privilege-separation directory /run/sshd even for -t; it runs in a private
mount namespace (``unshare -m``) over a fresh tmpfs /run, so the host's /run is not touched.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

SSHD = "/usr/sbin/sshd"
DEBIAN_SSHD_CONFIG = Path("/etc/ssh/sshd_config")


def _require():
    missing = [t for t in (SSHD, "ssh-keygen", "unshare", "mount") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {missing} (apt-get install openssh-server util-linux; "
                    "make test does: scripts/system-packages)", pytrace=False)


def wrap(snippet: Path, tmp: Path, base: str = "minimal") -> Path:
    """A complete sshd_config in tmp: a temporary host key plus the snippet, either in a minimal
    configuration or included by (a copy of) Debian's own sshd_config, as on a login node."""
    _require()
    tmp.mkdir(parents=True, exist_ok=True)
    hostkey = tmp / "ssh_host_ed25519_key"
    if not hostkey.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
    config = tmp / "sshd_config"
    if base == "minimal":
        config.write_text(
            f"HostKey {hostkey}\nUsePAM yes\nPidFile none\nSubsystem sftp internal-sftp\n" + snippet.read_text()
        )
    elif base == "debian":
        if not DEBIAN_SSHD_CONFIG.exists():
            pytest.fail(f"{DEBIAN_SSHD_CONFIG} is missing (apt-get install openssh-server)", pytrace=False)
        dropins = tmp / "sshd_config.d"
        dropins.mkdir(exist_ok=True)
        shutil.copy(snippet, dropins / snippet.name)
        text, n = re.subn(
            r"^Include /etc/ssh/sshd_config\.d/\*\.conf$",
            f"Include {dropins}/*.conf",
            DEBIAN_SSHD_CONFIG.read_text(),
            flags=re.M,
        )
        assert n == 1, "Debian's sshd_config no longer includes /etc/ssh/sshd_config.d/*.conf"
        config.write_text(f"HostKey {hostkey}\nPidFile none\n" + text)
    else:
        raise ValueError(base)
    return config


def sshd(config: Path, *args: str) -> subprocess.CompletedProcess:
    """Run sshd with -f config and args in a private mount namespace with a fresh /run/sshd."""
    _require()
    command = " ".join(["exec", SSHD, "-f", str(config), *args])
    script = "mount -t tmpfs -o mode=0755 nsscache-pkg-run /run && mkdir -m 0755 /run/sshd && " + command
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, check=False, timeout=60,
    )


def sshd_effective(snippet: Path, tmp: Path, user: str, base: str = "minimal") -> Dict[str, str]:
    """sshd -t must accept the wrapped snippet; return `sshd -T` for a connection of user (first value of each key)."""
    config = wrap(snippet, tmp, base)
    test = sshd(config, "-t")
    assert test.returncode == 0, f"sshd -t rejects {snippet}:\n{test.stderr}"
    effective = sshd(config, "-T", "-C", f"user={user},host=localhost,addr=127.0.0.1")
    assert effective.returncode == 0, effective.stderr
    values: Dict[str, str] = {}
    for line in effective.stdout.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value)
    return values
