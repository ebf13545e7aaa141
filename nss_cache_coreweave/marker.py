"""The run marker: the first line of every cache names the run that wrote it.

    passwd.cache  nsscache-coreweave:*<run>:65534:65534:run marker, not an account:/nonexistent:/usr/sbin/nologin
    group.cache   nsscache-coreweave:*<run>:65534:
    shadow.cache  nsscache-coreweave:*<run>:::::::
    sshkey.cache  nsscache-coreweave:*<run>

Two reasons. nsscache refuses to write a map with no entry (``EmptyMap``, unless
run with ``--force-write``), so without the marker a run that removes the last
user, or the last SSH key, of a map would leave the old cache, and its keys, in
place. And the keys command serves a user's keys only when sshkey.cache and
passwd.cache name the same run, so an sshkey cache that was not rewritten
with the passwd cache (a failed map, a copy restored by hand) serves nobody.

The entry is locked (``*`` in the password field), uid and gid are nobody's
(``/etc/passwd``'s own ``nobody`` wins in NSS), the shell is nologin, and policy
never lets an IAM user or group take the name. Standard library only: the keys
command imports it.
"""

import os
import time

__all__ = ["NAME", "NOBODY", "new_run", "field", "run_of"]

NAME = "nsscache-coreweave"
NOBODY = 65534
GECOS = "run marker, not an account"
HOME = "/nonexistent"
SHELL = "/usr/sbin/nologin"


def new_run(started: float) -> str:
    """A run id: when the run started (UTC) and 48 random bits, e.g. ``20261202T194608Z-3f9ac2e1b7d0``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + "-" + os.urandom(6).hex()


def field(run: str) -> str:
    """The marker's password field (the value, for sshkey): locked, naming ``run``."""
    return "*" + run


def run_of(line: bytes):
    """The run id a cache line of the marker names, or None when ``line`` is not the marker.

    >>> run_of(b"nsscache-coreweave:*20261202T194608Z-3f9ac2e1b7d0:::::::")
    '20261202T194608Z-3f9ac2e1b7d0'
    """
    fields = line.split(b":")
    if len(fields) < 2 or fields[0] != NAME.encode() or not fields[1].startswith(b"*") or len(fields[1]) < 2:
        return None
    try:
        return fields[1][1:].decode("ascii")
    except UnicodeDecodeError:
        return None
