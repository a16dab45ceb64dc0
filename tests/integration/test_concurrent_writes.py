"""Concurrent writers on one real Ray head: no lost update.

Ray's ``PUT /api/serve/applications/`` replaces the whole Serve config. Three writers (one
``mlray deploy``, two MLflow-plugin ``create`` calls), each adding a different app, read the
cluster and then put at the same instant: a barrier in front of each writer's first PUT holds
them until all have read, the worst case of the race, every time. The PUTs themselves are
real. Every writer that reports success must have its app served at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from mlflow import MlflowClient

from mlray.config import load_config
from mlray.deploy import Console, Options, apply_one, deploy
from mlray.ray_api import RayDashboard
from tests.integration.conftest import Services
from tests.integration.models import base_tags, register_sklearn
from tests.integration.test_deploy import deployed_configs, serve_details

pytestmark = pytest.mark.integration
MODEL = "race-a.staging"
DEPLOYED, PLUGIN_APPS = "race-a", ("race-p1", "race-p2")


@pytest.fixture
def put_barrier() -> Iterator[threading.Barrier]:
    """Hold each writer's first PUT until all three writers have reached theirs (undone
    before the clean-up, whose PUTs must pass)."""
    barrier = threading.Barrier(1 + len(PLUGIN_APPS), timeout=600)
    passed: set[int] = set()
    real_put = RayDashboard.put_serve_config

    def put(self: RayDashboard, config: dict) -> None:
        me = threading.get_ident()
        if me not in passed:
            passed.add(me)
            barrier.wait()
        real_put(self, config)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RayDashboard, "put_serve_config", put)
        yield barrier


@pytest.fixture
def race_model(services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    register_sklearn(services.tracking_uri, MODEL, [], base_tags(DEPLOYED))
    monkeypatch.setenv("MLRAY_CONFIG", str(services.config_path))
    cfg = load_config(services.config_path)
    # A fresh head takes its time to register the job agent every writer's probe needs.
    RayDashboard(cfg.cluster("local"), "local").probe(timeout_s=300)
    yield MODEL
    for app in (DEPLOYED, *PLUGIN_APPS):
        if app in deployed_configs(services):
            apply_one(cfg, "local", app, None, say=Console(quiet=True))
    MlflowClient(services.tracking_uri).delete_registered_model(MODEL)


def test_three_writers_putting_at_once_all_keep_their_apps(
    services: Services, race_model: str, put_barrier: threading.Barrier
) -> None:
    from mlflow.deployments import get_deploy_client

    cfg = load_config(services.config_path)
    clients = [get_deploy_client("mlray:/local") for _ in PLUGIN_APPS]
    writers: dict[str, Callable[[], object]] = {
        DEPLOYED: lambda: deploy(cfg, "local", Options(timeout_s=600), Console(quiet=True)),
        **{
            app: (
                lambda c=c, app=app: c.create_deployment(
                    app, f"models:/{race_model}/1", config={"num_cpus": "0.25", "memory": "0.5"}
                )
            )
            for c, app in zip(clients, PLUGIN_APPS, strict=True)
        },
    }
    errors: dict[str, BaseException] = {}

    def run(name: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as e:  # reported below, per writer
            errors[name] = e
            put_barrier.abort()

    threads = [threading.Thread(target=run, args=item) for item in writers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert not errors, f"writers failed: {errors}"
    apps = serve_details(services)["applications"]
    served = {n for n, a in apps.items() if a.get("deployed_app_config")}
    lost = set(writers) - served
    assert not lost, f"reported deployed by their writers, but not in the Serve config: {lost}"
    assert all(apps[n]["status"] == "RUNNING" for n in writers), {
        n: apps[n]["status"] for n in writers
    }
