"""Preparing app environments on every node: what is sent, and how the job's report reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlray.node_envs import (
    ENVS_VAR,
    MODELS_VAR,
    NOT_IMPORTED,
    WARM_CODE,
    NodeEnvs,
    envs_to_prepare,
    job_env,
    models_to_fetch,
)
from mlray.serving.model_cache import entry_key


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


def test_warm_up_failures_are_named_without_failing_the_node():
    node = "n1" * 10
    done = NodeEnvs.from_report({
        "nodes": [node], "seconds": 9.0, "results": {"a": {node: "ok"}, "b": {node: "ok"}},
        "warm": {"a": {node: {"warm_s": 4.2, "failed": "lightgbm (OSError)"}},
                 "b": {node: {"warm_s": 3.1, "failed": ""}}},
    })  # fmt: skip
    assert done.failures == []
    assert done.summary() == "2/2 app environment(s) ready on 1 node(s) in 9 s"
    assert done.warm_failures == ["a on node n1n1n1n1n1n1: lightgbm (OSError)"]


def test_a_report_from_before_the_warm_up_still_reads():
    done = NodeEnvs.from_report({"nodes": ["n"], "seconds": 1, "results": {"a": {"n": "ok"}}})
    assert done.warm == {} and done.warm_failures == [] and done.failures == []


def test_warm_code_compiles_what_pip_installed_and_skips_tooling(tmp_path):
    """Run the warm-up script for real in a throwaway venv with a hand-made site-packages."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    boom = "raise RuntimeError('must not be imported')\n"
    for pkg, code in {
        "goodpkg": "X = 1\n",
        "badpkg": "import not_installed_anywhere\n",
        "pip": boom,
        "tests": boom,
        "_private": boom,
    }.items():
        (site / pkg).mkdir()
        (site / pkg / "__init__.py").write_text(code)
    (site / "single.py").write_text("Y = 2\n")
    (site / "datadir").mkdir()  # no __init__.py: data, not a package
    (site / "datadir" / "x.py").write_text(boom)

    # as on a Ray node: bytecode writing on (some hosts export PYTHONDONTWRITEBYTECODE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [python, "-c", WARM_CODE, "json", ",".join(NOT_IMPORTED)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "failed=badpkg (ModuleNotFoundError)"
    assert list((site / "goodpkg" / "__pycache__").glob("__init__.*.pyc"))
    assert list((site / "__pycache__").glob("single.*.pyc"))
    assert not (site / "pip" / "__pycache__").exists()


def _model_app(name, uri, run_id="r1", tracking="http://mlflow:5000"):
    return {
        "name": name,
        "args": {"model_uri": uri, "run_id": run_id, "model_name": name},
        "runtime_env": {"pip": {"packages": ["x"]}, "env_vars": {"MLFLOW_TRACKING_URI": tracking}},
    }


def test_the_job_caches_changed_apps_models_and_keeps_every_apps_entry():
    changed = _model_app("a", "models:/a/2")
    others = [
        _model_app("b", "models:/b/1"),
        _model_app("c", "models:/c/1", tracking="https://user:token@mlflow"),  # credentials
        _model_app("d", "models:/d/1", run_id=None),  # no run: not cacheable
    ]
    models = models_to_fetch([changed, others[1]], [changed, *others])
    assert set(models) == {"a"}  # c's tracking URI would put a token in the job's metadata
    keep = models["a"]["keep"]
    assert keep == sorted(
        entry_key(tracking, uri, "r1")
        for tracking, uri in [("http://mlflow:5000", "models:/a/2"),
                              ("http://mlflow:5000", "models:/b/1"),
                              ("https://user:token@mlflow", "models:/c/1")]
    )  # fmt: skip
    assert models["a"] | {"keep": None} == {
        "model_uri": "models:/a/2", "run_id": "r1", "tracking_uri": "http://mlflow:5000",
        "keep": None,
    }  # fmt: skip
    sent = job_env({"a": {}}, 600, models)
    assert "token" not in json.dumps(sent) and json.loads(sent[MODELS_VAR]) == models


def test_the_report_counts_cached_models_and_names_the_ones_that_are_not():
    n1, n2 = "n1" * 10, "n2" * 10
    done = NodeEnvs.from_report({
        "nodes": [n1, n2], "seconds": 12.0,
        "results": {"a": {n1: "ok", n2: "ok"}},
        "warm": {"a": {n1: {"warm_s": 4, "failed": "", "model": "fetched"},
                       n2: {"warm_s": 4, "failed": "", "model": "error: OSError: disk full"}}},
    })  # fmt: skip
    assert done.summary() == (
        "2/2 app environment(s) ready on 2 node(s) in 12 s; "
        "1/2 model copies in the nodes' model cache"
    )
    assert done.model_failures == ["a on node n2n2n2n2n2n2: error: OSError: disk full"]


def test_the_job_fills_the_cache_the_replicas_read():
    custom = _model_app("a", "models:/a/1")
    custom["runtime_env"]["env_vars"]["MLRAY_MODEL_CACHE_DIR"] = "/data/models"
    off = _model_app("b", "models:/b/1")
    off["runtime_env"]["env_vars"]["MLRAY_MODEL_CACHE_DIR"] = "off"
    models = models_to_fetch([custom, off], [custom, off])
    assert set(models) == {"a"} and models["a"]["cache_dir"] == "/data/models"


def test_without_every_app_the_job_prunes_nothing():
    """It cannot know which cached models the cluster's other apps still load."""
    models = models_to_fetch([_model_app("a", "models:/a/1")])
    assert "keep" not in models["a"]
