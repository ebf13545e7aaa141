"""Benchmarks for nss-cache-coreweave (issues 5, 15 and 16).

``python -m benchmarks`` (or ``make bench``) runs the real ``nsscache update --full``
against a synthetic organisation served from loopback and compares it with the
floor, the cost of merely downloading and parsing the same pages; it writes
``docs/benchmarks.md``.

Modules:

* ``keys``    a deterministic pool of real OpenSSH public keys (RSA cached on disk)
* ``org``     the deterministic synthetic organisation (users, groups, invalid records)
* ``server``  the fast loopback SCIM server (pre-rendered pages; plain or filtering), run as its own process
* ``launch``  the tiny launcher that measures one child (wall, CPU, peak RSS)
* ``floor``   the floor client: one requests.Session, json.loads of every page
* ``replay``  the fetch-less part's lower bound: the stock nsscache fed a sync's own requests and caches
* ``common``  what the runner and the many-nodes part share (measuring a process, a node's conf)
* ``runner``  the benchmark runner and ``docs/benchmarks.md``
* ``many``    issue 15's many-nodes part: publish, a node in mirror mode behind a real nginx, a fleet
* ``fetchless`` issue 16's part: members by id and projected attributes on a filtering server
* ``report``, ``many_report``, ``fetchless_report``, ``tables``  the report's sections and tables

Nothing is imported here: ``launch``, ``floor`` and ``replay`` run as scripts.
"""
