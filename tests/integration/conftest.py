"""Real services on this host: an MLflow server process and a Ray head (``ray start``).

No containers and no mocks: the same REST APIs mlray uses against production clusters.
Both services are started once per test session and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

BIN = Path(sys.executable).parent
RAY_TOKEN = secrets.token_hex(16)
TOKEN_ENV = "MLRAY_IT_RAY_TOKEN"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{url} did not answer within {timeout}s; log tail:\n{tail}")


def _stop_ray(temp_dir: Path) -> None:
    """Stop the Ray processes of this head only.

    Not `ray stop --force`: it kills every Ray process the user can see, and with rootful
    Podman that includes the Ray clusters inside testbed containers.
    """
    import psutil

    ours = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(temp_dir) in " ".join(p.info["cmdline"] or []):
                ours += [p, *p.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in ours:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(ours, timeout=15)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


@dataclass(frozen=True)
class Services:
    tracking_uri: str
    dashboard_url: str
    serve_url: str
    serve_port: int
    config_path: Path
    python: str


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = root / "server.log"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
         "--workers", "2"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", 120, proc, log)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # a loaded host: do not let teardown fail a green run
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real single-node Ray cluster, as `ray start --head` makes on a VM."""
    dash_port, gcs_port, serve_port = free_port(), free_port(), free_port()
    # Ray's socket paths must stay short. Two suites on one host need two directories: the
    # teardown stops every process started under it.
    tmp = Path(os.environ.get("MLRAY_IT_RAY_TMP") or "/tmp/ray-mlray-it")
    shutil.rmtree(tmp, ignore_errors=True)
    # Token auth as Ray >= 2.60 enables it by default; mlray must send the token.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": RAY_TOKEN}  # fmt: skip
    cmd = [str(BIN / "ray"), "start", "--head", "--port", str(gcs_port),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
           "--num-cpus", "4", "--temp-dir", str(tmp), "--disable-usage-stats"]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=180)
    url = f"http://127.0.0.1:{dash_port}"
    try:
        wait_http(f"{url}/api/version", 120)
        os.environ[TOKEN_ENV] = RAY_TOKEN  # read by mlray through auth_token_env
        yield url, serve_port
    finally:
        _stop_ray(tmp)


@pytest.fixture(scope="session")
def services(mlflow_server: str, ray_head: tuple[str, int], tmp_path_factory) -> Services:
    dashboard_url, serve_port = ray_head
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    cfg = {
        "mlflow": {"tracking_uri": mlflow_server},
        "selection": {"name_suffix": ".staging", "alias": "staging"},
        "clusters": {
            "local": {
                "dashboard_url": dashboard_url,
                "serve_url": f"http://127.0.0.1:{serve_port}",
                "python": python,
                "platform": f"linux_{os.uname().machine}",
                "http_options": {"host": "127.0.0.1", "port": serve_port},
                "auth_token_env": TOKEN_ENV,
            }
        },
    }
    path = tmp_path_factory.mktemp("cfg") / "config.yml"
    path.write_text(yaml.safe_dump(cfg))
    return Services(mlflow_server, dashboard_url, f"http://127.0.0.1:{serve_port}",
                    serve_port, path, python)  # fmt: skip
