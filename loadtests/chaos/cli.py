"""`python -m loadtests.chaos` (`nox -s chaos`): faults under steady load on a running testbed.

    python -m loadtests.chaos [--profile short|full] [--scenario replica_kill ...]

Needs a running testbed (`nox -s up`; trains the examples if missing). Registers copies of
an example model as the chaos apps, deploys them with `mlray deploy`, runs each scenario
under Locust, and writes reports/<timestamp>/chaos.json plus one PNG per scenario.
Exit 0: every scenario held. 1: one did not (the report says which). 2: could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from loadtests.chaos import faults, fuzz, gates, report, tagfuzz
from loadtests.chaos.scenarios import (
    FUZZ_MODEL,
    FUZZ_TAGS_CLI,
    LOAD_USERS,
    NAMES,
    PLUGIN_APP,
    PROFILES,
    RACE_MODELS,
    SHORT,
    SOURCE_MODEL,
    TARGET_APP,
    TARGET_MODEL,
    WORKER_KILL_RETRIES,
    Profile,
)
from loadtests.cli import ALIAS, Session, common_parser, guarded
from loadtests.errors import LoadTestError
from loadtests.observe import Sampler
from loadtests.runner import RunResult, run_locust, say
from loadtests.scenarios import CLUSTER, Run, constant
from mlray.config import Selection
from mlray.errors import ClusterError
from mlray.registry import ModelVersionInfo, Registry, Unselected
from testbed.engine import run_podman

if TYPE_CHECKING:
    from testbed import Testbed

COPIED_FROM = "mlray.chaos.copied_from"  # version tag of each chaos copy
IRIS_PROBE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
SMALL = {
    "ray.ray_actor_options.num_cpus": "0.25",
    "ray.ray_actor_options.memory": "0.25",
    "ray.num_replicas": "1",
}
TARGET_TAGS = {
    "ray.name": TARGET_APP,
    "ray.ray_actor_options.num_cpus": "0.25",
    "ray.ray_actor_options.memory": "0.5",
    "ray.num_replicas": "2",
    "ray.max_ongoing_requests": "32",
    "ray.ray_actor_options.runtime_env.env_vars": '{"OMP_NUM_THREADS": "1"}',
}


@dataclass
class Load:
    """A steady Locust run in a thread, the app's replicas sampled alongside."""

    sampler: Sampler
    thread: threading.Thread
    box: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> RunResult:
        if "result" not in self.box:
            raise LoadTestError(f"got no Locust result: {self.box.get('error')}")
        return self.box["result"]


@dataclass
class CliChecks:
    tags: list[dict[str, str]] = field(default_factory=list)
    runs: list[tuple[int, str]] = field(default_factory=list)  # (exit code, output)
    refused: int = 0  # tag sets MLflow would not store


class FuzzedRegistry(Registry):
    """The registry read once; each `selected()` gives `model` the tags of the moment.

    The rest of mlray's check (tag parsing, assessment, preflight, plan, fit) runs as the CLI
    runs it: only the MLflow round trips are saved, and the 5 real CLI runs cover them."""

    def __init__(self, tracking_uri: str, selection: Selection, model: str) -> None:
        super().__init__(tracking_uri)
        self.model = model
        self.read = super().selected(selection)
        if not any(m.name == model for m in self.read[0]):
            raise LoadTestError(f"got no {model} among the selected models; expected it")
        self.tags: dict[str, str] = {}

    def selected(self, selection: Selection) -> tuple[list[ModelVersionInfo], list[Unselected]]:
        models, unselected = self.read
        return [
            replace(m, tags=dict(self.tags)) if m.name == self.model else m for m in models
        ], list(unselected)


class Chaos:
    """The scenarios against one testbed: its dashboard, registry and containers."""

    def __init__(self, session: Session, testbed: Testbed, python: str, profile: Profile) -> None:
        self.s = session
        self.tb = testbed
        self.python = python
        spec = testbed.spec
        self.head = spec.head_container(python)
        self.workers = [spec.worker_container(python, i + 1) for i in range(spec.workers)]
        self.containers = [self.head, *self.workers]
        self.profile = profile
        self.out_dir = session.out_dir
        self.figures: dict[str, dict[str, Any]] = {}

    # ---- set-up ----------------------------------------------------------------------------

    def copy_model(self, target: str, tags: dict[str, str], alias: bool) -> str:
        """SOURCE_MODEL's served version registered again as `target` with exactly `tags`
        (the copy's own ray.* version tags removed); its version."""
        client = self.s.client
        origin_mv = client.get_model_version_by_alias(SOURCE_MODEL, ALIAS)
        origin = f"{SOURCE_MODEL}/{origin_mv.version}"
        found = [
            mv
            for mv in client.search_model_versions(f"name='{target}'")
            if (mv.tags or {}).get(COPIED_FROM) == origin
        ]
        mv = found[0] if found else client.copy_model_version(f"models:/{origin}", target)
        if not found:
            client.set_model_version_tag(target, mv.version, COPIED_FROM, origin)
            say(f"registered {target} v{mv.version}, a copy of {origin}")
        for key in mv.tags or {}:
            if key.startswith("ray."):
                client.delete_model_version_tag(target, mv.version, key)
        have = client.get_registered_model(target).tags or {}
        for key in have.keys() - tags.keys():
            if key.startswith("ray."):
                client.delete_registered_model_tag(target, key)
        for key, value in tags.items():
            if have.get(key) != value:
                client.set_registered_model_tag(target, key, value)
        if alias:
            client.set_registered_model_alias(target, ALIAS, mv.version)
        return str(mv.version)

    def setup(self) -> None:
        self.copy_model(TARGET_MODEL, TARGET_TAGS, alias=True)
        for model, app in RACE_MODELS.items():
            self.copy_model(model, {**SMALL, "ray.name": app}, alias=False)
        self.s.deploy()
        self.wait_replicas(TARGET_APP, 2, 120)

    def details(self) -> dict[str, Any]:
        return self.s.dashboard.serve_details()

    def wait_replicas(self, app: str, count: int, timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            ids = faults.running_identities(self.details(), app)
            if len(ids) == count:
                return ids
            if time.monotonic() > deadline:
                raise LoadTestError(f"got {len(ids)} RUNNING replicas of {app}; expected {count}")
            time.sleep(1)

    @contextlib.contextmanager
    def load(
        self,
        name: str,
        app: str,
        duration_s: float,
        retries: int = 0,
        pause_s: float = 0.0,
        host: str | None = None,
    ) -> Iterator[Load]:
        """Steady load; `retries` and `pause_s`: the client's conduct on a failed request
        (loadtests/locustfile.py); `host`: another Serve ingress than the head's."""
        run = Run(name, app, constant(LOAD_USERS, duration_s), retries, pause_s)
        head_host, path = self.s.target(run)
        host = host or head_host
        with Sampler(self.s.dashboard, app) as sampler:
            load = Load(sampler, threading.Thread(target=lambda: None))

            def drive() -> None:
                try:
                    load.box["result"] = run_locust(run, host, path, self.out_dir, sampler)
                except Exception as e:  # reported by Load.result
                    load.box["error"] = e

            load.thread = threading.Thread(target=drive, name=f"locust-{name}", daemon=True)
            load.thread.start()
            yield load
            load.thread.join()

    # ---- scenarios -------------------------------------------------------------------------

    def replica_kill(self) -> gates.Outcome:
        before = self.wait_replicas(TARGET_APP, 2, 60)
        with self.load("replica_kill", TARGET_APP, self.profile.load_s) as load:
            time.sleep(self.profile.fault_at_s)
            victim = next(
                r
                for r in faults.replicas(self.details(), TARGET_APP)
                if r.get("state") == "RUNNING"
            )
            fault_at = time.time()
            where = faults.kill_replica(self.containers, TARGET_APP, int(victim["pid"]))
            say(f"replica_kill: SIGKILL {victim['replica_id']} (pid {victim['pid']}) in {where}")
            back_at = self._replaced(str(victim["replica_id"]), 2, 90)
        result = load.result
        recovery = None if back_at is None else round(back_at - fault_at, 1)
        marks = {"SIGKILL": fault_at, **({"replacement RUNNING": back_at} if back_at else {})}
        report.plot(self.out_dir, "replica_kill", result, load.sampler.samples, marks)
        self.figures["replica_kill"] = {
            "replicas_before": before,
            "killed_in": where,
            **result.figures(),
        }
        return gates.replica_kill(result.requests, result.failures, recovery)

    def _replaced(self, victim: str, count: int, timeout_s: float) -> float | None:
        """When `count` replicas, none of them `victim`, were RUNNING again (epoch s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ids = faults.running_identities(self.details(), TARGET_APP)
            if len(ids) == count and victim not in ids:
                return time.time()
            time.sleep(0.25)
        return None

    def concurrent_deploy(self) -> gates.Outcome:
        config = str(self.s.config_path)
        racing = (*RACE_MODELS.values(), PLUGIN_APP)
        stale = [a for a in racing if a in (self.details().get("applications") or {})]
        if stale:  # a previous run's: the race must add them again
            self._mlray("undeploy", config, CLUSTER, *stale)
        for model in RACE_MODELS:
            self.copy_model(model, {**SMALL, "ray.name": RACE_MODELS[model]}, alias=True)
        source = self.s.client.get_model_version_by_alias(SOURCE_MODEL, ALIAS).version
        mlray = [sys.executable, "-m", "mlray", "deploy", config, CLUSTER]
        plugin = [
            sys.executable,
            "-m",
            "mlflow",
            "deployments",
            "create",
            "-t",
            f"mlray:/{CLUSTER}",
            "--name",
            PLUGIN_APP,
            "-m",
            f"models:/{SOURCE_MODEL}/{source}",
            *[f"-C{k.rsplit('.', 1)[-1]}={v}" for k, v in SMALL.items()],
        ]
        commands = {
            "deploy-1": (mlray, tuple(RACE_MODELS.values())),
            "deploy-2": (mlray, tuple(RACE_MODELS.values())),
            "plugin-create": (plugin, (PLUGIN_APP,)),
        }
        with self.load("concurrent_deploy", TARGET_APP, self.profile.race_load_s) as load:
            time.sleep(5)
            started = time.time()
            writers = self._race(commands)
            served, done_at = self._served(racing, 90)
        result = load.result
        converged = None if done_at is None else round(done_at - started, 1)
        report.plot(
            self.out_dir,
            "concurrent_deploy",
            result,
            load.sampler.samples,
            {"writers start": started, **({"all served": done_at} if done_at else {})},
        )
        self.figures["concurrent_deploy"] = {
            "writers": {w.name: {"exit": w.returncode, "apps": w.apps} for w in writers},
            # how often a writer found the config moved under it (before or after its PUT)
            "merges": sum(
                w.output.count("merging") + w.output.count("putting them again") for w in writers
            ),
            "served": served,
            **result.figures(),
        }
        return gates.concurrent_deploy(writers, served, result.requests, result.failures, converged)

    def _race(self, commands: dict[str, tuple[list[str], tuple[str, ...]]]) -> list[gates.Writer]:
        """Start every writer at once; their exit codes and output once all have ended."""
        env = {**os.environ, "MLRAY_CONFIG": str(self.s.config_path), "MLRAY_PLAIN": "1"}
        procs = {}
        for name, (cmd, _) in commands.items():
            log = (self.out_dir / f"concurrent_deploy.{name}.log").open("w")
            procs[name] = (
                subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT),
                log,
            )
        writers = []
        for name, (proc, log) in procs.items():
            code = proc.wait(timeout=900)
            log.close()
            output = Path(log.name).read_text(errors="replace")
            say(f"concurrent_deploy: {name} exited {code}: {output.strip().splitlines()[-1:]}")
            writers.append(gates.Writer(name, code, commands[name][1], output))
        return writers

    def _served(self, apps: Sequence[str], timeout_s: float) -> tuple[dict[str, str], float | None]:
        """Each app's status (absent: not in the config), once all run or at the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.details().get("applications") or {}
            served = {
                a: (current.get(a) or {}).get("status", "absent")
                for a in apps
                if (current.get(a) or {}).get("deployed_app_config")
            }
            if all(served.get(a) == "RUNNING" for a in apps):
                return served, time.time()
            if time.monotonic() > deadline:
                return served, None
            time.sleep(1)

    def fuzz_requests(self) -> gates.Outcome:
        before = self.wait_replicas(TARGET_APP, 2, 60)
        url = f"{self.s.cluster.serve_url}/{TARGET_APP}/invocations"
        with self.load("fuzz_requests", TARGET_APP, self.profile.load_s) as load:
            time.sleep(3)
            started = time.time()
            found = fuzz.run(url, self.profile.fuzz_requests)
            ended = time.time()
        after = faults.running_identities(self.details(), TARGET_APP)
        result = load.result
        report.plot(
            self.out_dir,
            "fuzz_requests",
            result,
            load.sampler.samples,
            {"fuzz starts": started, "fuzz ends": ended},
        )
        self.figures["fuzz_requests"] = {
            "statuses": {str(k): v for k, v in sorted(found.statuses.items())},
            "transport_errors": found.transport_errors,
            "examples_5xx": found.examples,
            "fuzz_s": round(ended - started, 1),
            **result.figures(),
        }
        return gates.fuzz_requests(
            found.statuses,
            found.transport_errors,
            before,
            after,
            result.requests,
            result.failures,
            self.profile.fuzz_requests,
        )

    def head_restart_redeploy(self) -> gates.Outcome:
        """Restart the cluster's containers (a new Ray session: empty GCS, no apps), then
        `mlray deploy`; recovery is from the restart to every app RUNNING again."""
        if self.tb.gcs_ft_of(self.python) != "none":
            say("head_restart_redeploy: recreating the cluster without GCS fault tolerance")
            self.tb.recreate_cluster(self.python, "none")
            self._mlray("deploy", str(self.s.config_path), CLUSTER)
        self.wait_replicas(TARGET_APP, 2, 60)
        apps = self._registry_apps()
        before = self._answers(apps)
        config = str(self.s.config_path)
        # A refused connection fails at once: the pause keeps 8 users from spinning on it.
        with self.load(
            "head_restart_redeploy", TARGET_APP, self.profile.restart_load_s, pause_s=0.5
        ) as load:
            time.sleep(self.profile.fault_at_s)
            fault_at = time.time()
            say(f"head_restart_redeploy: restarting {', '.join(self.containers)}")
            self.tb.restart_cluster(self.python)
            nodes_back = time.time()
            left = sorted(self.details().get("applications") or {})
            say(f"head_restart_redeploy: nodes back in {nodes_back - fault_at:.1f} s; apps: {left}")
            code = self._mlray_logged("head_restart_redeploy.deploy", "deploy", config, CLUSTER)
            served, back_at = self._served(apps, 120)
            after = self._answers(apps)
        result = load.result
        wrong = _changed(apps, before, after)
        recovery = None if back_at is None else round(back_at - fault_at, 1)
        marks = {"restart": fault_at, "nodes back": nodes_back}
        report.plot(
            self.out_dir,
            "head_restart_redeploy",
            result,
            load.sampler.samples,
            {**marks, **({"all apps RUNNING": back_at} if back_at else {})},
        )
        self.figures["head_restart_redeploy"] = {
            "apps": apps,
            "apps_after_restart": left,
            "nodes_back_s": round(nodes_back - fault_at, 1),
            "deploy_exit": code,
            "served": served,
            **result.figures(),
        }
        return gates.head_restart_redeploy(
            code, apps, served, wrong, recovery, result.requests, result.failures
        )

    def head_restart_ft(self) -> gates.Outcome:
        """Restart only the head while its GCS state lives in Redis. Users call the worker's
        own ingress; the worker's replicas keep serving while the head is away, and Ray
        brings the rest back from Redis: no `mlray deploy`."""
        config = str(self.s.config_path)
        if self.tb.gcs_ft_of(self.python) != "redis":
            say("head_restart_ft: recreating the cluster with GCS fault tolerance (Redis)")
            self.tb.recreate_cluster(self.python, "redis")
            self._mlray("deploy", config, CLUSTER)
        self.wait_replicas(TARGET_APP, 2, 120)
        self._spread(TARGET_APP)
        apps = self._registry_apps()
        before = self._answers(apps)
        worker_url = self.tb.cluster(self.python).worker_serve_urls[0]
        with self.load(
            "head_restart_ft", TARGET_APP, self.profile.ft_load_s, pause_s=0.5, host=worker_url
        ) as load:
            time.sleep(self.profile.fault_at_s)
            details = self.details()
            on_head = faults.replicas_on_head(details, apps)
            off_head = faults.replicas_on_other_nodes(details, apps)
            on_worker = off_head[TARGET_APP]
            fault_at = time.time()
            say(f"head_restart_ft: killing {self.head}; {TARGET_APP} on the worker: {on_worker}")
            restart = self.tb.restart_head(self.python)
            nodes_back = time.time()
            say(f"head_restart_ft: {restart} (kill, start, every node alive)")
            replaced_at = self._whole_at(on_head, 120)
            served, _ = self._served(apps, 5)
            lost = faults.replaced(self.details(), off_head)
            # Whole means the head's own ingress answers again too (it starts after the
            # controller is back): users of that address see the cluster whole only then.
            after, answering_at = self._answering(apps, before, 60)
        result = load.result
        wrong = _changed(apps, before, after)
        whole_at = None if None in (replaced_at, answering_at) else max(replaced_at, answering_at)
        recovery = None if whole_at is None else round(whole_at - fault_at, 1)
        marks = {"head restart": fault_at, "nodes back": nodes_back}
        report.plot(
            self.out_dir,
            "head_restart_ft",
            result,
            load.sampler.samples,
            {**marks, **({"every app whole": whole_at} if whole_at else {})},
        )
        self.figures["head_restart_ft"] = {
            "ingress": "worker",
            "replicas_on_worker": on_worker,
            "replicas_on_head": on_head,
            "replicas_off_head": off_head,
            "replaced_off_head": lost,
            "restart": restart,
            "replaced_s": None if replaced_at is None else round(replaced_at - fault_at, 1),
            "head_ingress_s": None if answering_at is None else round(answering_at - fault_at, 1),
            "served": served,
            **result.figures(),
        }
        return gates.head_restart_ft(
            apps, served, wrong, on_worker, lost, recovery, result.requests, result.failures
        )

    def fuzz_tags(self) -> gates.Outcome:
        """Generated tag sets on FUZZ_MODEL through mlray's check: in-process with one probe
        and one registry read (the CLI's code from the tags on), then a few real CLI runs
        with the tags set in MLflow. The Serve config's fingerprint before and after."""
        from mlray.config import load_config
        from mlray.deploy import Console, Options, check
        from mlray.writes import fingerprint

        before = fingerprint(self.details())
        self.copy_model(FUZZ_MODEL, tagfuzz.BASE, alias=True)
        # the checks take about 90 s under load on a 2-core host: the load covers them
        with self.load("fuzz_tags", TARGET_APP, self.profile.load_s + 60) as running:
            try:
                started_at = time.time()
                cfg = load_config(self.s.config_path)
                registry = FuzzedRegistry(cfg.tracking_uri, cfg.selection, FUZZ_MODEL)
                facts = self.s.dashboard.probe()  # the one probe job
                out = io.StringIO()

                def one(tags: Mapping[str, str]) -> None:
                    registry.tags = dict(tags)
                    out.seek(0)
                    out.truncate()
                    check(cfg, CLUSTER, Options(), Console(out), probed=facts, registry=registry)

                sets = tagfuzz.generate(self.profile.fuzz_tags)
                started = time.monotonic()
                found = tagfuzz.run(one, sets)
                in_process_s = time.monotonic() - started
                say(f"fuzz_tags: {found.total} checks in-process, {in_process_s:.0f} s")
                cli_at = time.time()
                cli = self._check_cli(FUZZ_TAGS_CLI)
                ended_at = time.time()
            finally:  # deploys after this one skip the model (no alias)
                self.s.client.delete_registered_model_alias(FUZZ_MODEL, ALIAS)
                self.copy_model(FUZZ_MODEL, tagfuzz.BASE, alias=False)
        after = fingerprint(self.details())
        result = running.result
        marks = {"in-process checks": started_at, "CLI checks": cli_at, "done": ended_at}
        report.plot(self.out_dir, "fuzz_tags", result, running.sampler.samples, marks)
        self.figures["fuzz_tags"] = {
            "in_process": {str(k): v for k, v in sorted(found.exits.items())},
            "in_process_s": round(in_process_s, 1),
            "messages": {str(k): v for k, v in found.first_message.items()},
            "tracebacks": found.bugs[:3],
            "cli": [{"tags": t, "exit": c} for t, (c, _) in zip(cli.tags, cli.runs, strict=True)],
            "cli_refused_by_mlflow": cli.refused,
            "serve_config_fingerprint": [before, after],
            **result.figures(),
        }
        return gates.fuzz_tags(
            found.exits,
            found.silent,
            found.bugs,
            cli.runs,
            (before, after),
            self.profile.fuzz_tags,
            FUZZ_TAGS_CLI,
        )

    def _check_cli(self, count: int) -> CliChecks:
        """`count` real `mlray check` runs, each with a generated tag set on FUZZ_MODEL in
        MLflow (sets MLflow itself refuses to store are counted and skipped)."""
        from mlflow.exceptions import MlflowException

        done = CliChecks()
        config = str(self.s.config_path)
        drawn = tagfuzz.generate(count * 20)  # Hypothesis starts small: take a spread
        for tags in random.Random(12).sample(drawn, len(drawn)):
            if len(done.runs) == count:
                break
            try:
                self.copy_model(FUZZ_MODEL, tags, alias=True)
            except MlflowException:
                done.refused += 1
                continue
            log = f"fuzz_tags.check-{len(done.runs) + 1}"
            code = self._mlray_logged(log, "check", config, CLUSTER)
            done.tags.append(tags)
            done.runs.append((code, (self.out_dir / f"{log}.log").read_text(errors="replace")))
        return done

    def mlflow_outage(self) -> gates.Outcome:
        """Pause MLflow, then ask for one more replica of TARGET_APP with a PUT of the Serve
        config as it runs (the cluster's own API: no MLflow needed to ask). The deploy put the
        model in every node's model cache, so the new replica must start from there while
        MLflow is still paused; the two running ones keep serving."""
        self.wait_replicas(TARGET_APP, 2, 60)
        mlflow = self.tb.spec.mlflow_container
        config = str(self.s.config_path)
        outage = self.profile.outage_s
        with self.load("mlflow_outage", TARGET_APP, self.profile.fault_at_s + outage + 60) as load:
            time.sleep(self.profile.fault_at_s)
            self.tb.stop_mlflow()  # `podman pause`: frozen, same address
            paused_at = time.time()
            say(f"mlflow_outage: paused {mlflow}; asking for 3 replicas of {TARGET_APP}")
            try:
                self.s.dashboard.put_serve_config(
                    faults.with_replicas(self.details(), TARGET_APP, 3)
                )
                asked_at = time.time()
                ready_at = self._replicas_at(TARGET_APP, 3, outage - (asked_at - paused_at))
                time.sleep(max(0.0, outage - (time.time() - paused_at)))  # the whole outage
                status = self._mlray_output("mlflow_outage.status", "status", config, CLUSTER)
            finally:
                back = time.time()
                self.tb.start_mlflow()  # unpause, and wait until it answers
            say(f"mlflow_outage: unpaused {mlflow} after {back - paused_at:.0f} s")
            late_at = None if ready_at else self._replicas_at(TARGET_APP, 3, 180)
        result = load.result
        start_s = None if ready_at is None else round(ready_at - asked_at, 1)
        late_s = None if late_at is None else round(late_at - back, 1)
        report.plot(
            self.out_dir,
            "mlflow_outage",
            result,
            load.sampler.samples,
            {
                "MLflow paused, 3 replicas asked": paused_at,
                "MLflow back": back,
                **({"3rd replica RUNNING": ready_at or late_at} if ready_at or late_at else {}),
            },
        )
        self.s.dashboard.put_serve_config(faults.with_replicas(self.details(), TARGET_APP, 2))
        self.wait_replicas(TARGET_APP, 2, 120)  # as the registry's tags say, for what follows
        self.figures["mlflow_outage"] = {
            "outage_s": round(back - paused_at, 1),
            "started_during_outage_s": start_s,
            "started_after_mlflow_back_s": late_s,
            "status_during_outage": status,
            **result.figures(),
        }
        return gates.mlflow_outage(
            result.requests, result.failures, round(back - paused_at, 1), start_s, late_s
        )

    def worker_kill(self) -> gates.Outcome:
        """`podman kill` the cluster's worker under load; Ray replaces its replicas on the
        head; then the worker's container is started again and must rejoin as a Ray node."""
        from testbed import nodes

        self.wait_replicas(TARGET_APP, 2, 60)
        self._spread(TARGET_APP)
        apps = self._registry_apps()
        worker = self.workers[0]
        with self.load(
            "worker_kill",
            TARGET_APP,
            self.profile.load_s + 60,
            retries=WORKER_KILL_RETRIES,
            pause_s=0.5,
        ) as load:
            time.sleep(self.profile.fault_at_s)
            gone = faults.replicas_on_other_nodes(self.details(), apps)
            fault_at = time.time()
            run_podman("kill", worker, timeout=60)
            say(f"worker_kill: killed {worker}; its replicas: {gone}")
            back_at = self._whole_at(gone, 120)
        result = load.result
        recovery = None if back_at is None else round(back_at - fault_at, 1)
        started = time.time()
        info = self.tb.start_cluster(self.python)
        alive = nodes.alive_ray_nodes(info.dashboard_url, self.tb.auth_headers)
        rejoin_s = round(time.time() - started, 1)
        say(f"worker_kill: started {worker} again; {alive} alive Ray nodes after {rejoin_s} s")
        prepared_s = self._prepare_nodes()
        report.plot(
            self.out_dir,
            "worker_kill",
            result,
            load.sampler.samples,
            {"podman kill": fault_at, **({"every app RUNNING": back_at} if back_at else {})},
        )
        self.figures["worker_kill"] = {
            "killed": worker,
            "replicas_on_worker": gone,
            "rejoin_s": rejoin_s,
            "alive_nodes": alive,
            "prepare_rejoined_node_s": prepared_s,
            **result.figures(),
        }
        return gates.worker_kill(
            result.requests,
            result.failures,
            result.retried,
            sum(len(ids) for ids in gone.values()),
            recovery,
            alive,
            len(self.containers),
        )

    def _spread(self, app: str, attempts: int = 3) -> None:
        """Have a replica of `app` on the worker. After an earlier worker_kill every replica
        runs on the head; Serve spreads a deployment's replicas over nodes when it starts
        one, so SIGKILL one on the head and let Serve place its replacement."""
        for _ in range(attempts):
            details = self.details()
            if faults.replicas_on_other_nodes(details, [app])[app]:
                return
            victim = next(r for r in faults.replicas(details, app) if r.get("state") == "RUNNING")
            faults.kill_replica(self.containers, app, int(victim["pid"]))
            say(f"worker_kill: no {app} replica on the worker; killed {victim['replica_id']}")
            if self._replaced(str(victim["replica_id"]), 2, 90) is None:
                raise LoadTestError(f"got no replacement of {victim['replica_id']} in 90 s")

    def _prepare_nodes(self) -> float:
        """Build every app's environment on every node, as a deploy does: a node that joined
        since has none, and its first replica would wait for pip (the next scenario's)."""
        from mlray.deploy import Console, finish_node_envs, start_node_envs
        from mlray.plan import current_apps

        started = time.monotonic()
        apps = list(current_apps(self.details()).values())
        job = start_node_envs(self.s.dashboard, apps, 600, Console(quiet=True), every_app=apps)
        done = None if job is None else finish_node_envs(self.s.dashboard, job, Console())
        say(f"prepared every node: {done.summary() if done else 'nothing to do'}")
        return round(time.monotonic() - started, 1)

    def _whole_at(self, gone: Mapping[str, Sequence[str]], timeout_s: float) -> float | None:
        """When every app ran whole again without the `gone` replicas (epoch s), or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if faults.whole_without(self.details(), gone):
                    return time.time()
            except ClusterError:  # the dashboard may stall while Ray marks the node dead
                pass
            time.sleep(0.5)
        return None

    def _replicas_at(self, app: str, count: int, timeout_s: float) -> float | None:
        """When `app` had `count` RUNNING replicas (epoch s), or None at the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(faults.running_identities(self.details(), app)) >= count:
                return time.time()
            time.sleep(0.5)
        return None

    def _registry_apps(self) -> list[str]:
        """The apps `mlray deploy` made from the registry (a plugin's app is not re-made)."""
        from mlray.plan import SOURCE_REGISTRY, app_source

        current = self.details().get("applications") or {}
        return sorted(
            n
            for n, a in current.items()
            if app_source(a.get("deployed_app_config")) == SOURCE_REGISTRY
        )

    def _answers(self, apps: Sequence[str]) -> dict[str, str]:
        """Each app's answer to one fixed iris request: its predictions, or what failed."""
        body = {"dataframe_split": {"columns": fuzz.COLUMNS, "data": IRIS_PROBE}}
        out = {}
        for app in apps:
            url = f"{self.s.cluster.serve_url}/{app}/invocations"
            try:
                resp = requests.post(url, json=body, timeout=30)
                out[app] = (
                    json.dumps(resp.json().get("predictions"))
                    if resp.status_code == 200
                    else f"HTTP {resp.status_code}"
                )
            except (requests.RequestException, ValueError, AttributeError) as e:
                out[app] = type(e).__name__
        return out

    def _answering(
        self, apps: Sequence[str], expected: Mapping[str, str], timeout_s: float
    ) -> tuple[dict[str, str], float | None]:
        """Each app's answer through the head's ingress, once all match `expected` (and when,
        epoch s) or at the timeout (None)."""
        deadline = time.monotonic() + timeout_s
        while True:
            answers = self._answers(apps)
            if all(answers.get(a) == expected.get(a) for a in apps):
                return answers, time.time()
            if time.monotonic() > deadline:
                return answers, None
            time.sleep(0.5)

    def _mlray_output(self, log_name: str, *args: str) -> str:
        """`mlray *args`'s output (also in <report>/<log_name>.log)."""
        self._mlray_logged(log_name, *args)
        return (self.out_dir / f"{log_name}.log").read_text(errors="replace")

    def _mlray_logged(self, log_name: str, *args: str) -> int:
        """Run `mlray *args`, its output in <report>/<log_name>.log; its exit code."""
        path = self.out_dir / f"{log_name}.log"
        say(f"$ mlray {' '.join(args)}  (output: {path.name})")
        env = {**os.environ, "MLRAY_PLAIN": "1"}
        with path.open("w") as log:
            code = subprocess.run(
                [sys.executable, "-m", "mlray", *args], env=env, stdout=log, stderr=log
            ).returncode
        lines = path.read_text(errors="replace").strip().splitlines()
        say(f"mlray {args[0]} exited {code}: {lines[-1:]}")
        return code

    def _mlray(self, *args: str) -> None:
        say(f"$ mlray {' '.join(args)}")
        if subprocess.run([sys.executable, "-m", "mlray", *args]).returncode != 0:
            raise LoadTestError(f"`mlray {' '.join(args)}` failed; see above")


def _changed(
    apps: Sequence[str], before: Mapping[str, str], after: Mapping[str, str]
) -> dict[str, str]:
    """{app: "before -> after"} for each app whose answer to the fixed request changed."""
    return {a: f"{before[a]} -> {after.get(a)}" for a in apps if after.get(a) != before[a]}


HANDLERS: dict[str, Callable[[Chaos], gates.Outcome]] = {
    "replica_kill": Chaos.replica_kill,
    "concurrent_deploy": Chaos.concurrent_deploy,
    "fuzz_requests": Chaos.fuzz_requests,
    "head_restart_redeploy": Chaos.head_restart_redeploy,
    "fuzz_tags": Chaos.fuzz_tags,
    "mlflow_outage": Chaos.mlflow_outage,
    "worker_kill": Chaos.worker_kill,
    "head_restart_ft": Chaos.head_restart_ft,
}


def run_all(args: argparse.Namespace) -> int:
    from testbed import Testbed, nodes
    from testbed.training import train_examples

    started = time.monotonic()
    tb = Testbed.from_file()
    tb.prepare()
    if nodes.container_status(tb.spec.mlflow_container) != "running":
        raise LoadTestError("got no running testbed; expected one (`nox -s up`, then this)")
    python = next((p for p in tb.spec.python if tb.spec.cluster_name(p) == CLUSTER), None)
    if python is None:
        raise LoadTestError(f"got pythons {tb.spec.python}; expected the {CLUSTER} cluster")
    out_dir = Path(args.reports) / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    session = Session(out_dir, tb.config_path)
    missing = session.missing_models()
    if missing:
        say(f"training {', '.join(missing)} (not in the registry yet)")
        train_examples(tb, names=missing)
    chaos = Chaos(session, tb, python, PROFILES[args.profile])
    chaos.setup()
    seconds = {"setup": round(time.monotonic() - started, 1)}
    outcomes: dict[str, gates.Outcome] = {}
    for name in args.scenario:
        mark = time.monotonic()
        say(f"scenario {name}")
        outcomes[name] = HANDLERS[name](chaos)
        seconds[name] = round(time.monotonic() - mark, 1)
        say(f"{name}: {'PASS' if outcomes[name].passed else 'FAIL'}: {outcomes[name].detail}")
    seconds["total"] = round(time.monotonic() - started, 1)
    path = report.write_json(
        out_dir,
        outcomes,
        {
            "profile": args.profile,
            "cluster": CLUSTER,
            "app": TARGET_APP,
            "started_at": time.strftime(
                "%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - seconds["total"])
            ),
            "timings_s": seconds,
            "figures": chaos.figures,
        },
    )
    print("\n" + report.table(outcomes, seconds))
    print(f"\nreport: {path} (and one PNG per scenario); stages (s): {seconds}")
    return 0 if all(o.passed for o in outcomes.values()) else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser("python -m loadtests.chaos", __doc__, PROFILES, NAMES, "a few minutes")
    args = parser.parse_args(argv)
    args.scenario = args.scenario or list(SHORT if args.profile == "short" else NAMES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return guarded(run_all, parse_args(argv), "chaos scenarios")
