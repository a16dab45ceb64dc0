"""Malformed requests get a 4xx with MLflow's error shape; the replica keeps serving."""

from __future__ import annotations

import json

import pytest
import requests

from tests.e2e.conftest import Deployed

pytestmark = pytest.mark.e2e
APP = "iris-xgb21"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
CASES = {
    "bad-json": ("{not json", "application/json"),
    "unknown-key": (
        json.dumps({"dataframe_splitt": {"columns": ["a"], "data": [[1]]}}),
        "application/json",
    ),
    "missing-columns": (
        json.dumps({"dataframe_records": [{"sepal_length": 5.1}]}),
        "application/json",
    ),
    "wrong-dtype": (
        json.dumps({"dataframe_records": [dict.fromkeys(ROW, "abc")]}),
        "application/json",
    ),
    "wrong-content-type": ("sepal_length\n5.1", "text/plain"),
    "empty-body": ("", "application/json"),
    "ten-megabytes": (
        json.dumps({"dataframe_records": [ROW] * (10_000_000 // len(json.dumps(ROW)) + 1)}),
        "application/json",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_request_gets_4xx_and_the_app_keeps_serving(deployed: Deployed, case: str):
    body, content_type = CASES[case]
    url = f"{deployed.serve_url(APP)}/invocations"
    resp = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=120)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500])
    err = resp.json()
    assert set(err) >= {"error_code", "message"} and err["message"]
    ok = requests.post(url, json={"dataframe_records": [ROW]}, timeout=60)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
