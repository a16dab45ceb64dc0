"""The RayService manifest, checked offline against KubeRay's CRD and Kubernetes' own schemas.

No Kubernetes cluster runs here: the CRD schema is vendored from a pinned KubeRay release
(tests/unit/schemas/README.md) and the pod templates are checked with kubernetes-validate's
schemas of a pinned Kubernetes version.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlray import kuberay
from mlray.config import parse_config
from mlray.errors import ConfigError
from mlray.preflight import Target
from testbed.images import DEBIAN_SUITES, ray_tag
from testbed.spec import load_spec
from tests import kuberay_crd
from tests.kuberay_crd import crd_errors

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.33"  # a version KubeRay 1.7 supports, in kubernetes-validate's set
SERVE_YAML = "applications:\n- name: iris\n  route_prefix: /iris\n  import_path: a.b:c\n"
CLUSTER = {"dashboard_url": "http://127.0.0.1:8265", "serve_url": "http://127.0.0.1:8000",
           "python": "3.11"}  # fmt: skip
FULL = {
    "name": "iris-serving",
    "namespace": "ml",
    "labels": {"team": "data", "example.com/tier": "gold"},
    "image": "registry.example.com/mlray-ray:py3.11",
    "glibc": "2.39",
    "head": {"cpu": 4, "memory": "8Gi"},
    "worker": {"cpu": "500m", "memory": "2G", "min_replicas": 0, "max_replicas": 10},
    "service_type": "LoadBalancer",
    "ha_proxy": False,
    "auth_token_secret": "ray-token",
    "upgrade_strategy": "None",
    "env": {"PIP_INDEX_URL": "https://pypi.example.com/simple"},
}


def cluster(kubernetes: dict[str, Any] | None = None, python: str = "3.11"):
    entry = {**CLUSTER, "python": python}
    if kubernetes is not None:
        entry["kubernetes"] = kubernetes
    cfg = parse_config({"mlflow": {"tracking_uri": "http://mlflow:5000"},
                        "clusters": {"py311": entry}})  # fmt: skip
    return cfg.cluster("py311")


@pytest.fixture(scope="module")
def crd_validator():
    return kuberay_crd.crd_validator()


def templates(manifest) -> list[dict[str, Any]]:
    rc = manifest["spec"]["rayClusterConfig"]
    return [rc["headGroupSpec"]["template"]] + [g["template"] for g in rc["workerGroupSpecs"]]


def as_pod_template(template: dict[str, Any]) -> dict[str, Any]:
    """A PodTemplateSpec wrapped as a PodTemplate object, which kubernetes-validate knows."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
            "template": template}  # fmt: skip


@pytest.mark.parametrize("settings", [None, {}, FULL], ids=["no-section", "defaults", "full"])
def test_manifest_passes_kuberays_crd_schema(crd_validator, settings):
    manifest = kuberay.rayservice("py311", cluster(settings), SERVE_YAML)
    assert crd_errors(crd_validator, manifest) == []
    # and the same after a YAML round trip, which is what kubectl reads
    assert crd_errors(crd_validator, yaml.safe_load(kuberay.manifest_yaml(manifest))) == []


def test_the_schema_check_catches_a_misspelled_field(crd_validator):
    manifest = kuberay.rayservice("py311", cluster(), SERVE_YAML)
    bad = copy.deepcopy(manifest)
    bad["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    bad["spec"]["upgradeStrategy"] = {"type": "NewCluster", "clusterUpgradeOption": {}}
    errors = crd_errors(crd_validator, bad)
    assert any("enableInTreeAutoscalling" in e for e in errors)
    assert any("clusterUpgradeOption" in e for e in errors)
    worse = copy.deepcopy(manifest)
    worse["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"] = "1"
    worse["spec"]["rayClusterConfig"]["authOptions"]["mode"] = "tokens"
    assert len(crd_errors(crd_validator, worse)) == 2


@pytest.mark.parametrize("settings", [None, FULL], ids=["defaults", "full"])
def test_pod_templates_are_valid_kubernetes_pod_template_specs(settings):
    for template in templates(kuberay.rayservice("py311", cluster(settings), SERVE_YAML)):
        kubernetes_validate.validate(as_pod_template(template), KUBERNETES_VERSION, strict=True)


def test_the_pod_template_check_catches_a_bad_container():
    template = templates(kuberay.rayservice("py311", cluster(), SERVE_YAML))[0]
    template["spec"]["containers"][0]["env"] = [{"name": "A", "valu": "1"}]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(as_pod_template(template), KUBERNETES_VERSION, strict=True)


def test_defaults_a_user_applies_after_changing_only_the_image():
    m = kuberay.rayservice("py311", cluster(), SERVE_YAML)
    assert (m["apiVersion"], m["kind"], m["metadata"]) == (
        "ray.io/v1",
        "RayService",
        {"name": "py311"},
    )
    spec = m["spec"]
    assert spec["serveConfigV2"] == SERVE_YAML
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    assert spec["serveService"] == {"spec": {"type": "ClusterIP"}}
    rc = spec["rayClusterConfig"]
    assert rc["rayVersion"] == "2.60.0" and rc["enableInTreeAutoscaling"] is True
    # KubeRay makes the token Secret itself and injects it by secretKeyRef: nothing inline.
    assert rc["authOptions"] == {"mode": "token"}
    head = rc["headGroupSpec"]["template"]["spec"]["containers"][0]
    (workers,) = rc["workerGroupSpecs"]
    worker = workers["template"]["spec"]["containers"][0]
    assert head["image"] == worker["image"] == "localhost/mlray-ray:py3.11"
    for c in (head, worker):
        assert c["env"] == [
            {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"},
            {"name": "RAY_max_direct_call_object_size", "value": "1048576"},
        ]
        assert (
            c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
        )
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["serve"] == 8000
    assert worker["ports"] == [{"containerPort": 8000, "name": "serve"}]
    assert (workers["minReplicas"], workers["replicas"], workers["maxReplicas"]) == (1, 1, 4)


def test_every_setting_lands_where_kuberay_reads_it():
    m = kuberay.rayservice("py311", cluster(FULL), SERVE_YAML)
    assert m["metadata"] == {"name": "iris-serving", "namespace": "ml", "labels": FULL["labels"]}
    rc = m["spec"]["rayClusterConfig"]
    assert rc["authOptions"] == {"mode": "token", "secretName": "ray-token"}
    assert m["spec"]["upgradeStrategy"] == {"type": "None"}
    assert m["spec"]["serveService"]["spec"]["type"] == "LoadBalancer"
    head_t, worker_t = templates(m)
    assert head_t["metadata"]["labels"] == worker_t["metadata"]["labels"] == FULL["labels"]
    head, worker = head_t["spec"]["containers"][0], worker_t["spec"]["containers"][0]
    assert head["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    assert worker["resources"]["limits"] == {"cpu": "500m", "memory": "2G"}
    assert head["image"] == FULL["image"]
    # HAProxy off: mlray's node settings and the user's env; a token never appears as a value
    assert head["env"] == [
        {"name": "PIP_INDEX_URL", "value": "https://pypi.example.com/simple"},
        {"name": "RAY_max_direct_call_object_size", "value": "1048576"},
    ]
    (group,) = rc["workerGroupSpecs"]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 0, 10)


def test_auth_disabled_and_no_token_anywhere():
    m = kuberay.rayservice("py311", cluster({"auth": "disabled", "auth_token_secret": "x"}),
                           SERVE_YAML)  # fmt: skip
    assert m["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "disabled"}
    text = kuberay.manifest_yaml(m)
    assert "RAY_AUTH_TOKEN" not in text and "auth_token" not in text


def test_serve_config_v2_is_a_literal_block_that_reads_back_byte_for_byte():
    text = kuberay.manifest_yaml(kuberay.rayservice("py311", cluster(), SERVE_YAML))
    assert "serveConfigV2: |\n    applications:\n" in text
    assert yaml.safe_load(text)["spec"]["serveConfigV2"] == SERVE_YAML


def test_a_cluster_name_kubernetes_would_refuse_needs_kubernetes_name():
    cfg = parse_config({"mlflow": {"tracking_uri": "http://m"},
                        "clusters": {"Py_311": CLUSTER}})  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"got 'Py_311' for the RayService name.*kubernetes\.name"
    ):
        kuberay.rayservice("Py_311", cfg.cluster("Py_311"), SERVE_YAML)


def test_kubernetes_section_errors_name_the_path():
    bad = {"name": "9lives", "namespace": "Prod", "head": {"cpu": "two", "memory": 0},
           "worker": {"min_replicas": 5, "max_replicas": 2}, "labels": {"bad key": "v"},
           "env": {"1A": "x"}, "upgrade_strategy": "Recreate", "auth_token": "inline!"}  # fmt: skip
    with pytest.raises(ConfigError) as e:
        cluster(bad)
    msg = str(e.value)
    for where in ("name", "namespace", "head.cpu", "head.memory", "worker", "labels", "env",
                  "upgrade_strategy"):  # fmt: skip
        assert f"for clusters.py311.kubernetes.{where};" in msg, where
    assert "got unknown key clusters.py311.kubernetes.auth_token" in msg


def test_facts_from_config_give_the_preflight_the_testbed_images_glibc():
    facts = kuberay.config_facts(cluster())
    assert (facts.python_minor, facts.platform, facts.glibc) == ("3.11", "linux_x86_64", (2, 36))
    assert kuberay.config_facts(cluster(python="3.13")).glibc == (2, 41)
    assert kuberay.config_facts(cluster({"glibc": "2.39"})).glibc == (2, 39)
    # a Python the testbed does not build: manylinux2014, as when a probe cannot tell
    assert kuberay.config_facts(cluster(python="3.12")).glibc is None
    assert Target("3.12", "linux_x86_64", None).pip_platforms()[0] == "manylinux_2_17_x86_64"


def test_defaults_follow_the_testbed():
    """The default image and glibc are the testbed's: a change there must change them here."""
    assert set(kuberay.TESTBED_GLIBC) == set(DEBIAN_SUITES)
    suites = {"bullseye": "2.31", "bookworm": "2.36", "trixie": "2.41"}
    assert {py: suites[s] for py, s in DEBIAN_SUITES.items()} == kuberay.TESTBED_GLIBC
    for py in ("3.11", "3.13"):
        assert kuberay.default_image(py) == ray_tag(py)
    assert cluster().kubernetes is None
    assert (
        kuberay.settings(cluster()).ray_version
        == load_spec(ROOT / "testbed" / "testbed.yml").ray_version
    )


@pytest.mark.parametrize("settings", [None, FULL], ids=["defaults", "full"])
def test_kuberays_own_checks_beyond_the_schema(settings):
    """The operator's own checks that the CRD schema cannot express, for what the manifest
    sets (ray-operator/controllers/ray/utils/validation.go at v1.7.0)."""
    m = kuberay.rayservice("py311", cluster(settings), SERVE_YAML)
    name = m["metadata"]["name"]
    assert len(name) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)  # DNS-1035
    rc = m["spec"]["rayClusterConfig"]
    if rc["authOptions"]["mode"] == "token":  # token auth needs rayVersion >= 2.52.0
        assert tuple(map(int, rc["rayVersion"].split("."))) >= (2, 52, 0)
        assert "enableK8sTokenAuth" not in rc["authOptions"]  # refused for a RayService
    head = rc["headGroupSpec"]["template"]["spec"]["containers"][0]
    # the Serve Service is built from the head container's port named `serve`
    assert any(p["name"] == "serve" for p in head["ports"])
    assert "headService" not in rc["headGroupSpec"]
    for group in rc["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert m["spec"]["upgradeStrategy"]["type"] in ("NewCluster", "None")


def test_token_auth_on_a_ray_kuberay_refuses_is_a_config_error():
    with pytest.raises(ConfigError, match=r"ray_version 2\.50\.0 at least 2\.52\.0"):
        cluster({"ray_version": "2.50.0"})
    assert kuberay.settings(cluster({"ray_version": "2.50.0", "auth": "disabled"}))
