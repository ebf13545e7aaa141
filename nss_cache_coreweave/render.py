"""Render: a policy Directory -> nsscache maps. The only module that
imports nss_cache.maps; it trusts its input (policy validated it)."""

from __future__ import annotations

from nss_cache.maps import group, passwd, shadow, sshkey

from .policy import Directory

__all__ = ["MAPS", "render"]


def _passwd(directory: Directory) -> passwd.PasswdMap:
    return _fill(passwd.PasswdMap(), passwd.PasswdMapEntry, (
        dict(name=a.name, passwd="x", uid=a.uid, gid=a.gid, gecos=a.gecos, dir=a.home, shell=a.shell)
        for a in directory.accounts
    ))


def _group(directory: Directory) -> group.GroupMap:
    return _fill(group.GroupMap(), group.GroupMapEntry, (
        dict(name=g.name, passwd="x", gid=g.gid, members=list(g.members)) for g in directory.groups
    ))


def _shadow(directory: Directory) -> shadow.ShadowMap:
    # "x" in passwd needs a shadow entry, or PAM's account stage refuses a key
    # login; "*" never matches a password.
    return _fill(shadow.ShadowMap(), shadow.ShadowMapEntry, (
        dict(name=a.name, passwd="*") for a in directory.accounts
    ))


def _sshkey(directory: Directory) -> sshkey.SshkeyMap:
    # nsscache writes a list as its Python repr: name:['k1', 'k2']. Users
    # without a valid key get no line at all.
    return _fill(sshkey.SshkeyMap(), sshkey.SshkeyMapEntry, (
        dict(name=a.name, sshkey=list(a.keys)) for a in directory.accounts if a.keys
    ))


def _fill(result, entry_class, rows):
    for row in rows:
        if not result.Add(entry_class(row)):
            raise ValueError(f"nsscache refused the {result.__class__.__name__} entry for {row['name']!r}")
    return result


MAPS = {"passwd": _passwd, "group": _group, "shadow": _shadow, "sshkey": _sshkey}


def render(map_name: str, directory: Directory):
    """The nsscache map ``map_name`` (passwd, group, shadow or sshkey)."""
    return MAPS[map_name](directory)
