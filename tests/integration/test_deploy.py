"""mlray against a real MLflow server and a real Ray head: deploy, isolate, redeploy, refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests
import yaml

from tests import serve_state
from tests.integration.conftest import INGRESS, RAY_TOKEN, Services
from tests.integration.models import (
    base_tags,
    iris,
    predict_in_process,
    register_raw,
    register_sklearn,
)

pytestmark = pytest.mark.integration
# Two pins of one small package that conflict: each app must see its own.
PIN_A, PIN_B = "tabulate==0.8.10", "tabulate==0.9.0"
# Mixed case, as MLflow users name things: Ray Serve keeps it in the app name and the route.
APP_B = "FraudScorer-EU"


def mlray(services: Services, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "mlray", args[0], str(services.config_path), "local", *args[1:]],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "MLFLOW_TRACKING_URI": services.tracking_uri},
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mlray {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def serve_details(services: Services) -> dict:
    headers = {"Authorization": f"Bearer {RAY_TOKEN}"}
    url = f"{services.dashboard_url}/api/serve/applications/"
    return requests.get(url, headers=headers, timeout=30).json()


def replica_ids(services: Services) -> dict[str, list[str]]:
    return serve_state.replica_ids(serve_details(services))


def deployed_configs(services: Services) -> dict[str, dict]:
    return serve_state.deployed_configs(serve_details(services))


@pytest.fixture(scope="module")
def deployed(services: Services) -> Services:
    """Two registered models pinning conflicting versions of one package, deployed."""
    register_sklearn(services.tracking_uri, "iris-a.staging", [PIN_A], base_tags("iris-a"))
    register_sklearn(
        services.tracking_uri, "iris-b.staging", [PIN_B],
        base_tags(APP_B, **{"ray.user_config.max_batch_size": "4"}), c=0.5,
    )  # fmt: skip
    # Trained on another Python minor: must be skipped with the reason, never deployed.
    register_raw(services.tracking_uri, "iris-old.staging", "3.9.18",
                 ["scikit-learn"], base_tags("iris-old"))  # fmt: skip
    proc = mlray(services, "deploy", "--timeout", "600")
    assert "add" in proc.stdout
    # Both apps' environments, built by the node-preparation job on the one node there is.
    assert "Nodes prepared: 2/2 app environment(s) ready on 1 node(s)" in proc.stdout
    # and both model versions in the node's model cache, for replicas that start later
    assert "; 2/2 model copies in the nodes' model cache" in proc.stdout, proc.stdout
    assert "not pre-imported" not in proc.stdout, proc.stdout
    assert f"iris-old.staging v1: trained on 3.9, cluster runs {services.python}" in proc.stdout
    return services


def test_conflicting_pins_are_each_served_with_their_own_version(deployed: Services) -> None:
    versions = {}
    for app in ("iris-a", APP_B):
        meta = requests.get(f"{deployed.serve_url}/{app}/metadata", timeout=30).json()
        versions[app] = meta["libraries"]["tabulate"]
        assert meta["python_version"].startswith(deployed.python)
    assert versions == {"iris-a": "0.8.10", APP_B: "0.9.0"}
    assert "iris-old" not in deployed_configs(deployed)


@pytest.mark.parametrize("app,model", [("iris-a", "iris-a.staging"), (APP_B, "iris-b.staging")])
def test_predictions_equal_in_process_pyfunc(deployed: Services, app: str, model: str) -> None:
    x, _ = iris()
    expected = predict_in_process(deployed.tracking_uri, f"models:/{model}@staging", x)
    resp = requests.post(
        f"{deployed.serve_url}/{app}/invocations",
        json={"dataframe_split": x.to_dict(orient="split")}, timeout=60,
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    np.testing.assert_array_equal(np.asarray(resp.json()["predictions"]), np.asarray(expected))


def test_apps_fetch_the_serving_code_from_mlflows_artifact_store(deployed: Services) -> None:
    """Not from the head's GCS: what a restarted head or a new cluster can fetch again."""
    from mlray.serving_package import build_serving_package

    package = build_serving_package()
    uri = package.http_uri(deployed.tracking_uri)
    for app in ("iris-a", APP_B):
        assert deployed_configs(deployed)[app]["runtime_env"]["py_modules"] == [uri]
    stored = requests.get(uri, timeout=30)
    assert stored.status_code == 200 and stored.content == package.data


def test_redeploy_without_changes_restarts_nothing(deployed: Services) -> None:
    before = replica_ids(deployed)
    proc = mlray(deployed, "deploy")
    assert "unchanged" in proc.stdout and "Nothing to change." in proc.stdout
    for line in proc.stdout.splitlines():
        assert not line.strip().startswith(("add ", "update ", "remove ")), line
    assert replica_ids(deployed) == before


def test_dry_run_prints_plan_and_yaml_and_changes_nothing(deployed: Services) -> None:
    from mlflow.tracking import MlflowClient

    before = deployed_configs(deployed)
    client = MlflowClient(deployed.tracking_uri)
    client.set_registered_model_tag("iris-b.staging", "ray.user_config.max_batch_size", "8")
    try:
        proc = mlray(deployed, "deploy", "--dry-run")
    finally:
        client.set_registered_model_tag("iris-b.staging", "ray.user_config.max_batch_size", "4")
    assert "update" in proc.stdout and "batching changed" in proc.stdout
    assert "import_path: mlray.serving.app:build" in proc.stdout
    assert "max_batch_size: 8" in proc.stdout
    assert deployed_configs(deployed) == before


def test_dry_run_never_prints_secret_env_vars(deployed: Services) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(deployed.tracking_uri)
    tag = "ray.ray_actor_options.runtime_env.env_vars"
    client.set_registered_model_tag(
        "iris-a.staging", tag, '{"API_TOKEN": "s3cr3t-value", "OMP_NUM_THREADS": "1"}'
    )
    try:
        text = mlray(deployed, "deploy", "--dry-run").stdout
        as_json = mlray(deployed, "deploy", "--dry-run", "-o", "json").stdout
    finally:
        client.delete_registered_model_tag("iris-a.staging", tag)
    assert "s3cr3t-value" not in text + as_json
    assert "API_TOKEN: '***'" in text and "OMP_NUM_THREADS: '1'" in text
    apps = {a["name"]: a for a in json.loads(as_json)["serve_config"]["applications"]}
    assert apps["iris-a"]["runtime_env"]["env_vars"]["API_TOKEN"] == "***"


def test_bad_tags_exit_2_list_every_problem_and_change_nothing(deployed: Services) -> None:
    from mlflow.tracking import MlflowClient

    before = deployed_configs(deployed)
    tags = base_tags("iris-bad", **{
        "ray.ray_actor_options.num_cpus": "abc",
        "ray.autoscaling_config.min_replicas": "5",
        "ray.autoscaling_config.max_replicas": "2",
        "ray.user_config.max_batchsize": "8",
    })  # fmt: skip
    del tags["ray.num_replicas"]
    register_sklearn(deployed.tracking_uri, "iris-bad.staging", [], tags)
    try:
        proc = mlray(deployed, "deploy", check=False)
    finally:
        MlflowClient(deployed.tracking_uri).delete_registered_model("iris-bad.staging")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "got 'abc' for ray.ray_actor_options.num_cpus; expected a number > 0" in proc.stderr
    assert "min_replicas 5 > max_replicas 2" in proc.stderr
    assert "unknown tag ray.user_config.max_batchsize" in proc.stderr
    assert "iris-bad.staging v1" in proc.stderr
    assert deployed_configs(deployed) == before


def test_preflight_refuses_a_requirement_without_wheels(deployed: Services) -> None:
    from mlflow.tracking import MlflowClient

    register_raw(deployed.tracking_uri, "iris-nowheel.staging", sys.version.split()[0],
                 ["catboost==1.1.1"], base_tags("iris-nowheel"))  # fmt: skip
    try:
        proc = mlray(deployed, "check", check=False)
    finally:
        MlflowClient(deployed.tracking_uri).delete_registered_model("iris-nowheel.staging")
    assert proc.returncode == 2
    assert "refused  iris-nowheel.staging v1: catboost==1.1.1 has no wheel" in proc.stdout


@pytest.mark.parametrize(
    "body,content_type",
    [
        ("{not json", "application/json"),
        (json.dumps({"dataframe_splitt": {"columns": ["a"], "data": [[1]]}}), "application/json"),
        (json.dumps({"dataframe_records": [{"sepal_length": 1.0}]}), "application/json"),
        (json.dumps({"dataframe_records": [{"sepal_length": "x", "sepal_width": "y",
                                            "petal_length": "z", "petal_width": "w"}]}),
         "application/json"),
        ("a,b\n1,2", "text/plain"),
        ("", "application/json"),
    ],
    ids=["bad-json", "unknown-key", "missing-columns", "wrong-dtype", "wrong-content-type",
         "empty-body"],
)  # fmt: skip
def test_malformed_requests_get_4xx_and_the_replica_keeps_serving(
    deployed: Services, body: str, content_type: str
) -> None:
    url = f"{deployed.serve_url}/iris-a/invocations"
    resp = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=60)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    err = resp.json()
    assert err["error_code"] and err["message"]
    x, _ = iris()
    ok = requests.post(url, json={"dataframe_records": x.head(2).to_dict("records")}, timeout=60)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2


def test_status_lists_apps_with_model_version_and_endpoint(deployed: Services) -> None:
    out = mlray(deployed, "status").stdout
    assert "iris-a.staging" in out and "RUNNING" in out
    assert f"{deployed.serve_url}/iris-a/invocations" in out


def test_status_check_and_deploy_print_json_records_on_stdout(deployed: Services) -> None:
    status = json.loads(mlray(deployed, "status", "-o", "json").stdout)
    assert status["ingress"] == INGRESS  # read from the live cluster, not assumed
    apps = {a["name"]: a for a in status["apps"]}
    a = apps["iris-a"]
    assert (a["model"], a["version"], a["source"], a["status"]) == (
        "iris-a.staging",
        "1",
        "registry",
        "RUNNING",
    )
    assert a["replicas"] == {"ready": 1, "target": 1} and a["ingress"] == INGRESS
    assert a["endpoint"] == f"{deployed.serve_url}/iris-a/invocations"
    proc = mlray(deployed, "check", "-o", "json")
    checked = json.loads(proc.stdout)
    assert checked["ok"] is True and checked["problems"] == []
    assert checked["ingress"] == INGRESS and f"Ingress: {INGRESS}" in proc.stderr
    skipped = {x["model"]: x for x in checked["skipped"]}
    assert skipped["iris-old.staging"]["version"] == "1"
    assert "Reading registry" in proc.stderr  # people's text, kept off stdout
    proc = mlray(deployed, "deploy", "-o", "yaml", "--quiet")
    assert "Reading registry" not in proc.stderr
    done = yaml.safe_load(proc.stdout)
    actions = {x["app"]: x["action"] for x in done["actions"]}
    assert (actions["iris-a"], actions[APP_B]) == ("unchanged", "unchanged")
    final = {x["name"]: x["status"] for x in done["apps"]}
    assert (final["iris-a"], final[APP_B]) == ("RUNNING", "RUNNING")


def test_mlflow_deployments_plugin_lists_and_predicts(deployed: Services) -> None:
    env = {**os.environ, "MLRAY_CONFIG": str(deployed.config_path),
           "MLFLOW_TRACKING_URI": deployed.tracking_uri}  # fmt: skip
    mlflow_cli = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.run([mlflow_cli, "deployments", "list", "-t", "mlray:/local"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "iris-a" in proc.stdout and APP_B in proc.stdout


def test_batch_size_change_applies_live_without_restarting_replicas(deployed: Services) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(deployed.tracking_uri)
    before = replica_ids(deployed)[APP_B]
    meta_url = f"{deployed.serve_url}/{APP_B}/metadata"
    pid = requests.get(meta_url, timeout=30).json()["replica"]["pid"]
    client.set_registered_model_tag("iris-b.staging", "ray.user_config.max_batch_size", "6")
    try:
        proc = mlray(deployed, "deploy")
        assert "batching changed (applied live, no restart)" in proc.stdout
        meta = requests.get(meta_url, timeout=30).json()
        assert meta["batching"]["max_batch_size"] == 6
        assert meta["replica"]["pid"] == pid
        assert replica_ids(deployed)[APP_B] == before
    finally:
        client.set_registered_model_tag("iris-b.staging", "ray.user_config.max_batch_size", "4")
        mlray(deployed, "deploy")


def test_mlflow_deployments_plugin_create_predict_delete(deployed: Services) -> None:
    from mlflow.deployments import get_deploy_client

    os.environ["MLRAY_CONFIG"] = str(deployed.config_path)
    client = get_deploy_client("mlray:/local")
    created = client.create_deployment(
        "iris-plugin", "models:/iris-a.staging/1",
        config={"num_cpus": "0.25", "memory": "0.5", "num_replicas": "1"},
    )  # fmt: skip
    try:
        assert created == {"name": "iris-plugin", "flavor": "python_function"}
        got = client.get_deployment("iris-plugin")
        assert got["name"] == "iris-plugin" and got["status"] == "RUNNING"
        x, _ = iris()
        preds = client.predict("iris-plugin", x.head(5))
        expected = predict_in_process(deployed.tracking_uri, "models:/iris-a.staging/1", x.head(5))
        np.testing.assert_array_equal(np.asarray(preds["predictions"]), np.asarray(expected))
        # `mlray deploy` reconciles registry apps only: the plugin's app survives it.
        assert "keep" in mlray(deployed, "deploy").stdout
        assert "iris-plugin" in deployed_configs(deployed)
    finally:
        client.delete_deployment("iris-plugin")
    assert "iris-plugin" not in deployed_configs(deployed)


def test_a_ten_megabyte_body_gets_413_and_the_replica_keeps_serving(deployed: Services) -> None:
    url = f"{deployed.serve_url}/iris-a/invocations"
    row = '{"sepal_length": 1.0, "sepal_width": 1.0, "petal_length": 1.0, "petal_width": 1.0},'
    body = '{"dataframe_records": [' + row * (10_000_000 // len(row)) + row[:-1] + "]}"
    resp = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
    assert resp.status_code == 413, resp.text[:500]
    assert resp.json()["error_code"]
    x, _ = iris()
    ok = requests.post(url, json={"dataframe_records": x.head(1).to_dict("records")}, timeout=60)
    assert ok.status_code == 200
