"""reports/<timestamp>/chaos.json and one PNG per scenario: rps, errors and replicas over
time, the fault marked. Locust's CSV and HTML of each scenario's load sit beside them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadtests.chaos.gates import Outcome
from loadtests.observe import Sample
from loadtests.report import _pyplot, _save, _series
from loadtests.runner import RunResult


def write_json(out_dir: Path, outcomes: Mapping[str, Outcome], extra: dict[str, Any]) -> Path:
    path = out_dir / "chaos.json"
    doc = {"scenarios": {n: o.as_dict() for n, o in outcomes.items()}, **extra}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def plot(
    out_dir: Path,
    name: str,
    run: RunResult,
    samples: list[Sample],
    marks: Mapping[str, float],
) -> Path:
    """Three panels on one clock (epoch seconds from the load's start); `marks` are faults
    and recoveries, drawn as vertical lines on every panel."""
    plt = _pyplot()
    fig, (rps, errors, reps) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    t0 = run.history[0]["ts"] if run.history else (samples[0].t if samples else 0.0)
    xs, ys = _series(run, "rps", t0)
    rps.plot(xs, ys, color="tab:blue")
    rps.set_ylabel("requests/s")
    rps.set_title(
        f"{name}: {run.target} under {run.users} users ({run.requests} requests, "
        f"{run.failures} failed)"
    )
    xs, ys = _series(run, "failures_s", t0)
    errors.plot(xs, ys, color="tab:red")
    errors.set_ylabel("failures/s")
    counted = [s for s in samples if s.running is not None]
    reps.step(
        [s.t - t0 for s in counted],
        [s.running for s in counted],
        where="post",
        label="RUNNING replicas",
    )
    reps.set_ylabel("replicas")
    reps.set_xlabel("time (s)")
    reps.set_ylim(bottom=0)
    for label, at in marks.items():
        for ax in (rps, errors, reps):
            ax.axvline(at - t0, color="tab:red", alpha=0.5, linestyle="--")
        reps.annotate(label, (at - t0, 0.2), fontsize=7, rotation=90, color="tab:red")
    for ax in (rps, errors, reps):
        ax.grid(alpha=0.3)
    return _save(plt, fig, out_dir / f"{name}.png")


def table(outcomes: Mapping[str, Outcome], seconds: Mapping[str, float]) -> str:
    lines = [f"{'scenario':<22} {'result':<6} {'success':>8} {'recovery':>9} {'took':>6}"]
    for name, o in outcomes.items():
        success = "n/a" if o.success_rate is None else f"{o.success_rate:.2%}"
        recovery = "n/a" if o.recovery_s is None else f"{o.recovery_s:.1f} s"
        lines.append(
            f"{name:<22} {'PASS' if o.passed else 'FAIL':<6} {success:>8} "
            f"{recovery:>9} {seconds.get(name, 0):>5.0f}s"
        )
        lines.append(f"    {o.detail}")
    return "\n".join(lines)
