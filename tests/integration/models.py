"""Register small real models the way teams do: log, register as <name>.staging, alias, tag."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sklearn
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

EXPERIMENT = "mlray-integration"


def iris() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_iris(as_frame=True)
    x = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    return x, data.target.to_numpy()


def base_tags(name: str, **extra: str) -> dict[str, str]:
    return {"ray.name": name, "ray.ray_actor_options.num_cpus": "0.25",
            "ray.ray_actor_options.memory": "0.5", "ray.num_replicas": "1", **extra}  # fmt: skip


def register_sklearn(
    tracking_uri: str,
    name: str,
    pins: list[str],
    tags: dict[str, str],
    alias: str = "staging",
    c: float = 1.0,
) -> str:
    """Train and register an iris classifier whose environment pins ``pins``; returns version."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    x, y = iris()
    model = LogisticRegression(C=c, max_iter=500).fit(x, y)
    reqs = [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
            f"pandas=={pd.__version__}", f"numpy=={np.__version__}", *pins]  # fmt: skip
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", pip_requirements=reqs, input_example=x.head(3),
            registered_model_name=name,
        )  # fmt: skip
    client = MlflowClient(tracking_uri)
    version = str(info.registered_model_version)
    for k, v in tags.items():
        client.set_registered_model_tag(name, k, v)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def register_raw(
    tracking_uri: str,
    name: str,
    python: str,
    requirements: list[str],
    tags: dict[str, str],
    alias: str = "staging",
) -> str:
    """Register a model directory with a hand-written environment (another Python, a pin
    with no wheel): what a model trained elsewhere looks like to the registry."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    x, y = iris()
    model = LogisticRegression(max_iter=500).fit(x, y)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model")
        mlflow.sklearn.save_model(model, str(path))
        (path / "python_env.yaml").write_text(
            f"python: {python}\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n"
        )
        (path / "requirements.txt").write_text("\n".join(requirements) + "\n")
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(path), artifact_path="model")
        mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    client = MlflowClient(tracking_uri)
    for k, v in tags.items():
        client.set_registered_model_tag(name, k, v)
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def predict_in_process(tracking_uri: str, uri: str, x: pd.DataFrame) -> Any:
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pyfunc.load_model(uri).predict(x)
