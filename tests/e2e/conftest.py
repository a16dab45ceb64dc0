"""The e2e testbed: brought up once per test run, shared by every xdist worker.

The first worker to take the lock brings the testbed up (or adopts a running one with
``MLRAY_E2E_REUSE=1``), trains and registers the examples and deploys both clusters with
``mlray deploy``; the others wait on the lock and read what it wrote. The pytest process
that owns the run (the xdist controller, or the only process with ``-n 0``) tears it down by
label at the end, unless the run reused a testbed or ``MLRAY_E2E_KEEP=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from tests import serve_state

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".testbed" / "e2e"
READY = STATE / "ready.json"
OWNED = STATE / "owned-by-this-run"
TIMINGS = STATE / "timings.json"


@dataclass(frozen=True)
class Deployed:
    """What the e2e tests need to know about the running, deployed testbed."""

    config_path: str
    tracking_uri: str
    clusters: dict[str, dict]  # name -> config entry (dashboard_url, serve_url, python, ...)
    deploy_output: dict[str, str]  # cluster -> stdout+stderr of the first `mlray deploy`
    models: dict[str, dict]  # registered name -> {version, cluster, app, python, flavor}

    def cluster_of(self, app: str) -> str:
        for m in self.models.values():
            if m["app"] == app:
                return m["cluster"]
        raise KeyError(app)

    def serve_url(self, app: str) -> str:
        return self.clusters[self.cluster_of(app)]["serve_url"] + f"/{app}"


def mlray(config: str, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    """Run the real CLI, as a user would."""
    cmd = [sys.executable, "-m", "mlray", args[0], config, *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _stage(timings: dict[str, float], name: str, fn, *a, **kw):
    started = time.monotonic()
    try:
        return fn(*a, **kw)
    finally:
        timings[name] = round(time.monotonic() - started, 1)
        print(f"[e2e] stage {name}: {timings[name]:.0f} s", file=sys.stderr, flush=True)


def _bring_up() -> Deployed:
    from testbed import Testbed
    from testbed.training import train_examples

    timings: dict[str, float] = {}
    reuse = os.environ.get("MLRAY_E2E_REUSE") == "1"
    tb = Testbed.from_file()
    _stage(timings, "images", tb.build_images)
    _stage(timings, "up", tb.up, reuse=reuse)
    if not reuse:
        OWNED.write_text(str(os.getpid()))
    outcomes = _stage(timings, "train", train_examples, tb)
    cfg = yaml.safe_load(Path(tb.config_path).read_text())
    outputs: dict[str, str] = {}

    def deploy_all() -> None:
        for cluster in cfg["clusters"]:
            proc = mlray(str(tb.config_path), "deploy", cluster)
            outputs[cluster] = proc.stdout + proc.stderr
            print(outputs[cluster], file=sys.stderr, flush=True)
            if proc.returncode != 0:
                raise RuntimeError(f"mlray deploy {cluster} exited {proc.returncode}")

    _stage(timings, "deploy", deploy_all)
    TIMINGS.write_text(json.dumps(timings, indent=2))
    python_to_cluster = {c["python"]: name for name, c in cfg["clusters"].items()}
    models = {}
    for o in outcomes:
        if o.action == "skipped":
            continue
        from testbed.training import load_catalog

        m = load_catalog().get(o.name)
        models[o.name] = {
            "version": o.version,
            "cluster": python_to_cluster[m.python],
            "app": m.tags["ray.name"],
            "python": o.python_version,
            "flavor": m.flavor,
            "intended_python": getattr(m, "intended_python", None),
        }
    return Deployed(str(tb.config_path), cfg["mlflow"]["tracking_uri"], cfg["clusters"],
                    outputs, models)  # fmt: skip


@pytest.fixture(scope="session")
def deployed() -> Deployed:
    STATE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(STATE / "bringup.lock"), timeout=3600):
        if READY.exists():
            return Deployed(**json.loads(READY.read_text()))
        d = _bring_up()
        READY.write_text(json.dumps(asdict(d)))
        return d


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller: a fresh run
        for f in (READY, OWNED):
            f.unlink(missing_ok=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # workers share the testbed; the controller tears it down
    READY.unlink(missing_ok=True)
    if TIMINGS.exists():
        print(f"\n[e2e] stage timings (s): {TIMINGS.read_text()}", file=sys.stderr)
    if OWNED.exists() and os.environ.get("MLRAY_E2E_KEEP") != "1":
        OWNED.unlink()
        from testbed import Testbed

        Testbed.from_file().down()


REFERENCE_ARTIFACT = "reference/iris_test_predictions.json"  # written by examples/train.py


def reference(d: Deployed, model_name: str) -> dict:
    """The iris test set and what `mlflow.pyfunc.load_model(models:/...).predict` returned for
    it, computed at training time inside the model's own environment (its cluster's image and
    its pinned requirements): the only place conflicting library versions can all be loaded."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(d.tracking_uri)
    mv = client.get_model_version(model_name, d.models[model_name]["version"])
    path = mlflow.artifacts.download_artifacts(
        run_id=mv.run_id, artifact_path=REFERENCE_ARTIFACT, tracking_uri=d.tracking_uri
    )
    return json.loads(Path(path).read_text())


def serve_details(d: Deployed, cluster: str) -> dict:
    """Through mlray's own client: the testbed's dashboards want the token config.yml names."""
    from mlray.config import load_config
    from mlray.ray_api import RayDashboard

    return RayDashboard(load_config(d.config_path).cluster(cluster), cluster).serve_details()


def replica_ids(d: Deployed, cluster: str) -> dict[str, list[str]]:
    return serve_state.replica_ids(serve_details(d, cluster))


def deployed_configs(d: Deployed, cluster: str) -> dict[str, dict]:
    return serve_state.deployed_configs(serve_details(d, cluster))
