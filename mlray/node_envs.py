"""Build each app's pip environment on every alive node at deploy time.

Ray builds a replica's runtime_env on the node the replica lands on, when it lands there.
For a scale-out onto a node that never ran the model, that is a pip install (tens of
seconds) between the autoscaler's decision and a replica that serves. A deploy-time job
runs one zero-CPU task per (node, app) in the app's exact ``pip`` and ``py_modules``; Ray
caches the environments it builds per node (keyed by their content), so a later replica
with the same runtime_env finds its environment ready.

The task then imports, in a subprocess of that environment, every top-level package pip
put into it, and mlray's serving module. mlray has pip install with ``--no-compile``
(mlray/plan.py: compiling whole stacks is most of a cold install), so the first process on
a node to import pandas, scipy or xgboost byte-compiles what it imports: about 1.3 s of CPU
per replica process measured on the testbed (3.4 s cold against 2.1 s warm for ``import
pandas, xgboost, mlflow.pyfunc``). Here that is paid once per node at deploy time instead of
by each replica a scale-out starts together there.
What a package imports only when the model is loaded stays cold; import failures are
reported but do not fail the deploy (the replica itself is the judge of its imports).

Nodes that join after the deploy (an autoscaler adding workers) are not covered: their
first replica of each model pays the build once, as without mlray. The next deploy covers
them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mlray.ray_api import script_entrypoint
from mlray.serving import model_cache

MARKER = "MLRAY_NODE_ENVS="
ENVS_VAR = "MLRAY_NODE_ENVS"
MODELS_VAR = "MLRAY_NODE_MODELS"
TIMEOUT_VAR = "MLRAY_NODE_ENVS_TIMEOUT_S"

# Top-level entries of a pip runtime_env's site-packages that are the virtualenv's own
# tooling or not meant to be imported.
NOT_IMPORTED = (
    "pip", "setuptools", "pkg_resources", "wheel", "distutils", "tests", "test", "docs",
    "examples", "benchmarks",
)  # fmt: skip
WARM_MODULE = "mlray.serving.app"

# Runs inside the app's environment: import what a replica will, so Python writes the
# bytecode once per node. One module failing does not stop the others. Then, given a model
# (argv[3]), put it in the node's model cache, so a replica started there later loads it
# from disk, not from MLflow.
WARM_CODE = """
import importlib, json, os, shutil, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
names, not_imported = [sys.argv[1]], set(sys.argv[2].split(","))
for entry in sorted(os.listdir(site)):
    name, ext = os.path.splitext(entry)
    is_pkg = os.path.isfile(os.path.join(site, entry, "__init__.py"))
    skip = name.startswith("_") or name in not_imported
    if (is_pkg or ext == ".py") and name.isidentifier() and not skip:
        names.append(name)
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed.append(name + " (" + type(e).__name__ + ")")
# The model into the node's cache (mlray/serving/model_cache.py), then what no app needs out.
spec = json.loads(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
if spec:
    try:
        from mlray.serving import model_cache
        root = model_cache.cache_root()
        got = model_cache.fetch(
            spec["model_uri"], spec.get("run_id"), spec.get("tracking_uri"),
            model_cache.download_from_mlflow, root,
        )
        if got.private_dir:
            shutil.rmtree(got.private_dir, ignore_errors=True)
        model = "not cached: " + got.note
        if got.cached:
            model = "fetched" if got.source == "mlflow" else "already cached"
        if root and got.cached and spec.get("keep") is not None:
            model_cache.prune(root, spec["keep"])
    except BaseException as e:
        model = "error: " + type(e).__name__ + ": " + str(e)[-300:]
    print("model=" + json.dumps(model))
print("failed=" + ",".join(failed))
"""

# Runs on the cluster (its Ray, its Python), as a job driver that asks for no CPU.
SCRIPT = f"""
import json, os, subprocess, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

envs = json.loads(os.environ["{ENVS_VAR}"])
models = json.loads(os.environ.get("{MODELS_VAR}") or "{{}}")
timeout = float(os.environ["{TIMEOUT_VAR}"])
started = time.monotonic()
ray.init(logging_level="ERROR", log_to_driver=False)
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])

@ray.remote(num_cpus=0, max_retries=0)
def ready(deadline, model):
    # A subprocess: the task's worker stays small, and an import that crashes the
    # interpreter costs only the warm-up. It ends before the driver stops waiting, so a
    # slow warm-up never reads as an environment that was not built.
    t0 = time.monotonic()
    env = dict(os.environ)
    if model and model.get("tracking_uri"):
        env["MLFLOW_TRACKING_URI"] = model["tracking_uri"]
    if model and model.get("cache_dir"):
        env["{model_cache.DIR_ENV}"] = model["cache_dir"]
    fetched = None
    try:
        out = subprocess.run(
            [sys.executable, "-c", {WARM_CODE!r}, {WARM_MODULE!r}, {",".join(NOT_IMPORTED)!r},
             json.dumps(model) if model else ""],
            capture_output=True, text=True, timeout=max(deadline - time.time(), 1), env=env,
        )
        # the last lines: imports may print too
        lines = out.stdout.strip().splitlines() or [""]
        last = lines[-1]
        if out.returncode == 0 and last.startswith("failed="):
            failed = last[len("failed="):]
        else:
            failed = "exit " + str(out.returncode) + ": " + out.stderr.strip()[-300:]
        if len(lines) > 1 and lines[-2].startswith("model="):
            fetched = json.loads(lines[-2][len("model="):])
    except subprocess.TimeoutExpired:
        failed = "timed out"
    report = {{"warm_s": round(time.monotonic() - t0, 1), "failed": failed}}
    if model:
        report["model"] = fetched or "not reported (" + failed + ")"
    return report

refs = {{}}
for node in nodes:
    for app, env in envs.items():
        ref = ready.options(
            runtime_env=env,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(time.time() + 0.9 * (timeout - (time.monotonic() - started)), models.get(app))
        refs[ref] = (app, node)
results = {{app: {{}} for app in envs}}
warm = {{app: {{}} for app in envs}}
pending = list(refs)
while pending:
    left = timeout - (time.monotonic() - started)
    if left <= 0:
        break
    done, pending = ray.wait(pending, num_returns=1, timeout=left)
    for ref in done:
        app, node = refs[ref]
        try:
            warm[app][node] = ray.get(ref)
            results[app][node] = "ok"
        except Exception as e:
            results[app][node] = (type(e).__name__ + ": " + str(e))[-600:]
for ref in pending:
    app, node = refs[ref]
    results[app][node] = "not ready within %.0f s" % timeout
    ray.cancel(ref, force=True)
print("{MARKER}" + json.dumps({{
    "nodes": nodes, "results": results, "warm": warm,
    "seconds": round(time.monotonic() - started, 1),
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
    # app -> node id -> {"warm_s": seconds, "failed": "mod (Error),..." or ""}
    warm: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> NodeEnvs:
        return cls(
            nodes=list(report.get("nodes") or []),
            seconds=float(report.get("seconds") or 0.0),
            results={a: dict(r) for a, r in (report.get("results") or {}).items()},
            warm={a: dict(w) for a, w in (report.get("warm") or {}).items()},
        )

    @property
    def failures(self) -> list[str]:
        """One line per (app, node) whose environment could not be built."""
        return _per_node_lines(self.results, lambda why: None if why == "ok" else why)

    @property
    def warm_failures(self) -> list[str]:
        """One line per (app, node) where a package would not import in the warm-up."""
        return _per_node_lines(
            self.warm, lambda w: (w.get("failed") or None) if isinstance(w, Mapping) else None
        )

    @property
    def models(self) -> dict[str, dict[str, str]]:
        """app -> node id -> "fetched", "already cached", or why the model is not cached."""
        return {
            app: {node: str(w["model"]) for node, w in by_node.items()
                  if isinstance(w, Mapping) and "model" in w}
            for app, by_node in self.warm.items()
        }  # fmt: skip

    @property
    def model_failures(self) -> list[str]:
        """One line per (app, node) whose model is not in the node's cache."""
        return _per_node_lines(
            self.models, lambda m: None if m in ("fetched", "already cached") else m
        )

    def summary(self) -> str:
        ok = sum(1 for r in self.results.values() for why in r.values() if why == "ok")
        total = sum(len(r) for r in self.results.values())
        text = (
            f"{ok}/{total} app environment(s) ready on {len(self.nodes)} node(s) "
            f"in {self.seconds:.0f} s"
        )
        models = [m for by_node in self.models.values() for m in by_node.values()]
        if models:
            cached = sum(1 for m in models if m in ("fetched", "already cached"))
            text += f"; {cached}/{len(models)} model copies in the nodes' model cache"
        return text


def _per_node_lines(
    by_app: Mapping[str, Mapping[str, Any]], problem: Callable[[Any], str | None]
) -> list[str]:
    """``<app> on node <id>: <problem>`` for each (app, node) whose entry has a problem."""
    return [
        f"{app} on node {node[:12]}: {why}"
        for app, by_node in sorted(by_app.items())
        for node, entry in sorted(by_node.items())
        if (why := problem(entry)) is not None
    ]


def models_to_fetch(
    apps: list[Mapping[str, Any]], every_app: list[Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """App name -> the model version the job puts in each node's model cache, with ``keep``:
    the cache entries of every app the cluster runs, which pruning leaves alone. Without
    ``every_app`` there is no ``keep``, and the job prunes nothing: it cannot tell what the
    cluster's other apps need.

    An app whose tracking URI carries credentials (``https://user:token@host``) is left out,
    like ``env_vars``: its first replica on each node fills the cache instead.
    """
    keep = None if every_app is None else sorted(k for a in every_app if (k := _cache_key(a)[0]))
    out = {}
    for app in apps:
        key, uri, run_id, tracking = _cache_key(app)
        env_vars = (app.get("runtime_env") or {}).get("env_vars") or {}
        cache_dir = env_vars.get(model_cache.DIR_ENV)  # the replicas' cache, if not the default
        off = cache_dir is not None and str(cache_dir).strip().lower() in model_cache.DISABLED
        if key and not off and not _has_credentials(tracking):
            out[app["name"]] = {
                "model_uri": uri, "run_id": run_id, "tracking_uri": tracking,
                **({"keep": keep} if keep is not None else {}),
                **({"cache_dir": str(cache_dir)} if cache_dir is not None else {}),
            }  # fmt: skip
    return out


def _cache_key(app: Mapping[str, Any]) -> tuple[str | None, str, str | None, str | None]:
    """(cache key, model URI, run id, tracking URI) as the app's replicas will compute them."""
    args = app.get("args") or {}
    env_vars = (app.get("runtime_env") or {}).get("env_vars") or {}
    uri, run_id = str(args.get("model_uri") or ""), args.get("run_id")
    tracking = env_vars.get("MLFLOW_TRACKING_URI")
    run = None if run_id is None else str(run_id)
    return model_cache.entry_key(tracking, uri, run), uri, run, tracking


def _has_credentials(uri: str | None) -> bool:
    return bool(uri) and "@" in (urlsplit(str(uri)).netloc or "")


def job_env(
    envs: Mapping[str, Any], timeout_s: float, models: Mapping[str, Any] | None = None
) -> dict[str, str]:
    return {
        ENVS_VAR: json.dumps(envs, sort_keys=True),
        MODELS_VAR: json.dumps(dict(models or {}), sort_keys=True),
        TIMEOUT_VAR: str(timeout_s),
    }
