"""mlray.serving on a real in-process Ray Serve with a real registered MLflow model.

No MLflow server and no ``ray start``: a SQLite tracking store in a temp dir (it has a model
registry, so ``models:/iris/1`` resolves) and a private local Ray instance. The serving package
travels the way it does in production, as ``runtime_env.py_modules``.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
from pathlib import Path

import mlflow
import pytest
import ray
import requests
import sklearn.datasets as sklearn_datasets
import sklearn.linear_model as sklearn_linear
from ray import serve

from mlray.serving import app as serving_app

pytestmark = pytest.mark.integration

MLRAY_PACKAGE = Path(serving_app.__file__).resolve().parents[1]
MODEL_NAME = "iris"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory):
    """A registered iris model (version 1) and the DataFrame it was trained on."""
    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.create_experiment(
        "mlray-serving", artifact_location=(root / "artifacts").as_uri()
    )
    frame = sklearn_datasets.load_iris(as_frame=True).frame
    features = frame.drop(columns=["target"])
    classifier = sklearn_linear.LogisticRegression(max_iter=500).fit(features, frame["target"])
    signature = mlflow.models.infer_signature(features, classifier.predict(features))
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.sklearn.log_model(
            classifier, name="model", signature=signature, registered_model_name=MODEL_NAME
        )
    local = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    yield tracking_uri, features, local
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def base_url(iris):
    tracking_uri, _, _ = iris
    port = _free_port()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={
            "env_vars": {"MLFLOW_TRACKING_URI": tracking_uri, "MLRAY_MAX_REQUEST_BYTES": "1048576"},
            "py_modules": [str(MLRAY_PACKAGE)],
        },
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = serving_app.build(
            {
                "model_uri": f"models:/{MODEL_NAME}/1",
                "model_name": MODEL_NAME,
                "model_version": "1",
                "mlray_cluster": "local",  # extra metadata must be tolerated
            }
        )
        serve.run(app, name="iris", route_prefix="/iris")
        yield f"http://127.0.0.1:{port}/iris"
    finally:
        serve.shutdown()
        ray.shutdown()


def _post_json(url: str, payload: object) -> requests.Response:
    return requests.post(
        url, data=json.dumps(payload), headers={"Content-Type": "application/json"}
    )


def _expected(local, rows) -> list:
    return local.predict(rows).tolist()


def test_every_input_form_matches_in_process_pyfunc(base_url, iris):
    _, features, local = iris
    rows = features.iloc[[0, 55, 120, 7]]
    expected = _expected(local, rows)
    split = json.loads(rows.to_json(orient="split", index=False))
    forms = {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": rows.to_dict(orient="records")},
        "instances": {"instances": rows.to_dict(orient="records")},
        "inputs": {"inputs": rows.to_dict(orient="list")},
    }
    for form, payload in forms.items():
        response = _post_json(f"{base_url}/invocations", payload)
        assert response.status_code == 200, (form, response.text)
        assert response.json() == {"predictions": expected}, form
    csv = requests.post(
        f"{base_url}/invocations",
        data=rows.to_csv(index=False),
        headers={"Content-Type": "text/csv"},
    )
    assert csv.status_code == 200, csv.text
    assert csv.json() == {"predictions": expected}
    for root in (base_url, f"{base_url}/"):
        response = _post_json(root, forms["dataframe_split"])
        assert response.status_code == 200, (root, response.text)
        assert response.json() == {"predictions": expected}


def test_malformed_requests_get_4xx_and_the_replica_keeps_serving(base_url, iris):
    _, features, local = iris
    good = {"dataframe_split": json.loads(features.iloc[:3].to_json(orient="split", index=False))}
    missing_column = json.loads(features.iloc[:2, :3].to_json(orient="split", index=False))
    wrong_type = json.loads(features.iloc[:2].to_json(orient="split", index=False))
    wrong_type["data"][0][0] = "not a number"
    url = f"{base_url}/invocations"
    cases = {
        "bad json": (b"{not json", "application/json", 400),
        "unknown key": (json.dumps({"dataframe_splitt": {}}).encode(), "application/json", 400),
        "two keys": (
            json.dumps({"inputs": [1], "instances": [1]}).encode(),
            "application/json",
            400,
        ),
        "wrong content type": (b"a=1", "application/x-www-form-urlencoded", 415),
        "no content type": (json.dumps(good).encode(), "", 415),
        "empty body": (b"", "application/json", 400),
        "oversize": (b"x" * (10 * 1024 * 1024), "application/json", 413),
        "missing column": (
            json.dumps({"dataframe_split": missing_column}).encode(),
            "application/json",
            400,
        ),
        "wrong type": (
            json.dumps({"dataframe_split": wrong_type}).encode(),
            "application/json",
            400,
        ),
        "params not an object": (
            json.dumps({**good, "params": [1]}).encode(),
            "application/json",
            400,
        ),
        "bad csv": (b'a,b\n1,"2\n', "text/csv", 400),
    }
    expected = _expected(local, features.iloc[:3])
    for name, (body, content_type, status) in cases.items():
        headers = {"Content-Type": content_type} if content_type else {}
        response = requests.post(url, data=body, headers=headers)
        assert response.status_code == status, (name, response.status_code, response.text)
        error = response.json()
        assert set(error) == {"error_code", "message"}, (name, error)
        assert error["error_code"] in {
            "BAD_REQUEST",
            "INVALID_PARAMETER_VALUE",
            "MALFORMED_REQUEST",
        }
        after = _post_json(url, good)
        assert after.status_code == 200, (name, after.text)
        assert after.json() == {"predictions": expected}


def test_health_version_and_metadata(base_url, iris):
    import sklearn

    _, features, _ = iris
    one = {"dataframe_split": json.loads(features.iloc[:1].to_json(orient="split", index=False))}
    assert _post_json(f"{base_url}/invocations", one).status_code == 200

    for path in ("ping", "health", "version", "metadata"):
        assert requests.get(f"{base_url}/{path}").status_code == 200, path
    version = requests.get(f"{base_url}/version").json()
    assert version["model_version"] == "1" and version["mlflow"] == mlflow.__version__
    meta = requests.get(f"{base_url}/metadata").json()
    assert meta["model_name"] == MODEL_NAME and meta["model_version"] == "1"
    assert meta["run_id"]
    assert meta["flavor"] == "sklearn"
    assert meta["signature"]["inputs"][0]["name"] == "sepal length (cm)"
    assert meta["libraries"]["scikit-learn"] == sklearn.__version__
    assert meta["flavor_libraries"]["sklearn"]["version"] == sklearn.__version__
    assert meta["requirement_mismatches"] == []
    assert meta["python_version"].count(".") == 2
    # What the replica's start cost, from its own process: CPU used, and time spent runnable
    # with no CPU free (the figures that tell a CPU-starved scale-out from one that waited).
    startup = meta["startup"]
    assert startup["cpu_s"] > 0 and startup["cpu_share"] > 0 and startup["cpu_wait_s"] >= 0
    assert startup["total_s"] > 0 and startup["model_from"] in ("node cache", "mlflow")
    assert meta["batching"]["enabled"] is False
    assert meta["replica"]["pid"] > 0 and meta["replica"]["replica_id"]
    assert meta["args"] == {"mlray_cluster": "local"}
    assert meta["max_request_bytes"] == 1048576
    stages = meta["timings"]["stages_ms"]
    assert set(stages) == {"read", "parse", "queue", "predict", "serialize", "total"}
    assert stages["predict"]["count"] >= 1 and stages["total"]["mean_ms"] > 0
    assert requests.get(f"{base_url}/nope").json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_batching_gives_each_caller_its_own_rows_and_reconfigures_live(base_url, iris):
    _, features, local = iris
    app = serving_app.MlflowModel.options(
        user_config={"max_batch_size": 8, "batch_wait_timeout_s": 0.5},
        max_ongoing_requests=32,
    ).bind(model_uri=f"models:/{MODEL_NAME}/1", model_name=MODEL_NAME, model_version="1")
    serve.run(app, name="iris-batched", route_prefix="/iris-batched")
    url = base_url.rsplit("/", 1)[0] + "/iris-batched"
    try:
        requests_rows = [features.iloc[(i * 9) % 130 : (i * 9) % 130 + 1 + i] for i in range(16)]

        def score(rows):
            payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
            return _post_json(f"{url}/invocations", payload)

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(score, requests_rows))
        for rows, response in zip(requests_rows, responses, strict=True):
            assert response.status_code == 200, response.text
            assert response.json() == {"predictions": _expected(local, rows)}
        meta = requests.get(f"{url}/metadata").json()
        batching = meta["batching"]
        assert batching["enabled"] and batching["max_batch_size"] == 8
        assert batching["requests_batched"] == 16
        assert max(int(size) for size in batching["batch_size_histogram"]) > 1, batching
        assert all(int(size) <= 8 for size in batching["batch_size_histogram"])
        # A request alone on the replica does not wait batch_wait_timeout_s (0.5 s here) for
        # a batch that cannot fill: it is predicted at once, and counted as a batch of one.
        before = batching["predicted_at_once"]
        response = score(requests_rows[0])
        assert response.status_code == 200, response.text
        assert response.elapsed.total_seconds() < 0.5, response.elapsed
        meta = requests.get(f"{url}/metadata").json()
        assert meta["batching"]["predicted_at_once"] == before + 1
        assert meta["batching"]["requests_batched"] == 17

        # New user_config reaches reconfigure(). (serve.run from Python always starts a new
        # code version, so the replica restarts here; a config deploy through the dashboard
        # REST API, as mlray does, applies the same change to the live replica.)
        serve.run(
            serving_app.MlflowModel.options(
                user_config={"max_batch_size": 4, "batch_wait_timeout_s": 0.1},
                max_ongoing_requests=32,
            ).bind(model_uri=f"models:/{MODEL_NAME}/1", model_name=MODEL_NAME, model_version="1"),
            name="iris-batched",
            route_prefix="/iris-batched",
        )
        meta = requests.get(f"{url}/metadata").json()
        assert meta["batching"]["max_batch_size"] == 4
        assert meta["batching"]["batch_wait_timeout_s"] == 0.1
        assert meta["batching"]["enabled"] is True
    finally:
        serve.delete("iris-batched")
