"""coreweave_shadow_default_* through the stock nsscache 0.49 (as in
test_update.py: the installed wheel, ``nsscache update`` as a subprocess, the
loopback IAM serving demo/org.json): the same shadow(5) fields on every
account's line of shadow.cache, the way CoreWeave's fork sets them in a
``[shadow]`` section; nothing else changes."""

from __future__ import annotations

from support.node import MAPS, MARKER, expected_caches

SHADOW_SECTION = (
    "[shadow]\n"
    "coreweave_shadow_default_lstchg = 19000\n"
    "coreweave_shadow_default_min = 0\n"  # nsscache writes a 0 as an empty field
    "coreweave_shadow_default_max = 99999\n"
    "coreweave_shadow_default_warn = 7\n"
    "coreweave_shadow_default_inact =\n"  # empty: as unset
    "coreweave_shadow_default_expire = 2147483647\n"
)


def test_shadow_defaults_in_the_shadow_section_are_on_every_shadow_line(node, iam, demo_org):
    node.configure(iam.base_url, SHADOW_SECTION)

    result = node.run("nsscache", "update", "--full")

    assert result.returncode == 0, result.stderr
    run = node.run_marker()  # "*<run>": one run for all four maps; the marker's line keeps its empty fields
    assert (node.root / "cache" / "shadow.cache").read_text() == f"{MARKER}:{run}:::::::\n" + "".join(
        f"{name}:*:19000::99999:7::2147483647:\n" for name in ("alice", "bob", "erin", "frank")
    )
    expected = expected_caches(demo_org)
    for name in MAPS:
        if name != "shadow":
            assert node.cache(name) == expected[name], name
    # The shadow section makes its own configuration, not a second listing.
    assert (iam.request_count("Users"), iam.request_count("Groups")) == (1, 1)


def test_preview_shows_the_shadow_defaults(node, iam):
    node.configure(iam.base_url, "coreweave_shadow_default_max = 99999\ncoreweave_shadow_default_warn = 7\n")

    result = node.run("nsscache-coreweave", "preview", "shadow")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n", 1)[1] == "".join(
        f"{name}:*:::99999:7:::\n" for name in ("alice", "bob", "erin", "frank")
    )
    assert node.files() == {}


def test_a_shadow_default_that_is_not_days_keeps_every_cache_and_names_the_key(node, iam):
    assert node.run("nsscache", "update", "--full").returncode == 0
    before = node.files()
    node.configure(iam.base_url, "coreweave_shadow_default_expire = never\n")

    result = node.run("nsscache", "update", "--full")

    assert result.returncode != 0
    assert "coreweave_shadow_default_expire must be an integer or empty, got 'never'" in result.stderr
    assert node.files() == before
