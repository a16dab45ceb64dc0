"""The data-plane goals (issue 15), read from one run's summary: reported, never gated.

Pure: summary in, rows out. "Best peer" is the highest rps (or lowest p50) among the peers
measured at that concurrency in the same run. A goal whose figures are missing is reported
with `met: null`, so a partial run (`--scenario`) says what it could not judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from loadtests.runner import RunResult
from loadtests.scenarios import HIGH_CONCURRENCY, MID_CONCURRENCY, MLFLOW_W1

C1, CMID, CHIGH = "c1", f"c{MID_CONCURRENCY}", f"c{HIGH_CONCURRENCY}"


@dataclass(frozen=True)
class Goal:
    name: str
    value: float | None
    target: str  # how value compares, in words: "<= 1.0 ms"
    met: bool | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def figures(results: dict[str, RunResult], prefix: str) -> dict[str, float | None]:
    """What summary.json keeps per target and concurrency: apps.<key>.<cN>, peers.<name>.<cN>."""
    run = results.get(prefix)
    if run is None:
        return {}
    return {
        "rps": run.rps,
        "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms,
        "requests": run.requests,
        "failures": run.failures,
        "client_cpu_mean": run.client_cpu_mean,
    }


def by_level(results: dict[str, RunResult], keys: tuple[str, ...]) -> dict[str, dict]:
    """{key: {cN: figures}} for run keys "<key>-cN" (scenarios.run)."""
    out: dict[str, dict] = {}
    for key in keys:
        levels = {
            level: figures(results, f"{key}-{level}")
            for level in (C1, CMID, CHIGH)
            if f"{key}-{level}" in results
        }
        if levels:
            out[key] = levels
    return out


def _get(summary: dict[str, Any], *path: str) -> Any:
    node: Any = summary
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _best_peer(summary: dict[str, Any], level: str, figure: str) -> tuple[str, float] | None:
    pick: Callable = min if figure == "p50_ms" else max
    seen = [
        (name, levels[level][figure])
        for name, levels in (summary.get("peers") or {}).items()
        if isinstance(levels, dict) and _get(levels, level, figure) is not None
    ]
    return pick(seen, key=lambda item: item[1]) if seen else None


def _row(name: str, value: float | None, target: str, ok: Callable[[float], bool],
         detail: str) -> Goal:  # fmt: skip
    if value is None:
        return Goal(name, None, target, None, f"not measured in this run ({detail})")
    return Goal(name, round(value, 2), target, ok(value), detail)


def evaluate(summary: dict[str, Any]) -> list[Goal]:
    apps = summary.get("apps") or {}
    rows = []

    best = _best_peer(summary, C1, "p50_ms")
    unbatched_p50 = _get(apps, "unbatched", C1, "p50_ms")
    rows.append(_row(
        "unbatched c=1 p50 minus the best peer's (ms)",
        None if best is None or unbatched_p50 is None else unbatched_p50 - best[1],
        "<= 1.0", lambda v: v <= 1.0,
        f"unbatched {unbatched_p50} ms; best peer {best}",
    ))  # fmt: skip

    w1 = _get(summary, "peers", MLFLOW_W1, CHIGH, "rps")
    unbatched_rps = _get(apps, "unbatched", CHIGH, "rps")
    rows.append(_row(
        f"unbatched {CHIGH} rps / {MLFLOW_W1}'s",
        None if not w1 or unbatched_rps is None else unbatched_rps / w1,
        ">= 1.0", lambda v: v >= 1.0,
        f"unbatched {unbatched_rps} rps; {MLFLOW_W1} {w1} rps",
    ))  # fmt: skip

    best = _best_peer(summary, CHIGH, "rps")
    batched_rps = _get(apps, "batched", CHIGH, "rps")
    rows.append(_row(
        f"batched {CHIGH} rps / the best peer's",
        None if best is None or not best[1] or batched_rps is None else batched_rps / best[1],
        ">= 1.5", lambda v: v >= 1.5,
        f"batched {batched_rps} rps; best peer {best}",
    ))  # fmt: skip

    batched_p50 = _get(apps, "batched", C1, "p50_ms")
    rows.append(_row(
        "batched c=1 p50 minus unbatched c=1 p50 (ms)",
        None if batched_p50 is None or unbatched_p50 is None else batched_p50 - unbatched_p50,
        "<= 2.0", lambda v: v <= 2.0,
        f"batched {batched_p50} ms; unbatched {unbatched_p50} ms",
    ))  # fmt: skip

    mid, high = _get(apps, "untuned", CMID, "rps"), _get(apps, "untuned", CHIGH, "rps")
    # Ray's default autoscaling (30 s upscale delay) may add replicas during these levels: more
    # replicas serve a longer c32 level, while a start in a short one takes CPU from it.
    most = (summary.get("untuned") or {}).get("max_running")
    rows.append(_row(
        f"untuned {CHIGH} rps / its {CMID} rps (this run's ingress)",
        None if not mid or high is None else high / mid,
        ">= 0.9", lambda v: v >= 0.9,
        f"{CMID} {mid} rps; {CHIGH} {high} rps; up to {most} replica(s) RUNNING",
    ))  # fmt: skip

    scaling = summary.get("autoscaling") or {}
    name = "autoscaling: seconds from the load step to max replicas RUNNING"
    app, high = scaling.get("app"), scaling.get("max_replicas")
    if scaling and scaling.get("time_to_max_s") is None:
        detail = f"{app} never had all {high} replicas RUNNING during the step"
        rows.append(Goal(name, None, "<= 15", False, detail))
    else:
        to_max = scaling.get("time_to_max_s")
        rows.append(_row(name, to_max, "<= 15", lambda v: v <= 15.0, f"{app} to {high}"))
    return rows
