"""Render: a policy Directory -> nsscache maps. The only module that
imports nss_cache.maps; it trusts its input (policy validated it).

Every map starts with the run marker (marker.py): a map with no user still
has one entry, so nsscache writes it, and each cache names its run.
"""

from __future__ import annotations

from nss_cache.maps import group, passwd, shadow, sshkey

from . import marker
from .config import SHADOW_FIELDS, ShadowDefaults
from .policy import Directory

__all__ = ["MAPS", "render"]

_EMPTY_FIELDS = ShadowDefaults()  # every shadow field empty: name:*:::::::


def _passwd(directory: Directory, run: str) -> passwd.PasswdMap:
    head = dict(name=marker.NAME, passwd=marker.field(run), uid=marker.NOBODY, gid=marker.NOBODY,
                gecos=marker.GECOS, dir=marker.HOME, shell=marker.SHELL)
    return _fill(passwd.PasswdMap(), passwd.PasswdMapEntry, head, (
        dict(name=a.name, passwd="x", uid=a.uid, gid=a.gid, gecos=a.gecos, dir=a.home, shell=a.shell)
        for a in directory.accounts
    ))


def _group(directory: Directory, run: str) -> group.GroupMap:
    head = dict(name=marker.NAME, passwd=marker.field(run), gid=marker.NOBODY, members=[])
    return _fill(group.GroupMap(), group.GroupMapEntry, head, (
        dict(name=g.name, passwd="x", gid=g.gid, members=list(g.members)) for g in directory.groups
    ))


def _shadow(directory: Directory, run: str, defaults: ShadowDefaults = _EMPTY_FIELDS) -> shadow.ShadowMap:
    # "x" in passwd needs a shadow entry, or PAM's account stage refuses a key
    # login; "*" never matches a password. The configured fields go on every
    # account's line (as ints: nsscache writes None and 0 as an empty field);
    # the marker keeps its own, empty ones.
    fields = {field: getattr(defaults, field) for field in SHADOW_FIELDS}
    head = dict(name=marker.NAME, passwd=marker.field(run))
    return _fill(shadow.ShadowMap(), shadow.ShadowMapEntry, head, (
        dict(name=a.name, passwd="*", **fields) for a in directory.accounts
    ))


def _sshkey(directory: Directory, run: str) -> sshkey.SshkeyMap:
    # nsscache writes a list as its Python repr: name:['k1', 'k2']. Users
    # without a valid key get no line at all.
    head = dict(name=marker.NAME, sshkey=marker.field(run))
    return _fill(sshkey.SshkeyMap(), sshkey.SshkeyMapEntry, head, (
        dict(name=a.name, sshkey=list(a.keys)) for a in directory.accounts if a.keys
    ))


def _fill(result, entry_class, head, rows):
    for row in (head, *rows):
        if not result.Add(entry_class(row)):
            raise ValueError(f"nsscache refused the {result.__class__.__name__} entry for {row['name']!r}")
    return result


MAPS = {"passwd": _passwd, "group": _group, "shadow": _shadow, "sshkey": _sshkey}


def render(map_name: str, directory: Directory, run: str, shadow_defaults: ShadowDefaults = _EMPTY_FIELDS):
    """The nsscache map ``map_name`` (passwd, group, shadow or sshkey), its
    first entry the marker of ``run``; ``shadow_defaults`` fills the shadow
    fields after the password (config.Config.shadow)."""
    if map_name == "shadow":
        return _shadow(directory, run, shadow_defaults)
    return MAPS[map_name](directory, run)
