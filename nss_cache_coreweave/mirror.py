"""Mirror mode: a node reads the bundle ``publish`` wrote (bundle.py) instead
of listing IAM (docs/many-nodes.md).

One run: GET ``manifest.json``, conditional on the bundle this node last
accepted (an unchanged bundle costs that one request); GET the signature of
the generation it names; verify it with ``coreweave_mirror_public_key``;
refuse a rollback, a reused generation number, a stale bundle; GET only the
maps whose sha256 the node does not hold, checking each; read the maps back
(bundle.read_bundle). Nothing here trusts the transport: the signed manifest
decides.

The node keeps the last accepted bundle in ``<state_dir>/coreweave-mirror/``
(``keep``, once the run passed the shrink guard): what a 304 re-uses and the
rollback baseline. Its maps are stored by sha256, written before the record
that names them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, Mapping, Optional, Tuple, Union

import requests
import urllib3

from . import bundle, scim, sshsig, state
from .bundle import MANIFEST, SIGNATURE, Manifest, Published
from .config import Config, Mirror
from .errors import BundleError, BundleReason, Failure, FetchError, FetchReason

__all__ = ["Accepted", "take", "keep", "store_dir", "FUTURE_SKEW"]

log = logging.getLogger("nss_cache_coreweave")

STORE = "coreweave-mirror"
RECORD = "accepted.json"
FUTURE_SKEW = 300.0  # seconds a bundle may be dated ahead of this node's clock
SMALL_FILE = 1 << 20  # bytes: the most a manifest or a signature may take
ERROR_BODY = 4096  # bytes of an error answer read, for its detail
_CLOCK = scim.Clock()
_VALIDATOR = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,255}", re.ASCII)


@dataclass(frozen=True)
class Accepted:
    """A verified bundle: what the run's maps are cut from, and what the node
    keeps once the run is accepted."""

    url: str
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    maps: Mapping[str, bytes]  # map name -> its file
    published: Published
    etag: str = ""  # of manifest.json, for the next conditional request
    last_modified: str = ""
    not_modified: bool = False  # the server answered 304: nothing else was fetched
    downloaded: Tuple[str, ...] = ()  # the maps fetched in this run


@dataclass(frozen=True)
class _Stored:
    """The last accepted bundle as this node keeps it."""

    manifest_bytes: bytes
    signature: bytes
    generation: int
    etag: str
    last_modified: str
    blobs: Dict[str, bytes]  # sha256 -> a map file this node holds


def store_dir(config: Config) -> str:
    """Where this node keeps the bundle of its mirror (one per URL)."""
    assert config.mirror is not None
    return os.path.join(config.state_dir, STORE, hashlib.sha256(config.mirror.url.encode()).hexdigest()[:16])


def take(config: Config, stats: scim.Stats, *, clock: scim.Clock = _CLOCK,
         now: Optional[float] = None) -> Accepted:
    """The mirror's current bundle, verified. :raises BundleError: refused;
    FetchError: the mirror cannot be reached"""
    mirror = config.mirror
    assert mirror is not None, "take() is for mirror mode"
    now = time.time() if now is None else now
    stored = _load(config)
    with _Client.of(config, stats, clock) as client:
        conditional = _validators(stored)
        status, headers, manifest_bytes = client.get(MANIFEST, SMALL_FILE, conditional)
        if status == 304 and stored is not None:
            manifest_bytes, signature = stored.manifest_bytes, stored.signature
            etag, modified = stored.etag, stored.last_modified
        else:
            generation = bundle.parse_manifest(manifest_bytes).generation
            signature = client.get(f"{bundle.generation_dir(generation)}/{SIGNATURE}", SMALL_FILE)[2]
            etag, modified = _validator(headers.get("ETag")), _validator(headers.get("Last-Modified"))
        manifest = _verified(manifest_bytes, signature, mirror)
        _check_generation(manifest, manifest_bytes, stored, now, mirror.max_age)
        maps, downloaded = _maps(client, manifest, stored.blobs if stored else {})
    return Accepted(mirror.url, manifest, manifest_bytes, signature, maps, bundle.read_bundle(manifest, maps),
                    etag, modified, status == 304, downloaded)


def _verified(manifest_bytes: bytes, signature: bytes, mirror: Mirror) -> Manifest:
    try:
        sshsig.verify(manifest_bytes, signature, mirror.public_keys)
    except sshsig.SignatureError as e:
        raise BundleError("bundle " + SIGNATURE, BundleReason.BAD_SIGNATURE, detail=e.reason.value) from None
    return bundle.parse_manifest(manifest_bytes)


def _check_generation(manifest: Manifest, manifest_bytes: bytes, stored: Optional[_Stored], now: float,
                      max_age: float) -> None:
    """No rollback, no second content under one generation number, not stale, not from the future."""
    where, generation = "bundle " + MANIFEST, manifest.generation
    if stored is not None and generation < stored.generation:
        raise BundleError(where, BundleReason.ROLLBACK, generation=generation, accepted=stored.generation)
    if stored is not None and generation == stored.generation and manifest_bytes != stored.manifest_bytes:
        raise BundleError(where, BundleReason.REUSED, generation=generation)
    if now - manifest.created > max_age:
        raise BundleError(where, BundleReason.STALE, generation=generation, age=now - manifest.created,
                          max_age=max_age)
    if manifest.created - now > FUTURE_SKEW:
        raise BundleError(where, BundleReason.FUTURE, generation=generation, ahead=manifest.created - now)


def _maps(client: _Client, manifest: Manifest, blobs: Mapping[str, bytes]) -> Tuple[Dict[str, bytes], Tuple[str, ...]]:
    """Every map of the manifest: the node's copy when it has the same sha256, else fetched and checked."""
    maps, downloaded = {}, []
    for name in bundle.MAPS:
        entry = manifest.files[name]
        where = f"bundle {entry.path}"
        data = blobs.get(entry.sha256)
        if data is None:
            try:
                data = client.get(entry.path, entry.bytes)[2]
            except BundleError as e:  # never read past the signed size
                if e.reason is not BundleReason.TOO_LARGE:
                    raise
                raise BundleError(where, BundleReason.TAMPERED, what="its size", got=f"more than {entry.bytes}",
                                  expected=entry.bytes) from None
            downloaded.append(name)
        if len(data) != entry.bytes:
            raise BundleError(where, BundleReason.TAMPERED, what="its size", got=len(data), expected=entry.bytes)
        digest = bundle.sha256(data)
        if digest != entry.sha256:
            raise BundleError(where, BundleReason.TAMPERED, what="its sha256", got=digest, expected=entry.sha256)
        maps[name] = data
    return maps, tuple(downloaded)


# --- what this node keeps ---------------------------------------------------------------------------------


def keep(config: Config, accepted: Accepted) -> None:
    """Keep ``accepted`` as this node's last accepted bundle: its maps first
    (by sha256), then the record naming them, then the maps no longer named. :raises OSError:"""
    directory = store_dir(config)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    names = {bundle.sha256(data): data for data in accepted.maps.values()}
    for digest, data in names.items():
        if not os.path.exists(os.path.join(directory, digest)):
            state.write_atomically(os.path.join(directory, digest), data, 0o600)
    record = {"url": accepted.url, "etag": accepted.etag, "last_modified": accepted.last_modified,
              "manifest": accepted.manifest_bytes.decode("utf-8"), "signature": accepted.signature.decode("ascii")}
    state.write_atomically(os.path.join(directory, RECORD), json.dumps(record, indent=1, sort_keys=True), 0o600)
    for name in os.listdir(directory):
        if len(name) == 64 and name not in names:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _load(config: Config) -> Optional[_Stored]:
    """The last accepted bundle; None when there is none or it cannot be read (a full fetch then)."""
    directory = store_dir(config)
    try:
        with open(os.path.join(directory, RECORD), encoding="utf-8") as f:
            record = json.load(f)
        manifest_bytes, signature = record["manifest"].encode("utf-8"), record["signature"].encode("ascii")
        manifest = bundle.parse_manifest(manifest_bytes)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, BundleError):
        return None
    blobs = {}
    for entry in manifest.files.values():
        with contextlib.suppress(OSError):
            with open(os.path.join(directory, entry.sha256), "rb") as f:
                data = f.read()
            if bundle.sha256(data) == entry.sha256:  # a damaged copy is fetched again, not trusted
                blobs[entry.sha256] = data
    return _Stored(manifest_bytes, signature, manifest.generation, _validator(record.get("etag")),
                   _validator(record.get("last_modified")), blobs)


def _validator(value: object) -> str:
    """An ETag or Last-Modified worth sending back: printable ASCII, bounded; else none
    (a value requests refuses to send would fail every later run)."""
    return value if isinstance(value, str) and _VALIDATOR.fullmatch(value) else ""


def _validators(stored: Optional[_Stored]) -> Dict[str, str]:
    """The conditional request's headers: only when every map of the stored bundle is at hand for a 304."""
    if stored is None or len(stored.blobs) < len(bundle.MAPS):
        return {}
    headers = {}
    if stored.etag:
        headers["If-None-Match"] = stored.etag
    if stored.last_modified:
        headers["If-Modified-Since"] = stored.last_modified
    return headers


# --- HTTP ---------------------------------------------------------------------------------------------------


@dataclass
class _Client:
    """GETs files below the mirror URL within the run's deadline, retrying as
    the listing does; each exchange in a watchdog thread (scim.Exchanger), so
    a server trickling its headers or body is abandoned at the deadline."""

    session: requests.Session
    config: Config
    stats: scim.Stats
    clock: scim.Clock
    deadline: float
    exchanger: scim.Exchanger = field(default_factory=scim.Exchanger)
    policy: scim.RetryPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.policy = scim.RetryPolicy.of(self.config.server)

    @classmethod
    @contextlib.contextmanager
    def of(cls, config: Config, stats: scim.Stats, clock: scim.Clock) -> Iterator[_Client]:
        with requests.Session() as session:
            # No Authorization (a mirror needs no credential; requests would otherwise send the
            # ~/.netrc login of the mirror's host), no compression (no decompression bomb).
            session.auth = _NoAuth()
            session.headers.update({"User-Agent": scim.USER_AGENT, "Accept-Encoding": "identity"})
            client = cls(session, config, stats, clock, clock.monotonic() + config.server.deadline)
            try:
                yield client
            finally:
                client.exchanger.close()

    def get(self, path: str, limit: int, conditional: Optional[Mapping[str, str]] = None):
        """(status, headers, body) of a 200, or of a 304 when ``conditional`` headers were sent."""
        assert self.config.mirror is not None
        url = f"{self.config.mirror.url}/{path}"
        attempt = 0
        while True:
            outcome = self._attempt(url, path, limit, conditional or {})
            if isinstance(outcome, scim.Verdict):  # no HTTP answer
                verdict = outcome
            else:
                status, headers, body = outcome
                if status == 200 or (status == 304 and conditional):
                    return outcome
                verdict = scim.classify(status, headers, body, "")
            self._before_retrying(verdict, url, path, attempt)
            attempt += 1

    def _attempt(self, url: str, path: str, limit: int, conditional: Mapping[str, str]):
        """One request, counted: (status, headers, body), or the Verdict of a transport error."""
        remaining = self.deadline - self.clock.monotonic()
        deadline = self.config.server.deadline
        if remaining <= 0:
            raise FetchError(f"mirror {path}", None, FetchReason.DEADLINE, deadline=deadline)
        exchange = _Exchange(self.session, url, path, limit, dict(conditional), self.config.server.verify,
                             min(self.config.server.timeout, remaining), self.clock, self.deadline, deadline)
        found = self.exchanger.run(exchange.run, remaining + scim.WATCHDOG_GRACE)
        if found is None:
            raise FetchError(f"mirror {path}", None, FetchReason.DEADLINE_WAITING, deadline=deadline)
        if "error" in found:
            raise found["error"]
        outcome = found["result"]
        if isinstance(outcome, scim.Verdict):
            self.stats.answered("mirror", "error")
        else:
            self.stats.answered("mirror", f"{outcome[0] // 100}xx", len(outcome[2]))
        return outcome

    def _before_retrying(self, verdict: scim.Verdict, url: str, path: str, attempt: int) -> None:
        where = f"mirror {path}"
        if verdict.action is not scim.Action.RETRY:  # a redirect too: the mirror URL must be the final one
            raise BundleError(where, BundleReason.HTTP_STATUS, status=verdict.status, url=url)
        failure = Failure(url, verdict.status, verdict.detail, verdict.error)
        if self.policy.exhausted(attempt):
            reason = FetchReason.UNREACHABLE if verdict.status is None else FetchReason.SERVER_FAILING
            raise FetchError(where, None, reason, failure=failure, attempts=attempt + 1)
        wait = self.policy.delay(attempt, scim.retry_after_seconds(verdict.retry_after, time.time()),
                                 self.clock.random())
        if self.clock.monotonic() + wait > self.deadline:
            raise FetchError(where, None, FetchReason.NO_TIME_TO_RETRY, failure=failure,
                             deadline=self.config.server.deadline)
        log.warning("%s: %s; retrying in %.1f s (%d of %d)", where, failure, wait, attempt + 1, self.policy.retries)
        self.stats.retried()
        self.clock.sleep(wait)


@dataclass(frozen=True)
class _Exchange:
    """One GET, run in the watchdog thread: no redirect followed, the body read
    within ``limit`` bytes and the run's deadline."""

    session: requests.Session
    url: str
    path: str
    limit: int
    headers: Dict[str, str]
    verify: Union[bool, str]
    timeout: float
    clock: scim.Clock
    deadline: float  # monotonic
    deadline_setting: float  # coreweave_deadline, for messages

    def run(self):
        try:
            with self.session.get(self.url, headers=self.headers, stream=True, verify=self.verify,
                                  timeout=self.timeout, allow_redirects=False) as response:
                log.debug("GET %s -> %d", self.url, response.status_code)
                return response.status_code, response.headers, self._read(response)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError) as e:
            return scim.Verdict(scim.Action.RETRY, error=type(e).__name__)
        except requests.RequestException as e:
            raise FetchError(f"mirror {self.path}", None, FetchReason.REQUEST_FAILED, error=type(e).__name__) from None

    def _read(self, response) -> bytes:
        """A 200's body, refused past ``limit`` bytes; of any other answer, the start (for its error detail)."""
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if response.status_code == 200 and encoding not in ("", "identity"):
            raise BundleError(f"bundle {self.path}", BundleReason.MALFORMED,
                              detail=f"sent with Content-Encoding {encoding[:40]!r}, identity was asked for")
        chunks, size = [], 0
        for chunk in response.iter_content(scim.CHUNK):
            if response.status_code != 200:
                return chunk[:ERROR_BODY]
            size += len(chunk)
            if size > self.limit:
                raise BundleError(f"bundle {self.path}", BundleReason.TOO_LARGE, limit=self.limit)
            if self.clock.monotonic() > self.deadline:
                raise FetchError(f"mirror {self.path}", None, FetchReason.DEADLINE_READING,
                                 deadline=self.deadline_setting)
            chunks.append(chunk)
        return b"".join(chunks)


class _NoAuth(requests.auth.AuthBase):
    def __call__(self, request):
        return request
