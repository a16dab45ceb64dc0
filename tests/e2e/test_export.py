"""The RayService export's Serve half on a real cluster: apps from the manifest alone.

KubeRay PUTs ``spec.serveConfigV2`` to a new cluster's dashboard; no mlray runs there, so the
serving code must come from a URI any cluster can fetch. Here a testbed cluster is restarted
first (new Ray sessions: an empty GCS, no cached environments, no apps: a cluster that has
never seen the package), then the exported Serve config alone brings every app up.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from mlray.config import load_config
from mlray.plan import cluster_part
from mlray.ray_api import RayDashboard
from mlray.serving_package import build_serving_package
from testbed import Testbed
from tests.e2e.conftest import Deployed, mlray, reference
from tests.kuberay_crd import crd_errors, crd_validator

pytestmark = pytest.mark.e2e
CLUSTER = "py313"


def _wait(dash: RayDashboard, done, what: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        details = dash.serve_details()
        if done(details.get("applications") or {}):
            return details
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:.0f}s: {details}")
        time.sleep(2)


def test_exported_serve_config_brings_every_app_up_on_a_cluster(deployed: Deployed, tmp_path):
    cfg = load_config(deployed.config_path)
    cluster = cfg.cluster(CLUSTER)
    dash = RayDashboard(cluster, CLUSTER)
    out = tmp_path / "rayservice.yml"
    proc = mlray(deployed.config_path, "export", CLUSTER, "--format", "rayservice", "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    manifest = yaml.safe_load(text)
    assert crd_errors(crd_validator(), manifest) == []
    assert "gcs://" not in text
    apps = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    ours = {m["app"]: name for name, m in deployed.models.items() if m["cluster"] == CLUSTER}
    assert set(ours) <= {a["name"] for a in apps}
    package = build_serving_package()
    for app in apps:
        assert app["runtime_env"]["pip"]["packages"], app["name"]
        assert app["runtime_env"]["py_modules"] == [
            package.http_uri(cfg.cluster_tracking_uri(CLUSTER))
        ]

    try:
        Testbed.from_file().restart_cluster(cluster.python)
        assert not dash.package_exists(package.gcs_uri), "a fresh GCS holds no package"
        assert not (dash.serve_details().get("applications") or {}), "a fresh cluster has no apps"
        base = cluster_part(dash.serve_details(), cluster.http_options)
        dash.put_serve_config({**base, "applications": apps})  # what KubeRay sends
        names = {a["name"] for a in apps}
        _wait(
            dash,
            lambda a: names <= set(a) and all(a[n]["status"] == "RUNNING" for n in names),
            "every exported app RUNNING",
        )
        for app, model in ours.items():
            ref = reference(deployed, model)
            x = pd.DataFrame(ref["data"], columns=ref["columns"])
            body = {"dataframe_split": x.to_dict(orient="split")}
            resp = requests.post(f"{deployed.serve_url(app)}/invocations", json=body, timeout=120)
            assert resp.status_code == 200, resp.text[:1000]
            np.testing.assert_allclose(
                np.asarray(resp.json()["predictions"]), np.asarray(ref["predictions"]), atol=1e-6
            )
        # Byte for byte what `mlray deploy` would PUT: a deploy now changes nothing.
        again = mlray(deployed.config_path, "deploy", CLUSTER)
        assert again.returncode == 0 and "Nothing to change." in again.stdout, again.stdout
    finally:
        restored = mlray(deployed.config_path, "deploy", CLUSTER)
        assert restored.returncode == 0, restored.stdout + restored.stderr
