"""reports/<timestamp>/: summary.json, one PNG per scenario, and the terminal table.

Locust's own CSV and HTML files sit beside them, one set per run (`<run key>_stats.csv`,
`<run key>_stats_history.csv`, `<run key>.html`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtests.gates import Gate
from loadtests.observe import Sample
from loadtests.runner import RunResult, fmt_ms, fmt_pct


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return path


def write_replicas_csv(out_dir: Path, app: str, samples: list[Sample], t0: float) -> Path:
    path = out_dir / f"{app}_replicas.csv"
    lines = ["t_s,running,target,client_cpu_percent,host_cpu_cores"]
    lines += [
        f"{s.t - t0:.2f},{'' if s.running is None else s.running},"
        f"{'' if s.target is None else s.target},"
        f"{'' if s.client_cpu is None else s.client_cpu},"
        f"{'' if s.host_cpu is None else s.host_cpu}"
        for s in samples
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI hosts
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(
    result: RunResult, key: str, t0: float | None = None
) -> tuple[list[float], list[float]]:
    """(seconds, values) from Locust's history; with `t0`, on the sampler's timeline."""
    points = [
        (h["t"] if t0 is None else h["ts"] - t0, h[key])
        for h in result.history
        if h[key] is not None
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _latency_axes(ax, results: list[RunResult], t0: float | None = None) -> None:
    for r in results:
        for key, style in (("p50_ms", "-"), ("p99_ms", ":")):
            xs, ys = _series(r, key, t0)
            ax.plot(xs, ys, style, label=f"{r.key} {key[:3]}")
    ax.set_ylabel("latency (ms)")
    ax.set_xlabel("time (s)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_batching(
    out_dir: Path, batched: RunResult, unbatched: RunResult, histogram: dict[int, int]
) -> Path:
    plt = _pyplot()
    fig, (rps, lat, hist) = plt.subplots(1, 3, figsize=(16, 4.5))
    for r in (batched, unbatched):
        xs, ys = _series(r, "rps")
        rps.plot(xs, ys, label=f"{r.key} ({r.rps:.0f} rps)")
    rps.set_title(f"throughput at {batched.users} users")
    rps.set_ylabel("requests/s")
    rps.set_xlabel("time (s)")
    rps.legend(fontsize=7)
    rps.grid(alpha=0.3)
    _latency_axes(lat, [batched, unbatched])
    lat.set_title("p50 (solid) and p99 (dotted)")
    sizes = sorted(histogram)
    hist.bar([str(s) for s in sizes], [histogram[s] for s in sizes], color="tab:green")
    hist.set_title(f"{batched.target}: batch sizes the replica ran")
    hist.set_xlabel("requests per predict call")
    hist.set_ylabel("batches")
    return _save(plt, fig, out_dir / "batching.png")


def plot_autoscaling(
    out_dir: Path, run: RunResult, samples: list[Sample], t0: float, edges: dict[str, float]
) -> Path:
    plt = _pyplot()
    fig, (load, lat, reps) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    xs, users = _series(run, "users", t0)
    load.plot(xs, users, color="tab:gray", label="users")
    load.set_ylabel("users")
    twin = load.twinx()
    xs, ys = _series(run, "rps", t0)
    twin.plot(xs, ys, color="tab:blue", label="requests/s")
    twin.set_ylabel("requests/s")
    load.set_title(f"{run.target}: step load, throughput, latency and replicas")
    load.legend(loc="upper left", fontsize=7)
    twin.legend(loc="upper right", fontsize=7)
    _latency_axes(lat, [run], t0)
    counted = [s for s in samples if s.running is not None]
    reps.step([s.t - t0 for s in counted], [s.running for s in counted], where="post",
              label="RUNNING replicas")  # fmt: skip
    targets = [s for s in counted if s.target is not None]
    if targets:
        reps.step([s.t - t0 for s in targets], [s.target for s in targets], where="post",
                  linestyle="--", label="target replicas")  # fmt: skip
    for name, at in edges.items():
        for ax in (load, lat, reps):
            ax.axvline(at - t0, color="tab:red", alpha=0.4, linestyle="--")
        reps.annotate(name, (at - t0, 0.2), fontsize=7, rotation=90, color="tab:red")
    reps.set_ylabel("replicas")
    reps.set_xlabel("time (s)")
    reps.set_ylim(bottom=0)
    reps.legend(fontsize=7)
    reps.grid(alpha=0.3)
    return _save(plt, fig, out_dir / "autoscaling.png")


def plot_peers(out_dir: Path, results: dict[str, RunResult]) -> Path | None:
    """Bars of rps and p50 per concurrency for every app and peer measured at it. Run keys
    are "<app key or peer>-c<users>" (scenarios.run)."""
    by_level: dict[str, dict[str, RunResult]] = {}
    for key, r in results.items():
        target, _, level = key.rpartition("-")
        if target and level.startswith("c") and level[1:].isdigit():
            by_level.setdefault(level, {})[target] = r
    if not by_level:
        return None
    levels = sorted(by_level, key=lambda lv: int(lv[1:]))
    labels = list(dict.fromkeys(t for lv in levels for t in by_level[lv]))
    plt = _pyplot()
    fig, (rps, p50) = plt.subplots(1, 2, figsize=(14, 4.8))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        xs = [j + i * width for j, lv in enumerate(levels) if label in by_level[lv]]
        runs = [by_level[lv][label] for lv in levels if label in by_level[lv]]
        rps.bar(xs, [r.rps for r in runs], width, label=label)
        p50.bar(xs, [r.p50_ms or 0 for r in runs], width, label=label)
    for ax, title in ((rps, "requests/s"), (p50, "p50 latency (ms, log)")):
        ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(levels))])
        ax.set_xticklabels([f"c={lv[1:]}" for lv in levels])
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    p50.set_yscale("log")
    fig.suptitle("mlray's apps and its peers, same model version, same host, one run")
    return _save(plt, fig, out_dir / "peers.png")


def table(results: dict[str, RunResult], summary: dict[str, Any], gates: list[Gate]) -> str:
    head = f"{'run':<28} {'users':>5} {'reqs':>7} {'fails':>5} {'rps':>8} {'p50':>7} {'p99':>7}"
    lines = [head + f" {'client CPU':>10}", "-" * (len(head) + 11)]
    for r in results.values():
        flag = " (client-bound)" if r.client_bound else ""
        lines.append(
            f"{r.key:<28} {r.users:>5} {r.requests:>7} {r.failures:>5} {r.rps:>8.1f} "
            f"{fmt_ms(r.p50_ms):>7} {fmt_ms(r.p99_ms):>7} {fmt_pct(r.client_cpu_mean):>10}{flag}"
        )
    lines.append("")
    b = summary.get("batching")
    if b:
        lines.append(
            f"batching     {b['app']}: mean batch size {_num(b['mean_batch_size'])} over "
            f"{b['batches']} batches; batched/unbatched throughput {_num(b['throughput_ratio'])}x"
        )
    a = summary.get("autoscaling")
    if a:
        lines.append(
            f"autoscaling  {a['app']}: max {a['max_running']} replicas RUNNING; target raised "
            f"{_num(a['scale_up_decision_s'])} s and a replica RUNNING "
            f"{_num(a['scale_up_s'])} s after the step, all {a['max_replicas']} RUNNING "
            f"{_num(a.get('time_to_max_s'))} s after it, back to {a['min_replicas']} in "
            f"{_num(a['scale_down_s'])} s from the step down "
            f"({_num(a['scale_down_after_load_end_s'])} s after the load ended)"
        )
        if a.get("host_cpu_cores_to_max") is not None:
            lines.append(
                f"             this host's CPU from the step to {a['max_replicas']} RUNNING: "
                f"{_num(a['host_cpu_cores_to_max'])} of {a['host_cores']} cores busy "
                "(the load, the testbed and the starting replicas share them)"
            )
        for r in a.get("replica_starts") or []:
            lines.append(
                f"             new replica on {r.get('host') or 'an unknown host'}: process "
                f"{_num(r['process_started_s'])} s, ready {_num(r['ready_s'])} s after the "
                f"step; {_num(r.get('cpu_s'))} s of CPU over its start "
                f"({_num(r.get('cpu_share'))} of a core), {_num(r.get('cpu_wait_s'))} s "
                f"waiting for a CPU; model from {r.get('model_from') or 'n/a'}"
            )
    for g in summary.get("goals") or []:
        verdict = {True: "met", False: "NOT met", None: "n/a"}[g["met"]]
        lines.append(f"goal {verdict:<8} {g['name']}: {_num(g['value'])} (want {g['target']})")
    lines.append("")
    lines += [f"{'PASS' if g.passed else 'FAIL'}  {g.name}" for g in gates]
    lines += [f"      {g.detail}" for g in gates if not g.passed]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
