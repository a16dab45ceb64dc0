"""The testbed description: one YAML file is the single source of the topology and sizes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_FILE = PACKAGE_DIR / "testbed.yml"
BASE_MODES = ("auto", "registry", "offline")
# haproxy: Ray Serve's HAProxy ingress on every node (RAY_SERVE_ENABLE_HA_PROXY=1); proxy: the
# classic Python proxy. docs/performance.md has what it changes.
INGRESS_MODES = ("haproxy", "proxy")
# token: Ray's token auth on every node (RAY_AUTH_MODE=token), as production clusters run;
# none: RAY_AUTH_MODE=disabled.
AUTH_MODES = ("token", "none")
# lean: longer Ray and Serve reporting intervals on every node (testbed/core.py, LEAN_IDLE_ENV),
# for an idle testbed that leaves the host's cores to the work; default: Ray's own intervals.
IDLE_MODES = ("lean", "default")
# none: Ray's default, the GCS keeps cluster state in the head's memory (a head restart loses
# every actor and Serve app); redis: each head keeps it in the testbed's Redis container.
GCS_FT_MODES = ("none", "redis")
LABEL = "io.mlray.testbed"


@dataclass(frozen=True)
class NodeSize:
    """Resources of one Ray node container."""

    cpus: float = 2.0
    num_cpus: int = 2
    memory: str = "5g"
    shm_size: str = "1g"
    object_store_memory: int = 500_000_000


@dataclass(frozen=True)
class PipSettings:
    """Index and trust settings as written in the description file (None = use the host's)."""

    index_url: str | None = None
    extra_index_url: str | None = None
    trusted_host: str | None = None
    ca_bundle: str | None = None


@dataclass(frozen=True)
class Ports:
    """Host ports on 127.0.0.1; 0 lets the engine choose (read back after start)."""

    mlflow: int = 0
    dashboard: int = 0
    serve: int = 0


@dataclass(frozen=True)
class TestbedSpec:
    """Everything `up` needs to know, parsed from the description file."""

    __test__ = False

    name: str = "mlray"
    python: tuple[str, ...] = ("3.11", "3.13")
    workers: int = 1
    ray_version: str = "2.60.0"
    mlflow_version: str = "3.17.2"
    base: str = "auto"
    node: NodeSize = field(default_factory=NodeSize)
    mlflow_memory: str = "2g"
    ports: Ports = field(default_factory=Ports)
    ready_timeout: float = 180.0
    pip: PipSettings = field(default_factory=PipSettings)
    ingress: str = "haproxy"
    auth: str = "token"
    idle: str = "lean"
    gcs_ft: str = "none"
    state_dir: Path = REPO_ROOT / ".testbed"

    @property
    def network(self) -> str:
        return f"{self.name}-testbed"

    @property
    def mlflow_container(self) -> str:
        return f"{self.name}-mlflow"

    @property
    def redis_container(self) -> str:
        """The GCS store of heads that run with fault tolerance (started only for them)."""
        return f"{self.name}-redis"

    def cluster_name(self, python: str) -> str:
        """Cluster key in config.yml and container prefix, e.g. py311."""
        return "py" + python.replace(".", "")

    def head_container(self, python: str) -> str:
        return f"{self.name}-{self.cluster_name(python)}-head"

    def worker_container(self, python: str, index: int) -> str:
        return f"{self.name}-{self.cluster_name(python)}-worker-{index}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "config.yml"

    @property
    def auth_token_path(self) -> Path:
        """The Ray auth token of the testbed's clusters (made on first `up`, mode 0600)."""
        return self.state_dir / "ray-auth-token"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def default_file() -> Path:
    """The description file in use: MLRAY_TESTBED_FILE, else the packaged default."""
    return Path(os.environ.get("MLRAY_TESTBED_FILE") or DEFAULT_FILE)


def load_spec(path: Path | None = None) -> TestbedSpec:
    """Parse and validate the description file; env vars override the base mode."""
    path = path or default_file()
    try:
        import yaml  # lazily: `python -m testbed doctor` runs on the host's bare python3

        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise TestbedError(
            f"got unreadable file {path} for the testbed description; expected a YAML file"
        ) from exc
    if not isinstance(raw, dict):
        raise TestbedError(f"got {type(raw).__name__} in {path}; expected a YAML mapping")
    return _build_spec(raw, path)


def _build_spec(raw: dict[str, Any], path: Path) -> TestbedSpec:
    # MLRAY_TESTBED_PYTHON=3.11[,3.13] narrows the matrix, e.g. one CI job per Python.
    override = os.environ.get("MLRAY_TESTBED_PYTHON")
    versions = override.split(",") if override else _as_list(raw.get("python", ["3.11", "3.13"]))
    python = tuple(str(v).strip() for v in versions if str(v).strip())
    for version in python:
        _check_python(version, path)
    base = str(os.environ.get("MLRAY_TESTBED_BASE") or raw.get("base", "auto"))
    if base not in BASE_MODES:
        raise TestbedError(f"got base={base!r} in {path}; expected one of {', '.join(BASE_MODES)}")
    ingress = str(os.environ.get("MLRAY_TESTBED_INGRESS") or raw.get("ingress", "haproxy"))
    if ingress not in INGRESS_MODES:
        raise TestbedError(
            f"got ingress={ingress!r} in {path}; expected one of {', '.join(INGRESS_MODES)}"
        )
    auth = str(os.environ.get("MLRAY_TESTBED_AUTH") or raw.get("auth", "token"))
    if auth not in AUTH_MODES:
        raise TestbedError(f"got auth={auth!r} in {path}; expected one of {', '.join(AUTH_MODES)}")
    idle = str(os.environ.get("MLRAY_TESTBED_IDLE") or raw.get("idle", "lean"))
    if idle not in IDLE_MODES:
        raise TestbedError(f"got idle={idle!r} in {path}; expected one of {', '.join(IDLE_MODES)}")
    gcs_ft = str(os.environ.get("MLRAY_TESTBED_GCS_FT") or raw.get("gcs_ft", "none"))
    if gcs_ft not in GCS_FT_MODES:
        raise TestbedError(
            f"got gcs_ft={gcs_ft!r} in {path}; expected one of {', '.join(GCS_FT_MODES)}"
        )
    workers = int(raw.get("workers", 1))
    if workers < 0:
        raise TestbedError(f"got workers={workers} in {path}; expected 0 or more")
    if gcs_ft == "redis" and workers < 1:
        raise TestbedError(
            f"got workers=0 with gcs_ft=redis in {path}; expected 1 or more (with fault "
            "tolerance the heads run no replicas)"
        )
    ports = raw.get("ports") or {}
    return TestbedSpec(
        name=str(raw.get("name", "mlray")),
        python=python,
        workers=workers,
        ray_version=str(raw.get("ray_version", "2.60.0")),
        mlflow_version=str(raw.get("mlflow_version", "3.17.2")),
        base=base,
        node=NodeSize(**(raw.get("node") or {})),
        mlflow_memory=str((raw.get("mlflow") or {}).get("memory", "2g")),
        ports=Ports(**{k: int(v) for k, v in ports.items()}),
        ready_timeout=float(raw.get("ready_timeout", 180)),
        pip=PipSettings(**(raw.get("pip") or {})),
        ingress=ingress,
        auth=auth,
        idle=idle,
        gcs_ft=gcs_ft,
        state_dir=default_state_dir(),
    )


def default_state_dir() -> Path:
    """Where the testbed keeps its config.yml, logs and pids (env: MLRAY_TESTBED_DIR)."""
    state_dir = os.environ.get("MLRAY_TESTBED_DIR")
    return Path(state_dir) if state_dir else REPO_ROOT / ".testbed"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _check_python(version: str, path: Path) -> None:
    parts = version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise TestbedError(
            f"got python version {version!r} in {path}; expected major.minor such as '3.11'"
        )
