"""MLflow's own `mlflow deployments predict` CLI, through the plugin, in every file form.

The CLI reads `--input-path` with `pandas.read_json` before the plugin sees it; each form
must still reach the served app as the payload the file holds and answer like the model.
Read-only against the clusters (no deploys), so `--dist loadfile` may run it beside others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e.conftest import Deployed, reference
from tests.e2e.test_serving import _compare

pytestmark = pytest.mark.e2e
MODELS = ["iris_xgb17.staging", "iris_cat127.staging"]  # labels, and catboost's [[label]]
PARAMS = {"note": "ignored by a model without a params schema"}


def _file_body(form: str, x: pd.DataFrame) -> object:
    """The JSON a user writes for each form (as in examples/predict-inputs/)."""
    records = x.to_dict(orient="records")
    if form == "dataframe_split":
        return {form: {"columns": list(x.columns), "data": x.values.tolist()}}
    if form in ("dataframe_records", "instances"):
        return {form: records}
    if form == "inputs":
        return {form: x.to_dict("list")}
    if form == "dataframe":
        return records
    if form == "dataframe_split+params":
        return {**_file_body("dataframe_split", x), "params": PARAMS}  # type: ignore[dict-item]
    if form == "inputs+params":
        return {"inputs": x.to_dict("list"), "params": PARAMS}
    if form == "dataframe_records+params":  # rows keyed by number: read_json refuses a list here
        return {"dataframe_records": {str(i): r for i, r in enumerate(records)}, "params": PARAMS}
    raise AssertionError(form)


FORMS = [
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
    "dataframe",
    "dataframe_split+params",
    "inputs+params",
    "dataframe_records+params",
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("model", MODELS)
def test_mlflow_cli_predict_answers_like_the_model(
    deployed: Deployed, tmp_path: Path, model: str, form: str
):
    ref = reference(deployed, model)
    x = pd.DataFrame(ref["data"], columns=ref["columns"])
    m = deployed.models[model]
    src, out = tmp_path / "input.json", tmp_path / "output.json"
    src.write_text(json.dumps(_file_body(form, x)))
    cmd = [sys.executable, "-m", "mlflow", "deployments", "predict", "-t", f"mlray:/{m['cluster']}",
           "--name", m["app"], "--input-path", str(src), "--output-path", str(out)]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLRAY_CONFIG": deployed.config_path},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _compare(json.loads(out.read_text())["predictions"], ref["predictions"])


def test_example_input_files_answer_through_mlflow_cli(deployed: Deployed, tmp_path: Path):
    """The files README points at work as shipped (three iris rows: one of each species)."""
    m = deployed.models["iris_xgb17.staging"]
    examples = Path(__file__).resolve().parents[2] / "examples" / "predict-inputs"
    for path in sorted(examples.glob("*.json")):
        out = tmp_path / f"{path.stem}.out.json"
        proc = subprocess.run(
            [sys.executable, "-m", "mlflow", "deployments", "predict", "-t",
             f"mlray:/{m['cluster']}", "--name", m["app"], "--input-path", str(path),
             "--output-path", str(out)],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "MLRAY_CONFIG": deployed.config_path},
        )  # fmt: skip
        assert proc.returncode == 0, f"{path.name}: {proc.stdout}{proc.stderr}"
        assert json.loads(out.read_text())["predictions"] == [0, 1, 2], path.name
