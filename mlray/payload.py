"""What the plugin's ``predict`` sends: the scoring-server JSON, whatever shape it arrived in.

``mlflow deployments predict --input-path FILE`` reads FILE with ``pandas.read_json`` before
the plugin sees it, so a scoring-server payload such as ``{"dataframe_split": {...}}``
arrives as a DataFrame with one column per top-level key (``dataframe_split``, ``params``)
whose rows are the keys one level down. :func:`scoring_payload` recognises those frames and
rebuilds the payload the file held; any other frame is data and is sent as
``dataframe_split``. Pure (no pandas import), so the rules are unit-tested on the exact
objects ``read_json`` makes.
"""

from __future__ import annotations

import math
import sys
from typing import Any

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
SPLIT_KEYS = {"index", "columns", "data"}


def _native(v: Any) -> Any:
    """numpy scalars (from numeric columns) as Python values, for ``json.dumps``."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, dict)) else v


def _missing(v: Any) -> bool:
    """A cell pandas filled because its key was absent from this column's object."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _cells(frame: Any, column: str) -> dict[Any, Any]:
    """``{row label: value}`` of one column, without the cells padded for other columns."""
    return {k: _native(v) for k, v in frame[column].items() if not _missing(_native(v))}


def _row_number(label: Any) -> int | None:
    if isinstance(label, bool):
        return None
    if isinstance(label, int):
        return label
    if isinstance(label, str) and label.isdigit():
        return int(label)
    return None


def _as_rows(cells: dict[Any, Any]) -> list[Any] | None:
    """Cells labelled 0..n-1 (a JSON list, or an object keyed by row number) as a list.

    Only rows that are objects or lists: a column of scalars is a DataFrame's own column.
    """
    numbers = {_row_number(k): v for k, v in cells.items()}
    if None in numbers or sorted(numbers) != list(range(len(numbers))):  # type: ignore[type-var]
        return None
    if not all(isinstance(v, (dict, list)) for v in numbers.values()):
        return None
    return [numbers[i] for i in range(len(numbers))]


def _params(cells: dict[Any, Any], upcast: bool) -> dict[str, Any]:
    # Beside another column, a params column of numbers is padded with NaN and so made
    # float64: 1 comes back 1.0. Integral values go back to ints (MLflow turns an int into a
    # double param, but refuses 1.0 for a long).
    return {
        str(k): int(v) if upcast and isinstance(v, float) and v.is_integer() else v
        for k, v in cells.items()
    }


def reshaped_payload(frame: Any) -> dict[str, Any] | None:
    """The scoring payload a ``pandas.read_json``-made frame was read from, or None for data."""
    columns = [str(c) for c in frame.columns]
    keys = [c for c in columns if c in INPUT_KEYS]
    if len(keys) != 1 or not set(columns) <= {keys[0], "params"}:
        return None
    key = keys[0]
    cells = _cells(frame, key)
    if not cells:
        return None
    body: Any
    if key == "dataframe_split":
        if not {str(k) for k in cells} <= SPLIT_KEYS or not isinstance(cells.get("data"), list):
            return None
        body = {str(k): v for k, v in cells.items()}
    elif key != "inputs" or all(_row_number(k) is not None for k in cells):
        body = _as_rows(cells)  # records, instances, or inputs as a list of rows
        if body is None:
            return None
    else:  # inputs: named tensors
        body = {str(k): v for k, v in cells.items()}
    payload = {key: body}
    if "params" in columns:
        upcast = getattr(frame["params"].dtype, "kind", "O") == "f"
        payload["params"] = _params(_cells(frame, "params"), upcast)
    return payload


def scoring_payload(inputs: Any) -> Any:
    """The JSON body for ``/invocations`` from what MLflow hands ``predict``.

    A DataFrame is either a scoring file reshaped by MLflow's CLI (rebuilt as the file was)
    or data (sent as ``dataframe_split``); a dict with one of MLflow's input keys is a payload
    already; anything else is a tensor input.
    """
    pd = sys.modules.get("pandas")  # no DataFrame can exist unless pandas was imported
    if pd is not None and isinstance(inputs, pd.DataFrame):
        reshaped = reshaped_payload(inputs)
        if reshaped is not None:
            return reshaped
        split = inputs.to_dict(orient="split")
        split.pop("index", None)
        return {"dataframe_split": split}
    if isinstance(inputs, dict) and set(inputs) & set(INPUT_KEYS):
        return inputs
    if hasattr(inputs, "tolist"):  # numpy arrays
        inputs = inputs.tolist()
    return {"inputs": inputs}
