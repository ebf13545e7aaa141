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
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, Mapping, Optional, Tuple

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
            etag, modified = headers.get("ETag", ""), headers.get("Last-Modified", "")
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
        generation = bundle.parse_manifest(manifest_bytes).generation
    except (OSError, ValueError, KeyError, TypeError, AttributeError, BundleError):
        return None
    blobs = {}
    for entry in bundle.parse_manifest(manifest_bytes).files.values():
        with contextlib.suppress(OSError):
            with open(os.path.join(directory, entry.sha256), "rb") as f:
                data = f.read()
            if bundle.sha256(data) == entry.sha256:  # a damaged copy is fetched again, not trusted
                blobs[entry.sha256] = data
    return _Stored(manifest_bytes, signature, generation, str(record.get("etag") or ""),
                   str(record.get("last_modified") or ""), blobs)


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
    """GETs files below the mirror URL within the run's deadline, retrying as the listing does."""

    session: requests.Session
    config: Config
    stats: scim.Stats
    clock: scim.Clock
    deadline: float
    policy: scim.RetryPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.policy = scim.RetryPolicy.of(self.config.server)

    @classmethod
    @contextlib.contextmanager
    def of(cls, config: Config, stats: scim.Stats, clock: scim.Clock) -> Iterator[_Client]:
        with requests.Session() as session:
            session.headers["User-Agent"] = scim.USER_AGENT
            # No Authorization: a mirror needs no credential, and requests would otherwise send
            # the ~/.netrc login of the mirror's host (also to wherever a redirect leads; the
            # bundle is signed, so following one is safe).
            session.auth = _NoAuth()
            yield cls(session, config, stats, clock, clock.monotonic() + config.server.deadline)

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
        """One request: (status, headers, body), or the Verdict of a transport error."""
        remaining = self.deadline - self.clock.monotonic()
        if remaining <= 0:
            raise FetchError(f"mirror {path}", None, FetchReason.DEADLINE, deadline=self.config.server.deadline)
        try:
            with self.session.get(url, headers=dict(conditional), stream=True, verify=self.config.server.verify,
                                  timeout=min(self.config.server.timeout, remaining)) as response:
                log.debug("GET %s -> %d", url, response.status_code)
                body = _read(response, path, limit)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError) as e:
            self.stats.requests[("mirror", "error")] += 1
            return scim.Verdict(scim.Action.RETRY, error=type(e).__name__)
        self.stats.requests[("mirror", f"{response.status_code // 100}xx")] += 1
        self.stats.bytes += len(body)
        return response.status_code, response.headers, body

    def _before_retrying(self, verdict: scim.Verdict, url: str, path: str, attempt: int) -> None:
        where = f"mirror {path}"
        if verdict.action is not scim.Action.RETRY:
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
        self.stats.retries += 1
        self.clock.sleep(wait)


class _NoAuth(requests.auth.AuthBase):
    def __call__(self, request):
        return request


def _read(response, path: str, limit: int) -> bytes:
    """A 200's body, refused past ``limit`` bytes; of any other answer, the start (for its error detail)."""
    chunks, size = [], 0
    for chunk in response.iter_content(scim.CHUNK):
        if response.status_code != 200:
            return chunk[:ERROR_BODY]
        size += len(chunk)
        if size > limit:
            raise BundleError(f"bundle {path}", BundleReason.TOO_LARGE, limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)
