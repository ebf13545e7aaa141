"""``nsscache-coreweave``: the operator's commands.

    update            run nsscache's update for the configured maps with the
                      source registered explicitly; a truthful exit status
    check             configuration, connectivity and auth, attribute presence,
                      what would be written and every dropped entry
    preview MAP       the lines MAP's cache would get; touches no cache
    status            freshness, counts and last error of each map; with
                      --max-age a check (0 fresh, 1 stale/failed, 2 unknown)
    slurm-sync        Slurm users, accounts and associations from the same
                      users and groups, through sacctmgr (see slurm.py)
    publish           list IAM once and write a signed bundle for nodes in
                      mirror mode (publish.py); --dry-run prints the changes
    convert-config F  the source = coreweave configuration for F, a
                      configuration of CoreWeave's nsscache fork (convert.py);
                      0 all translated, 1 something needs a person, 2 not one

Exit codes: 0 success; 1 a map failed / a problem was found; 2 usage or
configuration error; 75 the directory is unavailable (EX_TEMPFAIL, as nsscache).
"""

from __future__ import annotations

import argparse
import calendar
import io
import json
import logging
import logging.handlers
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from . import __version__, convert, install, marker, redact, run, scim, shrink, slurm, snapshot, state
from . import config as config_mod
from .errors import ConfigError, CoreWeaveError, FetchError, GuardError, PublishError
from .state import RunReport

log = logging.getLogger("nss_cache_coreweave")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75
MAPS = ("passwd", "group", "shadow", "sshkey")
STOCK_LOCKFILE = "/var/run/nsscache"  # what the stock `nsscache` locks
SYSLOG_SOCKET = "/dev/log"
# On every handler _setup_logging installs; learns the tokens once nsscache.conf is read.
_REDACT = redact.TokenFilter()


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
    status = commands.add_parser("status", help="freshness, counts and last error of each map (no token needed)")
    status.add_argument("--max-age", type=float, metavar="SECONDS",
                        help="exit 0 fresh, 1 stale or failed, 2 unknown (never updated)")
    status.add_argument("--json", action="store_true", help="print JSON for machines")
    sync = commands.add_parser("slurm-sync", help="reconcile Slurm users and accounts (sacctmgr) with IAM")
    sync.add_argument("--dry-run", action="store_true", help="print the sacctmgr commands; change nothing")
    sync.add_argument("--prune-accounts", action="store_true",
                      help="remove managed accounts that are no longer wanted and left empty")
    sync.add_argument("--accept-shrink", action="store_true",
                      help="accept, for this run only, removing more than coreweave_max_shrink of the managed users")
    sync.add_argument("--adopt-account", action="append", default=[], metavar="ACCOUNT",
                      help="hand an existing Slurm account over to slurm-sync (repeatable; its extra users and "
                           "limits are reported)")
    publish_command = commands.add_parser("publish", help="list IAM once and write a signed bundle into "
                                          "coreweave_publish_dir for nodes in mirror mode")
    publish_command.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    publish_command.add_argument("--accept-shrink", action="store_true",
                                 help="accept, for this run only, a drop larger than coreweave_max_shrink")
    convert_config = commands.add_parser("convert-config", help="print the configuration for source = coreweave "
                                         "equivalent to one of CoreWeave's nsscache fork (source = scim)")
    convert_config.add_argument("fork_conf", metavar="FORK_CONF", help="the fork's nsscache.conf")
    args = parser.parse_args(argv)
    if args.command == "convert-config":  # reads FORK_CONF, not nsscache.conf
        return _convert_config(args.fork_conf)

    _setup_logging(args.verbose, background=args.command in ("update", "slurm-sync"))
    try:
        conf = _load_nsscache_conf(args.config)
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    _REDACT.learn(conf)
    commands_by_name = {"update": _update, "check": _check, "preview": _preview, "status": _status,
                        "slurm-sync": _slurm_sync, "publish": _publish}
    return commands_by_name[args.command](conf, args)


def _convert_config(path: str) -> int:
    """The converted configuration on stdout, the notes on stderr (never the token)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"{path}: cannot be read: {getattr(e, 'strerror', None) or type(e).__name__}", file=sys.stderr)
        return EXIT_USAGE
    result = convert.convert(text)
    sys.stdout.write(result.text)
    for note in result.notes:
        print(f"{path}: {note}", file=sys.stderr)
    return result.status


def _setup_logging(verbose: bool, *, background: bool) -> None:
    """stderr for people; syslog (daemon facility, nsscache's format) for
    ``update`` and ``slurm-sync`` run from cron or a timer, when stderr is not a terminal."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    if background and not sys.stderr.isatty() and os.path.exists(SYSLOG_SOCKET):
        try:
            handler = logging.handlers.SysLogHandler(SYSLOG_SOCKET, logging.handlers.SysLogHandler.LOG_DAEMON)
            handler.setFormatter(logging.Formatter("nsscache-coreweave[%(process)d]: %(levelname)s %(message)s"))
        except OSError:
            pass  # keep stderr
    # The bearer token never leaves in a log line: nsscache's -v dump of its
    # configuration holds an inline coreweave_token, for one.
    handler.addFilter(_REDACT)
    root.addHandler(handler)
    logging.getLogger("nss_cache_coreweave").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.getLogger("urllib3").setLevel(logging.WARNING)


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
        if getattr(e, "option", None) == "coreweave_token":  # an interpolation error quotes the value
            raise ConfigError(
                f"{conf.config_file}: {type(e).__name__} in coreweave_token (its value is not shown)"
            ) from None
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

    from . import source  # the adapter, only where nsscache runs it

    source.register()
    if args.accept_shrink:
        os.environ[shrink.ACCEPT_SHRINK_ENV] = "1"  # read by the source in this process only
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
        run.finish()  # record what nsscache wrote
    stale = [m for m in conf.maps if _update_stamp(conf, m) in (None, before[m])]
    if stale:
        # nsscache's own status can be 0 when an earlier map failed.
        log.error("not updated this run: %s", ", ".join(stale))
    if status in (EXIT_TEMPFAIL, updater.ERR_LOCK):
        return status
    # nsscache counts failed maps; ours is 1 for "some map was not updated".
    return EXIT_FAILED if stale or status else EXIT_OK


def _update_stamp(conf, map_name: str):
    try:
        return os.stat(os.path.join(conf.timestamp_dir, f"timestamp-{map_name}-update")).st_mtime_ns
    except OSError:
        return None


def _exit_status(error: CoreWeaveError) -> int:
    """The documented exit code for one of our errors."""
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    busy = isinstance(error, PublishError) and error.busy
    return EXIT_TEMPFAIL if isinstance(error, FetchError) or busy else EXIT_FAILED


def _check(conf, args) -> int:
    try:
        config = config_mod.parse(_coreweave_options(conf))
    except ConfigError as e:
        print(f"configuration: {e}")
        return EXIT_USAGE
    coreweave_maps = [m for m in conf.maps if conf.options[m].source.get("name") == "coreweave"]
    print(f"configuration: {conf.config_file}: maps {', '.join(coreweave_maps)} use source coreweave")
    if config.mirror is not None:
        return _check_mirror(config)
    print(f"directory: {config.server.base_url} ({config.server.pagination} pagination, "
          f"{config.server.page_size} per page)")
    for warning in config.warnings:
        print(f"warning: {warning}")
    try:
        snap = snapshot.take(config, everyone=True)  # every user, for the attribute report
    except FetchError as e:
        print(f"directory unavailable: {e}")
        return EXIT_TEMPFAIL
    except CoreWeaveError as e:
        print(f"listing refused: {e}")
        return EXIT_FAILED
    print(f"listed: {len(snap.users)} users, {len(snap.groups)} groups (token accepted)")
    problems = _attribute_report(config, snap) + _policy_report(config, snap) + _registration_report()
    status = EXIT_FAILED if problems else EXIT_OK
    if args.sample:
        status = max(status, _print_sample(config))
    return status


def _check_mirror(config) -> int:
    """Mirror mode's check: the mirror, the bundle it serves (verified, nothing kept) and what the maps would get."""
    from . import mirror, policy, sshsig

    assert config.mirror is not None
    keys = ", ".join(sshsig.fingerprint(k) for k in config.mirror.public_keys)
    print(f"mirror: {config.mirror.url} (trusted keys: {keys}; max age {config.mirror.max_age:g} s)")
    for warning in config.warnings:
        print(f"warning: {warning}")
    try:
        accepted = mirror.take(config, scim.Stats())
    except FetchError as e:
        print(f"mirror unavailable: {e}")
        return EXIT_TEMPFAIL
    except CoreWeaveError as e:
        print(f"bundle refused: {e}")
        return EXIT_FAILED
    manifest = accepted.manifest
    print(f"bundle: generation {manifest.generation}, published {_iso(manifest.created)} "
          f"({time.time() - manifest.created:.0f} s ago): {manifest.users} users, {manifest.groups} groups")
    problems = _decided_report(config, policy.narrow(accepted.published.directory, config))
    return EXIT_FAILED if problems + _registration_report() else EXIT_OK


def _registration_report() -> int:
    """Whether the nsscache command finds the source (1: a problem, printed)."""
    registration = install.registration_problem()
    if registration:
        print(f"problem: {registration}")
        return 1
    print("registration: the nsscache command finds source coreweave")
    return 0


def _policy_report(config, snap) -> int:
    """What the maps would get: missing groups, the shrink guard, the counts
    and every dropped entry. Returns the number of problems."""
    return _decided_report(config, run.decide(config, snap))


def _decided_report(config, decided) -> int:
    problems = 0
    for name in decided.missing_groups:
        print(f"problem: group {name!r} in coreweave_groups does not exist in the directory")
        problems += 1
    refusal = run.shrink_problem(config, decided)
    if refusal is not None:
        print(f"problem: {refusal}")
        problems += 1
    keys = sum(len(a.keys) for a in decided.accounts)
    print(f"would write: {len(decided.accounts)} users, {len(decided.groups)} groups, {keys} SSH keys")
    for warning in decided.warnings:
        print(f"warning: {warning}")
    for drop in decided.drops:
        print(str(drop))
    return problems


def _attribute_report(config, snap) -> int:
    """How many users/groups carry each configured attribute. An attribute
    no resource carries is most likely misnamed."""
    problems = 0
    rows = [("users", snap.users, field, getattr(config.users, field)) for field in
            ("name", "uid", "gid", "ssh_keys", "home", "shell", "gecos")]
    rows += [("groups", snap.groups, field, getattr(config.groups, field)) for field in ("name", "gid")]
    for kind, records, field, paths in rows:
        present = sum(1 for r in records if getattr(r, field) is not None)
        where = " or ".join(str(p) for p in paths)
        print(f"attribute {kind}.{field} ({where}): present on {present} of {len(records)}")
        if records and present == 0 and field in ("name", "uid", "gid"):
            print(f"problem: no {kind[:-1]} carries {where}: check the attribute name (see check --sample)")
            problems += 1
    return problems


def _print_sample(config) -> int:
    """One raw User and Group, to read the tenant's real attribute names.
    Fetched as the listing's pages are (retries, no redirect, size cap,
    deadline); a sample that cannot be read gets the listing's exit status."""
    status = EXIT_OK
    server = config.server
    with scim.new_session(server) as session:
        for kind, url in (("User", server.users_url), ("Group", server.groups_url)):
            try:
                page = scim.fetch_page(session, server, url, f"{kind}s", {"startIndex": 1, "count": 1})
            except CoreWeaveError as e:
                print(f"sample {kind}: cannot be read: {e}")
                status = max(status, _exit_status(e))
                continue
            resources = page.get("Resources")
            print(f"sample {kind}:")
            print(json.dumps(resources[0] if isinstance(resources, list) and resources else None,
                             indent=2, sort_keys=True))
    return status


def _preview(conf, args) -> int:
    from nss_cache.caches import cache_factory

    from .render import render

    try:
        config = config_mod.parse(_coreweave_options(conf, args.map))
        decided, shadow = _preview_directory(config)
        nss_map = render(args.map, decided, marker.new_run(time.time()), shadow)
    except CoreWeaveError as e:
        log.error("%s", e)
        return _exit_status(e)
    # nsscache's own writer formats the lines, so the preview cannot drift.
    writer = cache_factory.Create(dict(conf.options[args.map].cache), args.map)
    buffer = io.BytesIO()
    for entry in nss_map:
        writer._WriteData(buffer, entry)
    sys.stdout.write(buffer.getvalue().decode())
    return EXIT_OK


def _preview_directory(config):
    """What a run would hand nsscache now, and the shadow fields (nothing kept, no guard)."""
    if config.mirror is None:
        return run.decide(config, snapshot.take(config)), config.shadow
    from . import mirror, policy

    accepted = mirror.take(config, scim.Stats())
    return policy.narrow(accepted.published.directory, config), accepted.published.shadow


@dataclass(frozen=True)
class MapStatus:
    """One map in ``status``: its verdict, nsscache's last update of it, and its cache."""

    status: str  # "fresh", "stale", "failed" (the last run did not write it), "unknown" (never updated)
    updated: Optional[int]  # when nsscache last wrote it (its timestamp-<map>-update)
    age: Optional[float]  # seconds since
    entries: Optional[int]  # lines of the cache, the run marker not counted; None: unreadable
    run: Optional[str]  # the run named by the marker on the cache's first line
    missed_last_run: bool
    cache: str  # the cache's path


@dataclass(frozen=True)
class Status:
    """What ``status`` reports (``--json``: these fields as they are)."""

    status: str  # the worst of the maps' verdicts, "failed" as well when a run failed or the caches disagree
    checked_at: float
    max_age: Optional[float]
    maps: Dict[str, MapStatus]
    exit_status: int
    caches_agree: bool  # every cache this package wrote is from one run
    last_run: Optional[RunReport]
    last_success: Optional[float]
    registration_problem: Optional[str]
    shrink_refusals: int
    slurm_sync: Optional[slurm.SlurmRun]
    last_publish: Optional[RunReport] = None  # on a publisher (coreweave_publish_dir set)


STATUS_EXIT = {"fresh": 0, "stale": 1, "failed": 1, "unknown": 2}  # status --max-age is a check


def _status(conf, args) -> int:
    """Per map: last update (nsscache's timestamp), age, entries and the run
    named on the cache's first line; the last run's outcome, what nsscache
    wrote, drops and error (from the state file)."""
    try:
        config = config_mod.parse(_coreweave_options(conf), need_token=False)
    except ConfigError as e:
        print(f"configuration: {e}", file=sys.stderr)
        return EXIT_USAGE
    found = _status_report(conf, config, args.max_age)
    if args.json:
        print(json.dumps(asdict(found), indent=2, sort_keys=True))
    else:
        _print_status(found, config)
    return found.exit_status


def _status_report(conf, config, max_age: Optional[float]) -> Status:
    now = time.time()
    record = state.read(config.state_dir, run.state_scope(config))
    # A map section with its own coreweave_groups is recorded under its own scope.
    last_runs = {name: _record_of(conf, name).last_run for name in conf.maps}
    maps = {name: _map_status(conf, name, now, last_runs[name], max_age) for name in conf.maps}
    named = {name: m.run for name, m in maps.items() if m.updated is not None and _ours(conf, name)}
    # What the keys command insists on: every cache from one run.
    caches_agree = len(set(named.values())) <= 1 and None not in named.values()
    # The classic breakage: installed for another Python than nsscache's.
    registration = install.registration_problem()
    verdicts = {m.status for m in maps.values()}
    if record.last_run is None:
        verdicts.add("unknown")
    if any(r.outcome != "ok" for r in last_runs.values() if r) or not caches_agree or registration:
        verdicts.add("failed")
    overall = next((v for v in ("unknown", "failed", "stale") if v in verdicts), "fresh")
    return Status(
        status=overall, checked_at=now, max_age=max_age, maps=maps,
        exit_status=STATUS_EXIT[overall] if max_age is not None else EXIT_OK, caches_agree=caches_agree,
        last_run=record.last_run, last_success=record.last_success, registration_problem=registration,
        shrink_refusals=record.shrink_refusals, slurm_sync=slurm.last_run_of(config.state_dir),
        last_publish=_last_publish(config),
    )


def _last_publish(config) -> Optional[RunReport]:
    if not config.publish.directory or config.mirror is not None:
        return None
    from . import publish

    return state.read(config.state_dir, publish.scope(config)).last_run


def _ours(conf, name: str) -> bool:
    return conf.options[name].source.get("name") == "coreweave"


def _record_of(conf, name: str) -> state.ScopeRecord:
    """The state file's record for the scope of map ``name`` (empty when it has none)."""
    if not _ours(conf, name):
        return state.ScopeRecord()
    try:
        config = config_mod.parse(conf.options[name].source, need_token=False)
    except ConfigError:
        return state.ScopeRecord()
    return state.read(config.state_dir, run.state_scope(config))


def _print_status(found: Status, config) -> None:
    for name, m in found.maps.items():
        when = f"updated {_iso(m.updated)} ({m.age:.0f} s ago)" if m.updated is not None else "never updated"
        note = "  not updated by the last run" if m.missed_last_run else ""
        print(f"{name:<7} {m.status:<7} {when}, {m.entries} entries, run {m.run or '-'}{note}")
    if not found.caches_agree:
        print("problem: the caches are not from one run (or lack the run marker): the keys command serves no key "
              "until a run writes them all (nsscache-coreweave update)")
    _print_last_run(found.last_run, config)
    if found.registration_problem:
        print(f"problem: {found.registration_problem}")
    _print_slurm_sync(found.slurm_sync)
    _print_last_publish(found.last_publish)
    print(f"status: {found.status}")


def _print_last_publish(last: Optional[RunReport]) -> None:
    if last is None:
        return
    if last.outcome == "ok":
        print(f"publish: last {_iso(last.started)} ok: generation {last.generation}, {last.users} users, "
              f"{last.groups} groups, {last.keys} SSH keys")
    else:
        print(f"publish: last {_iso(last.started)} {last.outcome}: {last.error_kind}: {last.error}")


def _print_last_run(last_run: Optional[RunReport], config) -> None:
    if last_run is None:
        print(f"last run: none recorded in {config.state_dir}")
        return
    print(f"last run: {_iso(last_run.started)} {last_run.outcome} in {last_run.duration} s: {last_run.users} users, "
          f"{last_run.groups} groups, {last_run.keys} SSH keys; "
          f"nsscache wrote: {', '.join(last_run.maps_written) or 'none'}")
    if last_run.fetch:
        print("users fetched: " + ("only the members of coreweave_groups, by id" if last_run.fetch == "members"
                                   else "every user of the directory"))
    if last_run.mirror:
        bundle = (f"generation {last_run.generation}, published {_iso(last_run.published)} "
                  f"({time.time() - last_run.published:.0f} s ago)" if last_run.generation else "no bundle accepted")
        print(f"mirror: {last_run.mirror}: {bundle}")
    for reason, count in last_run.drops.items():
        print(f"dropped {reason}: {count}")
    if last_run.outcome != "ok":
        print(f"last error: {last_run.error_kind}: {last_run.error}")


def _print_slurm_sync(last: Optional[slurm.SlurmRun]) -> None:
    """The last applied slurm-sync run, when this host runs it."""
    if last is None:
        return
    print(f"slurm-sync: last applied {_iso(last.time)}: {last.operations} sacctmgr call(s), "
          f"{last.managed_users} managed users, {last.conflicts} conflict(s)")
    if last.kept_users:
        print(f"slurm-sync: last association kept (not created by {slurm.MARKER}) for {len(last.kept_users)} "
              f"user(s): {', '.join(last.kept_users)}")


def _map_status(conf, name: str, now: float, last_run: Optional[RunReport], max_age: Optional[float]) -> MapStatus:
    updated = _read_timestamp(os.path.join(conf.timestamp_dir, f"timestamp-{name}-update"))
    cache = conf.options[name].cache
    path = os.path.join(cache.get("dir", "/etc"), f"{name}.{cache.get('cache_filename_suffix', 'cache')}")
    missed = _missed(name, last_run)
    if updated is None:
        status = "unknown"
    elif missed:
        status = "failed"
    elif max_age is not None and now - updated > max_age:
        status = "stale"
    else:
        status = "fresh"
    lines, named = _cache_lines(path)
    return MapStatus(status=status, updated=updated, age=None if updated is None else round(now - updated, 1),
                     entries=None if lines is None else lines - (named is not None), run=named,
                     missed_last_run=missed, cache=path)


def _missed(name: str, last_run: Optional[RunReport]) -> bool:
    """Whether the last run of the map's scope left map ``name`` unwritten."""
    if last_run is None:
        return False
    if last_run.outcome == "ok" and not last_run.maps_written:
        return False  # a record of an earlier version of this package names no map: its outcome counts
    return name not in last_run.maps_written


def _read_timestamp(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as f:
            return int(calendar.timegm(time.strptime(f.read().strip(), "%Y-%m-%dT%H:%M:%SZ")))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _cache_lines(path: str) -> Tuple[Optional[int], Optional[str]]:
    """(lines, run named by the marker on the first line) of a cache; (None, None) if unreadable."""
    try:
        with open(path, "rb") as f:
            named = marker.run_of(f.readline().rstrip(b"\n"))
            f.seek(0)
            return sum(1 for _ in f), named
    except OSError:
        return None, None


def _iso(epoch) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if isinstance(epoch, (int, float)) else "-"


def _slurm_sync(conf, args) -> int:
    """One listing of IAM, the maps' policy, then slurm.sync. Nothing changes in
    Slurm unless the listing is complete and the guards pass."""
    try:
        config = config_mod.parse(_coreweave_options(conf))
        if config.mirror is not None:
            raise ConfigError("slurm-sync reads IAM: run it where coreweave_base_url is set, not in mirror mode")
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    try:
        decided = run.fetch_and_decide(config)
    except CoreWeaveError as e:
        problem = "directory unavailable" if isinstance(e, FetchError) else "listing refused"
        log.error("coreweave: %s, Slurm left unchanged: %s", problem, e)
        return _exit_status(e)
    if args.accept_shrink:
        os.environ[shrink.ACCEPT_SHRINK_ENV] = "1"  # as update --accept-shrink: this process only (not sacctmgr's)
    try:
        result = slurm.sync(
            decided, config, dry_run=args.dry_run, prune_accounts=args.prune_accounts,
            accept_shrink=shrink.accepted(), adopt_accounts=args.adopt_account, out=sys.stdout,
        )
    except slurm.SlurmUnavailable as e:
        log.error("coreweave: slurm: %s", e)
        return EXIT_TEMPFAIL
    except (slurm.SlurmError, GuardError) as e:
        log.error("coreweave: slurm: %s", e)
        return EXIT_FAILED
    except OSError as e:
        log.error("coreweave: slurm: cannot record state in %s: %s", config.state_dir, e.strerror or e)
        return EXIT_FAILED
    return EXIT_FAILED if result.conflicts else EXIT_OK


def _publish(conf, args) -> int:
    """List IAM, decide, guard, and write the next signed generation (or, with --dry-run, say what it would change)."""
    from . import publish

    try:
        config = config_mod.parse(_coreweave_options(conf))
        for warning in config.warnings:
            log.warning("coreweave: %s", warning)
        result = publish.publish(config, dry_run=args.dry_run, accept_shrink=args.accept_shrink or shrink.accepted())
    except CoreWeaveError as e:
        log.error("coreweave: publish %s, nothing written: %s", "refused" if isinstance(e, GuardError) else "failed", e)
        return _exit_status(e)
    m = result.manifest
    changes = "; ".join(f"{c.map_name} +{c.added} -{c.removed}" for c in result.changes)
    verb = "published" if result.written else "would publish"
    print(f"{verb} generation {m.generation}: {m.users} users, {m.groups} groups, {m.keys} SSH keys; {changes}")
    if result.pruned:
        print(f"removed generations {', '.join(map(str, result.pruned))} (coreweave_publish_keep "
              f"{config.publish.keep})")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
