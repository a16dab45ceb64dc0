"""The load scenarios as data: which app, what load shape, for how long.

A *run* is one headless Locust process against one target with one load shape. A *scenario*
groups the runs whose figures are compared (batched against unbatched, mlray against
`mlflow models serve`); a run shared by two scenarios is executed once.

Apps come from examples/models.yml (cluster py311):
  iris-xgb17            max_batch_size 16, batch_wait_timeout_s 0.02, 1 replica
  iris-xgb17-unbatched  the same model version without batching (registered by the runner)
  iris-xgb21            autoscaling 1..4, target_ongoing_requests 2, up 2 s, down 10 s
"""

from __future__ import annotations

from dataclasses import dataclass

CLUSTER = "py311"
BATCHED_MODEL = "iris_xgb17.staging"
BATCHED_APP = "iris-xgb17"
UNBATCHED_MODEL = "iris_xgb17_unbatched.staging"
UNBATCHED_APP = "iris-xgb17-unbatched"
AUTOSCALING_MODEL = "iris_xgb21.staging"
AUTOSCALING_APP = "iris-xgb21"
BASELINE = "baseline"  # target name of `mlflow models serve` (serving BATCHED_MODEL)
HIGH_CONCURRENCY = 32


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
    """One Locust process: `target` is an app name on CLUSTER, or BASELINE."""

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


def scenarios(profile: Profile) -> list[Scenario]:
    c = HIGH_CONCURRENCY
    batched_high = Run(f"{BATCHED_APP}-c{c}", BATCHED_APP, constant(c, profile.high_s))
    unbatched_high = Run(f"{UNBATCHED_APP}-c{c}", UNBATCHED_APP, constant(c, profile.high_s))
    return [
        Scenario(
            "batching",
            (batched_high, unbatched_high),
            notes=f"{BATCHED_APP} (batching set by its tags) against its unbatched twin, c={c}",
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
            "baseline",
            (
                Run(f"{BATCHED_APP}-c1", BATCHED_APP, constant(1, profile.single_s)),
                Run(f"{UNBATCHED_APP}-c1", UNBATCHED_APP, constant(1, profile.single_s)),
                Run(f"{BASELINE}-c1", BASELINE, constant(1, profile.single_s)),
                batched_high,
                unbatched_high,
                Run(f"{BASELINE}-c{c}", BASELINE, constant(c, profile.high_s)),
            ),
            notes=f"the same model version under `mlflow models serve --env-manager local -w 1`"
            f" at c=1 and c={c}",
        ),
    ]


def distinct_runs(chosen: list[Scenario]) -> list[Run]:
    """Every run once, in first-seen order."""
    seen: dict[str, Run] = {}
    for scenario in chosen:
        for run in scenario.runs:
            seen.setdefault(run.key, run)
    return list(seen.values())
