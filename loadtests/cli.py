"""`python -m loadtests` (`nox -s load`): the load scenarios against the running or a fresh
testbed, a report under reports/<timestamp>/, and an exit code from the gates.

    python -m loadtests [--profile short|full] [--scenario batching ...] [--keep]

Exit 0: every gate passed. 1: a gate failed (the report says which). 2: the run could not be
set up (no testbed, a failed deploy, ...). A testbed this command started is removed at the
end unless --keep (or MLRAY_LOAD_KEEP=1); a running one is adopted and left running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests

from loadtests import gates as gates_mod
from loadtests import goals as goals_mod
from loadtests import report
from loadtests.errors import LoadTestError
from loadtests.observe import (
    Sampler,
    StartupWatcher,
    batch_closes,
    batch_histograms,
    histogram_delta,
    host_cpu_between,
    mean_batch_size,
    replica_counts,
    scaling,
    startup_breakdown,
)
from loadtests.runner import RunResult, run_locust, say
from loadtests.scenarios import (
    AUTOSCALING_MODEL,
    BATCHED,
    CLUSTER,
    LOAD_APPS,
    PEERS,
    PROFILES,
    SOURCE_MODEL,
    UNBATCHED,
    UNTUNED,
    LoadApp,
    Run,
    Scenario,
    scenarios,
)

ROOT = Path(__file__).resolve().parents[1]
ALIAS = "staging"
COPIED_FROM = "mlray.loadtest.copied_from"  # version tag of each load copy


class Session:
    """One load-test invocation: the testbed, the MLflow client, the results so far."""

    def __init__(self, out_dir: Path, config_path: Path) -> None:
        from mlflow import MlflowClient

        from mlray.config import load_config
        from mlray.ray_api import RayDashboard

        self.out_dir = out_dir
        self.config_path = config_path
        self.config = load_config(config_path)
        if CLUSTER not in self.config.clusters:
            raise LoadTestError(
                f"got clusters {sorted(self.config.clusters)} in {config_path}; expected "
                f"{CLUSTER!r}: the load apps are Python 3.11 examples (keep 3.11 in testbed.yml)"
            )
        self.cluster = self.config.clusters[CLUSTER]
        self.dashboard = RayDashboard(self.cluster, CLUSTER)
        self.client = MlflowClient(self.config.tracking_uri, self.config.tracking_uri)
        self.results: dict[str, RunResult] = {}
        self.peer_urls: dict[str, str] = {}
        self.summary: dict[str, Any] = {"runs": {}}

    # ---- set-up ----------------------------------------------------------------------------

    def missing_models(self) -> list[str]:
        from mlflow.exceptions import MlflowException

        missing = []
        for name in (SOURCE_MODEL, AUTOSCALING_MODEL):
            try:
                self.client.get_model_version_by_alias(name, ALIAS)
            except MlflowException:
                missing.append(name)
        return missing

    def ensure_copy(self, load_app: LoadApp) -> None:
        """SOURCE_MODEL's served version, registered again under `load_app.model` and served
        with exactly its tags: the same model and environment, only the serving changes."""
        from mlflow.exceptions import MlflowException

        name = load_app.model
        source = self.client.get_model_version_by_alias(SOURCE_MODEL, ALIAS)
        origin = f"{SOURCE_MODEL}/{source.version}"
        try:
            current = self.client.get_model_version_by_alias(name, ALIAS)
        except MlflowException:
            current = None
        if current is None or (current.tags or {}).get(COPIED_FROM) != origin:
            # An earlier run's copy, retired (alias removed) at its end, is served again.
            found = [
                mv
                for mv in self.client.search_model_versions(f"name='{name}'")
                if (mv.tags or {}).get(COPIED_FROM) == origin
            ]
            if found:
                current = found[0]
            else:
                current = self.client.copy_model_version(f"models:/{origin}", name)
                self.client.set_model_version_tag(name, current.version, COPIED_FROM, origin)
                say(f"registered {name} v{current.version}, a copy of {origin}")
            self.client.set_registered_model_alias(name, ALIAS, current.version)
        for key in current.tags or {}:  # version tags override the model's
            if key.startswith("ray."):
                self.client.delete_model_version_tag(name, current.version, key)
        want = load_app.ray_tags
        have = {
            k: v
            for k, v in (self.client.get_registered_model(name).tags or {}).items()
            if k.startswith("ray.")
        }
        for key in have.keys() - want.keys():
            self.client.delete_registered_model_tag(name, key)
        for key, value in want.items():
            if have.get(key) != value:
                self.client.set_registered_model_tag(name, key, value)

    def deploy(self) -> None:
        self.mlray("deploy", str(self.config_path), CLUSTER)

    def retire_copies(self) -> None:
        """Leave the registry's selection and the cluster as the suite found them: each copy
        loses its alias (so no later `mlray deploy` serves it again) and its app goes. On a
        kept testbed, the copies' replicas would otherwise hold CPU and memory that whatever
        runs next (the chaos suite's worker_kill, say) needs."""
        from mlflow.exceptions import MlflowException

        for load_app in LOAD_APPS:
            with contextlib.suppress(MlflowException):  # never registered: nothing to retire
                self.client.delete_registered_model_alias(load_app.model, ALIAS)
        # Only the copies still deployed: the untuned scenario undeploys its own, and `mlray
        # undeploy` refuses the whole command (nothing changed) if any name is not deployed.
        # current_apps is the view `mlray undeploy` checks the names against.
        from mlray.errors import ClusterError
        from mlray.plan import current_apps

        try:
            deployed = current_apps(self.dashboard.serve_details())
        except ClusterError as exc:
            say(f"could not list the apps on {CLUSTER} ({exc}); `mlray deploy` removes the copies")
            return
        apps = [a.app for a in LOAD_APPS if a.app in deployed]
        if not apps:
            return
        args = ("undeploy", "-q", str(self.config_path), CLUSTER, *apps)
        say(f"$ mlray {' '.join(args)}  (retiring the suite's copies)")
        if subprocess.run([sys.executable, "-m", "mlray", *args]).returncode != 0:
            say("could not undeploy the suite's copies (see above); `mlray deploy` removes them")

    def mlray(self, *args: str) -> None:
        say(f"$ mlray {' '.join(args)}")
        if subprocess.run([sys.executable, "-m", "mlray", *args]).returncode != 0:
            raise LoadTestError(f"`mlray {' '.join(args)}` failed; see above")

    # ---- runs ------------------------------------------------------------------------------

    def target(self, run: Run) -> tuple[str, str]:
        if run.target in PEERS:
            if run.target not in self.peer_urls:
                raise LoadTestError(f"got run {run.key} with peer {run.target} not started")
            return self.peer_urls[run.target], "/invocations"
        return self.cluster.serve_url, f"/{run.target}/invocations"

    def execute(self, run: Run, sampler: Sampler) -> RunResult:
        """Each run once; a run shared by two scenarios is measured once."""
        if run.key not in self.results:
            host, path = self.target(run)
            self.results[run.key] = run_locust(run, host, path, self.out_dir, sampler)
            self.summary["runs"][run.key] = self.results[run.key].figures()
        return self.results[run.key]

    def running_replicas(self, app: str) -> int:
        return replica_counts(self.dashboard.serve_details(), app)[0]

    def metadata_url(self, app: str) -> str:
        return f"{self.cluster.serve_url}/{app}/metadata"

    def batching(self, scenario: Scenario) -> None:
        batched_run, unbatched_run = scenario.runs
        url = self.metadata_url(BATCHED.app)
        replicas = self.running_replicas(BATCHED.app)
        before = batch_histograms(url, replicas)
        closes_before = batch_closes(url, replicas)
        with Sampler(None, None) as sampler:
            batched = self.execute(batched_run, sampler)
        replicas = self.running_replicas(BATCHED.app)
        after = batch_histograms(url, replicas)
        closes = histogram_delta(closes_before, batch_closes(url, replicas))
        with Sampler(None, None) as sampler:
            unbatched = self.execute(unbatched_run, sampler)
        twin_batching = requests.get(self.metadata_url(UNBATCHED.app), timeout=30).json()
        histogram = dict(sorted(histogram_delta(before, after).items()))
        mean = mean_batch_size(histogram)
        self.summary["batching"] = {
            "app": BATCHED.app,
            "unbatched_app": UNBATCHED.app,
            "unbatched_app_batching_enabled": twin_batching["batching"]["enabled"],
            "replicas": len(after),
            "concurrency": batched.users,
            "max_batch_size": _max_batch_size(url),
            "batch_size_histogram": {str(k): v for k, v in histogram.items()},
            "batches": sum(histogram.values()),
            "mean_batch_size": None if mean is None else round(mean, 2),
            # Why batches closed: full, nothing more on its way, after a linger, or the timeout.
            "closed_by": dict(sorted(closes.items())),
            "rps_batched": batched.rps,
            "rps_unbatched": unbatched.rps,
            "throughput_ratio": _ratio(batched.rps, unbatched.rps),
            "p50_ms_batched": batched.p50_ms,
            "p50_ms_unbatched": unbatched.p50_ms,
            "p99_ms_batched": batched.p99_ms,
            "p99_ms_unbatched": unbatched.p99_ms,
        }
        report.plot_batching(self.out_dir, batched, unbatched, histogram)

    def autoscaling(self, scenario: Scenario) -> None:
        (run,) = scenario.runs
        app = scenario.watch_app or run.target
        low = self._min_replicas(app)
        with (
            Sampler(self.dashboard, app) as sampler,
            StartupWatcher(self.metadata_url(app)) as startups,
        ):
            if sampler.wait_for(lambda s: s.running == low, scenario.settle_timeout_s) is None:
                raise LoadTestError(
                    f"got {sampler.latest_running} RUNNING replicas of {app} before the step; "
                    f"expected {low} within {scenario.settle_timeout_s:.0f} s"
                )
            t0 = sampler.now()
            result = self.execute(run, sampler)
            load_end = sampler.now()
            sampler.wait_for(lambda s: s.running == low, scenario.settle_timeout_s)
        step_up, step_down = _step_edges(result, run)
        high = self._max_replicas(app)
        scale = scaling(sampler.samples, low, step_up, step_down, load_end, max_replicas=high)
        self.summary["autoscaling"] = {
            "app": app,
            "min_replicas": low,
            "max_replicas": high,
            "step_users": run.peak_users,
            **{k: v for k, v in asdict(scale).items() if k not in ("min_replicas", "at_max_at")},
            "final_running": sampler.latest_running,
            "settle_timeout_s": scenario.settle_timeout_s,
            "sample_errors": sampler.errors,
            "replicas_csv": report.write_replicas_csv(self.out_dir, app, sampler.samples, t0).name,
        }
        self.summary["autoscaling"]["host_cores"] = sampler.host_cores
        self.summary["autoscaling"]["host_cpu_cores_to_max"] = host_cpu_between(
            sampler.samples, step_up, scale.at_max_at
        )
        edges = {"step up": step_up, "step down": step_down, "load end": load_end}
        self.summary["autoscaling"]["edges_s"] = {k: round(v - t0, 1) for k, v in edges.items()}
        # Seconds from the step: when each new replica's process started, entered __init__,
        # and was ready (Ray's worker start, imports, the model's download and load).
        self.summary["autoscaling"]["replica_starts"] = startup_breakdown(
            startups.startups, step_up
        )
        report.plot_autoscaling(self.out_dir, result, sampler.samples, t0, edges)

    def peers(self, scenario: Scenario) -> None:
        with Sampler(None, None) as sampler:
            for run in scenario.runs:
                self.execute(run, sampler)

    def untuned(self, scenario: Scenario) -> None:
        """Its replicas follow the load with Ray's default downscale delay (10 min): undeploy
        it after, so they do not hold the cluster's CPUs from whatever runs next."""
        try:
            with Sampler(self.dashboard, UNTUNED.app) as sampler:
                for run in scenario.runs:
                    self.execute(run, sampler)
            counts = [s.running for s in sampler.samples if s.running is not None]
            self.summary["untuned"] = {
                "app": UNTUNED.app,
                "tags": UNTUNED.ray_tags,
                "max_running": max(counts) if counts else None,
                "deployment_config": self._deployment_config(UNTUNED.app),
            }
        finally:
            self.mlray("undeploy", "-q", str(self.config_path), CLUSTER, UNTUNED.app)

    def _deployment_config(self, app: str) -> dict[str, Any]:
        apps = self.dashboard.serve_details().get("applications") or {}
        deployments = (apps.get(app) or {}).get("deployments") or {}
        for deployment in deployments.values():
            return deployment.get("deployment_config") or {}
        raise LoadTestError(f"got no deployment of app {app!r} on {CLUSTER}; expected it deployed")

    def _min_replicas(self, app: str) -> int:
        auto = self._deployment_config(app).get("autoscaling_config") or {}
        if "min_replicas" not in auto:
            raise LoadTestError(f"got no autoscaling_config for {app}; expected min/max replicas")
        return int(auto["min_replicas"])

    def _max_replicas(self, app: str) -> int | None:
        auto = self._deployment_config(app).get("autoscaling_config") or {}
        return auto.get("max_replicas")


def _max_batch_size(url: str) -> int | None:
    return requests.get(url, timeout=30).json()["batching"]["max_batch_size"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def _step_edges(result: RunResult, run: Run) -> tuple[float, float]:
    """Epoch seconds at which Locust's user count first rose above, then fell back to, the
    first stage's (per-second history, so +-1 s)."""
    low = run.stages[0].users
    up = next((h["ts"] for h in result.history if h["users"] > low), None)
    if up is None:
        raise LoadTestError(f"got no step above {low} users in run {run.key}; expected one")
    down = next((h["ts"] for h in result.history if h["ts"] > up and h["users"] <= low), None)
    return float(up), float(down if down is not None else result.history[-1]["ts"])


HANDLERS = {"batching": Session.batching, "peers": Session.peers,
            "autoscaling": Session.autoscaling, "untuned": Session.untuned}  # fmt: skip


def run_all(args: argparse.Namespace) -> int:
    from testbed import Testbed, nodes
    from testbed.training import train_examples

    profile = PROFILES[args.profile]
    chosen = [s for s in scenarios(profile) if s.name in args.scenario]
    out_dir = Path(args.reports) / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    tb = Testbed.from_file()
    tb.prepare()  # the engine's API service, which container_status talks to
    adopted = nodes.container_status(tb.spec.mlflow_container) == "running"
    started = time.monotonic()
    timings: dict[str, float] = {}
    peers = None
    retire: Session | None = None  # set once the suite may have registered its copies
    try:
        tb.up(reuse=True)
        timings["up"] = round(time.monotonic() - started, 1)
        session = Session(out_dir, tb.config_path)
        retire = session
        missing = session.missing_models()
        if missing:
            say(f"training {', '.join(missing)} (not in the registry yet)")
            train_examples(tb, names=missing)
        timings["train"] = round(time.monotonic() - started - timings["up"], 1)
        for load_app in LOAD_APPS:
            session.ensure_copy(load_app)
        if any(s.name == "peers" for s in chosen):
            from loadtests.peers import Peers

            served = session.client.get_model_version_by_alias(SOURCE_MODEL, ALIAS)
            peers = Peers(tb, session.config.tracking_uri, SOURCE_MODEL, served.version, PEERS)
            peers.start()  # their pip installs run while mlray deploys
            session.summary["peer_model"] = peers.model_uri
        mark = time.monotonic()
        session.deploy()
        timings["deploy"] = round(time.monotonic() - mark, 1)
        if peers:
            mark = time.monotonic()
            session.peer_urls = peers.wait_ready()
            timings["peers_ready_wait"] = round(time.monotonic() - mark, 1)
            session.summary["peer_servers"] = peers.describe()
        session.summary = {**_header(args, tb, adopted), **session.summary}
        for scenario in chosen:
            mark = time.monotonic()
            say(f"scenario {scenario.name}: {scenario.notes}")
            HANDLERS[scenario.name](session, scenario)
            timings[scenario.name] = round(time.monotonic() - mark, 1)
    finally:
        if peers:
            peers.stop()
        if not adopted and not args.keep:
            tb.down()
        elif retire is not None:
            retire.retire_copies()
    session.summary["apps"] = goals_mod.by_level(session.results, tuple(a.key for a in LOAD_APPS))
    session.summary["peers"] = goals_mod.by_level(session.results, PEERS)
    session.summary["goals"] = [g.as_dict() for g in goals_mod.evaluate(session.summary)]
    report.plot_peers(out_dir, session.results)  # every app and peer, the untuned app included
    timings["total"] = round(time.monotonic() - started, 1)
    verdicts = gates_mod.evaluate(session.summary)
    session.summary["gates"] = [g.as_dict() for g in verdicts]
    session.summary["passed"] = all(g.passed for g in verdicts)
    session.summary["timings_s"] = timings
    path = report.write_summary(out_dir, session.summary)
    print("\n" + report.table(session.results, session.summary, verdicts))
    print(f"\nreport: {out_dir} (summary.json, *.png, Locust CSV/HTML per run); {path.name} "
          f"passed={session.summary['passed']}; stages (s): {timings}")  # fmt: skip
    return 0 if session.summary["passed"] else 1


def _header(args: argparse.Namespace, tb: Any, adopted: bool) -> dict[str, Any]:
    import importlib.metadata as md

    # "-dirty" when the working tree differs from HEAD: an A/B run of an uncommitted change
    # must not read as a run of the commit.
    sha = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=ROOT,
                         capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "profile": args.profile,
        "scenarios": list(args.scenario),
        "git": sha or None,
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "versions": {
            "locust": md.version("locust"),
            "mlflow-skinny (client)": md.version("mlflow-skinny"),
            "ray (cluster)": tb.spec.ray_version,
        },
        "testbed": {
            "adopted": adopted,
            "pythons": list(tb.spec.python),
            "node_cpus": tb.spec.node.cpus,
            "workers": tb.spec.workers,
        },
        "cluster": CLUSTER,
    }


def common_parser(prog: str, doc: str, profiles: Sequence[str], names: Sequence[str],
                  short_help: str) -> argparse.ArgumentParser:  # fmt: skip
    """--profile, --scenario and --reports, shared by the load and the chaos CLIs."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument(
        "--profile",
        choices=sorted(profiles),
        default="full",
        help=f"short: the CI gate ({short_help}); full: the report (default)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(names),
        help="run only these (repeatable); default: all",
    )
    parser.add_argument(
        "--reports",
        default=str(ROOT / "reports"),
        help="parent directory of the timestamped report (default: reports/)",
    )
    return parser


def guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace, what: str) -> int:
    """Run; a failure to set up (not a failed gate) is one line and exit 2."""
    from mlray.errors import MlrayError
    from testbed.errors import TestbedError

    try:
        return run(args)
    except (LoadTestError, TestbedError, MlrayError) as exc:
        print(f"{what} could not run: {exc}", file=sys.stderr)
        return 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser("python -m loadtests", __doc__, PROFILES, HANDLERS, "about 5 min")
    parser.add_argument("--keep", action="store_true",
                        default=os.environ.get("MLRAY_LOAD_KEEP") == "1",
                        help="leave a testbed this command started running")  # fmt: skip
    args = parser.parse_args(argv)
    args.scenario = args.scenario or list(HANDLERS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return guarded(run_all, parse_args(argv), "load tests")
