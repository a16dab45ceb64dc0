"""The Ray node settings mlray's clusters get (testbed nodes, KubeRay export)."""

from __future__ import annotations

from ray import cloudpickle
from ray.serve._private.config import DeploymentConfig

from mlray.cluster_env import RAY_NODE_ENV


def test_serve_replica_metadata_fits_in_an_rpc_reply_on_mlray_nodes() -> None:
    """Serve's controller asks every replica it starts or recovers for its metadata. Above
    Ray's inline limit the answer goes through the replica node's object store, which a new
    head cannot reach for 10-30 s after a crash: the controller then replaced every live
    replica instead of recovering it (head_restart_ft, 2026-12-04). Ray's default (100 KiB)
    is below what Ray 2.60's default DeploymentConfig alone pickles to."""
    limit = int(RAY_NODE_ENV.get("RAY_max_direct_call_object_size", 100 * 1024))
    metadata = len(cloudpickle.dumps(DeploymentConfig()))
    # The replica's answer also carries a DeploymentVersion holding the same config: room
    # for both, and for a user_config or autoscaling policy of a few KB on top.
    assert 2 * metadata + 64 * 1024 <= limit, f"{metadata} bytes of DeploymentConfig"
