"""The README and conf/nsscache.conf mirror config.KEYS, and the example
configuration is accepted by nsscache's own loader and by ours."""

from __future__ import annotations

import re

from nss_cache import config as nss_config

from nss_cache_coreweave import config
from support.venvs import REPO


def test_readme_documents_every_key():
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"`coreweave_([a-z_]+)`", readme))
    assert set(config.KEYS) <= documented, sorted(set(config.KEYS) - documented)
    assert documented <= set(config.KEYS), sorted(documented - set(config.KEYS))


def test_example_conf_mentions_every_key():
    text = (REPO / "conf" / "nsscache.conf").read_text()
    mentioned = set(re.findall(r"^#? ?coreweave_([a-z_]+) =", text, re.M))
    assert mentioned == set(config.KEYS)


def test_example_conf_loads_in_nsscache_and_parses(tmp_path):
    conf = nss_config.Config({})
    conf.config_file = str(REPO / "conf" / "nsscache.conf")
    nss_config.LoadConfig(conf)
    token = tmp_path / "token"
    token.write_text("example-token\n")
    token.chmod(0o600)
    # The example points at /etc/nsscache-coreweave/token; use a real file here.
    options = dict(conf.options["passwd"].source, token_file=str(token))

    parsed = config.parse(options, environ={})

    assert conf.maps == ["passwd", "group", "shadow", "sshkey"]
    assert parsed.server.users_url == "https://api.coreweave.com/scim/YOUR-ORG-ID/Users"
    assert parsed.allowed_groups == ("slurm-users", "slurm-admins")
    assert parsed.home_template == "/mnt/home/%u"
    assert parsed.warnings == ()
