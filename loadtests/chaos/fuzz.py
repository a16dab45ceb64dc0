"""Malformed scoring requests, generated with Hypothesis, sent to a live replica.

Every shape the protocol might trip on: random JSON (nested, wrong types, NaN, huge numbers),
the input-format keys with wrong contents, CSV and binary bodies, text in other encodings,
and content types the server does not take. The replica must answer each with a 4xx (or 200
when a body happens to be valid), never a 5xx, never a dropped connection.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
KEYS = [
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
    "params",
    "columns",
    "data",
    "index",
    "messages",
    "",
]
# Mostly the two the server takes, so most bodies reach the parser rather than the 415.
CONTENT_TYPES = [
    *["application/json"] * 20,
    *["text/csv"] * 5,
    "application/json; charset=utf-16",
    "application/json; format=pandas-split",
    "text/plain",
    "",
    "*/*",
    "application/octet-stream",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "text/csv; charset=latin-1",
]
ENCODINGS = ["utf-8", "utf-16", "utf-32", "latin-1"]
T = TypeVar("T")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(COLUMNS),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS + COLUMNS), st.text(max_size=10)), inner, max_size=6
        ),
    ),
    max_leaves=40,
)
rows = st.lists(st.lists(scalars, max_size=6), max_size=40)
split = st.fixed_dictionaries(
    {},
    optional={
        "columns": st.one_of(st.just(COLUMNS), st.lists(scalars, max_size=6)),
        "data": st.one_of(rows, json_values),
        "index": json_values,
    },
)
payloads = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(KEYS), json_values, min_size=1, max_size=3),
    st.builds(
        lambda s, p: {"dataframe_split": s, **p},
        split,
        st.fixed_dictionaries({}, optional={"params": json_values}),
    ),
    st.builds(
        lambda r: {"dataframe_records": r},
        st.lists(st.dictionaries(st.sampled_from(COLUMNS), scalars), max_size=30),
    ),
    st.builds(lambda r: {"instances": r}, st.one_of(rows, json_values)),
    st.builds(lambda n: {"inputs": [[1.0] * 4] * n}, st.integers(0, 3000)),
)


def _json_body(value: object, encoding: str, allow_nan: bool) -> bytes:
    try:
        text = json.dumps(value, allow_nan=allow_nan)
    except ValueError:
        text = json.dumps(value, allow_nan=True)
    return text.encode(encoding, errors="replace")


def _csv_body(table: list[list[object]]) -> bytes:
    return "\n".join(",".join(map(str, r)) for r in table).encode()


bodies = st.one_of(
    st.builds(_json_body, payloads, st.sampled_from(ENCODINGS), st.booleans()),
    st.builds(_csv_body, st.lists(st.lists(scalars, max_size=8), max_size=20)),
    st.binary(max_size=3000),
    st.builds(lambda t: t.encode("utf-8", errors="surrogatepass"), st.text(max_size=500)),
    st.builds(
        lambda b: b[: len(b) // 2], st.builds(_json_body, payloads, st.just("utf-8"), st.just(True))
    ),  # truncated JSON
)


@dataclass(frozen=True)
class FuzzRequest:
    content_type: str
    body: bytes


fuzz_requests = st.builds(FuzzRequest, st.sampled_from(CONTENT_TYPES), bodies)


@dataclass
class FuzzResult:
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    examples: dict[int, str] = field(default_factory=dict)  # first body per status >= 500

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + self.transport_errors


def send(session: requests.Session, url: str, req: FuzzRequest) -> int | None:
    """The status, or None when the connection failed or timed out."""
    headers = {"Content-Type": req.content_type} if req.content_type else {}
    try:
        return session.post(url, data=req.body, headers=headers, timeout=30).status_code
    except requests.RequestException:
        return None


def generate(count: int) -> list[FuzzRequest]:
    """`count` requests drawn by Hypothesis (a 5xx is reported with its body, for a
    regression test)."""
    return draw(fuzz_requests, count)


def draw(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """`count` examples of `strategy` (generation only: no shrinking, no example database,
    since this is a measurement)."""
    drawn: list[T] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: T) -> None:
        drawn.append(example)

    collect()
    return drawn


def run(
    url: str, count: int, sender: Callable[..., int | None] = send, workers: int = 6
) -> FuzzResult:
    """Send `count` generated requests to `url`, `workers` at a time; every answer counted."""
    result = FuzzResult()
    local = threading.local()
    lock = threading.Lock()

    def one(req: FuzzRequest) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        status = sender(local.session, url, req)
        with lock:
            key = 0 if status is None else status
            if status is None:
                result.transport_errors += 1
            else:
                result.statuses[status] += 1
            if key < 200 or key >= 500:
                result.examples.setdefault(key, f"{req.content_type!r} {req.body[:300]!r}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, generate(count)))
    return result
