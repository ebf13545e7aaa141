"""A login node in a temporary directory: nsscache.conf, token file, cache
and state directories, and the commands an operator or cron runs."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

TOKEN = "cw-test-token-4f1c9a"
EXT = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
MAPS = ("passwd", "group", "shadow", "sshkey")
MARKER = "nsscache-coreweave"  # the first line of every cache names the run that wrote it
# What the default configuration asks Users for (coreweave_fetch = auto): `active`, the configured
# attribute paths, GECOS's fallback; as sent (comma-separated) and as URL-encoded in a target.
ATTRIBUTES = ",".join([
    "active", f"{EXT}:sunkPosixUsername", f"{EXT}:sunkPosixUid", f"{EXT}:sunkPosixGid", "displayName", "name.formatted",
    f"{EXT}:sunkHomeDirectory", f"{EXT}:sunkLoginShell", f"{EXT}:sunkSshKeys", "name.givenName", "name.familyName",
])
ATTRIBUTES_ENCODED = "attributes=" + ATTRIBUTES.replace(":", "%3A").replace(",", "%2C")


@dataclass
class Node:
    root: Path
    bin: Path  # the venv's bin directory: nsscache and nsscache-coreweave

    def __post_init__(self):
        for sub in ("cache", "state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def local_passwd(self) -> Path:
        """The node's own accounts: etc-passwd when a test wrote one, else the host's."""
        own = self.root / "etc-passwd"
        return own if own.exists() else Path("/etc/passwd")

    @property
    def conf(self) -> Path:
        return self.root / "nsscache.conf"

    def _nsscache_lines(self, maps: str) -> str:
        """nsscache's own settings: this node's caches, timestamps and lock."""
        return (
            "[DEFAULT]\n"
            "source = coreweave\n"
            "cache = files\n"
            f"maps = {maps}\n"
            f"timestamp_dir = {self.root / 'state'}\n"
            f"lockfile = {self.root / 'nsscache.lock'}\n"
            f"files_dir = {self.root / 'cache'}\n"
            "files_cache_filename_suffix = cache\n"
        )

    def configure(self, base_url: str, extra: str = "", maps: str = ", ".join(MAPS)) -> Path:
        self.conf.write_text(
            self._nsscache_lines(maps) +
            f"coreweave_base_url = {base_url}\n"
            f"coreweave_token_file = {self.token_file}\n"
            "coreweave_groups = slurm-users, slurm-admins\n"
            "coreweave_home_directory = /mnt/home/%%u\n"
            f"coreweave_state_dir = {self.root / 'state'}\n"
            # Listed so that the host's /etc/shells does not matter.
            "coreweave_allowed_shells = /bin/bash, /bin/zsh\n" + extra
        )
        return self.conf

    def configure_mirror(self, url: str, public_key: Path, extra: str = "", maps: str = ", ".join(MAPS)) -> Path:
        """Mirror mode: the maps from the bundle at ``url``, signed by ``public_key``'s
        private half; no IAM URL, no token, every published group (``extra`` may narrow)."""
        self.conf.write_text(
            self._nsscache_lines(maps) +
            f"coreweave_mirror_url = {url}\n"
            f"coreweave_mirror_public_key = {public_key}\n"
            f"coreweave_state_dir = {self.root / 'state'}\n"
            "coreweave_allowed_shells = /bin/bash, /bin/zsh\n" + extra
        )
        return self.conf

    def run(self, command: str, *args: str, environ: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
        """Run ``nsscache`` or ``nsscache-coreweave`` with ``-c`` this node's
        conf, without our NSSCACHE_* variables unless ``environ`` sets them. stdin is
        a terminal so that nsscache logs to stderr instead of syslog (there is no
        /dev/log here)."""
        primary, secondary = pty.openpty()
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("NSSCACHE_")}
            env.update(environ or {})
            return subprocess.run(
                [str(self.bin / command), "-c", str(self.conf), *args],
                stdin=secondary, capture_output=True, text=True, env=env, timeout=120,
            )
        finally:
            os.close(primary)
            os.close(secondary)

    def cache(self, name: str) -> str:
        """A cache's entries, without its first line, the run marker (see run_marker)."""
        text = (self.root / "cache" / f"{name}.cache").read_text()
        first, _, rest = text.partition("\n")
        return rest if first.startswith(MARKER + ":") else text

    def run_marker(self) -> str:
        """The run named on the first line of all four caches (asserted to be the same)."""
        firsts = {name: (self.root / "cache" / f"{name}.cache").read_text().partition("\n")[0] for name in MAPS}
        runs = {line.split(":")[1] for line in firsts.values() if line.startswith(MARKER + ":")}
        assert len(runs) == 1 and all(line.startswith(MARKER + ":") for line in firsts.values()), firsts
        return runs.pop()

    def state(self) -> dict:
        """The package's record for this node's one scope (coreweave-state.json)."""
        data = json.loads((self.root / "state" / "coreweave-state.json").read_text())
        (entry,) = data["scopes"].values()
        return entry

    def run_keys(self, *args: str) -> subprocess.CompletedProcess:
        """The keys command as sshd runs it, on this node's caches and local accounts."""
        return subprocess.run(
            [str(self.bin / "nsscache-coreweave-keys"), "--cache", str(self.root / "cache" / "sshkey.cache"),
             "--system-passwd", str(self.local_passwd), *args],
            capture_output=True, text=True, timeout=60,
        )

    def caches(self) -> Dict[str, bytes]:
        """Every cache and index file byte for byte, the run id of the marker
        line replaced by RUN (the same length): what two runs writing the same
        entries agree on."""
        run = self.run_marker().encode()  # "*<run id>"
        same = b"*" + b"R" * (len(run) - 1)
        return {p.name: p.read_bytes().replace(run, same) for p in sorted(self.root.glob("cache/*")) if p.is_file()}

    def files(self) -> Dict[str, bytes]:
        """Every cache and index file and nsscache's timestamps, byte for
        byte (not the package's own run record, which every run updates)."""
        paths = sorted(self.root.glob("cache/*")) + sorted(self.root.glob("state/timestamp-*"))
        return {str(p.relative_to(self.root)): p.read_bytes() for p in paths if p.is_file()}


def keys_of(org, name):
    user = next(u for u in org["Users"] if u[EXT]["sunkPosixUsername"] == name)
    return user[EXT]["sunkSshKeys"]


def expected_caches(org):
    """The caches demo/org.json must produce with the Node's configuration."""
    alice, bob, frank = keys_of(org, "alice"), keys_of(org, "bob"), keys_of(org, "frank")
    return {
        "passwd": (
            "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash\n"
            "bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/zsh\n"
            "erin:x:20005:20005:Erin Garcia:/mnt/home/erin:/bin/bash\n"
            "frank:x:20006:20006:Frank Miller:/mnt/home/frank:/bin/bash\n"
        ),
        "group": "slurm-admins:x:30002:alice\nslurm-users:x:30001:alice,bob,erin,frank\n",
        "shadow": "alice:*:::::::\nbob:*:::::::\nerin:*:::::::\nfrank:*:::::::\n",
        # frank's second key is garbage: dropped, his valid key stays.
        "sshkey": f"alice:{[alice[0], alice[1]]!r}\nbob:{[bob[0]]!r}\nfrank:{[frank[0]]!r}\n",
    }


def assert_stock_update_writes_the_demo_caches(node: Node, demo_org) -> subprocess.CompletedProcess:
    """Run the stock ``nsscache update --full`` on ``node`` (configured for
    an IAM serving demo/org.json); assert exit 0 and the exact caches."""
    result = node.run("nsscache", "update", "--full")
    assert result.returncode == 0, result.stderr
    for name, content in expected_caches(demo_org).items():
        assert node.cache(name) == content, name
    return result
