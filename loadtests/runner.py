"""One load run: a headless Locust subprocess, then its CSV files read back into figures.

Locust runs in its own process: gevent monkey-patches sockets and ssl for the whole
interpreter, which breaks requests/urllib3 in the orchestrator (and pytest) if shared.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.errors import LoadTestError
from loadtests.observe import Sampler
from loadtests.scenarios import Run

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
RETRIED = "invocations (retried)"  # locustfile.RETRIED (not imported: gevent patches on import)
GRACE_S = 60.0  # Locust start-up and shutdown on top of the planned duration
CLIENT_BOUND_CPU = 90.0  # percent of one core: above this the client, not the server, limits rps


@dataclass
class RunResult:
    """The figures of one run; times in milliseconds, rates per second."""

    key: str
    target: str
    url: str
    users: int
    planned_s: float
    elapsed_s: float
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    avg_ms: float | None
    retried: int = 0  # attempts the client retried (failures, not in requests or failures)
    client_cpu_mean: float | None = None
    client_cpu_max: float | None = None
    top_errors: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # per second, for the plots

    @property
    def client_bound(self) -> bool:
        return (self.client_cpu_mean or 0.0) >= CLIENT_BOUND_CPU

    def figures(self) -> dict[str, Any]:
        """What summary.json keeps (the time series stays in the Locust CSV)."""
        out = asdict(self)
        out.pop("history")
        out["client_bound"] = self.client_bound
        return out


def run_locust(run: Run, host: str, path: str, out_dir: Path, sampler: Sampler) -> RunResult:
    """Drive `host + path` with the run's stages; the sampler records the client's CPU."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / run.key
    env = {
        **os.environ,
        "MLRAY_LOAD_PATH": path,
        "MLRAY_LOAD_STAGES": json.dumps([s.as_locust() for s in run.stages]),
        "MLRAY_LOAD_RETRIES": str(run.retries),
        "MLRAY_LOAD_FAILURE_PAUSE_S": str(run.failure_pause_s),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host, "--csv", str(prefix), "--csv-full-history",
        "--html", f"{prefix}.html", "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    shape = " -> ".join(f"{s.users} users {s.duration_s:.0f} s" for s in run.stages)
    say(f"{run.key}: {shape} against {host}{path}")
    started, t_start = time.monotonic(), sampler.now()
    with open(f"{prefix}.locust.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler.watch_client(proc.pid)
        try:
            proc.wait(timeout=run.duration_s + GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise LoadTestError(
                f"got no end of Locust run {run.key} within {run.duration_s + GRACE_S:.0f} s; "
                f"expected it to stop after its stages. Log: {prefix}.locust.log"
            ) from None
        finally:
            sampler.watch_client(None)
    elapsed = time.monotonic() - started
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        tail = Path(f"{prefix}.locust.log").read_text(errors="replace")[-2000:]
        raise LoadTestError(
            f"got no {stats.name} from Locust run {run.key} (exit {proc.returncode}); "
            f"expected its CSV. Last output:\n{tail}"
        )
    result = parse_stats(stats, run, host + path, elapsed)
    result.history = parse_history(Path(f"{prefix}_stats_history.csv"))
    result.top_errors = parse_failures(Path(f"{prefix}_failures.csv"))
    cpu = [s.client_cpu for s in sampler.samples if s.t >= t_start and s.client_cpu is not None]
    if cpu:
        result.client_cpu_mean = round(statistics.fmean(cpu), 1)
        result.client_cpu_max = round(max(cpu), 1)
    say(
        f"{run.key}: {result.requests} requests, {result.failures} failures, "
        f"{result.rps:.1f} rps, p50 {fmt_ms(result.p50_ms)}, p99 {fmt_ms(result.p99_ms)}, "
        f"client CPU {fmt_pct(result.client_cpu_mean)}"
    )
    return result


def _number(value: str | None) -> float | None:
    if value in (None, "", "N/A"):
        return None
    return float(value)


def parse_stats(path: Path, run: Run, url: str, elapsed_s: float) -> RunResult:
    """The Aggregated row of Locust's `<prefix>_stats.csv`. Requests and failures are the
    client's: attempts it retried (row RETRIED, all failed) are counted apart."""
    with path.open(newline="") as f:
        named = {r.get("Name"): r for r in csv.DictReader(f)}
    if "Aggregated" not in named:
        raise LoadTestError(f"got no Aggregated row in {path}; expected Locust's stats CSV")
    row = named["Aggregated"]
    retried = int(named[RETRIED]["Request Count"]) if RETRIED in named else 0
    return RunResult(
        key=run.key,
        target=run.target,
        url=url,
        users=run.peak_users,
        planned_s=run.duration_s,
        elapsed_s=round(elapsed_s, 1),
        requests=int(row["Request Count"]) - retried,
        failures=int(row["Failure Count"]) - retried,
        retried=retried,
        rps=round(float(row["Requests/s"]), 2),
        p50_ms=_number(row["50%"]),
        p99_ms=_number(row["99%"]),
        avg_ms=None if _number(row["Average Response Time"]) is None
        else round(float(row["Average Response Time"]), 2),
    )  # fmt: skip


def parse_history(path: Path) -> list[dict[str, Any]]:
    """Per-second Aggregated rows of `<prefix>_stats_history.csv`: `ts` epoch seconds (the
    sampler's clock), `t` seconds from the first row (the plots' axis)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    if not rows:
        return []
    t0 = int(rows[0]["Timestamp"])
    return [
        {
            "ts": int(r["Timestamp"]),
            "t": int(r["Timestamp"]) - t0,
            "users": int(r["User Count"]),
            "rps": float(r["Requests/s"]),
            "failures_s": float(r["Failures/s"]),
            "p50_ms": _number(r["50%"]),
            "p99_ms": _number(r["99%"]),
        }
        for r in rows
    ]


def parse_failures(path: Path, top: int = 3) -> list[str]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: -int(r.get("Occurrences") or 0))
    return [f"{r['Occurrences']}x {r['Error'][:300]}" for r in rows[:top]]


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def say(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)
