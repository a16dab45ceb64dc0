"""The fit check and Ray's unschedulable message: plain data in, sentences out."""

from __future__ import annotations

import io
from typing import Any

import pytest

from mlray.capacity import (
    GB,
    TIMES,
    asks,
    cluster_totals,
    has_autoscaler,
    refusal,
    replicas_to_place,
    shortfalls,
    unschedulable,
)
from mlray.deploy import Console, wait_until_running
from mlray.errors import DeployFailed
from mlray.output import check_output
from mlray.plan import Assessment, Plan
from mlray.tags import Problem


def app(name: str, cpus: float, replicas: int | None = 1, **dep: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "MlflowModel", "ray_actor_options": {"num_cpus": cpus}, **dep}
    if replicas is not None:
        d["num_replicas"] = replicas
    return {"name": name, "deployments": [d]}


def test_replicas_to_place_counts_what_serve_must_start():
    assert replicas_to_place({"num_replicas": 3}) == 3
    assert replicas_to_place({"autoscaling_config": {"min_replicas": 2}}) == 2
    auto = {"min_replicas": 1, "initial_replicas": 3, "max_replicas": 5}
    assert replicas_to_place({"autoscaling_config": auto}) == 3
    auto = {"min_replicas": 2, "initial_replicas": 1}
    assert replicas_to_place({"autoscaling_config": auto}) == 2
    assert replicas_to_place({"autoscaling_config": {"min_replicas": 0}}) == 0
    assert replicas_to_place({}) == 1


def test_the_brief_example_is_refused_with_the_numbers():
    config = {"applications": [app("iris-a", 0.75, 2), app("iris-b", 1.0, 1)]}
    (s,) = shortfalls(asks(config), {"CPU": 2.0, "memory": 8 * GB})
    assert (s.resource, s.asked, s.available) == ("CPU", 2.5, 2.0)
    assert refusal(s, "py311", False) == (
        f"got a plan asking for 2.5 CPU (iris-a 2 {TIMES} 0.75, iris-b 1 {TIMES} 1.0) on cluster py311; "
        "expected at most the cluster's 2.0 CPU (no autoscaler): lower "
        "ray.ray_actor_options.num_cpus or the replicas, or add nodes"
    )


def test_memory_in_gb_and_gpus():
    a = app("big", 0.5, 2)
    a["deployments"][0]["ray_actor_options"].update(memory=3 * GB, num_gpus=1)
    got = {
        s.resource: s for s in shortfalls(asks({"applications": [a]}), {"CPU": 4, "memory": 4 * GB})
    }
    assert set(got) == {"memory", "GPU"}
    text = refusal(got["memory"], "c", False)
    assert (
        f"6.0 GB memory (big 2 {TIMES} 3.0 GB)" in text
        and "at most the cluster's 4.0 GB memory" in text
    )
    assert "ray.ray_actor_options.memory" in text
    assert "1 GPU" not in refusal(got["GPU"], "c", True) and "2.0 GPU" in refusal(
        got["GPU"], "c", True
    )


def test_a_plan_that_fits_has_no_shortfall_and_zero_replicas_ask_nothing():
    config = {
        "applications": [
            app("a", 1.0, 2),
            app("b", 5.0, None, autoscaling_config={"min_replicas": 0}),
        ]
    }
    assert shortfalls(asks(config), {"CPU": 2.0}) == []


def test_kept_apps_use_what_the_cluster_runs_and_serves_defaults():
    """An app kept as it runs may leave resources to its code: the cluster's word counts."""
    config = {"applications": [{"name": "theirs", "import_path": "x:y"}, app("ours", 0.5)]}
    effective = {"theirs": {"D": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.25}}}}
    total = sum(a.total("CPU") for a in asks(config, effective))
    assert total == 2 * 0.25 + 0.5
    # Nothing known: Serve's default of 1 replica of 1 CPU.
    bare = {"applications": [{"name": "x", "deployments": [{"name": "D"}]}]}
    assert sum(a.total("CPU") for a in asks(bare)) == 1.0


def test_a_scaling_change_in_the_config_wins_over_what_runs():
    config = {"applications": [app("a", 1.0, 3)]}
    effective = {"a": {"MlflowModel": {"autoscaling_config": {"min_replicas": 1}}}}
    assert asks(config, effective)[0].replicas == 3


def test_cluster_totals_sum_alive_nodes():
    def node(state: str, cpu: float) -> dict[str, Any]:
        return {"raylet": {"state": state, "resourcesTotal": {"CPU": cpu, "memory": GB}}}

    answer = {
        "result": True,
        "data": {"summary": [node("ALIVE", 2.0), node("ALIVE", 2.0), node("DEAD", 8.0)]},
    }
    assert cluster_totals(answer) == {"CPU": 4.0, "memory": 2.0 * GB}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ({"activeNodes": {"node_0a1b2c": 1, "node_ff00": 1}}, False),  # read-only provider
        ({"activeNodes": {"ray.head.default": 1}, "idleNodes": {"cpu-worker": 2}}, True),
        ({"activeNodes": {"node_0a1b": 1}, "pendingNodes": [["10.0.0.2", "gpu", "x"]]}, True),
        ({}, None),
    ],
)
def test_has_autoscaler_reads_the_node_types(report, expected):
    assert has_autoscaler({"data": {"clusterStatus": {"autoscalerReport": report}}}) is expected


def test_has_autoscaler_unknown_without_a_status():
    assert has_autoscaler({"data": {"clusterStatus": None}}) is None
    assert has_autoscaler({}) is None


def ray_msg(required: str, available: str) -> str:
    """The wording of ray/serve/_private/deployment_state.py (Ray 2.60)."""
    return (
        "Deployment 'MlflowModel' in application 'iris-b' has 1 replicas that have taken more "
        "than 30s to be scheduled. This may be due to waiting for the cluster to auto-scale or "
        "for a runtime environment to be installed. Resources required for each replica: "
        f"{required}, total resources available: {available}. Use `ray status` for more details."
    )


def test_unschedulable_when_ray_has_less_free_than_a_replica_asks():
    assert unschedulable(ray_msg('{"CPU": 1.0}', '{"CPU": 0.5}'))
    assert unschedulable(ray_msg('{"CPU": 1.0, "memory": 100}', "{}"))
    # Placed replicas installing their runtime env: the resources are there.
    assert not unschedulable(ray_msg('{"CPU": 1.0}', '{"CPU": 3.0}'))
    assert not unschedulable("Deploying new version of deployment MlflowModel.")
    assert not unschedulable("")
    assert unschedulable(ray_msg("UNKNOWN", "UNKNOWN"))


class FakeDash:
    def __init__(self, frames: list[dict[str, Any]], clock: Clock):
        self.frames, self.clock = frames, clock

    def serve_details(self) -> dict[str, Any]:
        self.clock.t += 10  # every poll takes ten seconds
        return self.frames.pop(0) if len(self.frames) > 1 else self.frames[0]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def details(status: str, message: str, cfg: dict[str, Any]) -> dict[str, Any]:
    return {"applications": {"iris-b": {"status": status, "message": message,
                                        "deployed_app_config": cfg, "deployments": {}}}}  # fmt: skip


def run_wait(frames, unschedulable_s=60.0, timeout_s=600.0):
    cfg = app("iris-b", 1.0)
    plan = Plan(apps=[], config={"applications": [cfg]})
    clock, lines = Clock(), []

    class Say(Console):
        def __call__(self, line: str = "") -> None:
            lines.append(line)

    import mlray.deploy as d

    sleep, d.time.sleep = d.time.sleep, lambda s: None  # type: ignore[assignment]
    try:
        wait_until_running(FakeDash([f(cfg) for f in frames], clock), plan, timeout_s,
                           Say(io.StringIO()),
                           clock=clock, unschedulable_s=unschedulable_s)  # fmt: skip
    finally:
        d.time.sleep = sleep  # type: ignore[assignment]
    return lines


def test_the_wait_shows_rays_message_once_and_gives_up_on_unschedulable():
    stuck = ray_msg('{"CPU": 1.0}', '{"CPU": 0.0}')
    frames = [lambda c: details("DEPLOYING", "", c)] + [
        lambda c: details("DEPLOYING", stuck, c)
    ] * 50
    with pytest.raises(DeployFailed) as e:
        run_wait(frames)
    assert "could not schedule" in str(e.value) and "Resources required" in str(e.value)
    assert e.value.exit_code == 1


def test_messages_are_printed_only_when_they_change_and_running_ends_the_wait():
    frames = [
        lambda c: details("DEPLOYING", "installing", c),
        lambda c: details("DEPLOYING", "installing", c),
        lambda c: details("DEPLOYING", "installing", c),
        lambda c: details("RUNNING", "", c),
    ]
    lines = run_wait(frames)
    assert sum("installing" in ln for ln in lines) == 1
    assert any("RUNNING" in ln for ln in lines)


def test_check_output_lists_capacity_as_problems():
    p = Problem(
        "got a plan asking for 2.5 CPU ...", tag="CPU", got="2.5 CPU", expected="at most 2.0 CPU"
    )
    rec = check_output("py311", Assessment(), [], "", [p])
    assert not rec.ok
    (r,) = rec.problems
    assert (r.tag, r.got, r.expected, r.model) == ("CPU", "2.5 CPU", "at most 2.0 CPU", None)


# The autoscaler report of the testbed's py311 cluster (two plain `ray start` nodes, Ray 2.60),
# trimmed: the dashboard camel-cases the keys of activeNodes, not nodeTypeMapping's values.
TESTBED_REPORT = {
    "activeNodes": {
        "node22Da9325318E9A96B173F8Fd3357B94Fa8E0Bb0Ecd0D4E1223E11B4D": 1,
        "nodeA07Da307Cc57Bfc79D9108344990A99D02A500Be234Cbaeea1748E0F": 1,
    },
    "idleNodes": None,
    "pendingNodes": [],
    "pendingLaunches": {},
    "failedNodes": [],
    "nodeTypeMapping": {
        "22da9325318e9a96b173f8fd3357b94fa8e0bb0ecd0d4e1223e11b4d": (
            "node_22da9325318e9a96b173f8fd3357b94fa8e0bb0ecd0d4e1223e11b4d"
        ),
        "a07da307cc57bfc79d9108344990a99d02a500be234cbaeea1748e0f": (
            "node_a07da307cc57bfc79d9108344990a99d02a500be234cbaeea1748e0f"
        ),
    },
    "legacy": True,
}


def test_a_cluster_of_plain_ray_start_nodes_has_no_autoscaler():
    """Found by the e2e run: camel-cased keys read as autoscaler node types."""
    status = {"data": {"clusterStatus": {"autoscalerReport": TESTBED_REPORT}}}
    assert has_autoscaler(status) is False
