"""Replica data-plane bench: real `mlray deploy` to a local Ray head, closed-loop aiohttp client.

    python -m loadtests.replica_bench                      # this tree only
    python -m loadtests.replica_bench --before main        # a git ref, then this tree, one run

It starts an MLflow server (SQLite, temp dir) and a Ray head (`ray start --head`, its own temp
dir, Serve's classic proxy) on this host, registers a small sklearn iris model under a few
names with different `ray.*` tags, and deploys them with `python -m mlray deploy`: the real
code path, serving code shipped as `py_modules`. For every code variant (the `--before` ref's
`mlray`, then this tree's), it deploys, then drives each app with one asyncio client at every
concurrency in `--levels` (one-row `dataframe_split`, closed loop) and prints rps and p50.
Variants and apps run back to back in one process, so compare ratios within one run: the
host is shared and noisy. Every app holds one replica (`ray.num_replicas` 1), so throughput
is one replica's.

Stops only the Ray processes it started (matched by its temp dir), never `ray stop --force`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
TOKEN_ENV = "MLRAY_BENCH_RAY_TOKEN"
RAY_TMP = Path("/tmp/ray-mlray-bench")  # Ray's socket paths must stay short
REQUIRED = {"ray.ray_actor_options.num_cpus": "0.25", "ray.ray_actor_options.memory": "0.5"}
# name -> extra tags; every app is one replica so the figures are one replica's
APPS: dict[str, dict[str, str]] = {
    "bench-default": {"ray.num_replicas": "1"},
    "bench-batched": {
        "ray.num_replicas": "1",
        "ray.user_config.max_batch_size": "16",
        "ray.user_config.batch_wait_timeout_s": "0.02",
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2, headers=headers).status_code < 500:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_ray(temp_dir: Path) -> None:
    """Stop this head's processes only (those whose command line names its temp dir)."""
    import psutil

    ours = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if str(temp_dir) in " ".join(p.info["cmdline"] or []):
                ours += [p, *p.children(recursive=True)]
    for p in ours:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(ours, timeout=15)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


@dataclass
class Cluster:
    tracking_uri: str
    dashboard_url: str
    serve_url: str
    config_path: Path
    token: str


@contextlib.contextmanager
def services(root: Path) -> Any:
    """An MLflow server and a Ray head on this host, stopped at the end."""
    mlflow_port, dash_port, gcs_port, serve_port = (free_port() for _ in range(4))
    log = (root / "mlflow.log").open("w")
    mlflow_proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    token = secrets.token_hex(16)
    shutil.rmtree(RAY_TMP, ignore_errors=True)
    # No PYTHONPATH: Ray's workers inherit this environment, and a checkout on it would shadow
    # the serving code each deploy ships as py_modules (the variants would all run this tree).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    try:
        subprocess.run(
            [str(BIN / "ray"), "start", "--head", "--port", str(gcs_port),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
             "--num-cpus", "4", "--temp-dir", str(RAY_TMP), "--disable-usage-stats"],
            check=True, env=env, capture_output=True, timeout=180, cwd=str(root),
        )  # fmt: skip
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        dashboard_url = f"http://127.0.0.1:{dash_port}"
        wait_http(f"{tracking_uri}/health", 120)
        wait_http(f"{dashboard_url}/api/version", 120)
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        cfg = {
            "mlflow": {"tracking_uri": tracking_uri},
            "selection": {"name_suffix": ".staging", "alias": "staging"},
            "clusters": {
                "local": {
                    "dashboard_url": dashboard_url,
                    "serve_url": f"http://127.0.0.1:{serve_port}",
                    "python": python,
                    "platform": f"linux_{os.uname().machine}",
                    "http_options": {"host": "127.0.0.1", "port": serve_port},
                    "auth_token_env": TOKEN_ENV,
                }
            },
        }
        config_path = root / "config.yml"
        config_path.write_text(yaml.safe_dump(cfg))
        yield Cluster(
            tracking_uri, dashboard_url, f"http://127.0.0.1:{serve_port}", config_path, token
        )
    finally:
        stop_ray(RAY_TMP)
        os.killpg(mlflow_proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            mlflow_proc.wait(30)


def register(tracking_uri: str, apps: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One sklearn iris model logged once, registered as ``<app>.staging`` per app."""
    import mlflow
    import numpy as np
    import pandas as pd
    import sklearn
    from mlflow.tracking import MlflowClient
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("mlray-replica-bench")
    data = load_iris(as_frame=True)
    x = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    model = LogisticRegression(max_iter=500).fit(x, data.target)
    reqs = [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
            f"pandas=={pd.__version__}", f"numpy=={np.__version__}"]  # fmt: skip
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", pip_requirements=reqs, input_example=x.head(3)
        )
    client = MlflowClient(tracking_uri)
    for app, tags in apps.items():
        name = f"{app}.staging"
        mv = mlflow.register_model(info.model_uri, name)
        for k, v in {"ray.name": app, **REQUIRED, **tags}.items():
            client.set_registered_model_tag(name, k, v)
        client.set_registered_model_alias(name, "staging", mv.version)
    row = json.loads(x.iloc[:1].to_json(orient="split", index=False))
    return {"dataframe_split": row}


def code_at(ref: str, dest: Path) -> Path:
    """This repository's ``mlray`` package at git ``ref``, extracted under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "mlray"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    tar_path = dest / "mlray.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    return dest


def deploy(cluster: Cluster, code_root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(code_root), TOKEN_ENV: cluster.token,
           "MLFLOW_TRACKING_URI": cluster.tracking_uri}  # fmt: skip
    for attempt in range(3):  # a fresh head on a busy host may lack a job agent at first
        proc = subprocess.run(
            [sys.executable, "-m", "mlray", "deploy", str(cluster.config_path), "local",
             "--timeout", "600"],
            env=env, capture_output=True, text=True, timeout=900, cwd=str(code_root),
        )  # fmt: skip
        if proc.returncode == 0 or "No available agent" not in proc.stdout + proc.stderr:
            break
        time.sleep(15 * (attempt + 1))
    if proc.returncode != 0:
        raise RuntimeError(f"mlray deploy exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")


async def closed_loop(url: str, payload: bytes, concurrency: int, seconds: float) -> dict:
    """``concurrency`` workers, each posting its next request when the last one is answered."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    async with session.post(url, data=payload, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1e3 * p50,
        "p99_ms": 1e3 * p99,
        "ok": len(latencies),
        "failed": failures,
    }


def measure(
    cluster: Cluster, apps: list[str], payload: dict, levels: list[int], seconds: float,
    warmup: float,
) -> dict[str, dict[int, dict]]:  # fmt: skip
    body = json.dumps(payload).encode()
    out: dict[str, dict[int, dict]] = {}
    for app in apps:
        url = f"{cluster.serve_url}/{app}/invocations"
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        r.raise_for_status()
        asyncio.run(closed_loop(url, body, max(levels), warmup))
        out[app] = {}
        for c in levels:
            out[app][c] = asyncio.run(closed_loop(url, body, c, seconds))
            fig = out[app][c]
            print(
                f"    {app:<16} c={c:<3} {fig['rps']:7.1f} rps  p50 {fig['p50_ms']:7.1f} ms  "
                f"p99 {fig['p99_ms']:7.1f} ms  failed {fig['failed']}",
                flush=True,
            )
        meta = requests.get(f"{cluster.serve_url}/{app}/metadata", timeout=30).json()
        out[app]["metadata"] = {k: meta.get(k) for k in ("batching", "timings")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.replica_bench", description=__doc__)
    p.add_argument("--before", metavar="REF", help="git ref to measure first (e.g. main)")
    p.add_argument("--levels", default="1,8,32", help="concurrencies (default 1,8,32)")
    p.add_argument("--seconds", type=float, default=8.0, help="per level (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="per app (default 2)")
    p.add_argument("--rounds", type=int, default=1, help="repeat every variant (default 1)")
    p.add_argument(
        "--max-ongoing",
        default="",
        help="extra apps with ray.max_ongoing_requests set, e.g. 5,32,64",
    )
    p.add_argument("--json", type=Path, help="write all figures here")
    args = p.parse_args(argv)
    levels = [int(c) for c in args.levels.split(",")]
    apps = dict(APPS)
    for n in filter(None, args.max_ongoing.split(",")):
        apps[f"bench-m{n}"] = {"ray.num_replicas": "1", "ray.max_ongoing_requests": n}
    root = Path(tempfile.mkdtemp(prefix="mlray-bench-"))
    variants: list[tuple[str, Path]] = []
    if args.before:
        variants.append((f"before ({args.before})", code_at(args.before, root / "before")))
    variants.append(("after (this tree)", REPO))
    results: dict[str, Any] = {}
    try:
        with services(root) as cluster:
            payload = register(cluster.tracking_uri, apps)
            for round_ in range(1, args.rounds + 1):
                for label, code in variants:
                    print(f"== round {round_}: {label}: deploying {len(apps)} apps", flush=True)
                    deploy(cluster, code)
                    key = f"round {round_}: {label}"
                    results[key] = measure(
                        cluster, list(apps), payload, levels, args.seconds, args.warmup
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_summary(results, levels)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def print_summary(results: dict[str, Any], levels: list[int]) -> None:
    print("\nvariant | app | " + " | ".join(f"c={c} rps / p50" for c in levels))
    for key, apps in results.items():
        for app, figs in apps.items():
            cells = [f"{figs[c]['rps']:.1f} / {figs[c]['p50_ms']:.1f} ms" for c in levels]
            print(f"{key} | {app} | " + " | ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
