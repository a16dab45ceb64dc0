"""The Testbed: one MLflow server plus one Ray cluster per Python version on one network.

Usable from nox (`python -m testbed up`) and from pytest fixtures:

    with Testbed.from_file() as tb:          # up() ... down()
        config = tb.config_path              # mlray config.yml with the real addresses
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from mlray.cluster_env import RAY_NODE_ENV
from testbed import doctor, engine, images, nodes
from testbed.errors import TestbedError
from testbed.spec import GCS_FT_MODES, LABEL, TestbedSpec, load_spec
from testbed.trust import Trust, resolve

RAY_GCS_PORT = 6379
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
MLFLOW_PORT = 5000
REDIS_PORT = 6379
GCS_FT_LABEL = "io.mlray.testbed.gcs-ft"
# With fault tolerance, how long a worker's raylet keeps trying to reach a restarted head's
# GCS before it exits (Ray's default 60 s; a head restart on a busy 2-core host takes ~20 s).
GCS_RECONNECT_TIMEOUT_S = 300
PIP_CACHE_PATH = "/root/.cache/pip"
SPEC_LABEL = "io.mlray.testbed.spec"
# `idle: lean` (the default): Ray's and Serve's own settings, read at `ray start`, that make an
# idle node poll and report less often. The demo-state testbed used 40.9% of a core with Ray's
# defaults and the classic proxy, 31.4% with these, the flags below and HAProxy
# (docs/performance.md, "Idle CPU of the testbed").
LEAN_IDLE_ENV = {
    # The Serve controller's reconcile loop (Ray's default 0.1 s). Deploys, health checks and
    # autoscaling decisions run on it; 0.5 s is invisible next to a replica's start.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    # How often Serve's cached request metrics are exported to Ray's metrics (default 100 ms).
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # The dashboard agent's node report: CPU, memory, disk per process (default 5 s).
    "REPORTER_UPDATE_INTERVAL_MS": "30000",
    # Each raylet's resource report to the GCS (default 100 ms); the GCS's view of free
    # resources for placing replicas lags by at most 1 s.
    "RAY_raylet_report_resources_period_milliseconds": "1000",
    # The event-loop lag histogram each replica and proxy records (default every 5 s).
    "RAY_SERVE_EVENT_LOOP_MONITORING_INTERVAL_S": "30",
}
# `ray start` flags of `idle: lean`. The log monitor tails every log file of the node (it
# polls each open file every 0.1 s, 0.3-1.4% of a core per node measured idle) only to
# print worker output in connected drivers' consoles. The testbed's drivers are Ray jobs
# (mlray's node-env job prints its own result, log_to_driver off) and REST calls; every
# log file stays on the node (`podman exec ... /tmp/ray/session_latest/logs`) and in the
# dashboard.
LEAN_RAY_START_ARGS = ("--include-log-monitor=False",)
STOP_TIMEOUT = 10
NODE_RESTARTS = 1  # see nodes.wait_until: Ray's 30 s registration limit on busy hosts


@dataclass(frozen=True)
class ClusterInfo:
    """Addresses of one running Ray cluster."""

    name: str
    python: str
    head: str
    workers: tuple[str, ...]
    dashboard_url: str
    serve_url: str
    worker_serve_urls: tuple[str, ...] = ()


class Testbed:
    """Bring the described topology up and down; everything carries the testbed label."""

    __test__ = False

    def __init__(self, spec: TestbedSpec) -> None:
        self.spec = spec
        self.clusters: dict[str, ClusterInfo] = {}
        self.mlflow_url: str | None = None
        self._trust: Trust | None = None

    @classmethod
    def from_file(cls, path: Path | str | None = None) -> Testbed:
        return cls(load_spec(Path(path) if path else None))

    @property
    def config_path(self) -> Path:
        return self.spec.config_path

    @property
    def mlflow_internal_url(self) -> str:
        """MLflow as seen from inside the Ray containers (container name on the network)."""
        return f"http://{self.spec.mlflow_container}:{MLFLOW_PORT}"

    @property
    def auth_token(self) -> str | None:
        """The clusters' Ray auth token: made once, kept in the state dir for every client."""
        if self.spec.auth != "token":
            return None
        path = self.spec.auth_token_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip()

    @property
    def auth_headers(self) -> dict[str, str]:
        """What a raw request to a testbed dashboard must carry (mlray reads config.yml)."""
        token = self.auth_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    # ---- lifecycle -------------------------------------------------------------------------

    def prepare(self) -> Trust:
        """Engine quirks + API service + trust settings; cheap to call repeatedly."""
        engine.prepare(self.spec.state_dir)
        if self._trust is None:
            self._trust = resolve(self.spec.pip)
        return self._trust

    def build_images(self, pythons: list[str] | None = None) -> images.ImageSet:
        return images.build_all(self.spec, self.prepare(), pythons)

    def up(self, reuse: bool = False) -> Testbed:
        """Start (or with reuse=True adopt a matching running) testbed, wait, write config."""
        started = time.monotonic()
        trust = self.prepare()
        # Seconds on a throwaway network, before minutes of image builds: a host whose
        # containers cannot resolve each other's names fails here, with the fix named.
        took = doctor.require_contract(self.spec.state_dir)
        _say(f"engine contract holds (names resolve, ports publish; {took:.1f} s)")
        image_set = images.build_all(self.spec, trust)
        fingerprint = self._fingerprint(image_set)
        if not (reuse and self._running_matches(fingerprint)):
            self.down(stop_service=False)
            self._create_shared(fingerprint)
            self._start_all(image_set, trust, fingerprint)
        self._wait_all()
        self.write_config()
        _say(f"testbed up in {time.monotonic() - started:.0f} s; config: {self.config_path}")
        return self

    def down(self, stop_service: bool = True) -> None:
        """Save logs, then remove every container, pod, network and volume with the label.

        Containers stop in parallel (each `ray start --block` takes a few seconds to shut
        down cleanly). Networks are removed without force, so containers of others that
        joined our network are never removed with it; the error names them instead.
        """
        if not self._engine_ready():
            return
        label = {"label": f"{LABEL}=1"}
        with engine.podman_client() as client:
            containers = client.containers.list(all=True, filters=label)
            with ThreadPoolExecutor(max_workers=max(len(containers), 1)) as pool:
                list(pool.map(self._remove_container, containers))
            for pod in client.pods.list(filters=label):
                pod.remove(force=True)
            for network in client.networks.list(filters=label):
                _remove_network(network)
            for volume in client.volumes.list(filters=label):
                volume.remove(force=True)
        self.clusters.clear()
        if stop_service:
            engine.stop_service(self.spec.state_dir)

    def _remove_container(self, container: Any) -> None:
        nodes.save_logs(container.name, self.spec.logs_dir)
        nodes.remove(container.name, grace_s=STOP_TIMEOUT)

    def stop_mlflow(self) -> None:
        """Take MLflow away (for outage tests): its processes are frozen, so every request
        to it fails, and nothing else changes (its address, its data, its container)."""
        self.prepare()
        engine.docker_client().containers.get(self.spec.mlflow_container).pause()

    def start_mlflow(self) -> None:
        """Bring MLflow back after stop_mlflow() and wait until it answers again."""
        self.prepare()
        engine.docker_client().containers.get(self.spec.mlflow_container).unpause()
        self._wait_mlflow()

    def restart_cluster(self, python: str) -> ClusterInfo:
        """Restart a cluster's head and workers (new Ray sessions: an empty GCS, no cached
        runtime envs, no Serve apps) and wait until every node is back. Same addresses."""
        self.prepare()
        for name in self._cluster_containers(python):  # the head first: workers find it by name
            engine.run_podman("restart", "--time", str(STOP_TIMEOUT), name, timeout=300)
        return self._cluster_back(python)

    def start_cluster(self, python: str) -> ClusterInfo:
        """Start whichever of a cluster's containers are not running (a killed worker, say)
        and wait until every node is alive in Ray again. Same addresses."""
        self.prepare()
        for name in self._cluster_containers(python):
            if nodes.container_status(name) != "running":
                engine.run_podman("start", name, timeout=300)
        return self._cluster_back(python)

    def restart_head(self, python: str) -> dict[str, float]:
        """Crash only the head container (SIGKILL: its GCS, dashboard and Serve controller
        die at once), start it again, as a restart policy or Kubernetes would, and wait
        until every node is alive; seconds to kill, to start, and until every node was alive.
        With `gcs_ft: redis` the workers keep running and rejoin; without it they are left
        without a cluster."""
        self.prepare()
        head = self.spec.head_container(python)
        started = time.monotonic()
        engine.run_podman("kill", head, timeout=120)
        engine.run_podman("wait", head, timeout=120, check=False)
        killed = time.monotonic()
        engine.run_podman("start", head, timeout=300)
        running = time.monotonic()
        self._cluster_back(python)
        return {
            "kill_s": round(killed - started, 1),
            "start_s": round(running - killed, 1),
            "nodes_alive_s": round(time.monotonic() - started, 1),
        }

    def cluster(self, python: str) -> ClusterInfo:
        """A running cluster's addresses, read from its containers once every node is alive."""
        self.prepare()
        return self.clusters.get(self.spec.cluster_name(python)) or self._cluster_back(python)

    def gcs_ft_of(self, python: str) -> str:
        """The GCS mode the cluster's running head was started with (none | redis)."""
        self.prepare()
        head = engine.docker_client().containers.get(self.spec.head_container(python))
        return str(head.labels.get(GCS_FT_LABEL, "none"))

    def recreate_cluster(self, python: str, gcs_ft: str) -> ClusterInfo:
        """Replace a cluster's containers by new ones in the given GCS mode (an empty
        cluster: deploy again). Same names and host ports; the other clusters, MLflow and
        the registry are untouched. A later `up --reuse` sees the mode differ from the testbed
        file's and recreates the testbed."""
        if gcs_ft not in GCS_FT_MODES:
            raise TestbedError(f"got gcs_ft={gcs_ft!r}; expected one of {GCS_FT_MODES}")
        trust = self.prepare()
        head = engine.docker_client().containers.get(self.spec.head_container(python))
        fingerprint = head.labels[SPEC_LABEL]
        ports = {port: _published(head.name, port) for port in (DASHBOARD_PORT, SERVE_PORT)}
        names = self._cluster_containers(python)
        worker_ports = {
            name: _published(name, SERVE_PORT) for name in names[1:]
            if nodes.container_status(name) == "running"
        }  # fmt: skip
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(lambda n: nodes.remove(n, grace_s=STOP_TIMEOUT), names))
        if gcs_ft == "redis":
            self._ensure_redis(trust, fingerprint)
        image = images.ray_tag(python)
        self._start_cluster_nodes(python, image, trust, fingerprint, gcs_ft, ports, worker_ports)
        return self._cluster_back(python)

    def _ensure_redis(self, trust: Trust, fingerprint: str) -> None:
        name = self.spec.redis_container
        if nodes.container_status(name) == "running":
            return
        nodes.remove(name)
        image = images.build_redis(self.spec, trust)
        nodes.start(
            nodes.ContainerSpec(
                name=name,
                image=image,
                command=[],
                labels=self._labels(fingerprint, **{"io.mlray.testbed.role": "redis"}),
                network=self.spec.network,
                memory="512m",
            )
        )
        nodes.wait_until(
            name, lambda: _redis_pings(name), "Redis PING answer",
            self.spec.ready_timeout, self.spec.logs_dir,
        )  # fmt: skip

    def _cluster_containers(self, python: str) -> list[str]:
        head = self.spec.head_container(python)
        return [head, *(self.spec.worker_container(python, i)
                        for i in range(1, self.spec.workers + 1))]  # fmt: skip

    def _cluster_back(self, python: str) -> ClusterInfo:
        info = self._wait_cluster(python)
        self.clusters[info.name] = info
        return info

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # ---- creation --------------------------------------------------------------------------

    def _fingerprint(self, image_set: images.ImageSet) -> str:
        """Hash of spec + image ids: a running testbed is reusable only if it matches."""
        ids = {
            tag: engine.run_podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
            for tag in [*image_set.ray.values(), image_set.mlflow]
        }
        # The token's hash, not the token: a new token file means new nodes, never a label leak.
        token = hashlib.sha256((self.auth_token or "").encode()).hexdigest()[:16]
        raw = json.dumps(
            {
                "spec": asdict(self.spec),
                "images": ids,
                "token": token,
                "lean": LEAN_IDLE_ENV,
                "lean_args": LEAN_RAY_START_ARGS,
                "node": RAY_NODE_ENV,
                "hostname": "container name",  # nodes.start: testbeds before it had ids
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def _labels(self, fingerprint: str, **extra: str) -> dict[str, str]:
        return {"io.mlray.testbed.name": self.spec.name, SPEC_LABEL: fingerprint, **extra}

    def _create_shared(self, fingerprint: str) -> None:
        engine.forget_stale_dns(self.spec.network)
        client = engine.docker_client()
        labels = {LABEL: "1", **self._labels(fingerprint)}
        client.networks.create(self.spec.network, driver="bridge", labels=labels)
        for volume in (self._pip_cache_volume, self._mlflow_volume):
            client.volumes.create(volume, labels=labels)

    @property
    def _pip_cache_volume(self) -> str:
        return f"{self.spec.name}-testbed-pip-cache"

    @property
    def _mlflow_volume(self) -> str:
        return f"{self.spec.name}-testbed-mlflow"

    def _start_all(self, image_set: images.ImageSet, trust: Trust, fingerprint: str) -> None:
        """Heads one at a time (Ray gives a starting node only 30 s to register, which a busy
        2-core host can miss), then all workers; MLflow starts alongside the first head."""
        nodes.start(self._mlflow_spec(image_set.mlflow, fingerprint))
        if self.spec.gcs_ft == "redis":
            self._ensure_redis(trust, fingerprint)
        for python in self.spec.python:
            nodes.start(
                self._head_spec(python, image_set.ray[python], trust, fingerprint, self.spec.gcs_ft)
            )
            self._wait_dashboard(self.spec.head_container(python))
        self._check_dns(self.spec.head_container(self.spec.python[0]))
        for python in self.spec.python:
            for index in range(1, self.spec.workers + 1):
                nodes.start(
                    self._worker_spec(
                        python, index, image_set.ray[python], trust, fingerprint, self.spec.gcs_ft
                    )
                )

    def _start_cluster_nodes(
        self,
        python: str,
        image: str,
        trust: Trust,
        fingerprint: str,
        gcs_ft: str,
        ports: dict[int, int],
        worker_ports: dict[str, int],
    ) -> None:
        head = self._head_spec(python, image, trust, fingerprint, gcs_ft)
        head.ports = ports
        nodes.start(head)
        self._wait_dashboard(head.name)
        for index in range(1, self.spec.workers + 1):
            worker = self._worker_spec(python, index, image, trust, fingerprint, gcs_ft)
            worker.ports = {SERVE_PORT: worker_ports.get(worker.name, 0)}
            nodes.start(worker)

    def _mlflow_spec(self, image: str, fingerprint: str) -> nodes.ContainerSpec:
        name = self.spec.mlflow_container
        # MLflow 3 rejects unknown Host headers; Ray containers call it by container name.
        allowed = f"{name},{name}:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*,10.*,172.*,192.*"
        return nodes.ContainerSpec(
            name=name,
            image=image,
            command=[],
            labels=self._labels(fingerprint, **{"io.mlray.testbed.role": "mlflow"}),
            network=self.spec.network,
            env={"MLFLOW_SERVER_ALLOWED_HOSTS": allowed},
            ports={MLFLOW_PORT: self.spec.ports.mlflow},
            volumes={self._mlflow_volume: "/mlflow"},
            memory=self.spec.mlflow_memory,
        )

    def _ray_env(self, trust: Trust) -> dict[str, str]:
        """Index settings for runtime_env pip installs; the CA is baked into the image."""
        return {
            **trust.pip_env,
            "MLFLOW_TRACKING_URI": self.mlflow_internal_url,
            "RAY_USAGE_STATS_ENABLED": "0",
            # Read by Serve on each node at `ray start`: HAProxy in front of the replicas.
            "RAY_SERVE_ENABLE_HA_PROXY": "1" if self.spec.ingress == "haproxy" else "0",
            **RAY_NODE_ENV,
            **(LEAN_IDLE_ENV if self.spec.idle == "lean" else {}),
            **self._auth_env(),
        }

    def _auth_env(self) -> dict[str, str]:
        token = self.auth_token
        if token is None:
            return {"RAY_AUTH_MODE": "disabled"}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}

    def _ray_args(self, num_cpus: int | None = None) -> list[str]:
        node = self.spec.node
        node_is_lean = self.spec.idle == "lean"
        return [
            f"--num-cpus={node.num_cpus if num_cpus is None else num_cpus}",
            f"--object-store-memory={node.object_store_memory}",
            "--disable-usage-stats",
            *(LEAN_RAY_START_ARGS if node_is_lean else ()),
            "--block",
        ]

    def _node_spec(
        self,
        name: str,
        python: str,
        role: str,
        image: str,
        trust: Trust,
        fingerprint: str,
        gcs_ft: str,
    ) -> nodes.ContainerSpec:
        node = self.spec.node
        cluster = self.spec.cluster_name(python)
        return nodes.ContainerSpec(
            name=name,
            image=image,
            command=[],
            labels=self._labels(
                fingerprint,
                **{
                    "io.mlray.testbed.role": role,
                    "io.mlray.testbed.cluster": cluster,
                    GCS_FT_LABEL: gcs_ft,
                },
            ),
            network=self.spec.network,
            env=self._ray_env(trust),
            volumes={self._pip_cache_volume: PIP_CACHE_PATH},
            cpus=node.cpus,
            memory=node.memory,
            shm_size=node.shm_size,
        )

    def _head_spec(
        self, python: str, image: str, trust: Trust, fingerprint: str, gcs_ft: str
    ) -> nodes.ContainerSpec:
        spec = self._node_spec(
            self.spec.head_container(python), python, "head", image, trust, fingerprint, gcs_ft
        )
        if gcs_ft == "redis":
            # Ray's GCS fault tolerance: state in Redis, a namespace per head container. A
            # restart of this container keeps it (and finds the state); a new container
            # starts clean instead of recovering an earlier cluster's actors.
            spec.env["RAY_REDIS_ADDRESS"] = f"{self.spec.redis_container}:{REDIS_PORT}"
            namespace = f"{self.spec.cluster_name(python)}-{secrets.token_hex(4)}"
            spec.env["RAY_external_storage_namespace"] = namespace
        # With fault tolerance the head runs no replicas (0 CPUs for Ray to schedule): what
        # serves through a head restart is what runs on the workers, and nothing needs
        # restarting after it. Production guides say the same: keep workloads off the head.
        cpus = 0 if gcs_ft == "redis" else None
        spec.command = [
            "ray", "start", "--head", f"--port={RAY_GCS_PORT}",
            "--dashboard-host=0.0.0.0", f"--dashboard-port={DASHBOARD_PORT}",
            *self._ray_args(cpus),
        ]  # fmt: skip
        spec.ports = {DASHBOARD_PORT: self.spec.ports.dashboard, SERVE_PORT: self.spec.ports.serve}
        return spec

    def _worker_spec(
        self, python: str, index: int, image: str, trust: Trust, fingerprint: str, gcs_ft: str
    ) -> nodes.ContainerSpec:
        name = self.spec.worker_container(python, index)
        spec = self._node_spec(name, python, "worker", image, trust, fingerprint, gcs_ft)
        # Each worker's own Serve ingress is reachable too: with the head down, replicas on
        # the workers keep serving through it (the head_restart_ft chaos scenario).
        spec.ports = {SERVE_PORT: 0}
        if gcs_ft == "redis":
            spec.env["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(GCS_RECONNECT_TIMEOUT_S)
        head = self.spec.head_container(python)
        spec.command = ["ray", "start", f"--address={head}:{RAY_GCS_PORT}", *self._ray_args()]
        return spec

    def _check_dns(self, container: str, timeout_s: float = 10.0) -> None:
        """Workers find their head by name: fail now, clearly, if names do not resolve.

        The answer is expected at once. Without one, aardvark-dns is restarted once on the
        network's current config (a CI host once lost container names this way, its engine
        otherwise healthy), then the error carries what the engine says about the network.
        """
        target = self.spec.mlflow_container
        probe = (
            "import socket\n"
            f"try: socket.gethostbyname({target!r})\n"
            "except OSError as exc: raise SystemExit(f'{exc}; resolv.conf: ' + ' '.join("
            "l.strip() for l in open('/etc/resolv.conf') if l.startswith('nameserver')))"
        )
        handle = engine.docker_client().containers.get(container)

        def resolves() -> tuple[bool, str]:
            deadline = time.monotonic() + timeout_s
            while True:
                code, output = handle.exec_run(["python3", "-c", probe])
                if code == 0:
                    return True, ""
                if time.monotonic() > deadline:
                    return False, output.decode(errors="replace").strip()[-300:]
                time.sleep(0.5)

        ok, said = resolves()
        if ok:
            return
        before = engine.dns_diagnosis(self.spec.network)
        healed = engine.restart_dns(self.spec.network, doctor.ensure_probe_image())
        ok, said_after = resolves()
        if ok:
            _say(f"names did not resolve on {self.spec.network} ({before}); {healed}: they do now")
            return
        raise TestbedError(
            f"got no DNS answer for {target} inside {container} ({said}); expected aardvark-dns "
            f"to resolve container names on network {self.spec.network}. Engine side: {before}. "
            f"Restarting aardvark-dns did not help ({healed}; then: {said_after}). Run "
            "`python -m testbed doctor`, then down and up; see docs/testbed.md, troubleshooting"
        )

    # ---- readiness -------------------------------------------------------------------------

    def _running_matches(self, fingerprint: str) -> bool:
        expected = {self.spec.mlflow_container}
        if self.spec.gcs_ft == "redis":
            expected.add(self.spec.redis_container)
        for python in self.spec.python:
            expected.add(self.spec.head_container(python))
            expected.update(
                self.spec.worker_container(python, i) for i in range(1, self.spec.workers + 1)
            )
        found = {
            c.name: c
            for c in engine.docker_client().containers.list(filters={"label": f"{LABEL}=1"})
            # Short-lived helpers (training, the load tests' peers) don't count.
            if c.labels.get("io.mlray.testbed.role") in ("mlflow", "redis", "head", "worker")
        }
        return set(found) == expected and all(
            c.labels.get(SPEC_LABEL) == fingerprint
            and c.status == "running"
            # A chaos scenario may have recreated a cluster in the other GCS mode.
            and c.labels.get(GCS_FT_LABEL, self.spec.gcs_ft) == self.spec.gcs_ft
            for c in found.values()
        )

    def _dashboard_url(self, head: str) -> str:
        port = _published(head, DASHBOARD_PORT)
        return f"http://127.0.0.1:{port}"

    def _wait_dashboard(self, head: str) -> str:
        url = self._dashboard_url(head)
        nodes.wait_until(
            head, lambda: nodes.alive_ray_nodes(url, self.auth_headers) >= 1,
            "Ray dashboard with the head alive",
            self.spec.ready_timeout, self.spec.logs_dir, restarts=NODE_RESTARTS,
        )  # fmt: skip
        return url

    def _wait_mlflow(self) -> None:
        name = self.spec.mlflow_container
        self.mlflow_url = f"http://127.0.0.1:{_published(name, MLFLOW_PORT)}"
        nodes.wait_until(
            name, nodes.http_ok(f"{self.mlflow_url}/health"), "MLflow /health answer",
            self.spec.ready_timeout, self.spec.logs_dir,
        )  # fmt: skip

    def _wait_all(self) -> None:
        self._wait_mlflow()
        for python in self.spec.python:
            self.clusters[self.spec.cluster_name(python)] = self._wait_cluster(python)

    def _wait_cluster(self, python: str) -> ClusterInfo:
        head = self.spec.head_container(python)
        workers = tuple(
            self.spec.worker_container(python, i) for i in range(1, self.spec.workers + 1)
        )
        url = self._wait_dashboard(head)
        want = 1 + len(workers)
        deadline = time.monotonic() + self.spec.ready_timeout
        for name in (head, *workers):
            remaining = max(deadline - time.monotonic(), 1.0)
            nodes.wait_until(
                name, lambda: nodes.alive_ray_nodes(url, self.auth_headers) >= want,
                f"{want} alive Ray nodes",
                remaining, self.spec.logs_dir, restarts=NODE_RESTARTS,
            )  # fmt: skip
        serve_url = f"http://127.0.0.1:{_published(head, SERVE_PORT)}"
        return ClusterInfo(
            name=self.spec.cluster_name(python),
            python=python,
            head=head,
            workers=workers,
            dashboard_url=url,
            serve_url=serve_url,
            worker_serve_urls=tuple(
                f"http://127.0.0.1:{_published(w, SERVE_PORT)}" for w in workers
            ),
        )

    # ---- outputs ---------------------------------------------------------------------------

    def config(self) -> dict[str, object]:
        """The mlray config.yml content for the running testbed."""
        if not self.clusters or not self.mlflow_url:
            raise TestbedError("got no running testbed for config(); expected up() first")
        return {
            "mlflow": {"tracking_uri": self.mlflow_url},
            "selection": {"name_suffix": ".staging", "alias": "staging"},
            "clusters": {
                name: {
                    "dashboard_url": info.dashboard_url,
                    "serve_url": info.serve_url,
                    "python": info.python,
                    "platform": f"linux_{platform.machine()}",
                    **(
                        {"auth_token_file": str(self.spec.auth_token_path)}
                        if self.auth_token
                        else {}
                    ),
                    "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
                    "mlflow_tracking_uri": self.mlflow_internal_url,
                }
                for name, info in self.clusters.items()
            },
        }

    def write_config(self) -> Path:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    def endpoints(self) -> str:
        """Human-readable summary for `nox -s up`."""
        lines = [f"MLflow UI:        {self.mlflow_url}"]
        for name, info in self.clusters.items():
            lines.append(f"{name} (Python {info.python}) dashboard: {info.dashboard_url}")
            lines.append(f"{name} (Python {info.python}) serve:     {info.serve_url}")
        lines.append(f"mlray config:     {self.config_path}")
        return "\n".join(lines)

    def _engine_ready(self) -> bool:
        try:
            engine.prepare(self.spec.state_dir)
        except TestbedError as exc:
            _say(f"engine not available, nothing to remove: {exc}")
            return False
        return True


def _remove_network(network: Any) -> None:
    attached = [c for c in (network.attrs.get("containers") or {})]
    try:
        network.remove()
    except Exception as exc:  # podman-py raises APIError subclasses
        raise TestbedError(
            f"got network {network.name} still in use by containers {attached}; expected only "
            "testbed containers on it (remove the others, then run down again)"
        ) from exc
    engine.forget_stale_dns(network.name)


def _redis_pings(name: str) -> bool:
    result = engine.docker_client().containers.get(name).exec_run(["redis-cli", "ping"])
    return result.exit_code == 0 and b"PONG" in result.output


def _published(name: str, port: int) -> int:
    container = engine.docker_client().containers.get(name)
    bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    raise TestbedError(f"got no published host port for {name}:{port}; expected one")


def _say(message: str) -> None:
    print(f"[testbed] {message}", file=sys.stderr, flush=True)
