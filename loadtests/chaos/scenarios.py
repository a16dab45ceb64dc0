"""The chaos scenarios and profiles, as data: which app, how long, which thresholds."""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_MODEL = "iris_xgb17.staging"  # every chaos app serves a copy of this example's version
TARGET_MODEL = "iris_chaos.staging"  # 2 replicas: the app faults are injected into
TARGET_APP = "iris-chaos"
RACE_MODELS = {"iris_chaos_a.staging": "iris-chaos-a", "iris_chaos_b.staging": "iris-chaos-b"}
PLUGIN_APP = "iris-chaos-p"
FUZZ_MODEL = "iris_chaos_tags.staging"  # fuzz_tags: its tags are generated (alias set only then)
FUZZ_TAGS_CLI = 5  # real `mlray check` runs of fuzz_tags, besides the in-process ones
LOAD_USERS = 8  # steady closed-loop users: enough to see a gap, light for a 2-core host

NAMES = (
    "replica_kill",
    "concurrent_deploy",
    "fuzz_requests",
    "head_restart_redeploy",
    "fuzz_tags",
    "mlflow_outage",
    "worker_kill",
    "head_restart_ft",
)
# What `--profile short` (the CI gate) runs when no --scenario is given: the scenarios that
# take about a minute each. The others are run by name, or all of them with the full profile.
SHORT = ("replica_kill", "concurrent_deploy", "fuzz_requests")


@dataclass(frozen=True)
class Profile:
    """`short` is the CI gate (a few minutes); `full` the documented figures."""

    name: str
    load_s: float  # steady load of replica_kill and fuzz_requests
    fault_at_s: float  # replica_kill: seconds of load before the fault
    race_load_s: float  # concurrent_deploy: load while the writers race
    fuzz_requests: int
    restart_load_s: float  # head_restart_redeploy: load from before the restart to recovery
    fuzz_tags: int  # tag sets checked in-process (plus FUZZ_TAGS_CLI real `mlray check` runs)
    outage_s: float  # mlflow_outage: how long MLflow stays paused
    ft_load_s: float  # head_restart_ft: load from before the head's restart to after recovery


PROFILES = {
    "short": Profile("short", load_s=40, fault_at_s=10, race_load_s=60, fuzz_requests=2000,
                     restart_load_s=200, fuzz_tags=500, outage_s=45, ft_load_s=120),
    "full": Profile("full", load_s=90, fault_at_s=30, race_load_s=120, fuzz_requests=5000,
                    restart_load_s=240, fuzz_tags=1000, outage_s=60, ft_load_s=150),
}  # fmt: skip

# What must hold (issue 12's table).
REPLICA_KILL_MIN_SUCCESS = 0.995
REPLICA_KILL_MAX_RECOVERY_S = 15.0

HEAD_RESTART_MAX_RECOVERY_S = 180.0
MLFLOW_OUTAGE_MIN_SUCCESS = 0.99
WORKER_KILL_MIN_SUCCESS = 0.99
WORKER_KILL_MAX_RECOVERY_S = 60.0  # from the kill to every app RUNNING without the worker
WORKER_KILL_RETRIES = 2  # the load client's retries of a connection error or a 5xx
HEAD_RESTART_FT_MIN_SUCCESS = 0.99  # through the worker's ingress, no client retries
HEAD_RESTART_FT_MAX_RECOVERY_S = 60.0  # from the restart to every node and app whole again
