"""The chaos suite's pure parts: gates, replica identities, the fuzz generator, the report.

The faults themselves run against the testbed (`nox -s chaos`); here each gate is shown to
fail on its own figure, so a scenario that did nothing cannot pass.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

from loadtests.chaos import faults, fuzz, gates, report, tagfuzz
from loadtests.chaos.cli import HANDLERS, parse_args
from loadtests.chaos.scenarios import NAMES, PROFILES, SHORT
from loadtests.observe import Sample
from loadtests.runner import RunResult
from mlray import deploy
from mlray.config import MlrayConfig
from mlray.errors import ClusterError, TagError
from mlray.ray_api import ClusterFacts


def test_replica_kill_holds_at_the_issues_thresholds_and_fails_past_either():
    assert gates.replica_kill(1000, 5, 15.0).passed
    assert not gates.replica_kill(1000, 6, 3.0).passed
    assert not gates.replica_kill(1000, 0, 15.1).passed
    assert not gates.replica_kill(1000, 0, None).passed  # never replaced
    assert not gates.replica_kill(0, 0, 1.0).passed  # no load at all


def _writer(name: str, code: int, *apps: str, output: str = "Done.") -> gates.Writer:
    return gates.Writer(name, code, apps, output)


def test_concurrent_deploy_fails_on_a_lost_update_and_on_a_traceback():
    served = {"a": "RUNNING", "p": "RUNNING"}
    ok = [_writer("d1", 0, "a"), _writer("plugin", 0, "p")]
    assert gates.concurrent_deploy(ok, served, 100, 0, 20.0).passed
    lost = gates.concurrent_deploy(ok, {"a": "RUNNING"}, 100, 0, None)
    assert not lost.passed and "plugin reported p deployed; got p: absent" in lost.detail
    clear = [_writer("d1", 0, "a"), _writer("d2", 1, "b", output="error: another writer ...")]
    assert gates.concurrent_deploy(clear, served, 100, 0, 20.0).passed  # the loser said why
    crash = [_writer("d1", 0, "a"), _writer("d2", 1, "b", output="Traceback (most recent")]
    assert not gates.concurrent_deploy(crash, served, 100, 0, 20.0).passed
    assert not gates.concurrent_deploy([_writer("d1", 1, "a", output="x")], {}, 1, 0, 1).passed


def test_fuzz_requests_fails_on_a_5xx_a_drop_a_restart_or_too_few_requests():
    ids = {"r1": "a/1", "r2": "b/2"}
    good = gates.fuzz_requests(Counter({400: 1990, 200: 10}), 0, ids, ids, 500, 0, 2000)
    assert good.passed and good.success_rate == 1.0
    assert not gates.fuzz_requests(Counter({400: 1999, 500: 1}), 0, ids, ids, 500, 0, 2000).passed
    assert not gates.fuzz_requests(Counter({400: 1999}), 1, ids, ids, 500, 0, 2000).passed
    moved = {"r1": "a/1", "r3": "c/3"}
    assert not gates.fuzz_requests(Counter({400: 2000}), 0, ids, moved, 500, 0, 2000).passed
    assert not gates.fuzz_requests(Counter({400: 10}), 0, ids, ids, 500, 0, 2000).passed
    assert not gates.fuzz_requests(Counter({400: 2000}), 0, {}, {}, 500, 0, 2000).passed


def test_running_identities_change_when_a_replica_restarts_in_place():
    def details(pid: int) -> dict:
        rs = [{"replica_id": "r1", "state": "RUNNING", "actor_id": "x", "pid": pid},
              {"replica_id": "r2", "state": "STARTING", "actor_id": "y", "pid": 9}]  # fmt: skip
        return {"applications": {"app": {"deployments": {"M": {"replicas": rs}}}}}

    assert faults.running_identities(details(7), "app") == {"r1": "x/7"}
    assert faults.running_identities(details(7), "app") != faults.running_identities(
        details(8), "app"
    )
    assert faults.replicas(details(7), "other") == []


def test_the_fuzz_generator_sends_the_requested_count_of_varied_requests(monkeypatch):
    seen: list[fuzz.FuzzRequest] = []

    def sender(session, url, req):
        seen.append(req)
        return 503 if req is marked[0] else (None if req is marked[1] else 400)

    marked = fuzz.generate(2)  # two requests that are answered 503 and not at all
    drawn = fuzz.generate(198)
    monkeypatch.setattr(fuzz, "generate", lambda n: [*marked, *drawn][:n])
    result = fuzz.run("http://replica/invocations", 200, sender=sender)
    assert result.total == 200 and result.transport_errors == 1 and result.statuses[503] == 1
    assert 503 in result.examples and 0 in result.examples
    assert len({r.content_type for r in seen}) >= 5
    assert len({r.body for r in seen}) >= 100


def test_profiles_cover_the_issue_and_the_short_one_fits_ci():
    assert set(NAMES) == {
        "replica_kill", "concurrent_deploy", "fuzz_requests", "head_restart_redeploy", "fuzz_tags",
        "mlflow_outage", "worker_kill", "head_restart_ft",
    }  # fmt: skip
    # CI's short profile runs the quick ones unless scenarios are named
    assert SHORT == ("replica_kill", "concurrent_deploy", "fuzz_requests")
    assert parse_args(["--profile", "short"]).scenario == list(SHORT)
    assert parse_args([]).scenario == list(NAMES)
    assert parse_args(["--profile", "short", "--scenario", NAMES[-1]]).scenario == [NAMES[-1]]
    assert set(HANDLERS) == set(NAMES)
    assert all(p.fuzz_requests >= 2000 and p.fuzz_tags >= 500 for p in PROFILES.values())
    short = PROFILES["short"]
    assert short.load_s * 2 + short.race_load_s <= 240  # + set-up: the ~6 min CI budget


def test_the_report_writes_chaos_json_in_the_issues_shape_and_a_png(tmp_path: Path):
    outcomes = {"replica_kill": gates.replica_kill(1000, 0, 8.2)}
    path = report.write_json(tmp_path, outcomes, {"profile": "short"})
    doc = json.loads(path.read_text())
    assert set(doc["scenarios"]["replica_kill"]) == {
        "passed", "success_rate", "recovery_s", "detail",
    }  # fmt: skip
    history = [{"ts": 100 + t, "t": t, "users": 8, "rps": 50.0, "failures_s": float(t == 3),
                "p50_ms": 5.0, "p99_ms": 9.0} for t in range(10)]  # fmt: skip
    run = RunResult("replica_kill", "iris-chaos", "u", 8, 10, 10, 500, 1, 50, 5, 9, 5)
    run.history = history
    samples = [Sample(100 + t / 2, 2 if t < 6 or t > 12 else 1, None, None) for t in range(20)]
    png = report.plot(tmp_path, "replica_kill", run, samples, {"SIGKILL": 103.0})
    assert png.stat().st_size > 10_000
    assert "replica_kill" in report.table(outcomes, {"replica_kill": 40})


def test_head_restart_redeploy_gates_recovery_and_answers_not_the_outages_traffic():
    apps = ["iris-a", "iris-b"]
    ok = gates.head_restart_redeploy(0, apps, dict.fromkeys(apps, "RUNNING"), {}, 95.0, 900, 600)
    assert ok.passed and ok.success_rate == 0.33333 and ok.recovery_s == 95.0
    slow = gates.head_restart_redeploy(0, apps, dict.fromkeys(apps, "RUNNING"), {}, 181.0, 9, 0)
    assert not slow.passed and "181.0 s" in slow.detail
    lost = gates.head_restart_redeploy(0, apps, {"iris-a": "RUNNING"}, {}, 95.0, 9, 0)
    assert not lost.passed and "iris-b: absent" in lost.detail
    wrong = gates.head_restart_redeploy(
        0, apps, dict.fromkeys(apps, "RUNNING"), {"iris-b": "[0] -> HTTP 500"}, 95.0, 9, 0
    )
    assert not wrong.passed and "iris-b: [0] -> HTTP 500" in wrong.detail
    assert not gates.head_restart_redeploy(
        1, apps, dict.fromkeys(apps, "RUNNING"), {}, 9, 9, 0
    ).passed
    assert not gates.head_restart_redeploy(0, [], {}, {}, 9.0, 9, 0).passed
    assert not gates.head_restart_redeploy(0, apps, {}, {}, None, 9, 0).passed


def test_tag_fuzz_sorts_success_user_errors_and_bugs():
    def check(tags):
        if tags.get("k") == "bug":
            raise KeyError("k")
        if tags.get("k") == "bad":
            raise TagError([])
        if tags.get("k") == "quiet":
            raise ClusterError("")

    found = tagfuzz.run(check, [{"k": "ok"}, {"k": "bad"}, {"k": "bug"}, {"k": "quiet"}])
    assert found.exits == Counter({0: 1, 2: 1, 1: 1}) and found.total == 4
    assert len(found.bugs) == 1 and "KeyError" in found.bugs[0] and '"k": "bug"' in found.bugs[0]
    assert found.silent == ['{"k": "quiet"}']
    sets = tagfuzz.generate(60)
    assert len(sets) == 60 and all(isinstance(v, str) for t in sets for v in t.values())
    assert any(t.get("ray.name") == tagfuzz.FUZZ_APP for t in sets)


def test_mlrays_check_answers_generated_tag_sets_with_exit_0_or_2_never_a_traceback(monkeypatch):
    """The in-process half of fuzz_tags, offline: the real check from the tags on, with the
    registry and the dashboard as fakes (tests/unit/test_export.py)."""
    from dataclasses import replace

    from tests.unit import test_export as fakes

    class Cluster(fakes.EmptyCluster):
        def haproxy_actors(self):
            return []

        def autoscaler(self):
            return False

    class Registry(fakes.FakeRegistry):
        tags: dict[str, str] = {}

        def selected(self, selection):
            return [replace(fakes.MODELS[0], tags=dict(self.tags)), *fakes.MODELS[1:]], []

    monkeypatch.setattr(deploy, "RayDashboard", Cluster)
    cfg = MlrayConfig.model_validate({
        "mlflow": {"tracking_uri": "http://127.0.0.1:5000"},
        "clusters": {"py311": {"dashboard_url": "http://d:8265", "serve_url": "http://s:8000",
                               "python": "3.11"}},
    })  # fmt: skip
    registry = Registry("http://127.0.0.1:5000")
    facts = ClusterFacts("3.11.7", "x86_64", "Linux", "glibc-2.36", "2.60.0")
    opts = deploy.Options(preflight=False)

    def check(tags):
        registry.tags = dict(tags)
        deploy.check(cfg, "py311", opts, deploy.Console(io.StringIO()), facts, registry)

    found = tagfuzz.run(check, tagfuzz.generate(150))
    assert found.bugs == [] and found.silent == []
    assert set(found.exits) <= {0, 2} and found.exits[0] and found.exits[2]
    assert gates.fuzz_tags(found.exits, [], [], [(0, "OK")], ("a", "a"), 150, 1).passed


def test_fuzz_tags_gate():
    ok = gates.fuzz_tags(
        Counter({0: 100, 2: 400}), [], [], [(2, "mlray: error: 1 tag problem"), (0, "OK")],
        ("f", "f"), 500, 2,
    )  # fmt: skip
    assert ok.passed and ok.success_rate == 1.0 and "500 tag sets" in ok.detail
    bad = [
        gates.fuzz_tags(Counter({0: 499}), [], [], [(0, "")] * 2, ("f", "f"), 500, 2),
        gates.fuzz_tags(Counter({0: 500}), [], ["{} Traceback"], [(0, "")] * 2, ("f", "f"), 500, 2),
        gates.fuzz_tags(Counter({0: 499, 1: 1}), [], [], [(0, "")] * 2, ("f", "f"), 500, 2),
        gates.fuzz_tags(Counter({2: 500}), ["{}"], [], [(0, "")] * 2, ("f", "f"), 500, 2),
        gates.fuzz_tags(Counter({0: 500}), [], [], [(1, "Traceback")] * 2, ("f", "f"), 500, 2),
        gates.fuzz_tags(Counter({0: 500}), [], [], [(2, "no message")] * 2, ("f", "f"), 500, 2),
        gates.fuzz_tags(Counter({0: 500}), [], [], [(0, "")], ("f", "f"), 500, 2),
        gates.fuzz_tags(Counter({0: 500}), [], [], [(0, "")] * 2, ("f", "g"), 500, 2),
    ]
    assert not any(o.passed for o in bad)
    assert bad[2].success_rate == round(501 / 502, 5)


def test_with_replicas_scales_one_app_and_keeps_the_rest_as_it_runs():
    app = {"name": "a", "route_prefix": "/a", "deployments": [{"name": "M", "num_replicas": 2}]}
    other = {"name": "b", "route_prefix": "/b", "deployments": [{"name": "M", "num_replicas": 1}]}
    details = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000, "root_url": "http://x"},
        "applications": {
            "a": {"deployed_app_config": app},
            "b": {"deployed_app_config": other},
            "gone": {"status": "DELETING"},
        },
    }
    config = faults.with_replicas(details, "a", 3)
    assert config["applications"] == [
        {**app, "deployments": [{"name": "M", "num_replicas": 3}]},
        other,
    ]
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert config["proxy_location"] == "EveryNode"
    assert app["deployments"][0]["num_replicas"] == 2  # the details are not changed


def test_mlflow_outage_gate():
    ok = gates.mlflow_outage(5000, 3, 45.0, 8.5, None)
    assert ok.passed and ok.recovery_s == 8.5 and "MLflow still paused" in ok.detail
    assert not gates.mlflow_outage(5000, 60, 45.0, 8.5, None).passed  # traffic failed
    waited = gates.mlflow_outage(5000, 3, 45.0, None, 12.0)  # it loaded from MLflow after all
    assert not waited.passed and "it ran 12.0 s after MLflow's return" in waited.detail
    assert "from its node's model cache" in waited.detail
    never = gates.mlflow_outage(5000, 3, 45.0, None, None)
    assert not never.passed and "nor within 180 s" in never.detail
    assert not gates.mlflow_outage(0, 0, 45.0, 1.0, None).passed  # no traffic seen


def _app(status, target, *replicas):
    return {
        "status": status,
        "deployments": {"M": {"target_num_replicas": target, "replicas": [
            {"replica_id": rid, "state": state, "node_id": node, "actor_id": "a", "pid": 1}
            for rid, state, node in replicas
        ]}},
    }  # fmt: skip


def test_worker_kill_finds_the_workers_replicas_and_when_the_apps_are_whole_without_them():
    before = {
        "controller_info": {"node_id": "head"},
        "applications": {
            "a": _app("RUNNING", 2, ("a1", "RUNNING", "head"), ("a2", "RUNNING", "w")),
            "b": _app("RUNNING", 1, ("b1", "RUNNING", "head")),
        },
    }
    gone = faults.replicas_on_other_nodes(before, ["a", "b"])
    assert gone == {"a": ["a2"], "b": []}
    assert faults.replicas_on_head(before, ["a", "b"]) == {"a": ["a1"], "b": ["b1"]}
    assert not faults.whole_without(before, gone)  # Ray has not noticed yet
    noticed = {**before, "applications": {
        "a": _app("RUNNING", 2, ("a1", "RUNNING", "head"), ("a3", "STARTING", "head")),
        "b": before["applications"]["b"]}}  # fmt: skip
    assert not faults.whole_without(noticed, gone)
    whole = {**before, "applications": {
        "a": _app("RUNNING", 2, ("a1", "RUNNING", "head"), ("a3", "RUNNING", "head")),
        "b": before["applications"]["b"]}}  # fmt: skip
    assert faults.whole_without(whole, gone)
    whole["applications"]["b"]["status"] = "DEPLOYING"
    assert not faults.whole_without(whole, gone)


def test_head_restart_ft_gate():
    apps = ["iris-a", "iris-b"]
    running = dict.fromkeys(apps, "RUNNING")
    ok = gates.head_restart_ft(apps, running, {}, ["r1"], [], 48.0, 5000, 20)
    assert ok.passed and ok.success_rate == 0.996 and ok.recovery_s == 48.0
    assert "no deploy" in ok.detail
    assert not gates.head_restart_ft(apps, running, {}, ["r1"], [], 48.0, 5000, 60).passed
    assert not gates.head_restart_ft(apps, running, {}, [], [], 48.0, 5000, 0).passed  # untested
    assert not gates.head_restart_ft(apps, running, {}, ["r1"], [], 61.0, 5000, 0).passed
    assert not gates.head_restart_ft(apps, running, {}, ["r1"], [], None, 5000, 0).passed
    lost = gates.head_restart_ft(apps, {"iris-a": "RUNNING"}, {}, ["r1"], [], 48.0, 5000, 0)
    assert not lost.passed and "iris-b: absent" in lost.detail
    wrong = gates.head_restart_ft(apps, running, {"iris-a": "[0] -> HTTP 503"}, ["r1"], [], 4, 9, 0)
    assert not wrong.passed and "iris-a: [0] -> HTTP 503" in wrong.detail
    # Serving throughout and back in time, but by new replicas: the controller gave up on
    # recovering the live ones (Ray 2.60 without RAY_max_direct_call_object_size, 2026-12-04).
    redone = gates.head_restart_ft(apps, running, {}, ["r1"], ["r1", "r2"], 56.5, 5000, 0)
    assert not redone.passed and "2 replica(s) off the head replaced" in redone.detail


def test_replaced_lists_replicas_that_no_longer_run():
    before = {"a": ["a1", "a2"], "b": ["b1"]}
    after = {"applications": {
        "a": _app("RUNNING", 2, ("a1", "RUNNING", "w"), ("a9", "RUNNING", "w")),
        "b": _app("RUNNING", 1, ("b1", "RUNNING", "w")),
    }}  # fmt: skip
    assert faults.replaced(after, before) == ["a2"]
    after["applications"]["b"] = _app("RUNNING", 1, ("b1", "STOPPING", "w"))
    assert faults.replaced(after, before) == ["a2", "b1"]


def test_worker_kill_gate():
    ok = gates.worker_kill(5000, 10, 40, 2, 35.0, 2, 2)
    assert ok.passed and ok.success_rate == 0.998 and "after 40 retries" in ok.detail
    assert not gates.worker_kill(5000, 60, 40, 2, 35.0, 2, 2).passed
    assert not gates.worker_kill(5000, 10, 40, 0, 35.0, 2, 2).passed  # no replica was hit
    assert not gates.worker_kill(5000, 10, 40, 2, 61.0, 2, 2).passed
    assert not gates.worker_kill(5000, 10, 40, 2, None, 2, 2).passed
    assert not gates.worker_kill(5000, 10, 40, 2, 35.0, 1, 2).passed
