"""Build each app's pip environment on every alive node at deploy time.

Ray builds a replica's runtime_env on the node the replica lands on, when it lands there.
For a scale-out onto a node that never ran the model, that is a pip install (tens of
seconds) between the autoscaler's decision and a replica that serves. A deploy-time job
runs one zero-CPU task per (node, app) in the app's exact ``pip`` and ``py_modules``; Ray
caches the environments it builds per node (keyed by their content), so a later replica
with the same runtime_env finds its environment ready.

Nodes that join after the deploy (an autoscaler adding workers) are not covered: their
first replica of each model pays the build once, as without mlray. The next deploy covers
them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlray.ray_api import script_entrypoint

MARKER = "MLRAY_NODE_ENVS="
ENVS_VAR = "MLRAY_NODE_ENVS"
TIMEOUT_VAR = "MLRAY_NODE_ENVS_TIMEOUT_S"

# Runs on the cluster (its Ray, its Python), as a job driver that asks for no CPU.
SCRIPT = f"""
import json, os, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

envs = json.loads(os.environ["{ENVS_VAR}"])
timeout = float(os.environ["{TIMEOUT_VAR}"])
started = time.monotonic()
ray.init(logging_level="ERROR", log_to_driver=False)
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])

@ray.remote(num_cpus=0, max_retries=0)
def ready():
    return True

refs = {{}}
for node in nodes:
    for app, env in envs.items():
        ref = ready.options(
            runtime_env=env,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote()
        refs[ref] = (app, node)
results = {{app: {{}} for app in envs}}
pending = list(refs)
while pending:
    left = timeout - (time.monotonic() - started)
    if left <= 0:
        break
    done, pending = ray.wait(pending, num_returns=1, timeout=left)
    for ref in done:
        app, node = refs[ref]
        try:
            ray.get(ref)
            results[app][node] = "ok"
        except Exception as e:
            results[app][node] = (type(e).__name__ + ": " + str(e))[-600:]
for ref in pending:
    app, node = refs[ref]
    results[app][node] = "not ready within %.0f s" % timeout
    ray.cancel(ref, force=True)
print("{MARKER}" + json.dumps({{
    "nodes": nodes, "results": results, "seconds": round(time.monotonic() - started, 1),
}}))
"""
ENTRYPOINT = script_entrypoint(SCRIPT, needs_ray=True)


def envs_to_prepare(apps: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """App name -> the part of its runtime_env that Ray builds and caches per node.

    ``env_vars`` stay out: they cost nothing to apply, and secrets have no business in a
    job's metadata.
    """
    out = {}
    for app in apps:
        env = app.get("runtime_env") or {}
        part = {k: env[k] for k in ("pip", "py_modules") if env.get(k)}
        if part.get("pip"):
            out[app["name"]] = part
    return out


@dataclass(frozen=True)
class NodeEnvs:
    """What the preparation job reported."""

    nodes: list[str]
    seconds: float
    # app -> node id -> "ok" or why not
    results: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> NodeEnvs:
        return cls(
            nodes=list(report.get("nodes") or []),
            seconds=float(report.get("seconds") or 0.0),
            results={a: dict(r) for a, r in (report.get("results") or {}).items()},
        )

    @property
    def failures(self) -> list[str]:
        """One line per (app, node) whose environment could not be built."""
        return [
            f"{app} on node {node[:12]}: {why}"
            for app, by_node in sorted(self.results.items())
            for node, why in sorted(by_node.items())
            if why != "ok"
        ]

    def summary(self) -> str:
        ok = sum(1 for r in self.results.values() for why in r.values() if why == "ok")
        total = sum(len(r) for r in self.results.values())
        return (
            f"{ok}/{total} app environment(s) ready on {len(self.nodes)} node(s) "
            f"in {self.seconds:.0f} s"
        )


def job_env(envs: Mapping[str, Any], timeout_s: float) -> dict[str, str]:
    return {ENVS_VAR: json.dumps(envs, sort_keys=True), TIMEOUT_VAR: str(timeout_s)}
