"""Per-stage request timings of one replica, for ``/metadata``. Pure (stdlib only).

A replica records, per scored request, how long each stage took: reading the body, parsing
it, waiting for the predictor (the executor queue, or a Serve batch filling), the ``predict``
call itself and rendering the answer. ``StageTimes`` keeps a count, the total and the last
``window`` samples of every stage, so ``/metadata`` can show means and recent percentiles
without an unbounded memory footprint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

STAGES = ("read", "parse", "queue", "predict", "serialize", "total")
DEFAULT_WINDOW = 1024


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` (0..1) percentile of already sorted values, nearest-rank; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[rank]


class StageTimes:
    """Durations (seconds in, milliseconds out) per stage; not thread-safe, use on the loop."""

    def __init__(self, stages: Iterable[str] = STAGES, window: int = DEFAULT_WINDOW) -> None:
        self._stages = tuple(stages)
        self._count = dict.fromkeys(self._stages, 0)
        self._total = dict.fromkeys(self._stages, 0.0)
        self._recent: dict[str, deque[float]] = {s: deque(maxlen=window) for s in self._stages}

    def record(self, stage: str, seconds: float) -> None:
        self._count[stage] += 1
        self._total[stage] += seconds
        self._recent[stage].append(seconds)

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        """``{stage: {count, mean_ms, p50_ms, p99_ms, max_ms}}``; recent = the last window."""
        out: dict[str, dict[str, float | int]] = {}
        for stage in self._stages:
            count = self._count[stage]
            recent = sorted(self._recent[stage])
            out[stage] = {
                "count": count,
                "mean_ms": round(1e3 * self._total[stage] / count, 4) if count else 0.0,
                "p50_ms": round(1e3 * percentile(recent, 0.5), 4),
                "p99_ms": round(1e3 * percentile(recent, 0.99), 4),
                "max_recent_ms": round(1e3 * recent[-1], 4) if recent else 0.0,
            }
        return out
