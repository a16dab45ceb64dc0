"""Every example model, on its cluster, answers like the model itself, in every input form."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import requests

from testbed.spec import load_spec
from tests.e2e.conftest import Deployed, mlray, reference, serve_details

pytestmark = pytest.mark.e2e
EXAMPLES = [
    "iris_xgb17.staging",
    "iris_xgb21.staging",
    "iris_cat127.staging",
    "iris_xgb3.staging",
    "iris_cat128.staging",
]
FORMS = ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"]


def _request(form: str, x: pd.DataFrame) -> dict:
    if form == "csv":
        buf = io.StringIO()
        x.to_csv(buf, index=False)
        return {"data": buf.getvalue(), "headers": {"Content-Type": "text/csv"}}
    if form == "dataframe_split":
        body = {form: x.to_dict(orient="split")}
        body[form].pop("index", None)
    elif form == "dataframe_records":
        body = {form: x.to_dict(orient="records")}
    else:  # tensor forms: a list of rows, cast to the signature's columns by the server
        body = {form: x.to_dict(orient="records") if form == "instances" else x.to_dict("list")}
    return {"json": body}


def _compare(got: list, want: list) -> None:
    got_a, want_a = np.asarray(got), np.asarray(want)
    assert got_a.shape == want_a.shape
    if np.issubdtype(want_a.dtype, np.floating):
        np.testing.assert_allclose(got_a, want_a, atol=1e-6, rtol=0)  # probabilities
    else:
        np.testing.assert_array_equal(got_a, want_a)  # labels: exact


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("model", EXAMPLES)
def test_served_predictions_equal_the_models_own(deployed: Deployed, model: str, form: str):
    ref = reference(deployed, model)
    x = pd.DataFrame(ref["data"], columns=ref["columns"])
    app = deployed.models[model]["app"]
    resp = requests.post(f"{deployed.serve_url(app)}/invocations", timeout=120, **_request(form, x))
    assert resp.status_code == 200, resp.text[:1000]
    _compare(resp.json()["predictions"], ref["predictions"])


def test_every_example_of_a_testbed_python_is_deployed(deployed: Deployed):
    for name in EXAMPLES:
        m = deployed.models[name]
        assert requests.get(f"{deployed.serve_url(m['app'])}/health", timeout=30).status_code == 200


def test_two_xgboost_majors_run_side_by_side_each_in_its_own_env(deployed: Deployed):
    meta = {
        app: requests.get(f"{deployed.serve_url(app)}/metadata", timeout=30).json()
        for app in ("iris-xgb17", "iris-xgb21")
    }
    assert meta["iris-xgb17"]["flavor_libraries"]["xgboost"]["version"] == "1.7.6"
    assert meta["iris-xgb21"]["flavor_libraries"]["xgboost"]["version"] == "2.1.4"
    # Each env meets every exact pin of its model (mlray's check; MLflow's is skipped at load).
    assert meta["iris-xgb17"]["requirement_mismatches"] == []
    assert meta["iris-xgb21"]["requirement_mismatches"] == []
    assert deployed.cluster_of("iris-xgb17") == deployed.cluster_of("iris-xgb21")


@pytest.mark.parametrize("model", EXAMPLES)
def test_each_replica_runs_the_python_the_model_was_trained_on(deployed: Deployed, model: str):
    m = deployed.models[model]
    meta = requests.get(f"{deployed.serve_url(m['app'])}/metadata", timeout=30).json()
    assert meta["python_version"] == m["python"]  # exact, patch included
    assert meta["python_version"].startswith(deployed.clusters[m["cluster"]]["python"] + ".")


def test_model_trained_on_the_wrong_python_is_skipped_with_the_reason(deployed: Deployed):
    out = deployed.deploy_output["py311"]
    assert "skipped  iris_xgb21_wrongpy.staging v" in out
    assert "trained on 3.13, cluster runs 3.11" in out
    apps = serve_details(deployed, "py311")["applications"]
    assert "iris-xgb21-wrongpy" not in apps


# iris-xgb17 runs one fixed replica, so its /metadata counts every batch; iris-xgb3 autoscales.
@pytest.mark.parametrize(
    "model,single_replica", [("iris_xgb17.staging", True), ("iris_xgb3.staging", False)]
)
def test_concurrent_requests_to_a_batching_app_each_get_their_own_rows(
    deployed: Deployed, model: str, single_replica: bool
):
    """Batching merges concurrent callers into one predict: nobody may get a neighbour's rows."""
    from concurrent.futures import ThreadPoolExecutor

    ref = reference(deployed, model)
    x = pd.DataFrame(ref["data"], columns=ref["columns"])
    want = np.asarray(ref["predictions"])
    url = f"{deployed.serve_url(deployed.models[model]['app'])}/invocations"
    slices = [(i % len(x), i % len(x) + 1 + i % 4) for i in range(48)]  # 1-4 rows each

    def call(bounds: tuple[int, int]) -> tuple[tuple[int, int], list]:
        lo, hi = bounds
        body = {
            "dataframe_split": {"columns": list(x.columns), "data": x.iloc[lo:hi].values.tolist()}
        }
        resp = requests.post(url, json=body, timeout=120)
        assert resp.status_code == 200, resp.text[:500]
        return bounds, resp.json()["predictions"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, slices))
    for (lo, hi), got in results:
        _compare(got, want[lo:hi].tolist())
    if single_replica:
        meta = requests.get(url.replace("/invocations", "/metadata"), timeout=30).json()
        sizes = {int(k): v for k, v in meta["batching"]["batch_size_histogram"].items()}
        assert any(size > 1 for size in sizes), sizes  # batching really merged requests


def test_every_cluster_serves_through_the_testbeds_ingress(deployed: Deployed):
    """Read back from each live cluster: the e2e suite runs where the testbed says it runs."""
    want = load_spec().ingress
    for cluster in deployed.clusters:
        proc = mlray(deployed.config_path, "status", cluster, "-o", "json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["ingress"] == want, cluster


def test_the_first_deploy_built_every_app_environment_on_every_node(deployed: Deployed):
    """So a replica the autoscaler places on the worker does not wait for pip there."""
    nodes = 1 + load_spec().workers
    for cluster, out in deployed.deploy_output.items():
        m = re.search(r"Nodes prepared: (\d+)/(\d+) app environment\(s\) ready on (\d+) node", out)
        assert m, f"{cluster}: no node preparation in the deploy output:\n{out}"
        ready, total, on = map(int, m.groups())
        assert (ready, on) == (total, nodes) and total >= nodes, out
        assert "environment not built" not in out
        # every app's model in every node's model cache: a later replica skips MLflow
        m = re.search(r"; (\d+)/(\d+) model copies in the nodes' model cache", out)
        assert m and m[1] == m[2] == str(total), out
        assert "model not cached" not in out, out
        # and every package each env installed imported there (its bytecode written once)
        assert "not pre-imported" not in out, out
