"""What the server side did under load: replica counts over time and the batch sizes run.

Replica counts come from Ray's REST API (the dashboard's `GET /api/serve/applications/`),
batch sizes from each replica's `/metadata` counters, which count every batch that mlray's
batch queue handed to the model since the replica started.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil
import requests

from mlray.ray_api import RayDashboard

HOST_CPU_MIN_INTERVAL_S = 0.2


@dataclass(frozen=True)
class Sample:
    t: float  # wall-clock time (epoch seconds), the clock of Locust's history CSV
    running: int | None  # RUNNING replicas of the watched app (None: not watching)
    target: int | None  # the autoscaler's target replica count, as Ray reports it
    client_cpu: float | None  # Locust process CPU, percent of one core
    host_cpu: float | None = None  # this host's busy CPU, in cores (testbed and client share it)


def replica_counts(details: Mapping, app: str) -> tuple[int, int | None]:
    """(RUNNING replicas, target replicas) of `app` in a serve details document."""
    application = (details.get("applications") or {}).get(app) or {}
    running, target = 0, None
    for deployment in (application.get("deployments") or {}).values():
        running += sum(1 for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING")
        if deployment.get("target_num_replicas") is not None:
            target = (target or 0) + int(deployment["target_num_replicas"])
    return running, target


class Sampler(threading.Thread):
    """Samples, every `interval_s`, the watched app's replicas and the load client's CPU.

    A context manager. Samples carry wall-clock times, the clock of Locust's per-second
    history, so load steps and replica changes are read off one timeline.
    """

    def __init__(
        self, dashboard: RayDashboard | None, app: str | None, interval_s: float = 0.5
    ) -> None:
        super().__init__(daemon=True, name="mlray-load-sampler")
        self.dashboard = dashboard
        self.app = app
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.errors = 0
        self._client: psutil.Process | None = None
        self._halt = threading.Event()
        self.host_cores = psutil.cpu_count() or 1
        self._host_last: tuple[float, float] | None = None

    @staticmethod
    def now() -> float:
        return time.time()

    def watch_client(self, pid: int | None) -> None:
        """The Locust process whose CPU is sampled (None: stop sampling CPU)."""
        self._client = psutil.Process(pid) if pid else None
        if self._client:
            self._client.cpu_percent(None)  # the first call only starts the measurement

    @property
    def latest_running(self) -> int | None:
        return self.samples[-1].running if self.samples else None

    def _host_busy_cores(self) -> float | None:
        """Busy cores since the previous call (this sampler's own baseline, not psutil's
        module-wide one, so two samplers never shorten each other's interval)."""
        times, now = psutil.cpu_times(), time.monotonic()
        # Linux counts guest time inside user and nice already.
        not_busy = sum(getattr(times, f, 0.0) for f in ("idle", "iowait", "guest", "guest_nice"))
        busy = sum(times) - not_busy
        last = self._host_last
        if last is not None and now - last[1] < HOST_CPU_MIN_INTERVAL_S:
            return None  # too short for the kernel's 10 ms ticks: keep the older baseline
        self._host_last = (busy, now)
        if last is None:
            return None
        return round(max(0.0, busy - last[0]) / (now - last[1]), 2)

    def run(self) -> None:
        self._host_busy_cores()  # the baseline
        while not self._halt.is_set():
            running = target = cpu = None
            if self.dashboard and self.app:
                try:
                    running, target = replica_counts(self.dashboard.serve_details(), self.app)
                except Exception:  # one missed sample is a gap in the plot, not a failed run
                    self.errors += 1
            client = self._client
            if client is not None:
                try:
                    cpu = client.cpu_percent(None)
                except psutil.Error:
                    self._client = None
            host = self._host_busy_cores()
            self.samples.append(Sample(round(self.now(), 3), running, target, cpu, host))
            self._halt.wait(self.interval_s)

    def wait_for(self, predicate, timeout_s: float) -> float | None:
        """The time of the first new sample for which `predicate` holds, or None."""
        deadline = time.monotonic() + timeout_s
        seen = len(self.samples)
        while time.monotonic() < deadline:
            for sample in self.samples[seen:]:
                if predicate(sample):
                    return sample.t
            seen = len(self.samples)
            time.sleep(self.interval_s / 2)
        return None

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(timeout=10)


def batch_histograms(metadata_url: str, replicas: int, tries: int = 40) -> dict[str, Counter[int]]:
    """{replica id: batch size -> batches} read from `/metadata`, until every one of the
    `replicas` replicas has answered (requests are spread over replicas by Serve's router)."""
    return _batching_counters(metadata_url, replicas, "batch_size_histogram", int, tries)


def batch_closes(metadata_url: str, replicas: int, tries: int = 40) -> dict[str, Counter[str]]:
    """{replica id: why a batch closed (full, nothing_on_the_way, linger, timeout) -> batches}."""
    return _batching_counters(metadata_url, replicas, "closed_by", str, tries)


def _batching_counters(
    metadata_url: str, replicas: int, field: str, key: Callable[[Any], Any], tries: int
) -> dict[str, Counter[Any]]:
    seen: dict[str, Counter[Any]] = {}
    for _ in range(tries):
        meta = requests.get(metadata_url, timeout=30).json()
        replica = meta.get("replica") or {}
        name = str(replica.get("replica_id") or replica.get("pid"))
        counts = (meta.get("batching") or {}).get(field) or {}
        seen[name] = Counter({key(k): int(n) for k, n in counts.items()})
        if len(seen) >= replicas:
            break
    return seen


def histogram_delta(
    before: Mapping[str, Counter[Any]], after: Mapping[str, Counter[Any]]
) -> Counter[Any]:
    """Batches run between two readings, over all replicas (a new replica starts at zero)."""
    total: Counter[Any] = Counter()
    for replica, counts in after.items():
        total.update(counts - before.get(replica, Counter()))
    return total


def mean_batch_size(histogram: Mapping[int, int]) -> float | None:
    batches = sum(histogram.values())
    return sum(size * n for size, n in histogram.items()) / batches if batches else None


def host_cpu_between(samples: list[Sample], start: float, end: float | None) -> float | None:
    """Mean busy cores of this host over samples in [start, end]; None without any.

    A scale-out on a host whose cores the load already fills is bound by CPU, not by mlray
    or Ray: the report says so next to the time it took."""
    if end is None:
        return None
    busy = [s.host_cpu for s in samples if start <= s.t <= end and s.host_cpu is not None]
    return round(sum(busy) / len(busy), 2) if busy else None


@dataclass(frozen=True)
class Scaling:
    """Replica counts around a step load, read off the sampled timeline."""

    min_replicas: int
    max_running: int
    scale_up_decision_s: float | None  # step up -> first target above the one at the step
    scale_up_s: float | None  # step up -> first sample with more than min RUNNING
    time_to_max_s: float | None  # step up -> first sample with max_replicas RUNNING
    scale_down_s: float | None  # step down -> first later sample back at min RUNNING
    scale_down_after_load_end_s: float | None  # Locust stopped -> back at min (0: already)
    returned_to_min: bool
    at_max_at: float | None = None  # when max_replicas were first RUNNING (the samples' clock)


def scaling(
    samples: list[Sample],
    min_replicas: int,
    step_up: float,
    step_down: float,
    load_end: float,
    max_replicas: int | None = None,
) -> Scaling:
    """Times to scale from the step's edges; `returned_to_min` needs a scale-up first."""
    counted = [s for s in samples if s.running is not None]
    during = [s for s in counted if step_up <= s.t <= load_end]
    max_running = max((s.running or 0 for s in during), default=0)
    up_at = next((s.t for s in during if (s.running or 0) > min_replicas), None)
    at_max = None
    if max_replicas is not None:
        at_max = next((s.t for s in during if (s.running or 0) >= max_replicas), None)
    # The autoscaler may already want more than min at the low load before the step; the
    # step's decision is the first target above whatever it was at the step.
    before = [s.target for s in counted if s.t < step_up and s.target is not None]
    target_at_step = max(min_replicas, before[-1] if before else min_replicas)
    decided_at = next((s.t for s in during if (s.target or 0) > target_at_step), None)
    back_at = None
    if up_at is not None:
        back_at = next(
            (s.t for s in counted if s.t >= max(up_at, step_down) and s.running == min_replicas),
            None,
        )
    return Scaling(
        min_replicas=min_replicas,
        max_running=max_running,
        scale_up_decision_s=None if decided_at is None else round(decided_at - step_up, 1),
        scale_up_s=None if up_at is None else round(up_at - step_up, 1),
        time_to_max_s=None if at_max is None else round(at_max - step_up, 1),
        scale_down_s=None if back_at is None else round(back_at - step_down, 1),
        scale_down_after_load_end_s=None if back_at is None
        else round(max(0.0, back_at - load_end), 1),
        returned_to_min=back_at is not None,
        at_max_at=at_max,
    )  # fmt: skip


class StartupWatcher(threading.Thread):
    """Polls an app's `/metadata` every `interval_s` and keeps each replica's `startup`
    timeline (mlray.serving.app.startup_timeline), keyed by replica id: where a scale-out's
    seconds go. Requests are spread over replicas, so every replica is seen within a few
    polls. A context manager."""

    def __init__(self, metadata_url: str, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True, name="mlray-load-startups")
        self.url = metadata_url
        self.interval_s = interval_s
        self.startups: dict[str, dict] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                meta = requests.get(self.url, timeout=5).json()
                identity = meta.get("replica") or {}
                replica = str(identity.get("replica_id"))
                if meta.get("startup"):
                    # the host says which node it started on: replicas that start side by
                    # side on one node share its CPU, which is most of a slow scale-out
                    startup = {**meta["startup"], "host": identity.get("hostname")}
                    self.startups.setdefault(replica, startup)
            except (requests.RequestException, ValueError):
                pass  # a missed poll under load; the next one will do
            self._halt.wait(self.interval_s)

    def __enter__(self) -> StartupWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(timeout=10)


def startup_breakdown(startups: Mapping[str, Mapping], since: float) -> list[dict]:
    """The replicas whose process started after `since` (the load step), in the order they
    became ready, each step in seconds from `since`: process start, __init__ entered, ready;
    and how long the import of mlflow, the download and the load took, and the CPU it used."""
    rows = []
    for replica, s in startups.items():
        started = s.get("process_started_at")
        if started is None or started < since:
            continue
        rows.append(
            {
                "replica": replica,
                "host": s.get("host"),
                "process_started_s": round(started - since, 1),
                "init_s": round(s["init_at"] - since, 1),
                "ready_s": round(s["ready_at"] - since, 1),
                "process_to_init_s": s.get("process_to_init_s"),
                "import_mlflow_s": s.get("import_mlflow_s"),
                "download_s": s.get("download_s"),
                "model_from": s.get("model_from"),
                "load_s": s.get("load_s"),
                # CPU the process used from its start to ready, that CPU as a share of one
                # core over the start, and how long the start's path waited for a CPU.
                "cpu_s": s.get("cpu_s"),
                "cpu_share": s.get("cpu_share"),
                "cpu_wait_s": s.get("cpu_wait_s"),  # ready to run, no CPU free
            }
        )
    return sorted(rows, key=lambda r: r["ready_s"])
