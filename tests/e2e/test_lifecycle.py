"""Registry changes reach the cluster, and nothing else moves.

These tests write to the registry and the clusters, so they run one after another on one
xdist worker (``--dist loadfile``, set in pyproject.toml: a file is one unit of work); they
touch only their own ``e2e_*`` models, or change example apps in ways Ray applies without a
restart, so the read-only tests on other workers keep passing while they run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlray.config import load_config
from mlray.ray_api import RayDashboard
from tests.e2e.conftest import Deployed, deployed_configs, mlray, replica_ids, serve_details

pytestmark = pytest.mark.e2e
CLUSTER = "py311"
SOURCE_MODEL = "iris_cat127.staging"  # small environment, already cached on the cluster
LIFE = "e2e_life.staging"
LIFE_APP = "e2e-life"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def deploy(d: Deployed, *args: str, cluster: str = CLUSTER, ok: bool = True):
    proc = mlray(d.config_path, "deploy", cluster, *args)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def copy_version(client: MlflowClient, d: Deployed, name: str) -> str:
    """A new version of `name` with the artifacts of the source example (no retraining)."""
    src = f"models:/{SOURCE_MODEL}/{d.models[SOURCE_MODEL]['version']}"
    return str(client.copy_model_version(src, name).version)


def delete_if_exists(client: MlflowClient, name: str) -> None:
    with contextlib.suppress(MlflowException):  # absent: nothing left over to clean
        client.delete_registered_model(name)


# Session scope: xdist may interleave other modules' tests on this worker, and pytest would
# then tear a module-scoped fixture down and set it up again between our tests.
@pytest.fixture(scope="session")
def client(deployed: Deployed) -> MlflowClient:
    return MlflowClient(deployed.tracking_uri)


@pytest.fixture(scope="session")
def life(deployed: Deployed, client: MlflowClient) -> Iterator[str]:
    """A registered model of our own on py311, deployed; removed again at the end."""
    delete_if_exists(client, LIFE)  # left over by an aborted run
    version = copy_version(client, deployed, LIFE)
    for k, v in {"ray.name": LIFE_APP, "ray.ray_actor_options.num_cpus": "0.25",
                 "ray.ray_actor_options.memory": "0.5", "ray.num_replicas": "1"}.items():  # fmt: skip
        client.set_registered_model_tag(LIFE, k, v)
    client.set_registered_model_alias(LIFE, "staging", version)
    out = deploy(deployed).stdout
    assert f"add       {LIFE_APP}" in out
    yield version
    delete_if_exists(client, LIFE)
    deploy(deployed)
    assert LIFE_APP not in deployed_configs(deployed, CLUSTER)


def version_served(d: Deployed, app: str) -> str:
    cluster = d.clusters[CLUSTER]["serve_url"]
    return str(requests.get(f"{cluster}/{app}/version", timeout=30).json()["model_version"])


def test_redeploy_without_changes_plans_unchanged_and_restarts_nothing(deployed: Deployed, life):
    for cluster in deployed.clusters:
        before = replica_ids(deployed, cluster)
        out = deploy(deployed, cluster=cluster).stdout
        assert "Nothing to change." in out
        assert not any(
            ln.lstrip().startswith(("add ", "update ", "remove ")) for ln in out.splitlines()
        )
        assert replica_ids(deployed, cluster) == before


def test_moving_the_alias_serves_the_new_version_and_retires_the_old(deployed, client, life):
    old = life
    new = copy_version(client, deployed, LIFE)
    client.set_registered_model_alias(LIFE, "staging", new)
    out = deploy(deployed).stdout
    assert f"models:/{LIFE}/{old} -> models:/{LIFE}/{new}" in out
    assert version_served(deployed, LIFE_APP) == new
    app = serve_details(deployed, CLUSTER)["applications"][LIFE_APP]
    assert app["deployed_app_config"]["args"]["model_version"] == new
    replicas = [r for dep in app["deployments"].values() for r in dep["replicas"]]
    assert len(replicas) == 1 and replicas[0]["state"] == "RUNNING"  # the old one is gone
    tags = client.get_model_version(LIFE, new).tags
    assert tags["mlray.cluster"] == CLUSTER and tags["mlray.endpoint"].endswith(
        f"/{LIFE_APP}/invocations"
    )


def test_batch_size_change_applies_live_without_a_restart(deployed: Deployed, client):
    name, app = "iris_xgb17.staging", "iris-xgb17"
    url = f"{deployed.serve_url(app)}/metadata"
    before_meta = requests.get(url, timeout=30).json()
    before = replica_ids(deployed, CLUSTER)[app]
    client.set_registered_model_tag(name, "ray.user_config.max_batch_size", "8")
    try:
        out = deploy(deployed).stdout
        assert "batching changed (applied live, no restart)" in out
        after_meta = requests.get(url, timeout=30).json()
        assert after_meta["batching"]["max_batch_size"] == 8
        assert after_meta["replica"]["pid"] == before_meta["replica"]["pid"]
        assert replica_ids(deployed, CLUSTER)[app] == before
    finally:
        client.set_registered_model_tag(name, "ray.user_config.max_batch_size", "16")
        deploy(deployed)


def test_tag_errors_exit_2_list_every_problem_and_change_nothing(deployed: Deployed, client, life):
    before = deployed_configs(deployed, CLUSTER)
    bad = [
        (LIFE, "ray.ray_actor_options.num_cpus", "abc", "0.25"),
        (LIFE, "ray.user_config.max_batchsize", "8", None),
        ("iris_xgb21.staging", "ray.autoscaling_config.max_replicas", "0", "4"),
    ]
    for name, key, value, _ in bad:
        client.set_registered_model_tag(name, key, value)
    try:
        proc = deploy(deployed, ok=False)
    finally:
        for name, key, _, good in bad:
            if good is None:
                client.delete_registered_model_tag(name, key)
            else:
                client.set_registered_model_tag(name, key, good)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{LIFE} v" in proc.stderr
    assert "got 'abc' for ray.ray_actor_options.num_cpus; expected a number > 0" in proc.stderr
    assert "unknown tag ray.user_config.max_batchsize" in proc.stderr
    assert "iris_xgb21.staging v" in proc.stderr
    assert (
        "got '0' for ray.autoscaling_config.max_replicas; expected a whole number >= 1"
        in proc.stderr
    )
    assert deployed_configs(deployed, CLUSTER) == before


def test_preflight_refuses_a_requirement_with_no_wheel_for_the_cluster(deployed, client, tmp_path):
    import mlflow

    name = "e2e_nowheel.staging"
    mlflow.set_tracking_uri(deployed.tracking_uri)
    src = client.get_model_version(SOURCE_MODEL, deployed.models[SOURCE_MODEL]["version"])
    local = mlflow.artifacts.download_artifacts(
        f"models:/{SOURCE_MODEL}/{src.version}", dst_path=str(tmp_path)
    )
    req = Path(local, "requirements.txt")
    lines = [ln for ln in req.read_text().splitlines() if not ln.startswith("catboost")]
    req.write_text("\n".join([*lines, "catboost==1.1.1"]) + "\n")  # no wheel for CPython >= 3.11
    with mlflow.start_run() as run:
        mlflow.log_artifacts(local, artifact_path="model")
    delete_if_exists(client, name)
    client.create_registered_model(name, tags={"ray.name": "e2e-nowheel", "ray.num_replicas": "1",
                                               "ray.ray_actor_options.num_cpus": "0.25",
                                               "ray.ray_actor_options.memory": "0.5"})  # fmt: skip
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "staging", mv.version)
    try:
        proc = mlray(deployed.config_path, "check", CLUSTER)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"refused  {name} v{mv.version}: catboost" in proc.stdout
        assert "has no wheel for Python 3.11" in proc.stdout
        out = deploy(deployed).stdout  # the others deploy; the refused model never reaches Ray
        assert "e2e-nowheel" not in deployed_configs(deployed, CLUSTER)
        assert f"refused  {name}" in out
    finally:
        client.delete_registered_model(name)


def _hello_package() -> tuple[str, bytes]:
    code = (
        "from ray import serve\n\n\n@serve.deployment(num_replicas=1, ray_actor_options={'num_cpus': 0})\n"
        "class Hello:\n    def __call__(self, request):\n        return 'hello'\n\n\napp = Hello.bind()\n"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("e2e_hello/__init__.py", (1980, 1, 1, 0, 0, 0)), code)
    data = buf.getvalue()
    return f"gcs://_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip", data


def test_an_app_mlray_does_not_manage_survives_a_deploy(deployed: Deployed):
    cfg = load_config(deployed.config_path)
    dash = RayDashboard(cfg.cluster(CLUSTER), CLUSTER)
    uri, data = _hello_package()
    dash.upload_package(uri, data)
    details = dash.serve_details()
    apps = [a["deployed_app_config"] for a in details["applications"].values()]
    hello = {"name": "e2e-hello", "route_prefix": "/e2e-hello", "import_path": "e2e_hello:app",
             "runtime_env": {"py_modules": [uri]}}  # fmt: skip
    dash.put_serve_config({"http_options": details["http_options"], "applications": [*apps, hello]})
    hello_url = deployed.clusters[CLUSTER]["serve_url"] + "/e2e-hello"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            apps_now = serve_details(deployed, CLUSTER)["applications"]
            if apps_now.get("e2e-hello", {}).get("status") == "RUNNING":
                break
            time.sleep(1)
        assert requests.get(hello_url, timeout=30).text == "hello"
        out = deploy(deployed).stdout
        assert "keep      e2e-hello" in out and "not managed by mlray" in out
        assert requests.get(hello_url, timeout=30).text == "hello"
    finally:
        pruned = deploy(deployed, "--prune-unmanaged").stdout
    assert "remove    e2e-hello" in pruned
    assert "e2e-hello" not in deployed_configs(deployed, CLUSTER)


def test_undeploy_removes_the_named_app_and_a_deploy_brings_it_back(deployed: Deployed, life):
    out = mlray(deployed.config_path, "undeploy", CLUSTER, LIFE_APP)
    assert out.returncode == 0, out.stdout + out.stderr
    assert LIFE_APP not in deployed_configs(deployed, CLUSTER)
    assert "iris-xgb17" in deployed_configs(deployed, CLUSTER)
    assert f"add       {LIFE_APP}" in deploy(deployed).stdout


def test_removing_the_staging_model_removes_its_app(deployed: Deployed, client, life):
    client.delete_registered_model(LIFE)
    out = deploy(deployed).stdout
    assert f"remove    {LIFE_APP}" in out and "no longer selected" in out
    assert LIFE_APP not in deployed_configs(deployed, CLUSTER)


def test_mlflow_outage_is_a_clear_error_and_changes_nothing(deployed: Deployed):
    from testbed import Testbed

    tb = Testbed.from_file()
    before = deployed_configs(deployed, CLUSTER)
    tb.stop_mlflow()
    try:
        proc = deploy(deployed, ok=False)
    finally:
        tb.start_mlflow()
    assert proc.returncode == 1
    assert "cannot reach MLflow at" in proc.stderr and "Nothing was changed." in proc.stderr
    assert deployed_configs(deployed, CLUSTER) == before
