"""A plan that cannot be placed is refused in seconds, and the cluster is left as it was.

Independent of the other e2e files: it registers its own model (a copy of an example's
version whose tags ask for more CPU than the testbed's py311 cluster has: 2 nodes x 2 CPUs)
and deletes it at the end. Refused before the PUT, it never reaches the cluster, so the
read-only tests on other workers are not disturbed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlray.capacity import TIMES
from tests.e2e.conftest import Deployed, deployed_configs, mlray

pytestmark = pytest.mark.e2e
CLUSTER = "py311"
SOURCE_MODEL = "iris_cat127.staging"  # small environment, already cached on the cluster
BIG = "e2e_toobig.staging"
BIG_APP = "e2e-toobig"
CPUS, REPLICAS = "1.5", "3"  # 4.5 CPU asked on top of the examples, on 4 CPUs in all


def delete_if_exists(client: MlflowClient, name: str) -> None:
    with contextlib.suppress(MlflowException):  # absent: nothing left over to clean
        client.delete_registered_model(name)


@pytest.fixture(scope="module")
def too_big(deployed: Deployed) -> Iterator[str]:
    client = MlflowClient(deployed.tracking_uri)
    delete_if_exists(client, BIG)  # left over by an aborted run
    src = f"models:/{SOURCE_MODEL}/{deployed.models[SOURCE_MODEL]['version']}"
    version = str(client.copy_model_version(src, BIG).version)
    for k, v in {"ray.name": BIG_APP, "ray.ray_actor_options.num_cpus": CPUS,
                 "ray.ray_actor_options.memory": "0.5", "ray.num_replicas": REPLICAS}.items():  # fmt: skip
        client.set_registered_model_tag(BIG, k, v)
    client.set_registered_model_alias(BIG, "staging", version)
    try:
        yield version
    finally:
        delete_if_exists(client, BIG)


def test_a_plan_asking_more_cpu_than_the_cluster_has_is_refused_in_seconds(
    deployed: Deployed, too_big: str
):
    before = deployed_configs(deployed, CLUSTER)
    started = time.monotonic()
    # The copy's requirements are the example's: the wheel preflight answers from its cache.
    proc = mlray(deployed.config_path, "deploy", CLUSTER, timeout=120)
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert took < 10, f"refused after {took:.1f}s:\n{out}"
    assert "the plan does not fit the cluster; nothing was changed" in proc.stderr
    assert f"{BIG_APP} {REPLICAS} {TIMES} {CPUS}" in proc.stderr
    assert "on cluster py311; expected at most the cluster's 4.0 CPU (no autoscaler)" in proc.stderr
    assert "ray.ray_actor_options.num_cpus" in proc.stderr
    assert deployed_configs(deployed, CLUSTER) == before
    assert BIG_APP not in deployed_configs(deployed, CLUSTER)


def test_check_reports_it_as_a_cpu_problem(deployed: Deployed, too_big: str):
    proc = mlray(deployed.config_path, "check", CLUSTER, "-o", "json", timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    problems = json.loads(proc.stdout)["problems"]
    cpu = [p for p in problems if p["tag"] == "CPU"]
    assert len(cpu) == 1 and cpu[0]["expected"] == "at most 4.0 CPU", problems
    assert cpu[0]["got"].endswith(" CPU") and float(cpu[0]["got"].split()[0]) > 4.0
