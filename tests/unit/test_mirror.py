"""mirror: a node reads the bundle ``publish`` wrote instead of listing IAM.

Against a real loopback HTTP server serving a publish directory (ETags and
If-None-Match honoured, as nginx does): ``take`` fetches the manifest
(conditionally), its generation's signature and the maps the node does not
hold, and refuses whatever the signed manifest does not vouch for; ``keep``
stores what a run accepted. Retries wait on an injected clock, never for real.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import stat
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nss_cache_coreweave import bundle, config, mirror, publish, render, scim, sshsig
from nss_cache_coreweave.bundle import MAPS, FileEntry, Manifest, Published
from nss_cache_coreweave.config import ShadowDefaults
from nss_cache_coreweave.errors import BundleError, BundleReason, FetchError, FetchReason
from nss_cache_coreweave.policy import Account, Directory, PosixGroup
from support.keys import ed25519_key

RUN = "20261203T081145Z-0123456789ab"
CREATED = 1_780_000_000.5
GENERATION = 1_780_000_000
NOW = CREATED + 60  # the node's clock in most tests: a minute after the publish

ALICE = Account("alice", 20001, 20001, "Alice Smith", "/mnt/home/alice", "/bin/bash", (ed25519_key("alice"),))
BOB = Account("bob", 20002, 20002, "Bob Jones", "/mnt/home/bob", "/bin/zsh", (ed25519_key("bob"),))
DIRECTORY = Directory((ALICE, BOB), (PosixGroup("slurm-users", 30001, ("alice", "bob")),), (), ())
SHADOW = ShadowDefaults(max=99999, warn=7)


# --- a static file server, as nginx serves the publish directory ---------------------------------------


@dataclass
class Sent:
    path: str
    headers: Dict[str, str]


@dataclass
class StaticServer:
    """Serves ``root`` on loopback: ETag (a hash of the content) and If-None-Match, or with
    ``etags`` False Last-Modified and If-Modified-Since; ``faults`` answers a path with the
    given statuses first, one per request."""

    root: Path
    etags: bool = True
    faults: Dict[str, List[int]] = field(default_factory=dict)
    sent: List[Sent] = field(default_factory=list)

    def __post_init__(self):
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                served.sent.append(Sent(self.path, dict(self.headers.items())))
                status, headers, body = served.answer(self.path, self.headers)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, asked) -> Tuple[int, Dict[str, str], bytes]:
        if self.faults.get(path):
            return self.faults[path].pop(0), {}, b"<html>failing</html>"
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_file() or self.root.resolve() not in file.parents:
            return 404, {}, b"<html>404 Not Found</html>"
        data = file.read_bytes()
        if self.etags:
            tag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            return (304, {"ETag": tag}, b"") if asked.get("If-None-Match") == tag else (200, {"ETag": tag}, data)
        modified = email.utils.formatdate(int(file.stat().st_mtime), usegmt=True)
        if asked.get("If-Modified-Since") == modified:
            return 304, {"Last-Modified": modified}, b""
        return 200, {"Last-Modified": modified}, data

    def paths(self) -> List[str]:
        return [s.path for s in self.sent]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def published(tmp_path) -> Path:
    root = tmp_path / "published"
    (root / "generations").mkdir(parents=True)
    return root


@pytest.fixture
def server(published):
    served = StaticServer(published)
    yield served
    served.close()


KEY = Ed25519PrivateKey.generate()


def write_bundle(root: Path, generation: int = GENERATION, directory: Directory = DIRECTORY, *,
                 created: float = CREATED, key: Ed25519PrivateKey = KEY, shadow: ShadowDefaults = SHADOW) -> Manifest:
    """A bundle as publish writes it (its own _write), signed by ``key``; a generation of
    the same number is replaced (a publisher that lost its directory)."""
    maps = {name: bundle.map_bytes(name, render.render(name, directory, RUN, shadow)) for name in MAPS}
    files = {name: FileEntry(f"generations/{generation}/{name}", bundle.sha256(data), len(data))
             for name, data in maps.items()}
    manifest = Manifest(generation, created, RUN, len(directory.accounts), len(directory.groups),
                        sum(len(a.keys) for a in directory.accounts), files)
    shutil.rmtree(root / "generations" / str(generation), ignore_errors=True)
    publish._write(str(root), manifest, maps, sshsig.sign(bundle.manifest_bytes(manifest), key))
    return manifest


@dataclass
class FakeClock:
    """scim.Clock's parts: sleeping records the wait and moves the monotonic clock."""

    now: float = 1000.0
    waits: List[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> scim.Clock:
        return scim.Clock(sleep=self.sleep, monotonic=lambda: self.now, random=lambda: 0.0)


def configure(tmp_path: Path, url: str, keys=(KEY,), **options) -> config.Config:
    """A node in mirror mode trusting ``keys``."""
    public = tmp_path / "publisher.pub"
    public.write_text("".join(f"{sshsig.public_key_line(key)} publisher\n" for key in keys))
    return config.parse({
        "mirror_url": url, "mirror_public_key": str(public), "state_dir": str(tmp_path / "state"),
        "local_passwd": str(tmp_path / "no-passwd"), "local_group": str(tmp_path / "no-group"),
        "allowed_shells": "/bin/bash, /bin/zsh", **options,
    }, environ={})


def take(cfg: config.Config, now: float = NOW, clock: FakeClock = None, stats: scim.Stats = None):
    return mirror.take(cfg, stats or scim.Stats(), clock=(clock or FakeClock()).clock(), now=now)


def refusal(cfg: config.Config, now: float = NOW) -> BundleError:
    with pytest.raises(BundleError) as caught:
        take(cfg, now)
    return caught.value


def store(cfg: config.Config) -> Dict[str, bytes]:
    directory = Path(mirror.store_dir(cfg))
    return {p.name: p.read_bytes() for p in directory.iterdir()} if directory.exists() else {}


def map_paths(generation: int = GENERATION, names=MAPS) -> List[str]:
    return [f"/generations/{generation}/{name}" for name in names]


# --- a bundle taken -------------------------------------------------------------------------------------------


def test_a_bundle_is_taken_verified_with_every_map(tmp_path, published, server):
    manifest = write_bundle(published)
    cfg = configure(tmp_path, server.url)
    stats = scim.Stats()

    accepted = take(cfg, stats=stats)

    assert (accepted.url, accepted.manifest, accepted.not_modified, accepted.downloaded) == (
        server.url, manifest, False, MAPS)
    assert accepted.published == Published(DIRECTORY, SHADOW)
    assert accepted.manifest_bytes == (published / "manifest.json").read_bytes()
    assert accepted.signature == (published / "generations" / str(GENERATION) / "manifest.json.sig").read_bytes()
    assert accepted.maps == {name: (published / "generations" / str(GENERATION) / name).read_bytes() for name in MAPS}
    assert accepted.etag.startswith('"')
    assert server.paths() == ["/manifest.json", f"/generations/{GENERATION}/manifest.json.sig", *map_paths()]
    assert stats.requests == {("mirror", "2xx"): 6}
    assert stats.bytes == sum(len(s) for s in (accepted.manifest_bytes, accepted.signature, *accepted.maps.values()))


def take_twice(tmp_path: Path, published: Path, server: StaticServer) -> None:
    """A full fetch, then a conditional one."""
    write_bundle(published)
    cfg = configure(tmp_path, server.url)
    mirror.keep(cfg, take(cfg))
    take(cfg)
    assert len(server.sent) == 7


def test_no_request_to_the_mirror_carries_an_authorization_header(tmp_path, published, server, monkeypatch):
    monkeypatch.setenv("NSSCACHE_COREWEAVE_TOKEN", "cw-T0KEN-d0-not-send-me")  # a token lying around

    take_twice(tmp_path, published, server)

    assert [s.path for s in server.sent if "Authorization" in s.headers] == []
    assert {s.headers["User-Agent"] for s in server.sent} == {scim.USER_AGENT}


def test_a_netrc_naming_the_mirrors_host_adds_no_authorization_header(tmp_path, published, server, monkeypatch):
    # requests adds a netrc's credentials to a session without auth of its own.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    take_twice(tmp_path, published, server)

    assert [s.headers.get("Authorization") for s in server.sent] == [None] * 7


# --- what the node keeps, and what that saves -------------------------------------------------------------


def test_keep_stores_the_record_and_the_maps_by_sha256_readable_by_root_only(tmp_path, published, server):
    manifest = write_bundle(published)
    cfg = configure(tmp_path, server.url)

    mirror.keep(cfg, take(cfg))

    directory = Path(mirror.store_dir(cfg))
    assert sorted(store(cfg)) == sorted(["accepted.json", *(manifest.files[name].sha256 for name in MAPS)])
    assert {stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {0o600}
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert all(store(cfg)[manifest.files[name].sha256] == (published / manifest.files[name].path).read_bytes()
               for name in MAPS)


def test_an_unchanged_bundle_costs_one_conditional_request(tmp_path, published, server):
    write_bundle(published)
    cfg = configure(tmp_path, server.url)
    first = take(cfg)
    mirror.keep(cfg, first)
    server.sent.clear()
    stats = scim.Stats()

    again = take(cfg, stats=stats)

    assert server.paths() == ["/manifest.json"]
    assert server.sent[0].headers["If-None-Match"] == first.etag
    assert (again.not_modified, again.downloaded, again.etag) == (True, (), first.etag)
    assert (again.manifest, again.maps, again.published) == (first.manifest, first.maps, first.published)
    assert stats.requests == {("mirror", "3xx"): 1}


def test_a_server_without_etags_is_asked_if_modified_since(tmp_path, published):
    write_bundle(published)
    served = StaticServer(published, etags=False)
    try:
        cfg = configure(tmp_path, served.url)
        first = take(cfg)
        mirror.keep(cfg, first)
        served.sent.clear()

        again = take(cfg)
    finally:
        served.close()

    assert served.paths() == ["/manifest.json"]
    assert "If-None-Match" not in served.sent[0].headers
    assert served.sent[0].headers["If-Modified-Since"] == first.last_modified != ""
    assert (again.not_modified, again.downloaded) == (True, ())


def test_maps_whose_sha256_the_node_holds_are_not_fetched(tmp_path, published, server):
    write_bundle(published)
    cfg = configure(tmp_path, server.url)
    mirror.keep(cfg, take(cfg))
    renamed = replace(DIRECTORY, accounts=(replace(ALICE, gecos="Alice Smith-Jones"), BOB))
    write_bundle(published, GENERATION + 1, renamed)  # only passwd changes
    server.sent.clear()

    accepted = take(cfg)

    assert accepted.downloaded == ("passwd",)
    assert server.paths() == ["/manifest.json", f"/generations/{GENERATION + 1}/manifest.json.sig",
                              f"/generations/{GENERATION + 1}/passwd"]
    assert (accepted.manifest.generation, accepted.published.directory) == (GENERATION + 1, renamed)


def test_keep_removes_the_maps_no_longer_named(tmp_path, published, server):
    old = write_bundle(published)
    cfg = configure(tmp_path, server.url)
    mirror.keep(cfg, take(cfg))
    new = write_bundle(published, GENERATION + 1, replace(DIRECTORY, accounts=(replace(ALICE, gecos="A"), BOB)))

    mirror.keep(cfg, take(cfg))

    assert sorted(store(cfg)) == sorted(["accepted.json", *(new.files[name].sha256 for name in MAPS)])
    assert old.files["passwd"].sha256 not in store(cfg)
    assert old.files["group"].sha256 == new.files["group"].sha256


def test_a_corrupted_store_is_not_trusted_the_map_is_fetched_again(tmp_path, published, server):
    manifest = write_bundle(published)
    cfg = configure(tmp_path, server.url)
    mirror.keep(cfg, take(cfg))
    blob = Path(mirror.store_dir(cfg)) / manifest.files["passwd"].sha256
    blob.write_bytes(blob.read_bytes().replace(b"Alice Smith", b"Alice Smyth"))  # same size, other bytes
    server.sent.clear()

    accepted = take(cfg)

    assert accepted.downloaded == ("passwd",)
    assert accepted.maps["passwd"] == (published / manifest.files["passwd"].path).read_bytes()
    assert accepted.published == Published(DIRECTORY, SHADOW)


def test_an_unreadable_record_means_a_full_fetch(tmp_path, published, server):
    write_bundle(published)
    cfg = configure(tmp_path, server.url)
    mirror.keep(cfg, take(cfg))
    (Path(mirror.store_dir(cfg)) / "accepted.json").write_text("{not json")
    server.sent.clear()

    accepted = take(cfg)

    assert "If-None-Match" not in server.sent[0].headers
    assert (accepted.not_modified, accepted.downloaded) == (False, MAPS)


def test_each_mirror_url_has_its_own_store(tmp_path):
    first = configure(tmp_path, "https://mirror-a.example.com/bundle")
    second = configure(tmp_path, "https://mirror-b.example.com/bundle")

    assert os.path.dirname(mirror.store_dir(first)) == os.path.dirname(mirror.store_dir(second)) == str(
        tmp_path / "state" / "coreweave-mirror")
    assert mirror.store_dir(first) != mirror.store_dir(second)


# --- refused bundles ---------------------------------------------------------------------------------------


def test_a_rolled_back_generation_is_refused(tmp_path, published, server):
    write_bundle(published, GENERATION + 1)
    cfg = configure(tmp_path, server.url)
    mirror.keep(cfg, take(cfg))
    kept = store(cfg)
    write_bundle(published, GENERATION)  # an older, validly signed bundle served again

    error = refusal(cfg)

    assert (error.kind, error.reason, error.values) == (
        "bundle manifest.json", BundleReason.ROLLBACK, {"generation": GENERATION, "accepted": GENERATION + 1})
    assert store(cfg) == kept


def test_a_generation_number_reused_for_other_content_is_refused(tmp_path, published, server):
    write_bundle(published)
    cfg = configure(tmp_path, server.url)
    mirror.keep(cfg, take(cfg))
    write_bundle(published, GENERATION, created=CREATED + 1)

    error = refusal(cfg)

    assert (error.reason, error.values) == (BundleReason.REUSED, {"generation": GENERATION})


def test_the_same_generation_served_again_is_accepted(tmp_path, published):
    # A server that ignores If-None-Match serves the same bytes again: not a reuse.
    write_bundle(published)
    served = StaticServer(published)
    try:
        cfg = configure(tmp_path, served.url)
        mirror.keep(cfg, take(cfg))
        mirror.keep(cfg, replace(take(cfg), etag=""))  # as if the server had sent no ETag
        accepted = take(cfg)
    finally:
        served.close()

    assert (accepted.manifest.generation, accepted.not_modified, accepted.downloaded) == (GENERATION, False, ())


def test_a_stale_bundle_is_refused(tmp_path, published, server):
    write_bundle(published)
    cfg = configure(tmp_path, server.url)

    error = refusal(cfg, now=CREATED + 3600 + 1)

    assert (error.reason, error.values) == (
        BundleReason.STALE, {"generation": GENERATION, "age": 3601.0, "max_age": 3600.0})
    assert take(cfg, now=CREATED + 3600).manifest.generation == GENERATION


def test_the_maximum_age_is_configured(tmp_path, published, server):
    write_bundle(published)
    cfg = configure(tmp_path, server.url, mirror_max_age="120")

    assert refusal(cfg, now=CREATED + 121).values["max_age"] == 120.0


def test_a_bundle_dated_in_the_future_is_refused(tmp_path, published, server):
    write_bundle(published)
    cfg = configure(tmp_path, server.url)

    error = refusal(cfg, now=CREATED - 301)

    assert (error.reason, error.values) == (BundleReason.FUTURE, {"generation": GENERATION, "ahead": 301.0})
    assert take(cfg, now=CREATED - 299).manifest.generation == GENERATION  # clocks a little apart


def tamper(published: Path, name: str, change) -> Tuple[bytes, FileEntry]:
    path = published / "generations" / str(GENERATION) / name
    path.write_bytes(change(path.read_bytes()))
    return path.read_bytes(), bundle.parse_manifest((published / "manifest.json").read_bytes()).files[name]


def test_a_map_of_the_same_size_with_other_bytes_is_refused(tmp_path, published, server):
    write_bundle(published)
    data, entry = tamper(published, "sshkey", lambda d: d.replace(b"alice:", b"bob00:"))  # keys given to another

    error = refusal(configure(tmp_path, server.url))

    assert (error.kind, error.reason, error.values) == (
        f"bundle generations/{GENERATION}/sshkey", BundleReason.TAMPERED,
        {"what": "its sha256", "got": bundle.sha256(data), "expected": entry.sha256})


def test_a_shorter_map_is_refused(tmp_path, published, server):
    write_bundle(published)
    data, entry = tamper(published, "passwd", lambda d: d[: d.index(b"bob:")])  # bob removed

    error = refusal(configure(tmp_path, server.url))

    assert (error.reason, error.values) == (
        BundleReason.TAMPERED, {"what": "its size", "got": len(data), "expected": entry.bytes})


def test_a_longer_map_is_refused_unread(tmp_path, published, server):
    write_bundle(published)
    _, entry = tamper(published, "passwd", lambda d: d + b"mallory:x:20666:20666::/home/mallory:/bin/bash\n")

    error = refusal(configure(tmp_path, server.url))

    assert (error.kind, error.reason, error.values) == (
        f"bundle generations/{GENERATION}/passwd", BundleReason.TAMPERED,
        {"what": "its size", "got": f"more than {entry.bytes}", "expected": entry.bytes})


def test_a_bundle_signed_by_another_key_is_refused(tmp_path, published, server):
    write_bundle(published, key=Ed25519PrivateKey.generate())

    error = refusal(configure(tmp_path, server.url))

    assert (error.kind, error.reason, error.values) == (
        "bundle manifest.json.sig", BundleReason.BAD_SIGNATURE, {"detail": "untrusted_key"})


def test_a_manifest_changed_after_signing_is_refused(tmp_path, published, server):
    write_bundle(published)
    manifest = published / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"users": 2', b'"users": 3'))

    error = refusal(configure(tmp_path, server.url))

    assert (error.reason, error.values) == (BundleReason.BAD_SIGNATURE, {"detail": "bad_signature"})


def test_a_signature_that_is_not_one_is_refused(tmp_path, published, server):
    write_bundle(published)
    (published / "generations" / str(GENERATION) / "manifest.json.sig").write_bytes(b"not a signature\n")

    error = refusal(configure(tmp_path, server.url))

    assert (error.reason, error.values) == (BundleReason.BAD_SIGNATURE, {"detail": "armor"})


def test_any_of_several_trusted_keys_verifies(tmp_path, published, server):
    write_bundle(published)
    rotated = [Ed25519PrivateKey.generate(), KEY]  # the new key first, the old one kept until every publisher has it

    assert take(configure(tmp_path, server.url, keys=rotated)).manifest.generation == GENERATION


def test_a_missing_manifest_is_an_http_status_refusal(tmp_path, server):
    error = refusal(configure(tmp_path, server.url))

    assert (error.kind, error.reason, error.values) == (
        "mirror manifest.json", BundleReason.HTTP_STATUS, {"status": 404, "url": f"{server.url}/manifest.json"})


def test_a_missing_signature_is_an_http_status_refusal(tmp_path, published, server):
    write_bundle(published)
    (published / "generations" / str(GENERATION) / "manifest.json.sig").unlink()

    error = refusal(configure(tmp_path, server.url))

    assert (error.reason, error.values["status"]) == (BundleReason.HTTP_STATUS, 404)
    assert error.kind == f"mirror generations/{GENERATION}/manifest.json.sig"


def test_a_manifest_larger_than_a_mebibyte_is_refused_unread(tmp_path, published, server):
    (published / "manifest.json").write_bytes(b" " * (mirror.SMALL_FILE + 1))

    error = refusal(configure(tmp_path, server.url))

    assert (error.kind, error.reason, error.values) == (
        "bundle manifest.json", BundleReason.TOO_LARGE, {"limit": mirror.SMALL_FILE})


def test_a_malformed_manifest_is_refused(tmp_path, published, server):
    (published / "manifest.json").write_text('{"format": "something else"}\n')

    error = refusal(configure(tmp_path, server.url))

    assert (error.kind, error.reason) == ("bundle manifest.json", BundleReason.MALFORMED)


# --- an unavailable mirror --------------------------------------------------------------------------------


def test_a_failing_mirror_is_retried_after_a_backoff(tmp_path, published, server):
    write_bundle(published)
    server.faults["/manifest.json"] = [503]
    clock, stats = FakeClock(), scim.Stats()

    accepted = take(configure(tmp_path, server.url), clock=clock, stats=stats)

    assert accepted.manifest.generation == GENERATION
    assert clock.waits == [1.0]
    assert server.paths()[:2] == ["/manifest.json", "/manifest.json"]
    assert (stats.retries, stats.requests) == (1, {("mirror", "5xx"): 1, ("mirror", "2xx"): 6})


def test_a_map_failing_then_served_is_retried(tmp_path, published, server):
    write_bundle(published)
    server.faults[f"/generations/{GENERATION}/group"] = [502, 504]
    clock = FakeClock()

    accepted = take(configure(tmp_path, server.url), clock=clock)

    assert accepted.downloaded == MAPS
    assert clock.waits == [1.0, 2.0]


def test_a_mirror_failing_past_the_retries_is_unavailable(tmp_path, published, server):
    write_bundle(published)
    server.faults["/manifest.json"] = [503] * 3
    clock = FakeClock()

    with pytest.raises(FetchError) as caught:
        take(configure(tmp_path, server.url, retries="2"), clock=clock)

    assert (caught.value.kind, caught.value.reason, caught.value.values["attempts"]) == (
        "mirror manifest.json", FetchReason.SERVER_FAILING, 3)
    assert caught.value.values["failure"].status == 503
    assert clock.waits == [1.0, 2.0]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_mirror_refusing_connections_is_unreachable_after_every_attempt(tmp_path):
    clock, stats = FakeClock(), scim.Stats()

    with pytest.raises(FetchError) as caught:
        take(configure(tmp_path, f"http://127.0.0.1:{closed_port()}", retries="3"), clock=clock, stats=stats)

    assert (caught.value.kind, caught.value.reason, caught.value.values["attempts"]) == (
        "mirror manifest.json", FetchReason.UNREACHABLE, 4)
    assert caught.value.values["failure"].error == "ConnectionError"
    assert clock.waits == [1.0, 2.0, 4.0]
    assert (stats.retries, stats.requests) == (3, {("mirror", "error"): 4})
    assert "after 4 attempts" in str(caught.value)


def test_no_retry_past_the_deadline(tmp_path, published, server):
    write_bundle(published)
    server.faults["/manifest.json"] = [503, 503, 503]
    clock = FakeClock()
    cfg = configure(tmp_path, server.url, deadline="5", max_retry_wait="60")

    with pytest.raises(FetchError) as caught:
        take(cfg, clock=clock)

    # waits 1 and 2 fit in 5 s; the third (4 s) would end past the deadline
    assert (caught.value.reason, clock.waits) == (FetchReason.NO_TIME_TO_RETRY, [1.0, 2.0])


# --- what a broken or hostile web server sends ----------------------------------------------------------------


def test_an_etag_requests_cannot_send_back_is_not_kept(tmp_path, published, server):
    write_bundle(published)
    cfg = configure(tmp_path, server.url)
    answer = server.answer
    server.answer = lambda path, asked: (lambda s, h, b: (s, {**h, "ETag": "\x0bx"}, b))(*answer(path, asked))
    mirror.keep(cfg, take(cfg))

    again = take(cfg)  # the next run sends no unusable validator: it fetches the bundle whole

    assert (again.etag, again.not_modified) == ("", False)
    assert server.paths()[-2:] == ["/manifest.json", f"/generations/{GENERATION}/manifest.json.sig"]
    assert "If-None-Match" not in server.sent[-2].headers


def test_a_redirect_is_refused_never_followed(tmp_path, published, server):
    write_bundle(published)
    server.faults["/manifest.json"] = [302]

    error = refusal(configure(tmp_path, server.url))

    assert (error.reason, error.values["status"]) == (BundleReason.HTTP_STATUS, 302)
    assert server.paths() == ["/manifest.json"]


def test_a_compressed_answer_is_refused(tmp_path, published, server):
    write_bundle(published)
    answer = server.answer
    server.answer = lambda path, asked: (lambda s, h, b: (s, {**h, "Content-Encoding": "gzip"}, gzip.compress(b)))(
        *answer(path, asked))

    error = refusal(configure(tmp_path, server.url))

    assert (error.kind, error.reason) == ("bundle manifest.json", BundleReason.MALFORMED)
    assert "Content-Encoding 'gzip'" in error.values["detail"]
    assert server.sent[0].headers["Accept-Encoding"] == "identity"


def test_a_mirror_trickling_its_answer_is_abandoned_at_the_deadline(tmp_path):
    """A byte every 0.2 s never lets the socket timeout fire: the run's deadline must."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                if stop.wait(0.2):
                    return
                connection.sendall(bytes([byte]))

    threading.Thread(target=trickle, daemon=True).start()
    cfg = configure(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}", timeout="0.5", deadline="1",
                    retries="0")
    try:
        with pytest.raises(FetchError) as caught:
            mirror.take(cfg, scim.Stats(), now=NOW)
    finally:
        stop.set()
        listener.close()

    assert caught.value.reason is FetchReason.DEADLINE_WAITING
