"""``mlray export``: the plan ``mlray deploy`` computes, as a KubeRay RayService. No Ray needed.

Deploy's own reads and checks run (registry selection, routing, tags, wheel preflight), with
the cluster's facts taken from config instead of a live probe. The one write is publishing
the serving code to MLflow's artifact store, where every new RayCluster can fetch it.
"""

from __future__ import annotations

from mlray import kuberay
from mlray.config import MlrayConfig
from mlray.deploy import (
    Console,
    Options,
    Report,
    desired_apps,
    prepare_with,
    print_assessment,
    to_yaml,
)
from mlray.plan import plan_deploy
from mlray.ray_api import ClusterFacts
from mlray.serving_package import build_serving_package, publish_serving_package


def export_rayservice(
    cfg: MlrayConfig, cluster_name: str, opts: Options, say: Console
) -> tuple[Report, str]:
    """The RayService manifest (YAML) and the report of how it was made."""
    cluster = cfg.cluster(cluster_name)
    name = kuberay.service_name(cluster_name, cluster)

    def from_config() -> ClusterFacts:
        say(f"Cluster {cluster_name} from config (no live probe: KubeRay makes the cluster)")
        return kuberay.config_facts(cluster)

    report, _ = prepare_with(cfg, cluster_name, opts, say, from_config)
    package = build_serving_package()
    serving_uri = package.http_uri(cfg.cluster_tracking_uri(cluster_name))
    # Every KubeRay upgrade starts from an empty cluster, so the whole config is the plan's.
    plan = plan_deploy(desired_apps(cfg, cluster_name, report, serving_uri), {})
    report.plan = plan
    print_assessment(report, say)
    apps = [a["name"] for a in plan.config["applications"]]
    say(f"RayService {name}: {len(apps)} app(s): {', '.join(apps) or 'none'}")
    # Always MLflow, whatever `serving_code` says: a new RayCluster's GCS holds nothing.
    if publish_serving_package(package, cfg.tracking_uri):
        say(f"Stored serving code in MLflow's artifact store ({len(package.data)} bytes)")
    say(f"Serving code: {serving_uri}")
    manifest = kuberay.rayservice(cluster_name, cluster, to_yaml(plan.config))
    return report, kuberay.manifest_yaml(manifest)
