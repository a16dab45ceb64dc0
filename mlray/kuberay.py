"""The plan as a KubeRay ``RayService`` manifest. Pure: config and Serve config in, a dict out.

KubeRay runs the cluster half (pods, autoscaler, Services, upgrades); the Serve half is the
very Serve config ``mlray deploy`` would PUT, as the ``serveConfigV2`` string. Checked against
the CRD of :data:`KUBERAY_VERSION` (``tests/unit/schemas/``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from mlray.cluster_env import RAY_NODE_ENV
from mlray.config import ClusterConfig, KubernetesSettings, PodSize
from mlray.errors import ConfigError
from mlray.ray_api import ClusterFacts

KUBERAY_VERSION = "v1.7.0"
# glibc of the Debian each testbed image is built on (bullseye, bookworm, trixie; see
# testbed/images.py DEBIAN_SUITES): the wheel preflight's target when no live probe tells.
TESTBED_GLIBC = {"3.9": "2.31", "3.11": "2.36", "3.13": "2.41"}
SERVE_PORT = 8000
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": SERVE_PORT}
WORKER_GROUP = "workers"


def settings(cluster: ClusterConfig) -> KubernetesSettings:
    return cluster.kubernetes or KubernetesSettings()


def default_image(python: str) -> str:
    """The testbed's Ray image for a Python (testbed.images.ray_tag), to build and push."""
    return f"localhost/mlray-ray:py{python}"


def config_facts(cluster: ClusterConfig) -> ClusterFacts:
    """What a live probe would report, from config: export reaches no Ray cluster."""
    k8s = settings(cluster)
    glibc = k8s.glibc or TESTBED_GLIBC.get(cluster.python)
    return ClusterFacts(
        python=cluster.python,
        machine=cluster.platform.removeprefix("linux_"),
        system="Linux",
        libc=f"glibc-{glibc}" if glibc else "unknown libc (manylinux2014 assumed)",
        ray=k8s.ray_version,
    )


def service_name(cluster_name: str, cluster: ClusterConfig) -> str:
    name = settings(cluster).name or cluster_name
    if len(name) > 47 or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        raise ConfigError(
            f"got {name!r} for the RayService name (clusters.{cluster_name} sets no "
            "kubernetes.name); expected a DNS-1035 label of at most 47 characters: set "
            f"clusters.{cluster_name}.kubernetes.name"
        )
    return name


def _container(
    name: str, k8s: KubernetesSettings, image: str, size: PodSize, ports: dict[str, int]
) -> dict[str, Any]:
    env = {**RAY_NODE_ENV, **({"RAY_SERVE_ENABLE_HA_PROXY": "1"} if k8s.ha_proxy else {})}
    env.update(k8s.env)
    quantities = {"cpu": size.cpu, "memory": size.memory}
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "ports": [{"containerPort": port, "name": n} for n, port in ports.items()],
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    return container


def _template(k8s: KubernetesSettings, container: dict[str, Any]) -> dict[str, Any]:
    """A ``PodTemplateSpec``."""
    template: dict[str, Any] = {"spec": {"containers": [container]}}
    if k8s.labels:
        template["metadata"] = {"labels": dict(k8s.labels)}
    return template


def rayservice(cluster_name: str, cluster: ClusterConfig, serve_config_v2: str) -> dict[str, Any]:
    """One ``ray.io/v1`` RayService: the cluster half from config, the Serve half as given.

    Token auth goes through KubeRay's ``authOptions``: KubeRay then puts RAY_AUTH_MODE and a
    ``secretKeyRef`` to the token into every Ray container, the autoscaler's included, and
    uses the token for its own dashboard calls. The token is never in the manifest.
    """
    k8s = settings(cluster)
    image = k8s.image or default_image(cluster.python)
    metadata: dict[str, Any] = {"name": service_name(cluster_name, cluster)}
    if k8s.namespace:
        metadata["namespace"] = k8s.namespace
    if k8s.labels:
        metadata["labels"] = dict(k8s.labels)
    auth: dict[str, Any] = {"mode": k8s.auth}
    if k8s.auth == "token" and k8s.auth_token_secret:
        auth["secretName"] = k8s.auth_token_secret
    worker = k8s.worker
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata,
        "spec": {
            "upgradeStrategy": {"type": k8s.upgrade_strategy},
            "serveService": {"spec": {"type": k8s.service_type}},
            "serveConfigV2": serve_config_v2,
            "rayClusterConfig": {
                "rayVersion": k8s.ray_version,
                "enableInTreeAutoscaling": True,
                "authOptions": auth,
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": _template(
                        k8s, _container("ray-head", k8s, image, k8s.head, HEAD_PORTS)
                    ),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": WORKER_GROUP,
                        "replicas": worker.min_replicas,
                        "minReplicas": worker.min_replicas,
                        "maxReplicas": worker.max_replicas,
                        "rayStartParams": {},
                        "template": _template(
                            k8s,
                            _container("ray-worker", k8s, image, worker, {"serve": SERVE_PORT}),
                        ),
                    }
                ],
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so serveConfigV2 reads as the YAML it is."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def manifest_yaml(manifest: dict[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=100)
