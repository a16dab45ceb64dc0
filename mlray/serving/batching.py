"""Merge concurrent requests into one ``predict`` and give every caller its own rows back.

Pure functions (pandas/numpy only) so the row bookkeeping is unit-testable. Only DataFrame
inputs without ``params`` are merged, and only with requests of the same columns and dtypes:
concatenating frames with different columns would fill a missing column with NaN and hide the
"missing column" error that request must get.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlray.serving.protocol import ParsedRequest

DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.01
USER_CONFIG_KEYS = ("max_batch_size", "batch_wait_timeout_s")


@dataclass(frozen=True)
class BatchConfig:
    """Batching settings from the deployment's ``user_config``; no max_batch_size = off."""

    max_batch_size: int | None = None
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S


def parse_user_config(user_config: Mapping[str, Any] | None) -> BatchConfig:
    """Validate ``user_config``; raise ValueError naming every problem.

    Unknown keys are refused rather than ignored: a typo would otherwise silently turn
    batching off on a live replica.
    """
    config = dict(user_config or {})
    problems = [
        f"got unknown key {key!r} in user_config; expected one of {list(USER_CONFIG_KEYS)}"
        for key in config
        if key not in USER_CONFIG_KEYS
    ]
    size = config.get("max_batch_size")
    if isinstance(size, float) and size.is_integer():
        size = int(size)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        problems.append(
            f"got {config.get('max_batch_size')!r} for user_config.max_batch_size; "
            "expected an integer >= 1 or null"
        )
        size = None
    timeout = config.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_TIMEOUT_S)
    if timeout is None:
        timeout = DEFAULT_BATCH_WAIT_TIMEOUT_S
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        problems.append(
            f"got {timeout!r} for user_config.batch_wait_timeout_s; expected a number >= 0"
        )
        timeout = DEFAULT_BATCH_WAIT_TIMEOUT_S
    if problems:
        raise ValueError("; ".join(problems))
    return BatchConfig(size, float(timeout))


def joins_batch(config: BatchConfig, mergeable: bool) -> bool:
    """Whether a request goes through the batch queue rather than straight to ``predict``.

    A request alone costs no wait there: the queue closes a batch as soon as nothing else is
    on its way (``mlray.serving.batch_queue``), so there is no bypass for lone requests.
    """
    return config.max_batch_size is not None and mergeable


def merge_key(parsed: ParsedRequest) -> Hashable | None:
    """Requests with equal keys can share one ``predict``; ``None`` means predict it alone."""
    data = parsed.data
    if parsed.params or not isinstance(data, pd.DataFrame):
        return None
    if data.columns.has_duplicates or len(data) == 0:
        return None
    return tuple((str(c), str(t)) for c, t in zip(data.columns, data.dtypes, strict=True))


def group_for_merge(items: Sequence[ParsedRequest]) -> list[list[int]]:
    """Positions of ``items`` grouped by ``merge_key``, in first-seen order; singletons alone."""
    groups: dict[Hashable, list[int]] = {}
    order: list[list[int]] = []
    for i, item in enumerate(items):
        key = merge_key(item)
        if key is None:
            order.append([i])
            continue
        if key not in groups:
            groups[key] = []
            order.append(groups[key])
        groups[key].append(i)
    return order


def merge_frames(frames: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, list[int]]:
    """Concatenate frames row-wise (fresh 0..n-1 index) and return each frame's row count."""
    lengths = [len(f) for f in frames]
    if len(frames) == 1:
        return frames[0], lengths
    first = frames[0]
    dtypes = set(first.dtypes)
    if len(dtypes) == 1 and next(iter(dtypes)).kind in "fiu":
        # One numeric dtype (every frame of a merge group has the same columns and dtypes):
        # one numpy concatenation, a third of pd.concat's time for small frames.
        stacked = np.concatenate([f.to_numpy() for f in frames])
        return pd.DataFrame(stacked, columns=first.columns), lengths
    return pd.concat(list(frames), ignore_index=True), lengths


def split_predictions(predictions: Any, lengths: Sequence[int]) -> list[Any]:
    """Cut a merged prediction back into per-request pieces, in order.

    Raises ValueError when the output is not one row per input row (e.g. a model that returns
    an aggregate); the caller then predicts those requests one by one instead.
    """
    total = sum(lengths)
    bounds = np.cumsum([0, *lengths]).tolist()
    spans = list(itertools.pairwise(bounds))
    if isinstance(predictions, (pd.DataFrame, pd.Series)):
        _check_len(len(predictions), total)
        return [predictions.iloc[a:b].reset_index(drop=True) for a, b in spans]
    if isinstance(predictions, np.ndarray):
        if predictions.ndim == 0:
            raise ValueError("got a scalar prediction for a merged batch; expected one per row")
        _check_len(predictions.shape[0], total)
        return [predictions[a:b] for a, b in spans]
    if isinstance(predictions, list):
        _check_len(len(predictions), total)
        return [predictions[a:b] for a, b in spans]
    if isinstance(predictions, dict) and predictions:
        pieces: list[dict[str, Any]] = [{} for _ in lengths]
        for key, value in predictions.items():
            for piece, part in zip(pieces, split_predictions(value, lengths), strict=True):
                piece[key] = part
        return pieces
    raise ValueError(
        f"got {type(predictions).__name__} from predict for a merged batch; expected an array, "
        "list, Series, DataFrame or dict of those with one entry per input row"
    )


def _check_len(actual: int, expected: int) -> None:
    if actual != expected:
        raise ValueError(
            f"got {actual} predictions for a merged batch of {expected} rows; expected one per row"
        )
