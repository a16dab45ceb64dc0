"""The load scenarios as data: which app or peer, what load shape, for how long.

A *run* is one headless Locust process against one target with one load shape. A *scenario*
groups the runs whose figures are compared (batched against unbatched, mlray against its
peers); a run shared by two scenarios is executed once.

Apps (cluster py311); the load suite registers the copies itself, from iris_xgb17's version:
  iris-xgb17-batched    the batched example (max_batch_size 16, 20 ms) with one replica per
                        host core, 0.25 CPU each
  iris-xgb17-unbatched  the same, without batching
  iris-xgb17-untuned    only the required tags: what a user who sets nothing gets
  iris-xgb21            the autoscaling example: 1..4 replicas, target_ongoing_requests 2

Peers: what users would run instead, serving the same model version on the same host
(loadtests/peers.py): `mlflow models serve -w 1`, `mlflow models serve -w <cores>`, MLServer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLUSTER = "py311"
SOURCE_MODEL = "iris_xgb17.staging"  # every load copy serves this example's version
AUTOSCALING_MODEL = "iris_xgb21.staging"
AUTOSCALING_APP = "iris-xgb21"
HIGH_CONCURRENCY = 32
MID_CONCURRENCY = 8
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class LoadApp:
    """A copy of SOURCE_MODEL's version that the suite registers, served with exactly `tags`
    (they replace the source's `ray.*` tags) plus `ray.name`."""

    key: str  # summary.json's apps.<key>
    model: str
    app: str
    tags: tuple[tuple[str, str], ...]

    @property
    def ray_tags(self) -> dict[str, str]:
        return {**dict(self.tags), "ray.name": self.app}


_SMALL = (("ray.ray_actor_options.num_cpus", "0.25"), ("ray.ray_actor_options.memory", "0.5"))
_TUNED = (
    *_SMALL,
    ("ray.ray_actor_options.runtime_env.env_vars", '{"OMP_NUM_THREADS": "1"}'),
    ("ray.num_replicas", str(CORES)),
    ("ray.max_ongoing_requests", "32"),
)
_BATCHING = (
    ("ray.user_config.max_batch_size", "16"),
    ("ray.user_config.batch_wait_timeout_s", "0.02"),
)
BATCHED = LoadApp(
    "batched", "iris_xgb17_batched.staging", "iris-xgb17-batched", (*_TUNED, *_BATCHING)
)
UNBATCHED = LoadApp("unbatched", "iris_xgb17_unbatched.staging", "iris-xgb17-unbatched", _TUNED)
UNTUNED = LoadApp("untuned", "iris_xgb17_untuned.staging", "iris-xgb17-untuned", _SMALL)
LOAD_APPS = (BATCHED, UNBATCHED, UNTUNED)

# Peer target names are summary.json's peers.<name>.
MLFLOW_W1 = "mlflow_serve_w1"
MLFLOW_WN = "mlflow_serve_wN"
MLSERVER = "mlserver"
PEERS = (MLFLOW_W1, MLFLOW_WN, MLSERVER)


@dataclass(frozen=True)
class Stage:
    """Hold `users` concurrent users for `duration_s`, ramping at `spawn_rate` users/s."""

    duration_s: float
    users: int
    spawn_rate: float = 50.0

    def as_locust(self) -> dict[str, float]:
        return {"duration": self.duration_s, "users": self.users, "spawn_rate": self.spawn_rate}


@dataclass(frozen=True)
class Run:
    """One Locust process: `target` is an app name on CLUSTER, or one of PEERS."""

    key: str
    target: str
    stages: tuple[Stage, ...]
    # The client's behaviour on a failed request (locustfile.py): retries of a request that
    # failed with a connection error or a 5xx, and a pause after each failed attempt.
    retries: int = 0
    failure_pause_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)

    @property
    def peak_users(self) -> int:
        return max(s.users for s in self.stages)


@dataclass(frozen=True)
class Scenario:
    name: str
    runs: tuple[Run, ...]
    watch_app: str | None = None  # sample this app's replica count during (and after) the runs
    settle_timeout_s: float = 0.0  # after the last run, keep sampling until back at min replicas
    notes: str = ""


@dataclass(frozen=True)
class Profile:
    """Durations: `short` is the CI gate (about 5 min with setup), `full` the real report."""

    name: str
    high_s: float  # each run at HIGH_CONCURRENCY
    single_s: float  # each run at one user
    step_low_s: float  # autoscaling: before and after the step
    step_high_s: float  # autoscaling: the step itself
    step_users: int
    settle_timeout_s: float


PROFILES = {
    "short": Profile("short", high_s=20, single_s=10, step_low_s=5, step_high_s=30,
                     step_users=24, settle_timeout_s=90),
    "full": Profile("full", high_s=60, single_s=30, step_low_s=15, step_high_s=60,
                    step_users=24, settle_timeout_s=150),
}  # fmt: skip


def constant(users: int, duration_s: float) -> tuple[Stage, ...]:
    return (Stage(duration_s, users),)


def step(low: int, high: int, low_s: float, high_s: float) -> tuple[Stage, ...]:
    """low -> high -> low: the step up, the hold, the step down."""
    return (Stage(low_s, low), Stage(high_s, high, spawn_rate=high), Stage(low_s, low))


def run(target: str, users: int, duration_s: float, key: str | None = None) -> Run:
    """Run keys are "<app key or peer>-c<users>": one per target and concurrency."""
    return Run(f"{key or target}-c{users}", target, constant(users, duration_s))


def scenarios(profile: Profile) -> list[Scenario]:
    c, mid = HIGH_CONCURRENCY, MID_CONCURRENCY
    levels = ((1, profile.single_s), (mid, profile.high_s), (c, profile.high_s))

    def app_runs(app: LoadApp) -> tuple[Run, ...]:
        return tuple(run(app.app, users, s, app.key) for users, s in levels)

    batched, unbatched = app_runs(BATCHED), app_runs(UNBATCHED)
    return [
        Scenario(
            "batching",
            (batched[-1], unbatched[-1]),
            notes=f"{BATCHED.app} (batching, {CORES} replicas) against its unbatched twin, c={c}",
        ),
        Scenario(
            "peers",
            (
                *batched,
                *unbatched,
                *(run(peer, users, s) for peer in PEERS for users, s in (levels[0], levels[2])),
            ),
            notes=f"the batched and unbatched apps at c=1, {mid}, {c}; then the same model "
            f"version under {', '.join(PEERS)} at c=1 and c={c}",
        ),
        Scenario(
            "autoscaling",
            (
                Run(
                    f"{AUTOSCALING_APP}-step",
                    AUTOSCALING_APP,
                    step(2, profile.step_users, profile.step_low_s, profile.step_high_s),
                ),
            ),
            watch_app=AUTOSCALING_APP,
            settle_timeout_s=profile.settle_timeout_s,
            notes=f"{AUTOSCALING_APP} (1..4 replicas) under 2 -> {profile.step_users} -> 2 users",
        ),
        Scenario(
            "untuned",
            app_runs(UNTUNED),
            notes=f"{UNTUNED.app}, only the required tags, at c=1, {mid} and {c}; "
            "undeployed after, so its scaled-up replicas free the cluster",
        ),
    ]


def distinct_runs(chosen: list[Scenario]) -> list[Run]:
    """Every run once, in first-seen order."""
    seen: dict[str, Run] = {}
    for scenario in chosen:
        for run in scenario.runs:
            seen.setdefault(run.key, run)
    return list(seen.values())
