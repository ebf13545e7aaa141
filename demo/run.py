"""The demo: a CoreWeave-IAM-like SCIM server on loopback, the real
``nsscache update --full`` with ``source = coreweave``, and the caches it wrote.

Run by ``make demo`` with the project's virtualenv (nsscache 0.49 and this
package installed non-editably, so the stock ``nsscache`` script finds the
source through the package's registration hook).
"""

import os
import pty
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo" / "out"
BIN = Path(sys.executable).parent


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    for sub in ("cache", "state"):
        (OUT / sub).mkdir(parents=True)
    token = OUT / "token"
    token.write_text(secrets.token_urlsafe(24) + "\n")
    token.chmod(0o600)
    port_file = OUT / "port"

    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "fakeiam.py"), "--org", str(ROOT / "demo" / "org.json"),
         "--token-file", str(token), "--port", "0", "--port-file", str(port_file)],
        stderr=subprocess.DEVNULL,
    )
    try:
        port = _wait_for(port_file, server)
        base_url = f"http://127.0.0.1:{port}/scim/cw-demo"
        conf = OUT / "nsscache.conf"
        template = (ROOT / "demo" / "nsscache.conf.in").read_text()
        conf.write_text(template.replace("@BASE_URL@", base_url).replace("@OUT@", str(OUT)))
        print(f"$ nsscache -c {conf.relative_to(ROOT)} update --full   # IAM at {base_url}")
        # nsscache logs to syslog unless stdin is a terminal: give it one so
        # its warnings show here.
        primary, secondary = pty.openpty()
        status = subprocess.run([str(BIN / "nsscache"), "-c", str(conf), "update", "--full"],
                                stdin=secondary).returncode
        os.close(primary)
        os.close(secondary)
        print(f"nsscache exited with status {status}\n")
        for name in ("passwd", "group", "shadow", "sshkey"):
            path = OUT / "cache" / f"{name}.cache"
            print(f"==> {path.relative_to(ROOT)} <==")
            print(path.read_text() if path.exists() else "(not written)\n")
        return status
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for(port_file: Path, server: subprocess.Popen, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        if server.poll() is not None:
            sys.exit(f"the demo SCIM server exited with status {server.returncode}")
        time.sleep(0.05)
    sys.exit("the demo SCIM server did not start within 15 s")


if __name__ == "__main__":
    sys.exit(main())
