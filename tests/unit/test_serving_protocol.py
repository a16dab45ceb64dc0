"""MLflow scoring protocol parsing and rendering (mlray.serving.protocol), without Ray or MLflow."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pandas as pd
import pytest

from mlray.serving import protocol
from mlray.serving.protocol import InputHints, ScoringError, parse_request

JSON = "application/json"


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


def _error(body: bytes, content_type: str | None = JSON, **kwargs) -> ScoringError:
    with pytest.raises(ScoringError) as info:
        parse_request(body, content_type, **kwargs)
    err = info.value
    assert set(err.to_dict()) == {"error_code", "message"}
    assert json.loads(err.to_json()) == err.to_dict()
    return err


# --- content type, size, encoding ---------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        'Application/JSON; Charset="UTF-8"',
        "application/json;",
    ],
)
def test_json_content_types_accepted(content_type):
    parsed = parse_request(_json({"inputs": [1, 2]}), content_type)
    assert parsed.input_format == "inputs"


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "application/jsonl"],
)
def test_unsupported_content_type_is_415(content_type):
    err = _error(_json({"inputs": [1]}), content_type)
    assert err.status == 415
    assert err.error_code == "BAD_REQUEST"


def test_non_utf8_charset_is_415():
    err = _error(_json({"inputs": [1]}), "application/json; charset=latin-1")
    assert err.status == 415 and "utf-8" in err.message


def test_unknown_content_type_parameter_is_415():
    err = _error(_json({"inputs": [1]}), "application/json; format=pandas-split")
    assert err.status == 415 and "format" in err.message


@pytest.mark.parametrize("body", [b"", b"   \n"])
def test_empty_body_is_400(body):
    err = _error(body)
    assert err.status == 400 and err.error_code == "MALFORMED_REQUEST"


def test_body_that_is_not_utf8_is_400():
    err = _error(b'{"inputs": ["\xff\xfe"]}')
    assert err.status == 400 and err.error_code == "MALFORMED_REQUEST"


def test_oversize_body_is_413_before_parsing():
    body = b"x" * (10 * 1024 * 1024)  # not even JSON: the size check comes first
    err = _error(body, max_bytes=protocol.DEFAULT_MAX_REQUEST_BYTES)
    assert err.status == 413 and str(len(body)) in err.message


def test_body_at_the_limit_is_accepted():
    body = _json({"inputs": [1, 2, 3]})
    assert parse_request(body, JSON, max_bytes=len(body)).n_rows == 3


def test_max_request_bytes_from_env():
    assert protocol.max_request_bytes({}) == 8 * 1024 * 1024
    assert protocol.max_request_bytes({"MLRAY_MAX_REQUEST_BYTES": "1024"}) == 1024
    for bad in ("0", "-1", "lots"):
        with pytest.raises(ValueError, match="MLRAY_MAX_REQUEST_BYTES"):
            protocol.max_request_bytes({"MLRAY_MAX_REQUEST_BYTES": bad})


def test_utf8_bom_is_tolerated():
    parsed = parse_request(b"\xef\xbb\xbf" + _json({"inputs": [1]}), JSON)
    assert parsed.data.tolist() == [1]


# --- JSON envelope -----------------------------------------------------------------------


def test_bad_json_is_400():
    err = _error(b'{"inputs": [1, 2')
    assert err.status == 400 and err.error_code == "BAD_REQUEST"
    assert "valid JSON" in err.message


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None])
def test_json_that_is_not_an_object_is_400(payload):
    err = _error(_json(payload))
    assert err.status == 400 and "exactly one of" in err.message


def test_unknown_key_is_400():
    err = _error(_json({"dataframe_splitt": {"data": [[1]]}}))
    assert err.status == 400 and "dataframe_splitt" in err.message


def test_unknown_key_next_to_a_valid_one_is_400():
    err = _error(_json({"inputs": [1], "extra": 1}))
    assert err.status == 400 and "extra" in err.message


def test_two_format_keys_are_400():
    err = _error(_json({"inputs": [1], "instances": [1]}))
    assert err.status == 400 and "exactly one" in err.message


def test_params_alone_is_400():
    err = _error(_json({"params": {"a": 1}}))
    assert err.status == 400


def test_params_are_passed_through():
    parsed = parse_request(_json({"inputs": [1.5], "params": {"k": 3, "s": "x"}}), JSON)
    assert parsed.params == {"k": 3, "s": "x"}


def test_null_params_mean_none():
    assert parse_request(_json({"inputs": [1], "params": None}), JSON).params is None


@pytest.mark.parametrize("params", [[1], "k=3", 3])
def test_params_not_an_object_is_400(params):
    err = _error(_json({"inputs": [1], "params": params}))
    assert err.status == 400 and err.error_code == "INVALID_PARAMETER_VALUE"


# --- dataframe_split / dataframe_records ---------------------------------------------------


def test_dataframe_split():
    payload = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4.5]]}}
    parsed = parse_request(_json(payload), JSON)
    expected = pd.DataFrame({"a": [1, 3], "b": [2.5, 4.5]})
    pd.testing.assert_frame_equal(parsed.data, expected)
    assert parsed.n_rows == 2 and parsed.params is None and parsed.input_format == "dataframe_split"


def test_dataframe_split_with_index():
    payload = {"dataframe_split": {"columns": ["a"], "index": [10, 11], "data": [[1], [2]]}}
    assert parse_request(_json(payload), JSON).data.index.tolist() == [10, 11]


def test_dataframe_split_without_columns():
    parsed = parse_request(_json({"dataframe_split": {"data": [[1, 2]]}}), JSON)
    assert parsed.data.shape == (1, 2)


@pytest.mark.parametrize(
    "value",
    [
        [[1, 2]],  # a list, not the split dict
        {"columns": ["a"]},  # no data
        {"columns": ["a"], "data": [[1]], "extra": 1},
        {"columns": ["a", "b"], "data": [[1, 2, 3]]},  # shape mismatch
    ],
)
def test_dataframe_split_errors_are_400(value):
    err = _error(_json({"dataframe_split": value}))
    assert err.status == 400 and err.error_code == "BAD_REQUEST"


def test_dataframe_records():
    payload = {"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}
    parsed = parse_request(_json(payload), JSON)
    assert parsed.data["a"].tolist() == [1, 2]
    assert parsed.data["b"].tolist() == ["x", "y"]
    assert parsed.n_rows == 2


@pytest.mark.parametrize("value", [{"a": [1]}, [[1, 2]], [{"a": 1}, 3], "x"])
def test_dataframe_records_errors_are_400(value):
    err = _error(_json({"dataframe_records": value}))
    assert err.status == 400


# --- instances / inputs ----------------------------------------------------------------


def test_instances_list_of_rows_is_a_tensor():
    parsed = parse_request(_json({"instances": [[1, 2], [3, 4], [5, 6]]}), JSON)
    assert isinstance(parsed.data, np.ndarray) and parsed.data.shape == (3, 2)
    assert parsed.n_rows == 3


def test_instances_list_of_objects_becomes_named_columns():
    parsed = parse_request(
        _json({"instances": [{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 4]}]}), JSON
    )
    assert set(parsed.data) == {"a", "b"}
    assert parsed.data["a"].tolist() == [1, 2]
    assert parsed.data["b"].shape == (2, 2)
    assert parsed.n_rows == 2


def test_instances_with_ragged_columns_is_400():
    err = _error(_json({"instances": [{"a": 1, "b": 2}, {"a": 3}]}))
    assert err.status == 400 and "length" in err.message


def test_inputs_dict_of_lists():
    parsed = parse_request(_json({"inputs": {"x": [1.0, 2.0], "y": [[1], [2]]}}), JSON)
    assert parsed.data["x"].dtype == np.float64
    assert parsed.data["y"].shape == (2, 1)
    assert parsed.n_rows == 2


def test_inputs_list_and_scalar():
    assert parse_request(_json({"inputs": [[1, 2], [3, 4]]}), JSON).data.shape == (2, 2)
    scalar = parse_request(_json({"inputs": 5}), JSON)
    assert scalar.data.shape == () and scalar.n_rows == 1


# --- schema hints (what app.input_hints derives from a signature) -----------------------------

COLUMN_HINTS = InputHints(
    is_tensor=False,
    named=True,
    types=(("f", "float"), ("l", "long"), ("s", "string"), ("b", "binary"), ("d", "datetime")),
)


def test_column_hints_cast_dataframe_split():
    payload = {
        "dataframe_split": {
            "columns": ["f", "l", "s", "b", "d"],
            "data": [[1, 2, "x", base64.b64encode(b"hi").decode(), "2024-01-02"]],
        }
    }
    frame = parse_request(_json(payload), JSON, hints=COLUMN_HINTS).data
    assert frame["f"].dtype == np.float32
    assert frame["l"].dtype == np.int64
    assert frame["b"].tolist() == [b"hi"]
    assert str(frame["d"].dtype) == "datetime64[ns]"


def test_column_hint_that_cannot_convert_is_400():
    payload = {"dataframe_records": [{"f": "not a number", "l": 1}]}
    err = _error(_json(payload), hints=COLUMN_HINTS)
    assert err.status == 400 and "f" in err.message


def test_column_hints_cast_csv():
    frame = parse_request(b"s,f\n007,1\n", "text/csv", hints=COLUMN_HINTS).data
    assert frame["s"].tolist() == ["007"]  # not parsed as the integer 7
    assert frame["f"].dtype == np.float32


def test_single_named_column_takes_a_bare_list():
    hints = InputHints(False, True, (("x", "double"),))
    parsed = parse_request(_json({"inputs": [1, 2]}), JSON, hints=hints)
    assert parsed.data["x"].dtype == np.float64


def test_tensor_hints_cast_inputs():
    hints = InputHints(True, False, ((None, "float32"),))
    parsed = parse_request(_json({"inputs": [[1, 2], [3, 4]]}), JSON, hints=hints)
    assert parsed.data.dtype == np.float32


def test_unnamed_tensor_signature_refuses_a_dict():
    hints = InputHints(True, False, ((None, "float32"),))
    err = _error(_json({"inputs": {"a": [1]}}), hints=hints)
    assert err.status == 400 and "un-named" in err.message


def test_tensor_hint_that_cannot_convert_is_400():
    hints = InputHints(True, False, ((None, "float32"),))
    err = _error(_json({"inputs": [["a", "b"]]}), hints=hints)
    assert err.status == 400


# --- CSV -----------------------------------------------------------------------------------


def test_csv():
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5], "c": ["x", "y"]})
    parsed = parse_request(frame.to_csv(index=False).encode(), "text/csv; charset=utf-8")
    pd.testing.assert_frame_equal(parsed.data, frame, check_dtype=False)
    assert parsed.params is None and parsed.n_rows == 2 and parsed.input_format == "csv"


def test_malformed_csv_is_400():
    err = _error(b'a,b\n1,"2\n', "text/csv")
    assert err.status == 400 and "CSV" in err.message


# --- responses -----------------------------------------------------------------------------


def _predictions(raw: object) -> object:
    return json.loads(protocol.predictions_body(raw))["predictions"]


def test_numpy_predictions():
    assert _predictions(np.array([1, 2, 3])) == [1, 2, 3]
    assert _predictions(np.array([[0.5, 0.5]], dtype=np.float32)) == [[0.5, 0.5]]


def test_dataframe_and_series_predictions_use_records():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert _predictions(frame) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert _predictions(pd.Series([1.5, 2.5], name="p")) == [{"p": 1.5}, {"p": 2.5}]


def test_list_scalar_and_dict_predictions():
    assert _predictions([1, "a"]) == [1, "a"]
    assert _predictions(np.float32(0.5)) == 0.5
    assert _predictions({"a": np.array([1, 2]), "b": np.int64(3)}) == {"a": [1, 2], "b": 3}
    assert _predictions("text") == "text"


def test_nan_and_inf_render_as_null():
    body = protocol.predictions_body(np.array([1.0, math.nan, math.inf]))
    assert json.loads(body) == {"predictions": [1.0, None, None]}
    assert b"NaN" not in body
    frame = pd.DataFrame({"a": [1.0, math.nan]})
    assert _predictions(frame) == [{"a": 1.0}, {"a": None}]
    assert _predictions({"x": [math.nan], "y": np.float32("nan")}) == {"x": [None], "y": None}


def test_dates_bytes_and_missing_values_are_serialized():
    raw = {
        "t": pd.Timestamp("2024-01-02T03:04:05"),
        "n": pd.NaT,
        "b": b"hi",
        "na": pd.NA,
        "d64": np.datetime64("2024-01-02"),
    }
    out = _predictions(raw)
    assert out["t"] == "2024-01-02T03:04:05"
    assert out["n"] is None and out["na"] is None
    assert base64.decodebytes(out["b"].encode()) == b"hi"
    assert out["d64"] == "2024-01-02"


def test_non_string_dict_keys_are_serialized():
    assert _predictions({np.int64(1): "a"}) == {"1": "a"}


def test_unserializable_prediction_raises_type_error():
    with pytest.raises(TypeError):
        protocol.predictions_body(object())


# --- the one-step frame for all-float signatures ------------------------------------------

IRIS = ("sl", "sw", "pl", "pw")


def _float_hints(token: str = "double") -> InputHints:
    return InputHints(False, True, tuple((name, token) for name in IRIS))


def _general_path(value: dict, hints: InputHints) -> pd.DataFrame:
    frame = pd.DataFrame(data=value["data"], columns=value.get("columns"), index=value.get("index"))
    return protocol.cast_frame(frame, hints)


@pytest.mark.parametrize("token", ["double", "float"])
@pytest.mark.parametrize(
    "value",
    [
        {"columns": list(IRIS), "data": [[5.1, 3.5, 1.4, 0.2]]},
        {"columns": list(IRIS), "data": [[5, 3, 1, 0], [6.2, 2.9, 4.3, 1.3]]},
        {"columns": ["pw", "sl"], "data": [[0.2, 5.1]]},  # a subset, in another order
        {"columns": list(IRIS), "data": [[None, True, "1.5", 1e30]], "index": [7]},
        {"columns": list(IRIS), "data": [[float("nan"), -0.0, 2**53 + 1, 0.1]]},
    ],
)
def test_all_float_signature_takes_one_numpy_step_with_the_general_paths_result(token, value):
    hints = _float_hints(token)
    fast = protocol.uniform_float_frame(value, hints)
    assert fast is not None
    pd.testing.assert_frame_equal(fast, _general_path(value, hints))
    parsed = parse_request(_json({"dataframe_split": value}), JSON, hints=hints).data
    pd.testing.assert_frame_equal(parsed, _general_path(value, hints))


@pytest.mark.parametrize(
    ("hints", "value"),
    [
        (None, {"columns": list(IRIS), "data": [[1, 2, 3, 4]]}),
        (
            InputHints(False, True, (("a", "double"), ("b", "long"))),
            {"columns": ["a", "b"], "data": [[1, 2]]},
        ),
        (InputHints(True, True, (("a", "float64"),)), {"columns": ["a"], "data": [[1]]}),
        (InputHints(False, False, ((None, "double"),)), {"columns": ["a"], "data": [[1]]}),
        (_float_hints(), {"columns": ["sl", "other"], "data": [[1, 2]]}),
        (_float_hints(), {"columns": ["sl", "sl"], "data": [[1, 2]]}),
        (_float_hints(), {"data": [[1, 2, 3, 4]]}),
        (_float_hints(), {"columns": list(IRIS), "data": [[1, 2, 3]]}),
        (_float_hints(), {"columns": list(IRIS), "data": [[1, 2, 3, 4], [1, 2]]}),
        (_float_hints(), {"columns": list(IRIS), "data": [[1, 2, 3, "x"]]}),
        (_float_hints(), {"columns": list(IRIS), "data": [[1, 2, 3, [4]]]}),
        (_float_hints(), {"columns": list(IRIS), "data": [[1, 2, 3, 4]], "index": [1, 2]}),
        (_float_hints(), {"columns": list(IRIS), "data": []}),
        (_float_hints(), {"columns": ["sl"], "data": [1, 2]}),
    ],
)
def test_anything_else_takes_the_general_path(hints, value):
    assert protocol.uniform_float_frame(value, hints) is None


def test_a_value_numpy_cannot_convert_gets_the_general_paths_error():
    payload = {"dataframe_split": {"columns": list(IRIS), "data": [[1, 2, 3, "x"]]}}
    err = _error(_json(payload), hints=_float_hints())
    assert err.status == 400
    assert "Failed to convert column pw to type 'double'" in err.message
