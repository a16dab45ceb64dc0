"""`pip install mlray[plugin]` is all MLflow's `deployments predict` CLI needs.

mlray depends on mlflow-skinny, whose `predict` command imports pandas; the `plugin` extra
brings it. A fresh venv gets mlray's declared dependencies only (no test extras), and its own
`mlflow` CLI predicts against an app the plugin deployed on the real local Ray head.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import Services
from tests.integration.models import base_tags, predict_in_process, register_sklearn

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
APP, MODEL = "iris-cli", "iris-cli"  # no .staging suffix: `mlray deploy` never selects it
EXAMPLES = ROOT / "examples" / "predict-inputs"


@pytest.fixture(scope="module")
def plugin_app(services: Services) -> Iterator[str]:
    """One app made with the plugin (touches no other app), removed at the end."""
    from mlflow.deployments import get_deploy_client

    version = register_sklearn(services.tracking_uri, MODEL, [], base_tags(APP), alias="")
    os.environ["MLRAY_CONFIG"] = str(services.config_path)
    client = get_deploy_client("mlray:/local")
    client.create_deployment(APP, f"models:/{MODEL}/{version}")
    try:
        yield f"models:/{MODEL}/{version}"
    finally:
        client.delete_deployment(APP)


def _pip(venv: Path, *args: str) -> None:
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _predict(venv: Path, services: Services, path: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "mlflow"), "deployments", "predict", "-t", "mlray:/local",
         "--name", APP, "--input-path", str(path), "--output-path", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLRAY_CONFIG": str(services.config_path)},
    )  # fmt: skip


def test_mlflow_cli_predict_needs_only_the_plugin_extra(
    services: Services, plugin_app: str, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    _pip(venv, str(ROOT))  # mlray's own dependencies, nothing else
    out = tmp_path / "out.json"
    proc = _predict(venv, services, EXAMPLES / "dataframe_split.json", out)
    assert proc.returncode != 0
    assert "No module named 'pandas'" in proc.stderr

    _pip(venv, f"{ROOT}[plugin]")
    split = json.loads((EXAMPLES / "dataframe_split.json").read_text())["dataframe_split"]
    rows = pd.DataFrame(split["data"], columns=split["columns"])  # one iris of each species
    expected = np.asarray(predict_in_process(services.tracking_uri, plugin_app, rows))
    for name in ("dataframe_split.json", "dataframe_records-params.json", "inputs.json"):
        proc = _predict(venv, services, EXAMPLES / name, out)
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
        got = np.asarray(json.loads(out.read_text())["predictions"])
        np.testing.assert_array_equal(got, expected, err_msg=name)
