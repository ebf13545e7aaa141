"""One publisher and nodes in mirror mode (issue 15): the publisher is a
Node whose nsscache.conf also names ``coreweave_publish_dir`` and
``coreweave_publish_key``; ``nsscache-coreweave publish`` writes the bundle
there, a real nginx (support.nginx) serves it, and nodes configured with
``Node.configure_mirror`` read it through the stock ``nsscache update``."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from support.node import Node

__all__ = ["Publisher", "new_key", "allowed_signers"]

NAMESPACE = "nsscache-coreweave"


def new_key(path: Path, comment: str = "publisher") -> Path:
    """A fresh unencrypted ed25519 key pair at ``path`` (mode 0600) and ``path``.pub; returns ``path``."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    path.chmod(0o600)
    return path


def allowed_signers(public_key: Path, out: Path, principal: str = "publisher") -> Path:
    """An allowed_signers file for ``ssh-keygen -Y verify`` trusting ``public_key`` for our namespace."""
    out.write_text(f'{principal} namespaces="{NAMESPACE}" {public_key.read_text().strip()}\n')
    return out


@dataclass
class Publisher:
    """A Node that publishes: ``directory`` is what nginx serves."""

    node: Node
    directory: Path
    key: Path

    @classmethod
    def create(cls, root: Path, bin_dir: Path, base_url: str, extra: str = "") -> Publisher:
        node = Node(root / "publisher", bin_dir)
        directory, key = root / "published", new_key(root / "publisher.key")
        node.configure(base_url, f"coreweave_publish_dir = {directory}\ncoreweave_publish_key = {key}\n" + extra)
        return cls(node, directory, key)

    @property
    def public_key(self) -> Path:
        return Path(str(self.key) + ".pub")

    def publish(self, *args: str, environ=None) -> subprocess.CompletedProcess:
        return self.node.run("nsscache-coreweave", "publish", *args, environ=environ)

    def manifest(self) -> dict:
        return json.loads((self.directory / "manifest.json").read_text())

    def generation(self) -> int:
        return int(self.manifest()["generation"])

    def generation_dir(self, generation: int = 0) -> Path:
        return self.directory / "generations" / str(generation or self.generation())
