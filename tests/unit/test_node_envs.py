"""Preparing app environments on every node: what is sent, and how the job's report reads."""

from __future__ import annotations

import json

from mlray.node_envs import ENVS_VAR, NodeEnvs, envs_to_prepare, job_env


def _app(name, **env):
    return {"name": name, "runtime_env": env}


def test_only_what_ray_builds_per_node_is_sent_never_env_vars():
    apps = [
        _app(
            "a",
            pip={"packages": ["xgboost==1.7.6"]},
            py_modules=["http://m/x.zip"],
            env_vars={"API_TOKEN": "secret"},
        ),
        _app("b", py_modules=["http://m/x.zip"]),  # nothing to build: no pip
    ]
    envs = envs_to_prepare(apps)
    assert envs == {
        "a": {"pip": {"packages": ["xgboost==1.7.6"]}, "py_modules": ["http://m/x.zip"]}
    }
    sent = job_env(envs, 600)
    assert "secret" not in json.dumps(sent) and json.loads(sent[ENVS_VAR]) == envs


def test_the_report_names_each_app_and_node_that_failed():
    done = NodeEnvs.from_report({
        "nodes": ["n1" * 10, "n2" * 10], "seconds": 21.4,
        "results": {"a": {"n1" * 10: "ok", "n2" * 10: "RuntimeEnvSetupError: pip failed"},
                    "b": {"n1" * 10: "ok", "n2" * 10: "ok"}},
    })  # fmt: skip
    assert done.summary() == "3/4 app environment(s) ready on 2 node(s) in 21 s"
    assert done.failures == ["a on node n2n2n2n2n2n2: RuntimeEnvSetupError: pip failed"]
