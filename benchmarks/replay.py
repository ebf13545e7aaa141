"""The lower bound of a sync: the stock nsscache with a source that does only what no source can skip.

    BENCH_TOKEN=... python replay.py URLS.json CACHE_DIR -c NSSCACHE_CONF update --full

Run by the fetch-less part (fetchless.py) with the venv's Python, like a sync. It
requests and parses the given URLs (a sync's own requests; one requests.Session and
``json.loads`` of every answer, as floor.py), then hands nsscache each of the four maps
built by nsscache's own parser from the text of ``CACHE_DIR/<map>.cache`` (that sync's
caches). All four texts are held from the first map on, as a source whose maps must
agree has to hold them. No policy, no rendering, no retry: what a sync costs even if
this package's own code cost nothing. It writes exactly the caches of CACHE_DIR.

The package is imported as nsscache imports it for a sync (the registration hook), and
only its map getters are replaced: interpreter, imports and nsscache's writing and
verifying are the same as a sync's.
"""

import io
import json
import os
import sys
from functools import partialmethod

import requests
from nss_cache import app
from nss_cache.maps import group, passwd, shadow, sshkey
from nss_cache.util import file_formats

from nss_cache_coreweave import source

MAPS = {
    "passwd": (file_formats.FilesPasswdMapParser, passwd.PasswdMap),
    "group": (file_formats.FilesGroupMapParser, group.GroupMap),
    "shadow": (file_formats.FilesShadowMapParser, shadow.ShadowMap),
    "sshkey": (file_formats.FilesSshkeyMapParser, sshkey.SshkeyMap),
}
ANSWERED = (200, 404)  # a sync's own answers: 404 to a deleted member looked up by id
_held = {}


def _fetch(urls_file):
    with open(urls_file) as f:
        urls = json.load(f)
    session = requests.Session()
    session.headers.update({"Accept": "application/scim+json", "Authorization": f"Bearer {os.environ['BENCH_TOKEN']}"})
    for url in urls:
        response = session.get(url)
        if response.status_code not in ANSWERED:
            raise SystemExit(f"replay: HTTP {response.status_code} for {url}")
        json.loads(response.content)


def _map(self, map_name, since=None, *, urls_file, cache_dir):
    if not _held:
        _fetch(urls_file)
        for name in MAPS:
            with open(os.path.join(cache_dir, f"{name}.cache")) as f:
                _held[name] = f.read()
    parser, map_class = MAPS[map_name]
    return parser().GetMap(io.StringIO(_held[map_name]), map_class())


def main(argv):
    urls_file, cache_dir, nsscache_args = argv[0], argv[1], argv[2:]
    for name in MAPS:
        getter = partialmethod(_map, name, urls_file=urls_file, cache_dir=cache_dir)
        setattr(source.CoreWeaveSource, f"Get{name.capitalize()}Map", getter)
    return app.NssCacheApp().Run(nsscache_args, {})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
