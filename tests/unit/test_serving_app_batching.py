"""The replica's batching wiring (mlray.serving.app) with a fake model: no Ray, no MLflow server.

The instance is made without ``__init__`` (which downloads a model) and given just what the
scoring path uses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections import Counter
from typing import Any

import mlflow.exceptions  # noqa: F401  _predict imports it on first use: not a batch wait
import pandas as pd
from starlette.requests import Request

from mlray.serving import app, batch_queue, batching, timing
from mlray.serving.protocol import ParsedRequest, ScoringError


class FakeModel:
    """Doubles column ``a``; refuses negative values; records each predict and any overlap."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def predict(self, data: pd.DataFrame) -> Any:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            time.sleep(0.003)
            self.calls.append(len(data))
            if (data["a"] < 0).any():
                raise ValueError(f"got {data['a'].min()} for a; expected >= 0")
            return data["a"].to_numpy() * 2
        finally:
            with self._lock:
                self.running -= 1


class _Metric:
    def observe(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Replica(app.MlflowModel.func_or_class):
    def __del__(self) -> None:  # Serve's ingress wrapper has an async one, for a live replica
        self._executor.shutdown(wait=False)


def _replica(user_config: dict[str, Any]) -> Any:
    replica = _Replica.__new__(_Replica)
    replica._model = FakeModel()
    replica._accepts_params = False
    replica._hints = None
    replica._max_bytes = 1 << 20
    replica._inline_bytes = app.DEFAULT_INLINE_BYTES
    replica._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    replica._timings = timing.StageTimes()
    replica._stage_metric = _Metric()
    replica._batch = batching.BatchConfig()
    replica._batches = batch_queue.BatchQueue(replica._predict_merged)
    replica._batch_histogram = Counter()
    replica._batched_rows = 0
    replica._batch_metric = _Metric()
    replica.reconfigure(user_config)
    return replica


def _parsed(*values: int) -> ParsedRequest:
    return ParsedRequest(pd.DataFrame({"a": list(values)}), None, len(values), "dataframe_split")


def _request(body: bytes, delay_s: float = 0.0) -> Request:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(delay_s)
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    return Request(scope, receive)


def _body(*values: int) -> bytes:
    split = {"columns": ["a"], "data": [[v] for v in values]}
    return json.dumps({"dataframe_split": split}).encode()


def test_a_lone_request_is_predicted_at_once_despite_a_long_batch_wait():
    replica = _replica({"max_batch_size": 8, "batch_wait_timeout_s": 3.0})

    async def main():
        start = time.monotonic()
        outcome, _ = await replica._predict_one(_parsed(1, 2))
        return outcome, time.monotonic() - start

    outcome, elapsed = asyncio.run(main())
    assert outcome.tolist() == [2, 4]
    assert elapsed < 1.5, elapsed
    assert replica._batches.at_once == 1 and dict(replica._batch_histogram) == {1: 1}


def test_a_bad_request_in_a_batch_fails_alone_and_the_model_is_never_called_concurrently():
    replica = _replica({"max_batch_size": 4, "batch_wait_timeout_s": 3.0})

    async def main():
        values = [10, -5, 20, 30, 40, 50]
        return await asyncio.gather(*(replica._predict_one(_parsed(v, v + 1)) for v in values))

    outcomes = [outcome for outcome, _ in asyncio.run(main())]
    assert isinstance(outcomes[1], ScoringError) and outcomes[1].status == 400
    good = [o.tolist() for i, o in enumerate(outcomes) if i != 1]
    assert good == [[20, 22], [40, 42], [60, 62], [80, 82], [100, 102]]
    assert dict(replica._batch_histogram) == {4: 1, 2: 1}
    assert replica._batched_rows == 12
    assert replica._model.max_running == 1
    assert dict(replica._batches.closed_by) == {
        "full": 1,
        "nothing_on_the_way": 1,
        "linger": 0,
        "timeout": 0,
    }


def test_scored_requests_still_being_read_join_the_batch_then_it_closes_without_the_timeout():
    replica = _replica({"max_batch_size": 16, "batch_wait_timeout_s": 3.0})

    async def main():
        start = time.monotonic()
        delays = [0.0, 0.02, 0.04]
        requests = [_request(_body(i), delay) for i, delay in enumerate(delays)]
        responses = await asyncio.gather(*(replica._score(r) for r in requests))
        return responses, time.monotonic() - start

    responses, elapsed = asyncio.run(main())
    assert [json.loads(r.body) for r in responses] == [{"predictions": [v]} for v in (0, 2, 4)]
    assert dict(replica._batch_histogram) == {3: 1}  # waited for the two still arriving
    assert elapsed < 1.5, elapsed  # and not for the 3 s timeout
    assert replica._batches.incoming_count == 0


def test_a_malformed_request_leaves_no_batch_waiting_for_it():
    replica = _replica({"max_batch_size": 16, "batch_wait_timeout_s": 3.0})

    async def main():
        start = time.monotonic()
        bad = replica._score(_request(b"{not json", 0.02))
        good = replica._score(_request(_body(7)))
        responses = await asyncio.gather(good, bad)
        return responses, time.monotonic() - start

    (good, bad), elapsed = asyncio.run(main())
    assert good.status_code == 200 and bad.status_code == 400
    assert elapsed < 1.5, elapsed
    assert replica._batches.incoming_count == 0
