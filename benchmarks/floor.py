"""The floor: fetch the given URLs with one requests.Session and json.loads every page.

    BENCH_TOKEN=... python floor.py URLS.json

URLS.json is a JSON list of absolute URLs: the whole listing, every Users and Groups
page without filter or attributes, as a ``coreweave_fetch = full`` run requests them.
The runner computes them (``benchmarks.server.listing_targets``: ``startIndex``/``count``
per page, or the walk of the server's cursors) rather than recording a sync's, since a
sync may now ask for less (members by id, projected attributes); the fetch-less part
checks them against a ``coreweave_fetch = full`` run's requests. Each page is fetched,
parsed and dropped; nothing else is done with it. The Authorization and Accept headers
are the ones the package sends. One line of JSON (pages, bytes) goes to stdout at the
end; any non-200 answer exits 1.
"""

import json
import os
import sys

import requests


def main(argv):
    with open(argv[0]) as f:
        urls = json.load(f)
    session = requests.Session()
    session.headers.update({"Accept": "application/scim+json", "Authorization": f"Bearer {os.environ['BENCH_TOKEN']}"})
    size = 0
    for url in urls:
        response = session.get(url)
        if response.status_code != 200:
            print(f"floor: HTTP {response.status_code} for {url}", file=sys.stderr)
            return 1
        content = response.content
        size += len(content)
        json.loads(content)
    print(json.dumps({"pages": len(urls), "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
