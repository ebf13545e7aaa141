"""The publisher and freshness, through the real ``nsscache-coreweave publish``,
the stock ``nsscache update --full`` on nodes in mirror mode and a real nginx
(support.nginx): the bundle's layout and manifest, ``--dry-run``, generations
that only grow and are pruned to ``coreweave_publish_keep``, one conditional
request for an idle refresh and only the changed maps after a publish, a
manifest replaced within one second still seen, readers that never see a mix
of generations (a deterministic interleaving through a loopback proxy, then
threads under load), the publisher's shrink guard, what ``status``, the
metrics and ``check`` say on a mirror node, and the refusals of a publisher
without a usable key.

The in-process parts (``mirror.take``, ``publish.publish``) import the tree's
package, with the configuration parsed from the node's own nsscache.conf."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import http.client
import http.server
import json
import re
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from nss_cache_coreweave import config as config_mod
from nss_cache_coreweave import mirror as mirror_mod
from nss_cache_coreweave import publish as publish_mod
from nss_cache_coreweave import scim
from support.fleet import Publisher, allowed_signers, new_key
from support.nginx import Nginx, Request, serve
from support.node import EXT, MAPS, Node, expected_caches

FORMAT = "nsscache-coreweave-bundle/1"
GENERATION_FILES = ("group", "manifest.json", "manifest.json.sig", "passwd", "shadow", "sshkey")
SETTLED = "/.settled"  # a path no bundle has: its 404 in the access log closes a phase


# --- helpers -------------------------------------------------------------------------------------------------


def tree(root: Path) -> Dict[str, Tuple[int, Optional[bytes], int]]:
    """Every entry below ``root`` (and ``root`` itself, as ""): its mode, its bytes (None for a
    directory) and its mtime in ns: what "nothing was written" compares."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        content = None if stat.S_ISDIR(info.st_mode) else path.read_bytes()
        found[str(path.relative_to(root)) if path != root else ""] = (stat.S_IMODE(info.st_mode), content,
                                                                      info.st_mtime_ns)
    return found


def modes(root: Path) -> Dict[str, int]:
    return {name: mode for name, (mode, _, _) in tree(root).items()}


def coreweave_config(conf: Path) -> config_mod.Config:
    """The package's Config from a node's nsscache.conf, read by nsscache's own loader (as the source is)."""
    from nss_cache import config as nss_config

    loaded = nss_config.Config({})
    loaded.config_file = str(conf)
    nss_config.LoadConfig(loaded)
    return config_mod.parse(loaded.options["passwd"].source)


def nginx_etag(path: Path) -> str:
    """nginx's ETag of a file: its mtime in whole seconds and its size, in hex."""
    info = path.stat()
    return f'"{int(info.st_mtime):x}-{info.st_size:x}"'


def settled(mirror: Nginx, count: int) -> List[Request]:
    """The ``count`` requests logged since the last reset, and proof that there are no more: a GET of
    SETTLED made after them must be the next line."""
    assert requests.get(mirror.url(SETTLED), timeout=10).status_code == 404
    logged = mirror.requests(count + 1)
    assert [(r.path, r.status) for r in logged[count:]] == [(SETTLED, 404)], logged
    return logged[:count]


def fetched(logged: List[Request]) -> List[Tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in logged]


def generation_files(directory: Path, generation: int) -> Dict[str, bytes]:
    return {name: (directory / "generations" / str(generation) / name).read_bytes() for name in MAPS}


def generations(directory: Path) -> List[int]:
    return sorted(int(p.name) for p in (directory / "generations").iterdir())


def marker_run(data: bytes) -> str:
    """The run id named on a map's first line (``nsscache-coreweave:*<run>:...``)."""
    return data.split(b"\n", 1)[0].split(b":")[1][1:].decode()


def user(org: dict, name: str) -> dict:
    return next(u for u in org["Users"] if u[EXT]["sunkPosixUsername"] == name)


def without(org: dict, *names: str) -> dict:
    """``org`` with the users ``names`` deactivated (gone from every map)."""
    changed = copy.deepcopy(org)
    for name in names:
        user(changed, name)["active"] = False
    return changed


def with_keys(org: dict, name: str, keys: List[str]) -> dict:
    changed = copy.deepcopy(org)
    user(changed, name)[EXT]["sunkSshKeys"] = keys
    return changed


def update(node: Node) -> subprocess.CompletedProcess:
    result = node.run("nsscache", "update", "--full")
    assert result.returncode == 0, result.stderr
    return result


def published(result: subprocess.CompletedProcess) -> int:
    """The generation a successful ``publish`` says it wrote."""
    assert result.returncode == 0, result.stderr
    found = re.match(r"published generation (\d+): ", result.stdout)
    assert found, result.stdout
    return int(found.group(1))


# --- a loopback proxy in front of nginx, to order a node's requests against publishes -----------------------------


@dataclass
class Proxy:
    """Forwards every GET to ``upstream`` (nginx) and calls ``before(path)`` before forwarding it and
    ``after(path, status, headers)`` once nginx answered, before the answer goes back: whatever
    those run happens between two of the node's requests. An exception there is kept in ``errors``
    (and the client is hung up on)."""

    upstream: str
    before: Callable[[str], None] = lambda path: None
    after: Callable[[str, int, Dict[str, str]], None] = lambda path, status, headers: None
    errors: List[BaseException] = field(default_factory=list)
    base_url: str = ""


def _proxy_handler(proxy: Proxy):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

        def do_GET(self):
            try:
                proxy.before(self.path)
                status, headers, body = _forward(proxy.upstream, self.path, self.headers)
                proxy.after(self.path, status, headers)
            except BaseException as e:
                proxy.errors.append(e)
                self.close_connection = True
                return
            self.send_response(status)
            for name in ("ETag", "Last-Modified", "Content-Type"):
                if name in headers:
                    self.send_header(name, headers[name])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _forward(upstream: str, path: str, incoming) -> Tuple[int, Dict[str, str], bytes]:
    parts = urlsplit(upstream)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conditional = {k: incoming[k] for k in ("If-None-Match", "If-Modified-Since") if k in incoming}
        connection.request("GET", path, headers=conditional)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@contextlib.contextmanager
def interpose(upstream: str) -> Iterator[Proxy]:
    proxy = Proxy(upstream)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(proxy))
    server.daemon_threads = True
    proxy.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def mirror_node(tmp_path, bin_dir, publisher, mirror):
    node = Node(tmp_path / "node", bin_dir)
    node.configure_mirror(mirror.base_url, publisher.public_key,
                          f"coreweave_metrics_file = {tmp_path / 'node' / 'coreweave.prom'}\n")
    return node


# --- 1. the bundle ---------------------------------------------------------------------------------------------


def test_one_publish_writes_exactly_the_bundle_with_its_modes_and_manifest(tmp_path, bin_dir, iam, demo_org,
                                                                          publisher):
    direct = Node(tmp_path / "direct", bin_dir)
    direct.configure(iam.base_url)
    update(direct)
    started = time.time()

    generation = published(publisher.publish())

    ended = time.time()
    here = f"generations/{generation}"
    assert modes(publisher.directory) == {
        "": 0o755, ".publish.lock": 0o644, "manifest.json": 0o644, "manifest.json.sig": 0o644,
        "generations": 0o755, here: 0o755, **{f"{here}/{name}": 0o644 for name in GENERATION_FILES},
    }
    files = generation_files(publisher.directory, generation)
    manifest_bytes = (publisher.directory / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    assert manifest_bytes == (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode()
    assert (publisher.directory / here / "manifest.json").read_bytes() == manifest_bytes
    assert (publisher.directory / here / "manifest.json.sig").read_bytes() == \
        (publisher.directory / "manifest.json.sig").read_bytes()
    assert sorted(manifest) == ["counts", "created", "files", "format", "generation", "run"]
    assert (manifest["format"], manifest["generation"]) == (FORMAT, generation)
    assert int(started) <= generation <= ended and started - 0.001 <= manifest["created"] <= ended
    assert manifest["counts"] == {"users": 4, "groups": 2, "keys": 4}
    assert manifest["files"] == {
        name: {"path": f"{here}/{name}", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    }
    assert {marker_run(data) for data in files.values()} == {manifest["run"]}
    direct_passwd = (direct.root / "cache" / "passwd.cache").read_bytes()
    # run_marker() is the marker's password field: "*<run id>"
    assert files["passwd"].replace(b"*" + manifest["run"].encode(), direct.run_marker().encode()) == direct_passwd
    for name, content in expected_caches(demo_org).items():
        assert files[name].split(b"\n", 1)[1].decode() == content, name


def test_ssh_keygen_verifies_the_published_signature(tmp_path, publisher):
    published(publisher.publish())
    signers = allowed_signers(publisher.public_key, tmp_path / "allowed_signers")

    verified = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "publisher", "-n", "nsscache-coreweave",
         "-s", str(publisher.directory / "manifest.json.sig")],
        input=(publisher.directory / "manifest.json").read_bytes(), capture_output=True, timeout=30)

    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.decode().startswith('Good "nsscache-coreweave" signature for publisher with ED25519 key')


# --- 2. --dry-run ----------------------------------------------------------------------------------------------


def test_dry_run_prints_the_changes_and_writes_nothing(tmp_path, iam, demo_org, publisher):
    before = tree(tmp_path)
    started = time.time()

    first = publisher.publish("--dry-run")

    assert first.returncode == 0, first.stderr
    found = re.fullmatch(r"would publish generation (\d+): 4 users, 2 groups, 4 SSH keys; passwd \+4 -0; "
                         r"group \+2 -0; shadow \+4 -0; sshkey \+3 -0\n", first.stdout)
    assert found, first.stdout
    assert int(started) <= int(found.group(1)) <= time.time()
    assert not publisher.directory.exists()
    assert tree(tmp_path) == before

    generation = published(publisher.publish())
    iam.set_org(without(demo_org, "erin"))
    before = tree(tmp_path)

    second = publisher.publish("--dry-run")

    assert second.returncode == 0, second.stderr
    assert second.stdout == (f"would publish generation {generation + 1}: 3 users, 2 groups, 4 SSH keys; "
                             "passwd +0 -1; group +1 -1; shadow +0 -1; sshkey +0 -0\n")
    assert tree(tmp_path) == before


# --- 3. generations --------------------------------------------------------------------------------------------


def test_generations_only_grow_also_within_one_second(publisher):
    first = published(publisher.publish())
    second = published(publisher.publish())
    assert second > first

    config = coreweave_config(publisher.node.conf)
    now = time.time()
    third = publish_mod.publish(config, now=now).manifest.generation
    fourth = publish_mod.publish(config, now=now).manifest.generation

    assert second < third < fourth
    assert (publisher.generation(), generations(publisher.directory)) == (fourth, [first, second, third, fourth])


def test_publish_keep_one_leaves_the_current_and_one_older_generation(tmp_path, bin_dir, iam):
    publisher = Publisher.create(tmp_path, bin_dir, iam.base_url, "coreweave_publish_keep = 1\n")
    outputs, numbers = [], []
    for _ in range(4):
        result = publisher.publish()
        numbers.append(published(result))
        outputs.append(result.stdout.splitlines()[1:])

    assert numbers == sorted(set(numbers))
    assert outputs == [[], [], [f"removed generations {numbers[0]} (coreweave_publish_keep 1)"],
                       [f"removed generations {numbers[1]} (coreweave_publish_keep 1)"]]
    assert generations(publisher.directory) == numbers[2:]
    assert publisher.generation() == numbers[3]


# --- 4., 5. what a refresh costs --------------------------------------------------------------------------------


def test_an_idle_refresh_is_one_conditional_request_answered_304(publisher, mirror, mirror_node):
    generation = published(publisher.publish())
    update(mirror_node)
    assert len(settled(mirror, 6)) == 6
    caches = mirror_node.caches()
    mirror.reset_log()

    update(mirror_node)

    (request,) = settled(mirror, 1)
    assert request == Request("GET", "/manifest.json", 304, request.bytes_sent,
                              nginx_etag(publisher.directory / "manifest.json"), 0)
    assert mirror_node.caches() == caches
    assert mirror_node.state()["last_run"]["generation"] == generation


def test_a_new_generation_of_unchanged_data_fetches_no_map(publisher, mirror, mirror_node):
    published(publisher.publish())
    update(mirror_node)
    settled(mirror, 6)
    caches = mirror_node.caches()
    mirror.reset_log()

    same = published(publisher.publish())  # IAM unchanged
    update(mirror_node)

    assert fetched(settled(mirror, 2)) == [("GET", "/manifest.json", 200),
                                        ("GET", f"/generations/{same}/manifest.json.sig", 200)]
    assert mirror_node.caches() == caches
    assert mirror_node.state()["last_run"]["generation"] == same


def test_a_change_to_one_users_keys_fetches_the_new_run_of_every_map(iam, demo_org, publisher, mirror, mirror_node):
    """The four maps of a bundle name one run (as a node's caches do, for whole-file consumers and
    the keys command), so a changed entry gives every map a new run id: all four are fetched once."""
    published(publisher.publish())
    update(mirror_node)
    settled(mirror, 6)
    mirror.reset_log()
    bob_keys = user(demo_org, "alice")[EXT]["sunkSshKeys"][:1]
    iam.set_org(with_keys(demo_org, "bob", bob_keys))

    changed = published(publisher.publish())
    update(mirror_node)

    assert fetched(settled(mirror, 6)) == [("GET", "/manifest.json", 200),
                                        ("GET", f"/generations/{changed}/manifest.json.sig", 200),
                                        *[("GET", f"/generations/{changed}/{name}", 200) for name in MAPS]]
    assert mirror_node.cache("passwd") == expected_caches(demo_org)["passwd"]
    assert f"bob:{bob_keys!r}\n" in mirror_node.cache("sshkey")


# --- 6. a manifest replaced within one second ------------------------------------------------------------------


def test_two_publishes_within_one_second_of_the_same_size_are_both_seen(tmp_path, bin_dir, publisher, mirror):
    """Generation A is published just before the node's first GET of manifest.json reaches nginx,
    B (same IAM data, same creation time: a manifest of the same size) just after nginx answered
    it: the node holds A's ETag, and B's mtime must move it."""
    config = coreweave_config(publisher.node.conf)
    now = time.time()
    manifest = publisher.directory / "manifest.json"
    seen: Dict[str, object] = {}

    def before(path):
        if path == "/manifest.json" and "a" not in seen:
            seen["a"] = publish_mod.publish(config, now=now).manifest.generation
            seen["a_stat"] = (manifest.stat().st_mtime, manifest.stat().st_size)

    def after(path, status, headers):
        if path == "/manifest.json" and "b" not in seen:
            seen["etag_a"] = headers["ETag"]
            seen["b"] = publish_mod.publish(config, now=now).manifest.generation

    with interpose(mirror.base_url) as proxy:
        proxy.before, proxy.after = before, after
        node = Node(tmp_path / "node", bin_dir)
        node.configure_mirror(proxy.base_url, publisher.public_key)
        update(node)
        assert node.state()["last_run"]["generation"] == seen["a"]
        a_mtime, a_size = seen["a_stat"]
        assert seen["b"] == seen["a"] + 1
        assert manifest.stat().st_size == a_size
        assert int(manifest.stat().st_mtime) >= int(a_mtime) + 1
        assert seen["etag_a"] == f'"{int(a_mtime):x}-{a_size:x}"' != nginx_etag(manifest)
        settled(mirror, 6)
        mirror.reset_log()

        update(node)

        assert proxy.errors == []
    # B has A's entries, so A's map files: the node fetches B's manifest and signature, no map.
    first, signature = settled(mirror, 2)
    assert (first.path, first.if_none_match, first.status) == ("/manifest.json", seen["etag_a"], 200)
    assert (signature.path, signature.status) == (f"/generations/{seen['b']}/manifest.json.sig", 200)
    assert node.state()["last_run"]["generation"] == seen["b"]


# --- 7. atomic for readers -------------------------------------------------------------------------------------


def test_a_reader_of_manifest_n_finds_every_file_of_n_after_two_more_publishes(tmp_path, bin_dir, iam):
    publisher = Publisher.create(tmp_path, bin_dir, iam.base_url, "coreweave_publish_keep = 2\n")
    publisher.directory.mkdir()
    first = published(publisher.publish())
    expected = generation_files(publisher.directory, first)
    later: List[int] = []

    def after(path, status, headers):  # the reader holds manifest N: N+1 and N+2 are published now
        if path == "/manifest.json" and not later:
            later.extend(published(publisher.publish()) for _ in range(2))

    with serve(publisher.directory, tmp_path / "nginx") as mirror, interpose(mirror.base_url) as proxy:
        proxy.after = after
        node = Node(tmp_path / "node", bin_dir)
        node.configure_mirror(proxy.base_url, publisher.public_key)

        accepted = mirror_mod.take(coreweave_config(node.conf), scim.Stats())

        assert proxy.errors == []
        assert fetched(settled(mirror, 6)) == [("GET", "/manifest.json", 200),
                                            ("GET", f"/generations/{first}/manifest.json.sig", 200),
                                            *[("GET", f"/generations/{first}/{name}", 200) for name in MAPS]]
    assert accepted.manifest.generation == first and accepted.maps == expected
    assert later[0] > first and later[1] > later[0]
    assert generations(publisher.directory) == [first, *later] and publisher.generation() == later[1]


@dataclass
class Takes:
    """What the reader threads saw: each take's generation and maps, or its error."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    succeeded: List[Tuple[int, Dict[str, bytes]]] = field(default_factory=list)
    failed: List[BaseException] = field(default_factory=list)

    def read(self, config: config_mod.Config, times: int) -> None:
        for _ in range(times):
            try:
                accepted = mirror_mod.take(config, scim.Stats())
            except BaseException as e:
                with self.lock:
                    self.failed.append(e)
            else:
                with self.lock:
                    self.succeeded.append((accepted.manifest.generation, dict(accepted.maps)))


def test_readers_under_fifteen_publishes_get_one_whole_generation_or_never_fail(tmp_path, bin_dir, iam,
                                                                                   demo_org, publisher, mirror):
    config = coreweave_config(publisher.node.conf)
    other = with_keys(demo_org, "alice", user(demo_org, "alice")[EXT]["sunkSshKeys"][:1])
    user(other, "bob")[EXT]["sunkLoginShell"] = "/bin/bash"
    result = publish_mod.publish(config).manifest.generation
    published_files = {result: generation_files(publisher.directory, result)}
    node = Node(tmp_path / "node", bin_dir)
    node.configure_mirror(mirror.base_url, publisher.public_key)
    node_config = coreweave_config(node.conf)
    takes = Takes()

    def publish_fifteen_times():
        for number in range(15):
            iam.set_org(other if number % 2 == 0 else demo_org)
            generation = publish_mod.publish(config).manifest.generation
            published_files[generation] = generation_files(publisher.directory, generation)

    threads = [threading.Thread(target=publish_fifteen_times)]
    threads += [threading.Thread(target=takes.read, args=(node_config, 20)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (len(takes.succeeded), takes.failed) == (80, [])
    assert len(published_files) == 16
    for generation, maps in takes.succeeded:
        assert maps == published_files[generation], generation
    assert len({generation for generation, _ in takes.succeeded}) > 1


# --- 8. the publisher's shrink guard ---------------------------------------------------------------------------


def test_publish_refuses_a_shrink_until_accepted_and_nodes_keep_their_caches(iam, demo_org, publisher, mirror,
                                                                             mirror_node):
    generation = published(publisher.publish())
    update(mirror_node)
    caches = mirror_node.caches()
    iam.set_org(without(demo_org, "bob", "erin", "frank"))
    before = tree(publisher.directory)

    refused = publisher.publish()

    assert refused.returncode == 1, refused.stderr
    assert refused.stdout == ""
    assert "publish refused, nothing written: refusing to shrink users from 4 to 1 (-75%" in refused.stderr
    assert tree(publisher.directory) == before
    update(mirror_node)
    assert mirror_node.caches() == caches
    assert mirror_node.state()["last_run"]["generation"] == generation

    accepted = publisher.publish("--accept-shrink")

    assert published(accepted) > generation
    assert accepted.stdout.startswith(f"published generation {publisher.generation()}: 1 users, 2 groups, 2 SSH keys;")
    assert publisher.manifest()["counts"] == {"users": 1, "groups": 2, "keys": 2}
    # What the operator is told to run is the command that was refused.
    assert "run `nsscache-coreweave publish --accept-shrink` once" in refused.stderr


# --- 9. status, metrics, check, preview on a mirror node ------------------------------------------------------


def test_status_metrics_check_and_preview_name_the_mirror_and_its_generation(demo_org, publisher, mirror,
                                                                            mirror_node):
    generation = published(publisher.publish())
    created = publisher.manifest()["created"]
    update(mirror_node)
    url = mirror.base_url
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))

    status = mirror_node.run("nsscache-coreweave", "status")
    as_json = mirror_node.run("nsscache-coreweave", "status", "--json")
    metrics = (mirror_node.root / "coreweave.prom").read_text()
    check = mirror_node.run("nsscache-coreweave", "check")
    preview = mirror_node.run("nsscache-coreweave", "preview", "passwd")

    assert status.returncode == 0, status.stderr
    assert re.search(rf"^mirror: {re.escape(url)}: generation {generation}, published {iso} \(\d+ s ago\)$",
                     status.stdout, re.M), status.stdout
    last_run = json.loads(as_json.stdout)["last_run"]
    assert (last_run["mirror"], last_run["generation"], last_run["published"]) == (url, generation, created)
    assert f'nsscache_coreweave_mirror_generation{{mirror="{url}"}} {float(generation)!r}\n' in metrics
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    assert samples[("nsscache_coreweave_mirror_generation", (("mirror", url),))] == generation
    assert samples[("nsscache_coreweave_mirror_published_timestamp_seconds", (("mirror", url),))] == created
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert any(line.startswith(f"mirror: {url} (trusted keys: SHA256:") for line in lines), check.stdout
    assert any(re.fullmatch(rf"bundle: generation {generation}, published {iso} \(\d+ s ago\): 4 users, "
                            r"2 groups", line) for line in lines), check.stdout
    assert "would write: 4 users, 2 groups, 4 SSH keys" in lines
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.split("\n", 1)[1] == expected_caches(demo_org)["passwd"]


# --- 10. a publisher without a usable key ----------------------------------------------------------------------


def key_material(key: Path) -> List[str]:
    """The private key's base64 body: each line, and the whole, as it could leak."""
    body = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    whole = "".join(body)
    return body + [whole, base64.b64decode(whole).hex()]


def assert_refused(result: subprocess.CompletedProcess, message: str, secrets: List[str]) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert message in result.stderr, result.stderr
    for secret in secrets:
        assert secret not in result.stdout + result.stderr


def test_publish_without_a_usable_key_or_in_mirror_mode_exits_2_and_writes_nothing(tmp_path, bin_dir, iam):
    directory, key = tmp_path / "published", new_key(tmp_path / "publisher.key")
    secrets = key_material(key)
    node = Node(tmp_path / "publisher", bin_dir)
    node.configure(iam.base_url, f"coreweave_publish_dir = {directory}\n")
    assert_refused(node.run("nsscache-coreweave", "publish"),
                   "publish needs coreweave_publish_key: the publisher's ed25519 private key", secrets)

    key.chmod(0o644)
    node.configure(iam.base_url, f"coreweave_publish_dir = {directory}\ncoreweave_publish_key = {key}\n")
    assert_refused(node.run("nsscache-coreweave", "publish"),
                   f"coreweave_publish_key: {key}: permissions 0644 are too open", secrets)

    key.chmod(0o600)
    node.configure_mirror("http://127.0.0.1:9/bundle", Path(f"{key}.pub"),
                          f"coreweave_publish_dir = {directory}\ncoreweave_publish_key = {key}\n")
    assert_refused(node.run("nsscache-coreweave", "publish"),
                   "publish reads IAM: remove coreweave_mirror_url from the publisher's configuration", secrets)
    assert not directory.exists()
    assert not (node.root / "state" / "coreweave-state.json").exists()
