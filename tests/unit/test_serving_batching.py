"""Merging concurrent requests and splitting predictions back (mlray.serving.batching)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlray.serving import batching
from mlray.serving.protocol import ParsedRequest


def _frame(start: int, rows: int) -> pd.DataFrame:
    values = np.arange(start, start + rows)
    return pd.DataFrame({"a": values, "b": values * 10.0})


def _request(frame: object, params: dict | None = None) -> ParsedRequest:
    n = len(frame) if hasattr(frame, "__len__") else 1
    return ParsedRequest(frame, params, n, "dataframe_split")


def test_merge_then_split_gives_each_request_its_own_rows_in_order():
    frames = [_frame(0, 3), _frame(100, 1), _frame(200, 5), _frame(300, 2)]
    merged, lengths = batching.merge_frames(frames)
    assert lengths == [3, 1, 5, 2]
    assert merged.index.tolist() == list(range(11))
    predictions = merged["a"].to_numpy() * 2  # a row-wise "model"
    pieces = batching.split_predictions(predictions, lengths)
    for frame, piece in zip(frames, pieces, strict=True):
        assert piece.tolist() == (frame["a"] * 2).tolist()


def test_split_dataframe_series_list_and_dict_outputs():
    lengths = [2, 1, 3]
    frame = pd.DataFrame({"p": range(6), "q": list("abcdef")})
    pieces = batching.split_predictions(frame, lengths)
    assert [p["p"].tolist() for p in pieces] == [[0, 1], [2], [3, 4, 5]]
    assert all(p.index.tolist() == list(range(len(p))) for p in pieces)
    series = batching.split_predictions(pd.Series(range(6)), lengths)
    assert [s.tolist() for s in series] == [[0, 1], [2], [3, 4, 5]]
    lists = batching.split_predictions(list("abcdef"), lengths)
    assert lists == [["a", "b"], ["c"], ["d", "e", "f"]]
    dicts = batching.split_predictions({"x": np.arange(6), "y": list(range(6))}, lengths)
    assert [d["x"].tolist() for d in dicts] == [[0, 1], [2], [3, 4, 5]]
    assert [d["y"] for d in dicts] == [[0, 1], [2], [3, 4, 5]]


def test_split_2d_array_keeps_rows():
    pieces = batching.split_predictions(np.arange(12).reshape(6, 2), [4, 2])
    assert pieces[0].shape == (4, 2) and pieces[1].tolist() == [[8, 9], [10, 11]]


@pytest.mark.parametrize(
    "predictions", [np.arange(5), np.float64(1.0), "text", {}, [1, 2], pd.Series(range(7))]
)
def test_split_refuses_outputs_that_are_not_one_per_row(predictions):
    with pytest.raises(ValueError):
        batching.split_predictions(predictions, [3, 3])


def test_merge_key_only_for_dataframes_without_params():
    frame = _frame(0, 2)
    assert batching.merge_key(_request(frame)) is not None
    assert batching.merge_key(_request(frame, {})) is not None
    assert batching.merge_key(_request(frame, {"k": 1})) is None
    assert batching.merge_key(_request(np.arange(3))) is None
    assert batching.merge_key(_request(frame.iloc[:0])) is None
    duplicate = pd.DataFrame([[1, 2]], columns=["a", "a"])
    assert batching.merge_key(_request(duplicate)) is None


def test_requests_with_different_columns_or_dtypes_are_not_merged():
    same_1 = _request(_frame(0, 2))
    same_2 = _request(_frame(5, 3))
    other_columns = _request(_frame(0, 1)[["b", "a"]])
    other_dtype = _request(_frame(0, 1).astype({"a": "float64"}))
    with_params = _request(_frame(0, 1), {"k": 1})
    groups = batching.group_for_merge([same_1, other_columns, same_2, with_params, other_dtype])
    assert groups == [[0, 2], [1], [3], [4]]


def test_merging_a_single_frame_returns_it_unchanged():
    frame = _frame(0, 2)
    merged, lengths = batching.merge_frames([frame])
    assert merged is frame and lengths == [2]


def test_parse_user_config():
    assert batching.parse_user_config(None) == batching.BatchConfig(None, 0.01)
    assert batching.parse_user_config({"max_batch_size": 8}) == batching.BatchConfig(8, 0.01)
    config = batching.parse_user_config({"max_batch_size": 16.0, "batch_wait_timeout_s": 1})
    assert config == batching.BatchConfig(16, 1.0)
    assert batching.parse_user_config({"max_batch_size": None}).max_batch_size is None


@pytest.mark.parametrize(
    ("user_config", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": "8"}, "max_batch_size"),
        ({"max_batch_size": True}, "max_batch_size"),
        ({"batch_wait_timeout_s": -1}, "batch_wait_timeout_s"),
        ({"batch_wait_timeout_s": "slow"}, "batch_wait_timeout_s"),
        ({"max_batch_sise": 8}, "max_batch_sise"),
    ],
)
def test_parse_user_config_errors(user_config, message):
    with pytest.raises(ValueError, match=message):
        batching.parse_user_config(user_config)


def test_parse_user_config_lists_every_problem():
    with pytest.raises(ValueError) as info:
        batching.parse_user_config({"max_batch_size": -1, "batch_wait_timeout_s": -1, "x": 1})
    assert str(info.value).count("got ") == 3


def test_only_mergeable_requests_join_the_batch_queue_and_only_with_batching_on():
    on = batching.BatchConfig(max_batch_size=16, batch_wait_timeout_s=0.02)
    off = batching.BatchConfig()
    assert batching.joins_batch(on, mergeable=True) is True
    assert batching.joins_batch(on, mergeable=False) is False
    assert batching.joins_batch(off, mergeable=True) is False


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
def test_merging_frames_of_one_numeric_dtype_equals_pandas_concat(dtype):
    frames = [_frame(i * 10, i + 1).astype(dtype) for i in range(4)]
    merged, lengths = batching.merge_frames(frames)
    assert lengths == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(merged, pd.concat(frames, ignore_index=True))
