"""Locust users for MLflow scoring endpoints, and a load shape read from data.

Runs only inside a headless Locust subprocess started by loadtests.runner (gevent patches the
whole process, so it never shares one with pytest or the orchestrator). The run is described
by environment variables, so this file needs nothing but Locust and the standard library:

  MLRAY_LOAD_PATH    the scoring route on --host, e.g. /iris-xgb17/invocations
  MLRAY_LOAD_STAGES  JSON list of {"duration": s, "users": n, "spawn_rate": r}
  MLRAY_LOAD_ROWS    rows per request (default 1)
  MLRAY_LOAD_RETRIES          retries of a request that failed with a connection error or
                              a 5xx (default 0). Scoring is a pure function of its input, so a
                              retry is safe. Each attempt that is retried is counted under the
                              name RETRIED; the attempt the client ends with, under
                              `invocations`: that row is what the client saw.
  MLRAY_LOAD_FAILURE_PAUSE_S  seconds a user waits after a failed attempt (default 0), so a
                              refused connection does not turn the closed loop into a spin

By hand, against any MLflow-protocol endpoint (mlray, `mlflow models serve`, MLServer):

  MLRAY_LOAD_PATH=/invocations MLRAY_LOAD_STAGES='[{"duration": 30, "users": 8}]' \
      locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:5000
"""

from __future__ import annotations

import json
import os
import time

from locust import FastHttpUser, LoadTestShape, constant, task

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_ROWS = [
    [5.1, 3.5, 1.4, 0.2],
    [6.7, 3.0, 5.2, 2.3],
    [5.9, 3.0, 4.2, 1.5],
    [6.3, 2.5, 5.0, 1.9],
    [4.9, 3.0, 1.4, 0.2],
    [5.6, 2.9, 3.6, 1.3],
]


RETRIED = "invocations (retried)"
RETRIES = int(os.environ.get("MLRAY_LOAD_RETRIES") or 0)
FAILURE_PAUSE_S = float(os.environ.get("MLRAY_LOAD_FAILURE_PAUSE_S") or 0)


def retryable(status: int) -> bool:
    """A connection error (Locust reports status 0) or a server error; never a 4xx."""
    return status == 0 or status >= 500


class MlflowScoringUser(FastHttpUser):
    """POSTs an MLflow scoring payload in a closed loop; anything but 200 with one prediction
    per row is a failure. Subclasses set `path`, `columns` and `rows` for their model."""

    abstract = True
    wait_time = constant(0)  # closed loop: concurrency equals the number of users
    path = "/invocations"
    columns: list[str] = []
    rows: list[list[float]] = []

    def on_start(self) -> None:
        self._body = json.dumps(self.payload()).encode()

    def payload(self) -> dict:
        """The `dataframe_split` form, the one `mlflow models predict` sends."""
        return {"dataframe_split": {"columns": self.columns, "data": self.rows}}

    @task
    def invocations(self) -> None:
        for attempt in range(RETRIES + 1):
            with self.client.post(
                self.path,
                data=self._body,
                headers={"Content-Type": "application/json"},
                name="invocations",
                catch_response=True,
            ) as resp:
                problem = self.check(resp.status_code, resp.text)
                again = bool(problem) and attempt < RETRIES and retryable(resp.status_code)
                if again:
                    resp.request_meta["name"] = RETRIED
                if problem:
                    resp.failure(problem)
                else:
                    resp.success()
            if problem and FAILURE_PAUSE_S:
                time.sleep(FAILURE_PAUSE_S)  # gevent-patched: yields to the other users
            if not again:
                return

    def check(self, status: int, text: str | None) -> str | None:
        """Why the response is wrong, or None."""
        if status != 200:
            return f"got HTTP {status} ({(text or '')[:200]}); expected 200"
        try:
            predictions = json.loads(text or "")["predictions"]
        except (ValueError, KeyError, TypeError):
            return f"got {(text or '')[:200]!r}; expected a JSON object with 'predictions'"
        if len(predictions) != len(self.rows):
            return f"got {len(predictions)} predictions for {len(self.rows)} rows; expected 1 each"
        return None


class IrisUser(MlflowScoringUser):
    """The example iris classifiers; the route comes from the environment."""

    path = os.environ.get("MLRAY_LOAD_PATH", "/invocations")
    columns = IRIS_COLUMNS
    rows = [IRIS_ROWS[i % len(IRIS_ROWS)] for i in range(int(os.environ.get("MLRAY_LOAD_ROWS", 1)))]


class StagesShape(LoadTestShape):
    """Load stages as data (MLRAY_LOAD_STAGES); the run ends after the last stage."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = json.loads(os.environ.get("MLRAY_LOAD_STAGES") or "[]")
        if not self.stages:
            raise SystemExit("MLRAY_LOAD_STAGES is empty; expected a JSON list of stages")

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        end = 0.0
        for stage in self.stages:
            end += float(stage["duration"])
            if elapsed < end:
                return int(stage["users"]), float(stage.get("spawn_rate", 50))
        return None
