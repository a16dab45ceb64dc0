"""The plugin's predict rebuilds the scoring payload MLflow's CLI reshaped with read_json.

`mlflow deployments predict --input-path F` calls `pandas.read_json(F)` and hands the plugin
the frame; these tests feed `scoring_payload` exactly those frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlray.payload import reshaped_payload, scoring_payload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "predict-inputs"
COLS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]
RECORDS = [dict(zip(COLS, r, strict=True)) for r in ROWS]
PARAMS = {"note": "passed to predict(..., params=...)"}


def read_like_mlflow_cli(tmp_path: Path, body: object) -> pd.DataFrame:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(body))
    return pd.read_json(path)  # what mlflow/deployments/cli.py `predict` does


def _sent(frame: pd.DataFrame) -> dict:
    payload = scoring_payload(frame)
    json.dumps(payload)  # what requests does with it: numpy scalars would fail here
    return payload


# Each example file, and the payload the scoring server must receive for it.
EXPECTED = {
    "dataframe_split.json": {"dataframe_split": {"columns": COLS, "data": ROWS}},
    "dataframe_records.json": {"dataframe_records": RECORDS},
    "instances.json": {"instances": RECORDS},
    "inputs.json": {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLS)}},
    "dataframe.json": {"dataframe_split": {"columns": COLS, "data": ROWS}},
    "dataframe_split-params.json": {
        "dataframe_split": {"columns": COLS, "data": ROWS},
        "params": PARAMS,
    },
    "inputs-params.json": {
        "inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLS)},
        "params": PARAMS,
    },
    # read_json refuses a list beside params, so these files key the rows by number.
    "dataframe_records-params.json": {"dataframe_records": RECORDS, "params": PARAMS},
    "instances-params.json": {"instances": RECORDS, "params": PARAMS},
}


def test_every_example_file_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_file_read_by_mlflow_cli_is_sent_as_the_file_meant(name: str):
    assert _sent(pd.read_json(EXAMPLES / name)) == EXPECTED[name]


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"index": [7, 8, 9], "columns": COLS, "data": ROWS}},
        {"dataframe_split": {"data": ROWS}},
        {"dataframe_records": RECORDS[:1]},
        {"instances": RECORDS[:1]},
        {"instances": ROWS},
        {"inputs": ROWS},
        {"inputs": {"x": 1.5, "y": 2.5}},
        {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLS)}, "params": {"k": 3}},
        {"params": {"k": 3, "s": "x"}, "dataframe_split": {"columns": COLS, "data": ROWS}},
        {"dataframe_split": {"columns": COLS, "data": ROWS}, "params": {"data": 1, "columns": "c"}},
    ],
    ids=["split-index", "split-no-columns", "records-1", "instances-1", "instances-lists",
         "inputs-rows", "inputs-scalars", "inputs-params-int", "params-first", "params-overlap"],
)  # fmt: skip
def test_payload_survives_read_json(tmp_path: Path, body: dict):
    assert _sent(read_like_mlflow_cli(tmp_path, body)) == body


def test_rows_keyed_by_number_come_back_in_numeric_order(tmp_path: Path):
    rows = [[float(i), 1.0] for i in range(12)]
    body = {"instances": {str(i): r for i, r in enumerate(rows)}, "params": {"k": 2}}
    assert _sent(read_like_mlflow_cli(tmp_path, body)) == {"instances": rows, "params": {"k": 2}}


def test_integer_params_stay_integers_beside_padding(tmp_path: Path):
    # The params column is float64 (NaN-padded), so read_json turns 2 into 2.0.
    body = {"inputs": {"a": [1.0], "b": [2.0]}, "params": {"n": 2, "f": 0.5}}
    frame = read_like_mlflow_cli(tmp_path, body)
    assert frame["params"].dtype.kind == "f"
    params = _sent(frame)["params"]
    assert params == {"n": 2, "f": 0.5} and isinstance(params["n"], int)


def test_read_json_refuses_a_list_beside_params(tmp_path: Path):
    """Why the -params examples key their rows: this never reaches the plugin."""
    with pytest.raises(ValueError, match="Mixing dicts with non-Series"):
        read_like_mlflow_cli(tmp_path, {"dataframe_records": RECORDS, "params": PARAMS})


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame(ROWS, columns=COLS),
        pd.DataFrame({"inputs": [1.0, 2.0, 3.0]}),  # a feature column that happens to be named so
        pd.DataFrame({"instances": [1, 2], "other": [3, 4]}),
        pd.DataFrame({"dataframe_split": [[1], [2]]}),  # rows, not split's keys
        pd.DataFrame({"dataframe_records": {"a": {"x": 1}}}),  # rows not numbered
    ],
    ids=["features", "scalar-inputs-column", "extra-column", "split-rows", "unnumbered-records"],
)
def test_plain_dataframes_are_data(frame: pd.DataFrame):
    assert reshaped_payload(frame) is None
    split = frame.to_dict(orient="split")
    assert _sent(frame) == {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}


def test_python_api_payload_dicts_pass_through():
    body = {"dataframe_records": RECORDS, "params": PARAMS}
    assert scoring_payload(body) is body


def test_other_inputs_are_tensors():
    assert scoring_payload([[1, 2]]) == {"inputs": [[1, 2]]}
    assert scoring_payload(np.array([[1, 2]])) == {"inputs": [[1, 2]]}
    assert scoring_payload({"x": [1]}) == {"inputs": {"x": [1]}}
