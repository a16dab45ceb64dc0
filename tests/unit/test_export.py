"""``mlray export`` against ``mlray deploy``: one plan, two outputs.

The I/O edges (the registry, the Ray dashboard, the MLflow upload) are plain fakes holding
data; everything between them, the CLI included, is the real code.
"""

from __future__ import annotations

import pytest
import yaml

from mlray import cli, deploy, errors, export, preflight
from mlray.ray_api import ClusterFacts
from mlray.registry import ModelVersionInfo

TAGS = {"ray.ray_actor_options.num_cpus": "0.5", "ray.ray_actor_options.memory": "1"}


def model(name, python="3.11.7", **tags):
    return ModelVersionInfo(
        name=f"{name}.staging", version="3", run_id="r1", tags={**TAGS, "ray.name": name, **tags},
        python_version=python, pip=("xgboost==2.1.4", "mlflow==3.17.2"), flavors=("xgboost",),
    )  # fmt: skip


MODELS = [model("iris-a"), model("iris-b", **{"ray.user_config.max_batch_size": "16"}),
          model("iris-c", python="3.13.1")]  # fmt: skip


class FakeRegistry:
    models = MODELS

    def __init__(self, tracking_uri):
        self.tracking_uri = tracking_uri

    def selected(self, selection):
        return list(self.models), []


class EmptyCluster:
    """A Ray dashboard of a cluster that serves nothing yet (what KubeRay starts from)."""

    def __init__(self, cluster, name):
        pass

    def probe(self):
        return ClusterFacts("3.11.7", "x86_64", "Linux", "glibc-2.36", "2.60.0")

    def serve_details(self):
        return {}

    def cluster_resources(self):
        return {"CPU": 64.0, "memory": 256e9}


@pytest.fixture
def world(monkeypatch, tmp_path):
    """config.yml on disk, the fakes in place; returns the config's path and the uploads."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(deploy, "Registry", FakeRegistry)
    monkeypatch.setattr(deploy, "RayDashboard", EmptyCluster)
    monkeypatch.setattr(FakeRegistry, "models", MODELS)
    uploads = []
    monkeypatch.setattr(export, "publish_serving_package",
                        lambda package, uri: uploads.append((package.name, uri)) or True)  # fmt: skip
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({
        "mlflow": {"tracking_uri": "http://127.0.0.1:5000"},
        "clusters": {"py311": {
            "dashboard_url": "http://127.0.0.1:8265", "serve_url": "http://127.0.0.1:8000",
            "python": "3.11", "mlflow_tracking_uri": "http://mlflow.ml.svc:5000",
            "kubernetes": {"namespace": "ml"},
        }},
    }))  # fmt: skip
    return str(path), uploads


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_serve_config_v2_is_deploys_serve_config_byte_for_byte(world, capsys):
    path, uploads = world
    code, dry_run, err = run(capsys, "deploy", path, "py311", "--dry-run", "--no-preflight")
    assert code == 0, err
    serve_config = dry_run.split("\n---\n", 1)[1]
    code, manifest, err = run(capsys, "export", path, "py311", "--format", "rayservice",
                              "--no-preflight")  # fmt: skip
    assert code == 0, err
    rayservice = yaml.safe_load(manifest)
    assert (rayservice["kind"], rayservice["metadata"]) == (
        "RayService",
        {"name": "py311", "namespace": "ml"},
    )
    v2 = rayservice["spec"]["serveConfigV2"]
    assert v2.rstrip() == serve_config.rstrip()
    apps = yaml.safe_load(v2)["applications"]
    assert apps == yaml.safe_load(serve_config)["applications"]
    assert [a["name"] for a in apps] == ["iris-a", "iris-b"]  # iris-c: trained on 3.13
    for app in apps:  # pip envs, and serving code any new cluster can fetch
        assert app["runtime_env"]["pip"]["packages"] == ["xgboost==2.1.4", "mlflow==3.17.2"]
        (uri,) = app["runtime_env"]["py_modules"]
        assert uri.startswith("http://mlflow.ml.svc:5000/api/2.0/mlflow-artifacts/artifacts/")
    assert "gcs://" not in manifest
    # published once, to MLflow as the CLI host reaches it
    assert uploads == [(uri.rsplit("/", 1)[1], "http://127.0.0.1:5000")]
    # stdout holds the manifest alone: `mlray export ... | kubectl apply -f -`
    assert manifest.startswith("apiVersion: ray.io/v1\n")
    assert "Reading registry" in err and "RayService py311: 2 app(s)" in err


def test_a_tag_typo_exits_2_with_deploys_listing_and_publishes_nothing(world, capsys, monkeypatch):
    path, uploads = world
    monkeypatch.setattr(FakeRegistry, "models", [
        model("iris-a", **{"ray.ray_actor_options.num_cpu": "1"}),
        model("iris-b", **{"ray.user_config.max_batch_size": "many"}),
    ])  # fmt: skip
    code, _, deploy_err = run(capsys, "deploy", path, "py311", "--no-preflight")
    assert code == 2
    code, out, export_err = run(capsys, "export", path, "py311", "--no-preflight")
    assert (code, out) == (2, "")
    listing = deploy_err[deploy_err.index("mlray: error:") :]
    assert export_err.endswith(listing)
    assert "2 tag problem(s)" in listing and "num_cpu" in listing and "many" in listing
    assert uploads == []


def test_the_wheel_preflight_targets_the_images_python_and_glibc(world, capsys, monkeypatch):
    path, _ = world
    seen = []

    def check_many(pips, target, use_cache=True):
        seen.append((sorted(pips), target))
        return {label: preflight.PreflightResult(ok=label != "iris-b.staging v3",
                                                 message="no wheel for xgboost")
                for label in pips}  # fmt: skip

    monkeypatch.setattr(preflight, "check_many", check_many)
    code, manifest, err = run(capsys, "export", path, "py311", "-q")
    assert code == 0 and err == ""
    assert seen == [(["iris-a.staging v3", "iris-b.staging v3"],
                     preflight.Target("3.11", "linux_x86_64", (2, 36)))]  # fmt: skip
    apps = yaml.safe_load(yaml.safe_load(manifest)["spec"]["serveConfigV2"])["applications"]
    assert [a["name"] for a in apps] == ["iris-a"]  # refused: not exported


def test_output_file_takes_the_manifest_and_stdout_stays_empty(world, capsys, tmp_path):
    path, _ = world
    target = tmp_path / "rayservice.yaml"
    code, out, err = run(capsys, "export", path, "py311", "--no-preflight", "-o", str(target))
    assert (code, out) == (0, "")
    assert yaml.safe_load(target.read_text())["kind"] == "RayService"
    assert f"Wrote {target}" in err
    code, _, err = run(capsys, "export", path, "py311", "--no-preflight", "-o", str(tmp_path))
    assert code == 2 and "cannot write the manifest to" in err


def test_check_reuses_an_earlier_probe_and_registry_and_still_checks_them(world, monkeypatch):
    """The seam of the chaos suite's fuzz_tags: many checks, one probe (a Ray job of seconds)
    and one registry; the probed facts still have to agree with the config."""
    path, _ = world
    probes = []

    class Cluster(EmptyCluster):
        def probe(self):
            probes.append(1)
            return super().probe()

        def haproxy_actors(self):
            return []

    class Once(FakeRegistry):
        made = 0

        def __init__(self, tracking_uri):
            super().__init__(tracking_uri)
            Once.made += 1

    monkeypatch.setattr(deploy, "RayDashboard", Cluster)
    monkeypatch.setattr(deploy, "Registry", Once)
    cfg = cli.load_config(path)
    opts = deploy.Options(preflight=False)
    facts = ClusterFacts("3.11.7", "x86_64", "Linux", "glibc-2.36", "2.60.0")
    registry = Once("http://127.0.0.1:5000")
    quiet = deploy.Console(quiet=True)
    for _ in range(3):
        report = deploy.check(cfg, "py311", opts, quiet, probed=facts, registry=registry)
        assert [r.model.name for r in report.assessment.ready] == [
            "iris-a.staging",
            "iris-b.staging",
        ]
    assert (probes, Once.made) == ([], 1)
    deploy.check(cfg, "py311", opts, quiet)  # without them: a probe and a registry of its own
    assert (probes, Once.made) == ([1], 2)
    py313 = ClusterFacts("3.13.1", "x86_64", "Linux", "glibc-2.36", "2.60.0")
    with pytest.raises(errors.ConfigError, match=r"live cluster runs Python 3\.13\.1"):
        deploy.check(cfg, "py311", opts, quiet, probed=py313, registry=registry)
