"""Containers of the testbed: start them labelled, wait for readiness, fail with their logs.

Built on testcontainers' DockerContainer (docker-py on Podman's Docker-compatible API).
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from testbed.errors import TestbedError
from testbed.spec import LABEL

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

LOG_TAIL_LINES = 40
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
POLL_SECONDS = 1.0


@dataclass
class ContainerSpec:
    """One container to run; resources map to podman run --cpus/--memory/--shm-size."""

    name: str
    image: str
    command: list[str]
    labels: dict[str, str]
    network: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port (0=any)
    volumes: dict[str, str] = field(default_factory=dict)  # volume name -> mount path
    cpus: float | None = None
    memory: str | None = None
    shm_size: str | None = None


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(spec: ContainerSpec) -> DockerContainer:
    """Create and start the container (no waiting); ports are published on 127.0.0.1 only."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(spec.image).with_name(spec.name).with_command(spec.command)
    for key, value in spec.env.items():
        container.with_env(key, value)
    for volume, path in spec.volumes.items():
        container.with_volume_mapping(volume, path, mode="rw")
    for ctr_port, host_port in spec.ports.items():
        # An unset port is picked here, not left to the engine: Podman picks a new one on
        # every start, and a restarted container (MLflow in the outage test, a Ray node on
        # its one retry) must keep the address config.yml and the tests already hold.
        container.ports[f"{ctr_port}/tcp"] = ("127.0.0.1", host_port or free_port())
    kwargs: dict[str, object] = {"labels": {LABEL: "1", **spec.labels}}
    # The container's name as its hostname too: Ray's node list, the dashboard and each
    # replica's /metadata then name the node as `podman ps` does, not by a container id.
    # A name that is no valid hostname (`_`, over 63 characters) keeps the engine's default.
    if _HOSTNAME.fullmatch(spec.name):
        kwargs["hostname"] = spec.name
    if spec.network:
        kwargs["network"] = spec.network
    if spec.cpus:
        kwargs["nano_cpus"] = int(spec.cpus * 1e9)
    if spec.memory:
        kwargs["mem_limit"] = spec.memory
    if spec.shm_size:
        kwargs["shm_size"] = spec.shm_size
    container.with_kwargs(**kwargs)
    try:
        return container.start()
    except Exception as exc:  # docker-py raises several types; all mean "did not start"
        raise TestbedError(
            f"got {type(exc).__name__} starting container {spec.name}; expected it to start: "
            f"{exc}\n{tail_logs(spec.name)}"
        ) from exc


def wait_until(
    name: str,
    check: Callable[[], bool],
    what: str,
    timeout: float,
    logs_dir: Path | None = None,
    restarts: int = 0,
) -> None:
    """Poll `check` until true; fail fast if the container exits, with its last log lines.

    `restarts` > 0 restarts an exited container that many times first: Ray gives a starting
    node 30 s to register with the GCS, which a saturated host can miss once.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = container_status(name)
        if status not in ("running", "created"):
            if restarts <= 0:
                _fail(name, f"got container {name} {status} while waiting for {what}", logs_dir)
            restarts -= 1
            _restart(name, logs_dir)
        try:
            if check():
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            _fail(name, f"got no {what} from {name} within {timeout:.0f} s", logs_dir)
        time.sleep(POLL_SECONDS)


def _restart(name: str, logs_dir: Path | None) -> None:
    from testbed.engine import docker_client

    print(f"[testbed] {name} exited during startup; restarting it once", file=sys.stderr)
    if logs_dir:
        logs_dir.mkdir(parents=True, exist_ok=True)
        (logs_dir / f"{name}.failed-start.log").write_text(container_logs(name))
    docker_client().containers.get(name).start()


def _fail(name: str, message: str, logs_dir: Path | None) -> None:
    if logs_dir:
        save_logs(name, logs_dir)
    raise TestbedError(f"{message}; expected it ready. Last log lines:\n{tail_logs(name)}")


def remove(name: str, grace_s: int = 2) -> None:
    """Stop and remove a container and its anonymous volumes, if it exists: SIGTERM, then
    SIGKILL after `grace_s`. The CLI, not the API: podman-py gives a stop only 15 s of HTTP
    read timeout, which a Ray head shutting down on a busy host outlasts."""
    from testbed.engine import run_podman

    run_podman("rm", "--force", "--ignore", "--volumes", "--time", str(grace_s), name,
               check=False)  # fmt: skip


def container_status(name: str) -> str:
    """running / exited / ... or 'missing'."""
    import docker.errors

    from testbed.engine import docker_client

    try:
        return str(docker_client().containers.get(name).status)
    except docker.errors.NotFound:
        return "missing"


def container_logs(name: str) -> str:
    import docker.errors

    from testbed.engine import docker_client

    try:
        raw = docker_client().containers.get(name).logs(stdout=True, stderr=True)
    except docker.errors.NotFound:
        return ""
    return raw.decode(errors="replace")


def tail_logs(name: str, lines: int = LOG_TAIL_LINES) -> str:
    text = container_logs(name).rstrip().splitlines()[-lines:]
    return "\n".join(f"  {name}| {line}" for line in text) or f"  {name}| (no output)"


def save_logs(name: str, logs_dir: Path) -> Path:
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = logs_dir / f"{name}.log"
    path.write_text(container_logs(name))
    return path


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: GET answers 200."""

    def check() -> bool:
        return requests.get(url, timeout=3).status_code == 200

    return check


def alive_ray_nodes(dashboard_url: str, headers: dict[str, str] | None = None) -> int:
    """Alive nodes as the dashboard's state API reports them (``headers``: the auth token)."""
    reply = requests.get(
        f"{dashboard_url}/api/v0/nodes", params={"limit": 1000}, timeout=5, headers=headers
    )
    reply.raise_for_status()
    nodes = reply.json()["data"]["result"]["result"]
    return sum(1 for node in nodes if node.get("state") == "ALIVE")
