"""``nsscache-coreweave``: the operator's commands.

    update            run nsscache's update for the configured maps with the
                      source registered explicitly; a truthful exit status
    check             configuration, connectivity and auth, attribute presence,
                      what would be written and every dropped entry
    preview MAP       the lines MAP's cache would get; touches no cache

Exit codes: 0 success; 1 a map failed / a problem was found; 2 usage or
configuration error; 75 the directory is unavailable (EX_TEMPFAIL, as nsscache).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from typing import List, Optional

from . import __version__
from . import config as config_mod
from . import policy, scim, snapshot
from .errors import ConfigError, CoreWeaveError, FetchError, GuardError
from .policy import ACCEPT_SHRINK_ENV
from .source import guard, register

log = logging.getLogger("nss_cache_coreweave")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75
MAPS = ("passwd", "group", "shadow", "sshkey")
STOCK_LOCKFILE = "/var/run/nsscache"  # what the stock `nsscache` locks


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="nsscache-coreweave", description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", help="nsscache.conf (default: $NSSCACHE_CONFIG or /etc/nsscache.conf)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request (URL and status only)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    update = commands.add_parser("update", help="update the caches (always a full update)")
    update.add_argument("-f", "--full", action="store_true", help="accepted for familiarity: every update is full")
    update.add_argument(
        "--accept-shrink", action="store_true",
        help="accept, for this run only, a drop in users or groups larger than coreweave_max_shrink",
    )
    check = commands.add_parser("check", help="check configuration, directory and data")
    check.add_argument("--sample", action="store_true", help="also print one raw User and one raw Group")
    preview = commands.add_parser("preview", help="print the lines a map's cache would get")
    preview.add_argument("map", choices=MAPS)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("urllib3").setLevel(logging.WARNING)
    try:
        conf = _load_nsscache_conf(args.config)
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    return {"update": _update, "check": _check, "preview": _preview}[args.command](conf, args)


def _load_nsscache_conf(path: Optional[str]):
    from nss_cache import config as nss_config

    conf = nss_config.Config(os.environ)
    if path:
        conf.config_file = path
    if not os.path.isfile(conf.config_file):
        raise ConfigError(f"{conf.config_file}: no such file (use -c)")
    try:
        nss_config.LoadConfig(conf)
    except Exception as e:  # configparser's errors: missing [DEFAULT] keys, bad '%'
        raise ConfigError(f"{conf.config_file}: {type(e).__name__}: {e}") from None
    return conf


def _coreweave_options(conf, map_name: Optional[str] = None) -> dict:
    names = [map_name] if map_name else list(conf.maps)
    for name in names:
        if name in conf.options and conf.options[name].source.get("name") == "coreweave":
            return conf.options[name].source
    raise ConfigError(f"{conf.config_file}: no map {'%s ' % map_name if map_name else ''}uses source = coreweave")


def _update(conf, args) -> int:
    from nss_cache import command, error

    register()
    if args.accept_shrink:
        os.environ[ACCEPT_SHRINK_ENV] = "1"  # read by the source in this process only
    if conf.lockfile is None:
        conf.lockfile = STOCK_LOCKFILE  # never run beside the stock nsscache
    before = {m: _update_stamp(conf, m) for m in conf.maps}
    updater = command.Update()
    try:
        status = updater.UpdateMaps(conf, incremental=False)
    except error.SourceUnavailable as e:
        log.error("directory unavailable, remaining maps skipped: %s", e)
        status = EXIT_TEMPFAIL
    except Exception as e:
        log.error("update failed: %s: %s", type(e).__name__, e)
        status = EXIT_FAILED
    finally:
        updater._Unlock()
    if status == updater.ERR_LOCK:
        return status
    stale = [m for m in conf.maps if _update_stamp(conf, m) in (None, before[m])]
    if stale:
        # nsscache's own status can be 0 when an earlier map failed.
        log.error("not updated this run: %s", ", ".join(stale))
        return status or EXIT_FAILED
    return status


def _update_stamp(conf, map_name: str):
    try:
        return os.stat(os.path.join(conf.timestamp_dir, f"timestamp-{map_name}-update")).st_mtime_ns
    except OSError:
        return None


def _fetch(conf, map_name=None):
    config = config_mod.parse(_coreweave_options(conf, map_name))
    snap = snapshot.take(config)
    return config, snap, policy.decide(snap, config)


def _check(conf, args) -> int:
    try:
        config = config_mod.parse(_coreweave_options(conf))
    except ConfigError as e:
        print(f"configuration: {e}")
        return EXIT_USAGE
    out = sys.stdout
    coreweave_maps = [m for m in conf.maps if conf.options[m].source.get("name") == "coreweave"]
    print(f"configuration: {conf.config_file}: maps {', '.join(coreweave_maps)} use source coreweave", file=out)
    print(f"directory: {config.server.base_url} ({config.server.pagination} pagination, {config.server.page_size} per page)", file=out)
    for warning in config.warnings:
        print(f"warning: {warning}", file=out)
    try:
        snap = snapshot.take(config, everyone=True)  # every user, for the attribute report
    except FetchError as e:
        print(f"directory unavailable: {e}", file=out)
        return EXIT_TEMPFAIL
    except CoreWeaveError as e:
        print(f"listing refused: {e}", file=out)
        return EXIT_FAILED
    print(f"listed: {len(snap.users)} users, {len(snap.groups)} groups (token accepted)", file=out)
    problems = _attribute_report(config, snap, out)
    decided = policy.decide(snap, config)
    for name in decided.missing_groups:
        print(f"problem: group {name!r} in coreweave_groups does not exist in the directory", file=out)
        problems += 1
    try:
        guard(config, decided, accept_shrink=False, record=False)
    except GuardError as e:
        print(f"problem: {e}", file=out)
        problems += 1
    keys = sum(len(a.keys) for a in decided.accounts)
    print(f"would write: {len(decided.accounts)} users, {len(decided.groups)} groups, {keys} SSH keys", file=out)
    for drop in decided.drops:
        print(str(drop), file=out)
    if args.sample:
        _print_sample(config, out)
    return EXIT_FAILED if problems else EXIT_OK


def _attribute_report(config, snap, out) -> int:
    """How many users/groups carry each configured attribute. An attribute
    no resource carries is most likely misnamed."""
    problems = 0
    rows = [("users", snap.users, field, getattr(config.users, field)) for field in
            ("name", "uid", "gid", "ssh_keys", "home", "shell", "gecos")]
    rows += [("groups", snap.groups, field, getattr(config.groups, field)) for field in ("name", "gid")]
    for kind, records, field, paths in rows:
        present = sum(1 for r in records if getattr(r, field) is not None)
        where = " or ".join(str(p) for p in paths)
        print(f"attribute {kind}.{field} ({where}): present on {present} of {len(records)}", file=out)
        if records and present == 0 and field in ("name", "uid", "gid"):
            print(f"problem: no {kind[:-1]} carries {where}: check the attribute name (see check --sample)", file=out)
            problems += 1
    return problems


def _print_sample(config, out) -> None:
    session = scim.new_session(config.server)
    with session:
        for kind, url in (("User", config.server.users_url), ("Group", config.server.groups_url)):
            response = session.get(url, params={"startIndex": 1, "count": 1}, timeout=config.server.timeout)
            resources = response.json().get("Resources") or [None]
            print(f"sample {kind}:", file=out)
            print(json.dumps(resources[0], indent=2, sort_keys=True), file=out)


def _preview(conf, args) -> int:
    from nss_cache.caches import cache_factory

    from .render import render

    try:
        _, _, decided = _fetch(conf, args.map)
        nss_map = render(args.map, decided)
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    except FetchError as e:
        log.error("%s", e)
        return EXIT_TEMPFAIL
    except CoreWeaveError as e:
        log.error("%s", e)
        return EXIT_FAILED
    # nsscache's own writer formats the lines, so the preview cannot drift.
    writer = cache_factory.Create(dict(conf.options[args.map].cache), args.map)
    buffer = io.BytesIO()
    for entry in nss_map:
        writer._WriteData(buffer, entry)
    sys.stdout.write(buffer.getvalue().decode())
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
