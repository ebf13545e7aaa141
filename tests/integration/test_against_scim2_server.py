"""The client against a SCIM server this project did not write: scim2-server
(PyPI), with the CoreWeave extension schemas loaded through ``--schema`` and the
demo organisation created through its real SCIM API. The stock nsscache writes
the same caches as against our own fake IAM."""

from __future__ import annotations

import pytest

from support.node import TOKEN, Node, assert_stock_update_writes_the_demo_caches
from support.scim2_harness import GROUP_GID_PATH, GROUP_NAME_PATH, Scim2Server, load_org


@pytest.fixture
def scim2(tmp_path, demo_org):
    with Scim2Server(tmp_path / "scim2", token=TOKEN) as server:
        load_org(server.base_url, TOKEN, demo_org)
        yield server


@pytest.mark.parametrize("fetch, fetched", [("auto", "members"), ("full", "full")])
@pytest.mark.parametrize("paging", ["coreweave_pagination = index", "coreweave_pagination = cursor"])
def test_stock_nsscache_against_scim2_server_writes_exact_caches(tmp_path, installed_venv, scim2, demo_org, paging,
                                                                 fetch, fetched):
    """scim2-server advertises and honours filters and `attributes`: with the default `auto` the node
    asks only for the members, by id, with only the attributes it reads; the caches are the same."""
    node = Node(tmp_path / "node", installed_venv.python.parent)
    node.configure(
        scim2.base_url,
        f"coreweave_group_name_attribute = {GROUP_NAME_PATH}\n"
        f"coreweave_group_gid_attribute = {GROUP_GID_PATH}\n"
        f"coreweave_page_size = 2\n{paging}\ncoreweave_fetch = {fetch}\n",
    )

    result = assert_stock_update_writes_the_demo_caches(node, demo_org)

    assert node.state()["last_run"]["fetch"] == fetched
    assert "failed" not in result.stderr  # neither the member fetch nor the projection fell back
