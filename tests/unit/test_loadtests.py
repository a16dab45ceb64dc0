"""The load tests' pure parts: scenario data, timeline arithmetic, gates, Locust CSV parsing.

Locust itself is never imported here (gevent would patch this process); the real runs are
`nox -s load`.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from loadtests import gates, goals, report, runner
from loadtests.observe import (
    Sample,
    Sampler,
    histogram_delta,
    host_cpu_between,
    mean_batch_size,
    replica_counts,
    scaling,
)
from loadtests.runner import RunResult, parse_failures, parse_history, parse_stats
from loadtests.scenarios import (
    HIGH_CONCURRENCY,
    LOAD_APPS,
    MID_CONCURRENCY,
    PEERS,
    PROFILES,
    UNTUNED,
    Run,
    Stage,
    distinct_runs,
    scenarios,
    step,
)


def test_every_profile_runs_each_shared_run_once_and_the_high_load_meets_the_issue():
    for profile in PROFILES.values():
        chosen = scenarios(profile)
        runs = distinct_runs(chosen)
        assert len({r.key for r in runs}) == len(runs)
        assert sum(len(s.runs) for s in chosen) > len(runs)  # c=32 runs are shared
        assert HIGH_CONCURRENCY >= 16
        keys = {r.key for r in runs}
        # summary.json's apps.<key>.<c1|c8|c32> and peers.<name>.<c1|c32> (issue 15)
        for app in LOAD_APPS:
            assert {f"{app.key}-c{c}" for c in (1, MID_CONCURRENCY, HIGH_CONCURRENCY)} <= keys
        for peer in PEERS:
            assert {f"{peer}-c1", f"{peer}-c{HIGH_CONCURRENCY}"} <= keys


def test_the_untuned_app_has_only_the_required_tags():
    from mlray.tags import TAG_SPECS

    required = {s.key for s in TAG_SPECS.values() if s.required}
    assert set(UNTUNED.ray_tags) == required


def test_the_short_profile_fits_the_ci_budget():
    runs = distinct_runs(scenarios(PROFILES["short"]))
    assert sum(r.duration_s for r in runs) <= 420  # plus set-up and settling: about 9 min


def test_step_goes_up_holds_and_comes_down():
    stages = step(2, 24, 5, 30)
    assert [s.users for s in stages] == [2, 24, 2]
    run = Run("x", "app", stages)
    assert run.duration_s == 40
    assert run.peak_users == 24
    assert Stage(3, 4).as_locust() == {"duration": 3, "users": 4, "spawn_rate": 50.0}


def test_replica_counts_read_running_and_target_from_serve_details():
    details = {
        "applications": {
            "a": {
                "deployments": {
                    "MlflowModel": {
                        "target_num_replicas": 3,
                        "replicas": [
                            {"state": "RUNNING"},
                            {"state": "STARTING"},
                            {"state": "RUNNING"},
                        ],
                    }
                }
            }
        }
    }
    assert replica_counts(details, "a") == (2, 3)
    assert replica_counts(details, "missing") == (0, None)
    assert replica_counts({}, "a") == (0, None)


def test_histogram_delta_counts_only_batches_between_the_readings():
    before = {"r1": Counter({1: 5, 4: 2})}
    after = {"r1": Counter({1: 6, 4: 7, 8: 1}), "r2": Counter({2: 3})}  # r2 started meanwhile
    assert histogram_delta(before, after) == Counter({1: 1, 4: 5, 8: 1, 2: 3})
    assert mean_batch_size({1: 2, 3: 2}) == 2.0
    assert mean_batch_size({}) is None


def _samples(points):
    return [Sample(t, running, None, None) for t, running in points]


def test_the_scale_up_decision_is_read_from_the_target():
    samples = [Sample(10, 1, 1, None), Sample(12, 1, 4, None), Sample(20, 2, 4, None)]
    s = scaling(samples, 1, step_up=10, step_down=30, load_end=30)
    assert (s.scale_up_decision_s, s.scale_up_s) == (2, 10)
    # Already at target 2 before the step: the decision is the first target above 2.
    early = [Sample(5, 1, 2, None), *samples]
    assert scaling(early, 1, step_up=10, step_down=30, load_end=30).scale_up_decision_s == 2
    steady = [Sample(5, 1, 4, None), Sample(12, 2, 4, None)]
    assert scaling(steady, 1, step_up=10, step_down=30, load_end=30).scale_up_decision_s is None


def test_scaling_times_are_measured_from_the_step_edges():
    samples = _samples([(0, 1), (10, 1), (13, 2), (14, 4), (40, 4), (52, 2), (55, 1), (60, 1)])
    s = scaling(samples, min_replicas=1, step_up=10, step_down=40, load_end=45, max_replicas=4)
    assert (s.max_running, s.scale_up_s, s.scale_down_s) == (4, 3, 15)
    assert s.time_to_max_s == 4  # the issue's "1 -> 4 RUNNING after the load step"
    assert s.at_max_at == 14  # unrounded, on the samples' clock: the host-CPU window's end
    assert s.scale_down_after_load_end_s == 10
    assert s.returned_to_min


def test_no_scale_up_means_no_return_to_min():
    s = scaling(_samples([(0, 1), (20, 1), (60, 1)]), 1, step_up=5, step_down=30, load_end=35)
    assert s.max_running == 1
    assert s.scale_up_s is None
    assert not s.returned_to_min


def test_staying_scaled_up_does_not_return_to_min():
    s = scaling(_samples([(0, 1), (12, 3), (50, 3), (90, 2)]), 1, 10, 40, 45, max_replicas=4)
    assert s.scale_up_s == 2 and s.time_to_max_s is None  # never reached 4
    assert not s.returned_to_min


def _summary(**over):
    summary = {
        "runs": {"a-c32": {"requests": 100, "failures": 0}},
        "batching": {"app": "a", "mean_batch_size": 3.5, "batch_size_histogram": {"4": 1}},
        "autoscaling": {"app": "b", "min_replicas": 1, "max_running": 3, "returned_to_min": True},
    }
    summary.update(over)
    return summary


def test_gates_pass_on_a_good_summary():
    verdicts = gates.evaluate(_summary())
    assert len(verdicts) == 4
    assert all(g.passed for g in verdicts)


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"runs": {"a-c32": {"requests": 100, "failures": 1, "top_errors": ["1x boom"]}}},
         ["no failures"]),
        ({"runs": {"a-c32": {"requests": 0, "failures": 0}}}, ["no failures"]),
        ({"batching": {"app": "a", "mean_batch_size": 1.0}}, ["mean batch size"]),
        ({"batching": {"app": "a", "mean_batch_size": None}}, ["mean batch size"]),
        # Never scaled up, so never "returned" either: both autoscaling gates fail.
        ({"autoscaling": {"app": "b", "min_replicas": 1, "max_running": 1,
                          "returned_to_min": False}}, ["scales above", "returns to"]),
        ({"autoscaling": {"app": "b", "min_replicas": 1, "max_running": 4,
                          "returned_to_min": False}}, ["returns to"]),
    ],
)  # fmt: skip
def test_each_gate_fails_on_its_own_figure(change, failing):
    failed = [g for g in gates.evaluate(_summary(**change)) if not g.passed]
    assert len(failed) == len(failing)
    assert all(want in g.name for want, g in zip(failing, failed, strict=True))
    assert all("expected" in g.detail for g in failed)


STATS = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,\
80%,90%,95%,98%,99%,99.9%,99.99%,100%
POST,invocations,300,2,12,13.5,3.1,80.2,30.0,15.0,0.1,12,13,14,15,20,30,40,60,80,80,80
,Aggregated,300,2,12,13.5,3.1,80.2,30.0,15.0,0.1,12,13,14,15,20,30,40,60,80,80,80
"""
HISTORY = """\
Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,\
99.99%,100%,Total Request Count
1000,0,,Aggregated,0.000000,0.000000,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,0
1001,2,POST,invocations,5.0,0.0,11,11,11,11,11,11,11,11,11,11,11,5
1001,2,,Aggregated,5.0,0.0,11,11,11,11,11,11,11,11,11,11,11,5
1002,24,,Aggregated,20.0,0.0,12,12,12,12,12,12,12,30,30,30,30,25
"""


def test_locust_csv_files_are_read_into_figures(tmp_path: Path):
    (tmp_path / "r_stats.csv").write_text(STATS)
    (tmp_path / "r_stats_history.csv").write_text(HISTORY)
    (tmp_path / "r_failures.csv").write_text(
        'Method,Name,Error,Occurrences\nPOST,invocations,"HTTP 400",2\nPOST,invocations,"x",1\n'
    )
    run = Run("r", "app", (Stage(20, 24),))
    result = parse_stats(tmp_path / "r_stats.csv", run, "http://h/app/invocations", 21.3)
    assert (result.requests, result.failures, result.rps) == (300, 2, 15.0)
    assert (result.p50_ms, result.p99_ms, result.avg_ms) == (12.0, 60.0, 13.5)
    assert result.users == 24
    history = parse_history(tmp_path / "r_stats_history.csv")
    assert [h["t"] for h in history] == [0, 1, 2]
    assert [h["users"] for h in history] == [0, 2, 24]
    assert history[0]["p50_ms"] is None and history[2]["p99_ms"] == 30.0
    assert parse_failures(tmp_path / "r_failures.csv") == ["2x HTTP 400", "1x x"]
    assert parse_history(tmp_path / "absent.csv") == []


def test_retried_attempts_are_counted_apart_so_the_figures_are_what_the_client_saw(
    tmp_path: Path,
):
    """8 attempts failed and were retried (all 8 retries answered); 2 requests failed in the
    end: the client sent 300 requests and saw 2 fail."""
    rows = (
        STATS.replace(",Aggregated,300,2,", ",Aggregated,308,10,")
        + "POST,invocations (retried),8,8,12,13.5,3.1,80.2,30.0,1.0,1.0,12,13,14,15,20,30,40,60,80,80,80\n"
    )
    (tmp_path / "r_stats.csv").write_text(rows)
    result = parse_stats(tmp_path / "r_stats.csv", Run("r", "app", (Stage(20, 24),)), "u", 21.3)
    assert (result.requests, result.failures, result.retried) == (300, 2, 8)
    locustfile = (Path(runner.__file__).with_name("locustfile.py")).read_text()
    assert f'RETRIED = "{runner.RETRIED}"' in locustfile


def _result(key: str, target: str, users: int, rps: float, p50: float) -> RunResult:
    history = [
        {"ts": 1000 + t, "t": t, "users": users, "rps": rps, "failures_s": 0.0,
         "p50_ms": p50, "p99_ms": 2 * p50}
        for t in range(5)
    ]  # fmt: skip
    return RunResult(key, target, "http://h", users, 5, 5.2, int(rps * 5), 0, rps, p50, 2 * p50,
                     p50, client_cpu_mean=12.0, history=history)  # fmt: skip


def test_the_report_writes_a_png_per_scenario_and_a_table_with_every_gate(tmp_path: Path):
    b32, u32 = _result("batched-c32", "a", 32, 70, 450), _result("unbatched-c32", "u", 32, 54, 590)
    results = {
        "batched-c32": b32, "unbatched-c32": u32,
        "batched-c1": _result("batched-c1", "a", 1, 21, 46),
        "unbatched-c1": _result("unbatched-c1", "u", 1, 35, 26),
        "mlflow_serve_w1-c1": _result("mlflow_serve_w1-c1", "mlflow_serve_w1", 1, 120, 7),
        "mlflow_serve_w1-c32": _result("mlflow_serve_w1-c32", "mlflow_serve_w1", 32, 124, 250),
    }  # fmt: skip
    samples = [Sample(1000 + t, 1 if t < 2 else 3, 4, 10.0) for t in range(6)]
    paths = [
        report.plot_batching(tmp_path, b32, u32, {1: 3, 16: 5}),
        report.plot_autoscaling(tmp_path, b32, samples, 1000, {"step up": 1001.0}),
        report.plot_peers(tmp_path, results),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = {
        "runs": {k: r.figures() for k, r in results.items()},
        "batching": {"app": "a", "mean_batch_size": 6.9, "batches": 8, "throughput_ratio": 1.3},
    }
    summary["goals"] = [g.as_dict() for g in goals.evaluate(summary)]
    verdicts = gates.evaluate(summary)
    text = report.table(results, summary, verdicts)
    assert "mean batch size 6.90 over 8 batches" in text
    # The peer's two runs are reported, not gated.
    assert text.count("PASS") == len(verdicts) == len(results) - 2 + 1
    assert "goal n/a" in text
    csv_path = report.write_replicas_csv(
        tmp_path, "a", [*samples, Sample(1007, 3, 4, None, 1.95)], 1000
    )
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "t_s,running,target,client_cpu_percent,host_cpu_cores"
    assert lines[1] == "0.00,1,4,10.0," and lines[-1] == "7.00,3,4,,1.95"


def test_the_host_cpu_of_a_scale_out_is_the_mean_from_the_step_to_max_and_reported():
    samples = [Sample(t, 1, 4, None, busy) for t, busy in ((9, 0.5), (10, 1.9), (11, 2.0), (12, None), (13, 1.6), (14, 0.3))]  # fmt: skip
    assert host_cpu_between(samples, 10, 13) == 1.83
    assert host_cpu_between(samples, 10, None) is None  # max never reached
    assert host_cpu_between(samples, 20, 30) is None
    a = {
        "app": "b", "min_replicas": 1, "max_replicas": 4, "max_running": 4,
        "scale_up_decision_s": 3.0, "scale_up_s": 9.0, "time_to_max_s": 17.0,
        "scale_down_s": 12.0, "scale_down_after_load_end_s": 0.0,
        "host_cores": 2, "host_cpu_cores_to_max": 1.83,
    }  # fmt: skip
    start = {"replica": "r", "host": "mlray-py311-worker-1", "process_started_s": 4.0,
             "ready_s": 17.0, "cpu_s": 3.9, "cpu_share": 0.3, "cpu_wait_s": 8.5,
             "model_from": "node cache"}  # fmt: skip
    text = report.table({}, {"autoscaling": {**a, "replica_starts": [start]}}, [])
    assert "this host's CPU from the step to 4 RUNNING: 1.83 of 2 cores busy" in text
    assert (
        "new replica on mlray-py311-worker-1: process 4.00 s, ready 17.00 s after the step; "
        "3.90 s of CPU over its start (0.30 of a core), 8.50 s waiting for a CPU; "
        "model from node cache"
    ) in text


def _levels(**by_level: tuple[float, float]) -> dict[str, dict[str, float]]:
    return {level: {"rps": rps, "p50_ms": p50} for level, (rps, p50) in by_level.items()}


def _goal_summary() -> dict:
    return {
        "apps": {
            "unbatched": _levels(c1=(230, 4.0), c8=(240, 30), c32=(260, 120)),
            "batched": _levels(c1=(225, 4.5), c8=(300, 25), c32=(800, 40)),
            "untuned": _levels(c1=(220, 4.2), c8=(250, 30), c32=(240, 130)),
        },
        "peers": {
            "mlflow_serve_w1": _levels(c1=(250, 3.5), c32=(255, 126)),
            "mlflow_serve_wN": _levels(c1=(280, 3.2), c32=(500, 60)),
            "mlserver": _levels(c1=(290, 2.9), c32=(310, 98)),
        },
        "autoscaling": {"app": "x", "max_replicas": 4, "time_to_max_s": 12.0},
        "untuned": {"max_running": 3},
    }


def test_goals_compare_against_the_best_peer_of_the_same_run():
    rows = {g.name: g for g in goals.evaluate(_goal_summary())}
    got = {
        name.split(" ")[0] + " " + name.split(" ")[1]: (g.value, g.met) for name, g in rows.items()
    }
    assert got["unbatched c=1"] == (1.1, False)  # 4.0 - MLServer's 2.9
    assert got["unbatched c32"] == (1.02, True)  # 260 / 255 (-w 1)
    assert got["batched c32"] == (1.6, True)  # 800 / 500 (-w N, the best at c=32)
    assert got["batched c=1"] == (0.5, True)
    assert got["untuned c32"] == (0.96, True)
    untuned = next(g for n, g in rows.items() if n.startswith("untuned"))
    assert "up to 3 replica(s) RUNNING" in untuned.detail  # autoscaling shapes this ratio
    assert got["autoscaling: seconds"] == (12.0, True)


def test_a_goal_without_its_figures_is_not_judged_and_never_reaching_max_is_not_met():
    summary = _goal_summary()
    del summary["peers"]
    summary["autoscaling"]["time_to_max_s"] = None
    rows = {g.name.split(" ")[0]: g for g in goals.evaluate(summary)}
    assert rows["unbatched"].met is None and "not measured" in rows["unbatched"].detail
    assert rows["autoscaling:"].met is False and "never" in rows["autoscaling:"].detail


def test_the_startup_breakdown_keeps_only_replicas_started_after_the_step():
    from loadtests.observe import startup_breakdown

    def startup(started: float | None, init: float, ready: float) -> dict:
        return {"process_started_at": started, "init_at": init, "ready_at": ready,
                "process_to_init_s": None if started is None else init - started,
                "import_mlflow_s": 1.0, "download_s": 0.2, "load_s": 0.3,
                "cpu_s": 3.5, "cpu_share": 0.35, "cpu_wait_s": 6.0}  # fmt: skip

    rows = startup_breakdown(
        {
            "old": startup(900.0, 902.0, 905.0),  # there before the step
            "b": startup(1006.0, 1010.0, 1014.5),
            "a": {**startup(1004.0, 1007.0, 1011.0), "host": "mlray-py311-worker-1"},
            "unknown": startup(None, 1008.0, 1012.0),  # no /proc: cannot place it
        },
        since=1000.0,
    )
    assert [r["replica"] for r in rows] == ["a", "b"]
    assert rows[0]["process_started_s"] == 4.0
    assert (rows[0]["host"], rows[1]["host"]) == ("mlray-py311-worker-1", None)
    assert (rows[1]["init_s"], rows[1]["ready_s"], rows[1]["process_to_init_s"]) == (
        10.0,
        14.5,
        4.0,
    )
    assert (rows[0]["cpu_s"], rows[0]["cpu_share"], rows[0]["cpu_wait_s"]) == (3.5, 0.35, 6.0)


def test_the_suite_retires_its_copies_so_no_later_deploy_serves_them(monkeypatch, tmp_path):
    """A kept testbed must not carry the copies into the next suite (chaos's worker_kill
    could not fit them on the head): each loses its alias and its app is undeployed."""
    import subprocess

    from mlflow.exceptions import MlflowException

    import loadtests.cli as cli
    from loadtests.scenarios import LOAD_APPS

    removed, ran = [], []

    class Client:
        def delete_registered_model_alias(self, name, alias):
            if name == LOAD_APPS[0].model:
                raise MlflowException("no such alias")  # never registered: still fine
            removed.append((name, alias))

    def run(cmd, **kwargs):
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 1)  # a failed undeploy is reported, not raised

    class Dashboard:  # the untuned scenario already undeployed the last copy
        def serve_details(self):
            names = [a.app for a in LOAD_APPS[:-1]] + ["iris-xgb17"]
            return {"applications": {n: {"deployed_app_config": {"name": n}} for n in names}}

    monkeypatch.setattr(cli.subprocess, "run", run)
    session = object.__new__(cli.Session)
    session.client = Client()
    session.dashboard = Dashboard()
    session.config_path = tmp_path / "config.yml"
    session.retire_copies()
    assert removed == [(a.model, cli.ALIAS) for a in LOAD_APPS[1:]]
    (cmd,) = ran
    assert cmd[cmd.index("undeploy") :] == [
        "undeploy", "-q", str(session.config_path), cli.CLUSTER, *(a.app for a in LOAD_APPS[:-1])
    ]  # fmt: skip


def test_the_sampler_reads_this_hosts_busy_cores_on_its_own_baseline():
    with Sampler(None, None, interval_s=0.25) as first, Sampler(None, None, interval_s=0.25):
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:  # keep one core busy
            pass
    busy = [s.host_cpu for s in first.samples[1:]]  # the first one has no interval yet
    assert first.samples[0].host_cpu is None
    assert len(busy) >= 3 and all(b is not None for b in busy)
    # The kernel counts CPU time in 10 ms ticks: a 0.25 s sample is good to about 0.1 core.
    assert all(0.0 <= b <= first.host_cores + 0.2 for b in busy)
    assert max(busy) >= 0.5  # this loop alone kept a core at least half busy
