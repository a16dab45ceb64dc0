"""Planning is pure: registry state + cluster state -> actions and the Serve config."""

from __future__ import annotations

import copy

from mlray.plan import (
    DEPLOYMENT_NAME,
    IMPORT_PATH,
    Ready,
    app_config,
    assess,
    plan_deploy,
    plan_undeploy,
)
from mlray.registry import ModelVersionInfo, Unselected
from mlray.tags import parse_tags

PKG = "gcs://_ray_pkg_abc.zip"
TAGS = {
    "ray.name": "iris",
    "ray.ray_actor_options.num_cpus": "1",
    "ray.ray_actor_options.memory": "1",
}


def model(name="iris.staging", version="1", python="3.11.7", tags=None, pip=("xgboost==2.1.4",)):
    return ModelVersionInfo(name=name, version=version, run_id="r1", tags=dict(tags or TAGS),
                            python_version=python, pip=tuple(pip), flavors=("xgboost",))  # fmt: skip


def desired(*models):
    out = []
    for m in models:
        options, problems = parse_tags(m.tags)
        assert not problems
        out.append((m, app_config(m, options, tracking_uri="http://mlflow:5000", serving_uri=PKG)))
    return out


def cluster_with(*apps, extra=None):
    """The shape of GET /api/serve/applications/, with Ray's echoed defaults added."""
    details = {"proxy_location": "EveryNode", "http_options": {"host": "0.0.0.0", "port": 8000},
               "applications": {}}  # fmt: skip
    for cfg in apps:
        echoed = copy.deepcopy(cfg)
        echoed["deployments"][0].setdefault("graceful_shutdown_timeout_s", 20.0)
        details["applications"][cfg["name"]] = {"status": "RUNNING", "deployed_app_config": echoed}
    for name, cfg in (extra or {}).items():
        details["applications"][name] = {"status": "RUNNING", "deployed_app_config": cfg}
    return details


def actions(plan):
    return {a.name: a.action for a in plan.apps}


def test_routing_skips_other_python_minors_with_the_reason():
    a = assess([model(python="3.13.1"), model(name="b.staging", python="3.11.2",
                                              tags={**TAGS, "ray.name": "b"})],
               [Unselected("c.staging", "no version has alias 'staging'")], "3.11", "3.11.7")  # fmt: skip
    assert [(s.label, s.reason) for s in a.skipped] == [
        ("c.staging", "no version has alias 'staging'"),
        ("iris.staging v1", "trained on 3.13, cluster runs 3.11"),
    ]
    assert [r.model.name for r in a.ready] == ["b.staging"]
    assert "patch releases" in a.warnings[0] and "3.11.2" in a.warnings[0]


def test_tag_problems_name_model_and_version_and_duplicate_names_are_refused():
    bad = model(
        name="bad.staging", version="4", tags={**TAGS, "ray.ray_actor_options.num_cpus": "x"}
    )
    dup = model(name="dup.staging", version="2")
    a = assess([model(), bad, dup], [], "3.11")
    assert any(
        p.startswith("bad.staging v4: got 'x' for ray.ray_actor_options.num_cpus")
        for p in a.problems
    )
    assert any(
        p.startswith("dup.staging v2: got ray.name 'iris', already used by iris.staging v1")
        for p in a.problems
    )
    assert a.invalid == {"bad.staging", "dup.staging"}
    assert len(a.ready) == 1 and isinstance(a.ready[0], Ready)


def test_model_with_unreadable_artifacts_is_skipped():
    m = ModelVersionInfo("x.staging", "1", None, {}, problem="its artifacts have no MLmodel file")
    assert assess([m], [], "3.11").skipped[0].reason == "its artifacts have no MLmodel file"


def test_app_config_is_ray_schema_with_env_label_and_isolated_pip():
    ((_m, cfg),) = desired(model(tags={**TAGS, "ray.user_config.max_batch_size": "8"}))
    assert cfg["import_path"] == IMPORT_PATH and cfg["route_prefix"] == "/iris"
    assert cfg["runtime_env"]["pip"] == {
        "packages": ["xgboost==2.1.4"],
        "pip_check": False,
        "pip_install_options": ["--disable-pip-version-check", "--no-compile"],
    }
    assert cfg["runtime_env"]["py_modules"] == [PKG]
    assert cfg["runtime_env"]["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert cfg["args"]["model_uri"] == "models:/iris.staging/1"
    assert cfg["args"]["mlray"] == {"managed_by": "mlray", "source": "registry"}
    (dep,) = cfg["deployments"]
    assert dep["name"] == DEPLOYMENT_NAME
    assert dep["ray_actor_options"] == {"num_cpus": 1.0, "memory": 1024**3}
    assert dep["user_config"] == {"max_batch_size": 8, "batch_wait_timeout_s": 0.01}
    assert dep["max_ongoing_requests"] == 64


def test_new_model_is_added_and_unmanaged_apps_are_kept_verbatim():
    other = {"name": "theirs", "import_path": "x:y", "route_prefix": "/theirs"}
    plan = plan_deploy(desired(model()), cluster_with(extra={"theirs": other}))
    assert actions(plan) == {"iris": "add", "theirs": "keep"}
    assert plan.config["applications"][1] == other
    assert plan.config["proxy_location"] == "EveryNode"


def test_same_registry_state_is_unchanged_even_with_echoed_defaults():
    d = desired(model())
    plan = plan_deploy(d, cluster_with(d[0][1]))
    assert actions(plan) == {"iris": "unchanged"}
    assert not plan.changes
    assert plan.config["applications"] == [d[0][1]]  # sent exactly as before: no restart


def test_new_version_updates_with_the_reason():
    old = desired(model())[0][1]
    plan = plan_deploy(desired(model(version="2")), cluster_with(old))
    (a,) = plan.apps
    assert (a.action, a.reason) == ("update", "models:/iris.staging/1 -> models:/iris.staging/2")


def test_an_env_var_whose_tag_was_deleted_is_a_change():
    """Ray's echo adds defaults, which the comparison ignores; it must not ignore a removed
    env var too (the deploy said "unchanged" and the replicas kept it)."""
    env = {**TAGS, "ray.ray_actor_options.runtime_env.env_vars": '{"FEATURE_FLAG": "on"}'}
    old = desired(model(tags=env))[0][1]
    (a,) = plan_deploy(desired(model()), cluster_with(old)).apps
    assert (a.action, a.reason) == ("update", "env vars changed")


def test_batch_size_change_is_a_live_update():
    old = desired(model())[0][1]
    new = desired(model(tags={**TAGS, "ray.user_config.max_batch_size": "4"}))
    (a,) = plan_deploy(new, cluster_with(old)).apps
    assert a.action == "update" and "batching changed (applied live, no restart)" in a.reason


def test_replicas_are_health_checked_every_2_s_unless_tagged_and_a_change_is_live():
    ((_, cfg),) = desired(model())
    assert cfg["deployments"][0]["health_check_period_s"] == 2.0  # Ray's 10 s: slow recovery
    new = desired(model(tags={**TAGS, "ray.health_check_period_s": "5"}))
    assert new[0][1]["deployments"][0]["health_check_period_s"] == 5.0
    (a,) = plan_deploy(new, cluster_with(cfg)).apps
    assert a.action == "update" and a.reason == "health checks changed (applied live, no restart)"
    _, problems = parse_tags({**TAGS, "ray.health_check_period_s": "0"})
    assert problems and problems[0].tag == "ray.health_check_period_s"


def test_unselected_managed_app_is_removed_and_prune_removes_unmanaged():
    old = desired(model())[0][1]
    other = {"name": "theirs", "import_path": "x:y"}
    plan = plan_deploy([], cluster_with(old, extra={"theirs": other}))
    assert actions(plan) == {"iris": "remove", "theirs": "keep"}
    assert [a["name"] for a in plan.config["applications"]] == ["theirs"]
    pruned = plan_deploy([], cluster_with(old, extra={"theirs": other}), prune_unmanaged=True)
    assert actions(pruned) == {"iris": "remove", "theirs": "remove"}
    assert pruned.config["applications"] == []


def test_held_app_of_a_refused_model_keeps_running():
    old = desired(model())[0][1]
    plan = plan_deploy([], cluster_with(old), hold={"iris": old})
    assert actions(plan) == {"iris": "keep"}
    assert plan.config["applications"][0]["args"] == old["args"]


def test_name_taken_by_unmanaged_app_is_a_conflict_not_an_overwrite():
    other = {"name": "iris", "import_path": "x:y"}
    plan = plan_deploy(desired(model()), cluster_with(extra={"iris": other}))
    assert plan.conflicts and "not" not in actions(plan)
    assert plan.config["applications"] == [other]


def test_http_options_from_config_override_the_cluster():
    plan = plan_deploy([], cluster_with(), http_options={"host": "127.0.0.1", "port": 9000})
    assert plan.config["http_options"] == {"host": "127.0.0.1", "port": 9000}


def test_undeploy_removes_named_mlray_apps_only():
    a = desired(model())[0][1]
    b = desired(model(name="b.staging", tags={**TAGS, "ray.name": "b"}))[0][1]
    other = {"name": "theirs", "import_path": "x:y"}
    plan, unknown = plan_undeploy(cluster_with(a, b, extra={"theirs": other}), ["b", "theirs"])
    assert unknown == ["theirs"]
    assert actions(plan) == {"iris": "keep", "b": "remove", "theirs": "keep"}
    plan, unknown = plan_undeploy(cluster_with(a, b, extra={"theirs": other}), [])
    assert actions(plan) == {"iris": "remove", "b": "remove", "theirs": "keep"} and unknown == []


def test_numbers_ray_echoes_as_floats_still_compare_unchanged():
    d = desired(model())
    echoed = copy.deepcopy(d[0][1])
    echoed["deployments"][0]["ray_actor_options"]["memory"] = float(1024**3)
    plan = plan_deploy(d, cluster_with(echoed))
    assert actions(plan) == {"iris": "unchanged"}
