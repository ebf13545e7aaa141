"""Operating it on a fleet: ``nsscache-coreweave status`` (fresh, stale,
failed, never run), the run record every run leaves (stock nsscache too),
the one summary log line, and the Prometheus textfile, parsed with
prometheus_client's own parser."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.fakeiam import Fault
from support.node import MAPS, TOKEN, Node


@pytest.fixture
def node(tmp_path, installed_venv, iam):
    n = Node(tmp_path / "node", installed_venv.python.parent)
    n.configure(iam.base_url, f"coreweave_metrics_file = {tmp_path / 'node' / 'metrics' / 'coreweave.prom'}\n")
    (n.root / "metrics").mkdir()
    return n


def status(node, *args):
    result = node.run("nsscache-coreweave", "status", *args)
    return result.returncode, result.stdout, result.stderr


def samples(node):
    text = (node.root / "metrics" / "coreweave.prom").read_text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def backdate(node, seconds):
    """Pretend the last run happened ``seconds`` ago: rewrite nsscache's
    update timestamps and the package's run record the way they would read."""
    then = time.time() - seconds
    for name in MAPS:
        (node.root / "state" / f"timestamp-{name}-update").write_text(
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(then)) + "\n"
        )
    state_file = node.root / "state" / "coreweave-state.json"
    data = json.loads(state_file.read_text())
    for entry in data["scopes"].values():
        entry["last_run"]["started"] = then - 1
    state_file.write_text(json.dumps(data))


def test_status_before_any_run_is_unknown(node):
    code, out, err = status(node, "--max-age", "600")

    assert code == 2, err
    assert out.splitlines()[0] == "passwd  unknown never updated, None entries, run -"
    assert out.splitlines()[-1] == "status: unknown"


def test_status_after_a_good_run_is_fresh(node):
    assert node.run("nsscache", "update", "--full").returncode == 0

    code, out, err = status(node, "--max-age", "600", "--json")
    report = json.loads(out)

    assert code == 0, err
    assert report["status"] == "fresh"
    assert {m: (v["status"], v["entries"]) for m, v in report["maps"].items()} == {
        "passwd": ("fresh", 4), "group": ("fresh", 2), "shadow": ("fresh", 4), "sshkey": ("fresh", 3),
    }
    run = report["last_run"]
    assert (run["outcome"], run["users"], run["groups"], run["keys"]) == ("ok", 4, 2, 4)
    assert run["drops"] == {"key/key": 1, "user/inactive": 1}
    # The fake IAM has no /ServiceProviderConfig: a 404, counted (coreweave_fetch = auto asks every run).
    assert run["requests"] == {"Groups/2xx": 1, "ServiceProviderConfig/4xx": 1, "Users/2xx": 1}


def test_status_of_an_old_run_is_stale(node):
    assert node.run("nsscache", "update", "--full").returncode == 0
    backdate(node, 3600)

    code, out, _ = status(node, "--max-age", "600")

    assert code == 1
    assert out.splitlines()[-1] == "status: stale"
    assert status(node, "--max-age", "7200")[0] == 0


def test_status_after_a_failed_run_is_failed_and_says_why(node, iam):
    assert node.run("nsscache", "update", "--full").returncode == 0
    iam.add_fault(Fault.error("Groups", page=1, status=401, times=None))
    assert node.run("nsscache", "update", "--full").returncode == 75

    code, out, _ = status(node, "--max-age", "3600")

    assert code == 1
    assert "last error: AuthError: Groups page 1: HTTP 401" in out
    assert "passwd  failed" in out and "not updated by the last run" in out
    assert out.splitlines()[-1] == "status: failed"
    assert TOKEN not in out


def test_status_needs_no_token(node):
    assert node.run("nsscache", "update", "--full").returncode == 0
    node.token_file.unlink()

    assert status(node, "--max-age", "600")[0] == 0


def test_status_without_max_age_only_reports(node):
    assert status(node)[0] == 0


def test_metrics_file_matches_the_run(node):
    result = node.run("nsscache", "update", "--full")

    assert result.returncode == 0
    m = samples(node)
    assert m[("nsscache_coreweave_last_run_success", ())] == 1.0
    assert m[("nsscache_coreweave_users", ())] == 4.0
    assert m[("nsscache_coreweave_groups", ())] == 2.0
    assert m[("nsscache_coreweave_ssh_keys", ())] == 4.0
    assert m[("nsscache_coreweave_dropped_entries", (("kind", "user"), ("reason", "inactive")))] == 1.0
    assert m[("nsscache_coreweave_dropped_entries", (("kind", "key"), ("reason", "key")))] == 1.0
    assert m[("nsscache_coreweave_http_requests", (("endpoint", "Users"), ("status_class", "2xx")))] == 1.0
    assert m[("nsscache_coreweave_http_requests", (("endpoint", "Groups"), ("status_class", "2xx")))] == 1.0
    discovery = (("endpoint", "ServiceProviderConfig"), ("status_class", "4xx"))
    assert m[("nsscache_coreweave_http_requests", discovery)] == 1.0
    assert m[("nsscache_coreweave_http_retries", ())] == 0.0
    assert m[("nsscache_coreweave_shrink_guard_refusals_total", ())] == 0.0
    assert [m[("nsscache_coreweave_map_written", (("map", name),))] for name in MAPS] == [1.0] * 4
    assert abs(m[("nsscache_coreweave_last_run_timestamp_seconds", ())] - time.time()) < 120
    assert m[("nsscache_coreweave_last_success_timestamp_seconds", ())] >= m[
        ("nsscache_coreweave_last_run_timestamp_seconds", ())
    ]
    # The run's one summary line (stderr: stdin is a terminal for nsscache).
    assert "coreweave: run ok in " in result.stderr
    assert "4 users, 2 groups, 4 SSH keys; dropped: key/key 1, user/inactive 1; 3 requests, 0 retries" in result.stderr


def test_metrics_after_a_failed_run_keep_the_last_success(node, iam):
    node.configure(iam.base_url, f"coreweave_metrics_file = {node.root / 'metrics' / 'coreweave.prom'}\n"
                                 "coreweave_retries = 1\ncoreweave_max_retry_wait = 0\n")
    assert node.run("nsscache", "update", "--full").returncode == 0
    success = samples(node)[("nsscache_coreweave_last_success_timestamp_seconds", ())]
    iam.add_fault(Fault.error("Users", page=1, status=503, times=None))

    assert node.run("nsscache", "update", "--full").returncode == 75

    m = samples(node)
    assert m[("nsscache_coreweave_last_run_success", ())] == 0.0
    assert m[("nsscache_coreweave_last_success_timestamp_seconds", ())] == success
    assert m[("nsscache_coreweave_http_requests", (("endpoint", "Users"), ("status_class", "5xx")))] == 2.0
    assert m[("nsscache_coreweave_http_retries", ())] == 1.0


def test_shrink_refusals_are_counted(node, iam, demo_org):
    assert node.run("nsscache", "update", "--full").returncode == 0
    for group in demo_org["Groups"]:
        group["members"] = group["members"][:1]  # 4 users -> 1
    iam.set_org(demo_org)

    result = node.run("nsscache", "update", "--full")

    assert result.returncode == 4
    assert "refusing to shrink users from 4 to 1" in result.stderr
    assert samples(node)[("nsscache_coreweave_shrink_guard_refusals_total", ())] == 1.0
    assert status(node, "--max-age", "600")[0] == 1
