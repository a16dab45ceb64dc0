"""Pass/fail gates, set from the run's summary at the end (as Locust's own examples do).

Pure: summary in, verdicts out. A gate that cannot be evaluated (its figure is missing) fails,
so a scenario that silently did nothing can never pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from loadtests.scenarios import PEERS


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    detail: str  # "got X for Y; expected Z"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(summary: dict[str, Any]) -> list[Gate]:
    # Peers' own errors are reported in their figures, not gated: CI gates mlray.
    runs = summary.get("runs", {})
    gates = [
        _no_failures(key, run)
        for key, run in sorted(runs.items())
        if run.get("target") not in PEERS
    ]
    if "batching" in summary:
        gates.append(_mean_batch_size(summary["batching"]))
    if "autoscaling" in summary:
        gates += _autoscaling(summary["autoscaling"])
    return gates


def _no_failures(key: str, run: dict[str, Any]) -> Gate:
    failures, requests = run.get("failures"), run.get("requests")
    ok = failures == 0 and bool(requests)
    detail = f"got {failures} failures in {requests} requests for run {key}; expected 0 of > 0"
    if not ok and run.get("top_errors"):
        detail += "; first: " + run["top_errors"][0][:200]
    return Gate(f"{key}: no failures", ok, detail)


def _mean_batch_size(batching: dict[str, Any]) -> Gate:
    mean = batching.get("mean_batch_size")
    return Gate(
        f"{batching.get('app')}: mean batch size > 1",
        mean is not None and mean > 1,
        f"got {mean} for the mean batch size the replicas ran "
        f"(histogram {batching.get('batch_size_histogram')}); expected > 1",
    )


def _autoscaling(scaling: dict[str, Any]) -> list[Gate]:
    app, low = scaling.get("app"), scaling.get("min_replicas")
    seen = scaling.get("max_running")
    return [
        Gate(
            f"{app}: scales above {low} replica(s) under load",
            seen is not None and low is not None and seen > low,
            f"got {seen} for the most RUNNING replicas during the step; expected > {low}",
        ),
        Gate(
            f"{app}: returns to {low} replica(s) after",
            bool(scaling.get("returned_to_min")),
            f"got {scaling.get('final_running')} RUNNING replicas "
            f"{scaling.get('settle_timeout_s')} s after the load; expected {low}",
        ),
    ]
