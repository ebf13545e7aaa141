"""The lower bound of a sync: the stock nsscache with a source that does only what no source can skip.

    NSS_CACHE_COREWEAVE_DISABLE_HOOK=1 python replay.py URLS.json CACHE_DIR TOKEN_FILE -c CONF update --full

Run by the fetch-less part (fetchless.py) with the venv's Python, like a sync. The
package's registration hook is off and the package is never imported: a stand-in
source named ``coreweave`` requests and parses the given URLs (a sync's own requests,
two on the wire at a time as a sync's member batches; ``json.loads`` of every answer,
as floor.py), then hands nsscache each of the four maps built by nsscache's own parser
from the text of ``CACHE_DIR/<map>.cache`` (that sync's caches). The four texts are
held from the first map on, as a source whose maps must agree holds what they are cut
from. No policy, no rendering, no retry, none of the package's imports: the
interpreter, requests and nsscache's building, writing and verifying of the maps are
what is left. It writes exactly the caches of CACHE_DIR.
"""

import functools
import io
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests
from nss_cache import app
from nss_cache.maps import group, passwd, shadow, sshkey
from nss_cache.sources import source, source_factory
from nss_cache.util import file_formats

PARSERS = {
    "passwd": (file_formats.FilesPasswdMapParser, passwd.PasswdMap),
    "group": (file_formats.FilesGroupMapParser, group.GroupMap),
    "shadow": (file_formats.FilesShadowMapParser, shadow.ShadowMap),
    "sshkey": (file_formats.FilesSshkeyMapParser, sshkey.SshkeyMap),
}
IN_FLIGHT = 2  # requests on the wire at a time: a sync's (nss_cache_coreweave.memberfetch.IN_FLIGHT)


class _Fetcher(threading.local):
    """One requests.Session per thread, GETting and parsing one URL."""

    def __init__(self, token: str):
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/scim+json", "Authorization": f"Bearer {token}"})

    def __call__(self, url: str) -> None:
        response = self.session.get(url)
        # A sync's own answers: 404 only to a member looked up by id (GET <base>/Users/<id>).
        lookup = urlsplit(url).path.rstrip("/").split("/")[-2:-1] == ["Users"]
        if not (response.status_code == 200 or (response.status_code == 404 and lookup)):
            raise SystemExit(f"replay: HTTP {response.status_code} for {url}")
        json.loads(response.content)


class Replayed(source.Source):
    """Stands in for the package's source: ``Get<Map>Map`` as nsscache calls them."""

    name = "coreweave"
    urls_file = cache_dir = token_file = ""  # set by main()

    def _map(self, map_name: str):
        parser, map_class = PARSERS[map_name]
        return parser().GetMap(io.StringIO(_texts(self.urls_file, self.cache_dir, self.token_file)[map_name]),
                               map_class())

    def GetPasswdMap(self, since=None):
        return self._map("passwd")

    def GetGroupMap(self, since=None):
        return self._map("group")

    def GetShadowMap(self, since=None):
        return self._map("shadow")

    def GetSshkeyMap(self, since=None):
        return self._map("sshkey")


@functools.lru_cache(maxsize=None)
def _texts(urls_file: str, cache_dir: str, token_file: str) -> dict:
    """At the first map: every request, then the four caches' text."""
    with open(urls_file) as f:
        urls = json.load(f)
    with open(token_file) as f:
        fetch = _Fetcher(f.read().strip())
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        list(pool.map(fetch, urls))
    texts = {}
    for name in PARSERS:
        with open(os.path.join(cache_dir, f"{name}.cache")) as f:
            texts[name] = f.read()
    return texts


def main(argv):
    Replayed.urls_file, Replayed.cache_dir, Replayed.token_file = argv[:3]
    source_factory.RegisterImplementation(Replayed)
    return app.NssCacheApp().Run(argv[3:], os.environ)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
