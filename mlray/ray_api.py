"""The Ray dashboard's REST API: the I/O edge on the cluster side.

mlray never uses Ray Client: the CLI host's Python and Ray versions must not matter, so all
it needs is HTTP to the dashboard.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests

from mlray.capacity import cluster_totals, has_autoscaler
from mlray.config import ClusterConfig
from mlray.errors import ClusterError

SERVE_API = "/api/serve/applications/"
PROBE_MARKER = "MLRAY_PROBE="
# Runs on the cluster: what the cluster really is, not what the config says.
PROBE_SCRIPT = f"""
import json, platform
try:
    import ray
    ray_version = ray.__version__
except Exception:
    ray_version = "unknown"
print("{PROBE_MARKER}" + json.dumps({{
    "python": platform.python_version(), "machine": platform.machine(),
    "system": platform.system(), "libc": "-".join(platform.libc_ver()), "ray": ray_version,
}}))
"""


def script_entrypoint(script: str, needs_ray: bool = False) -> str:
    """A job entrypoint that runs ``script`` on the interpreter Ray's workers run.

    A job's entrypoint is a shell whose parent is the job supervisor, a Ray worker: its
    interpreter is the one replicas run on, whatever ``python`` on the PATH is. When Ray
    runs from a virtualenv, that binary resolves to the base interpreter, which cannot
    import ray; a script that needs ray then takes the first ``python3``/``python`` on the
    PATH (the one `ray start` ran from, for an activated venv) that can.
    """
    b64 = base64.b64encode(script.encode()).decode()
    run = f'"$PY" -c "import base64; exec(base64.b64decode(\'{b64}\'))"'
    worker = "$(readlink /proc/$PPID/exe 2>/dev/null || command -v python3)"
    if not needs_ray:
        return f'PY="{worker}"; {run}'
    return (
        f'for PY in "{worker}" "$(command -v python3)" "$(command -v python)"; do '
        '"$PY" -c "import ray" 2>/dev/null && break; done; ' + run
    )


PROBE_ENTRYPOINT = script_entrypoint(PROBE_SCRIPT)


@dataclass(frozen=True)
class Job:
    """A job mlray submitted: its id, what it is for, and when to stop waiting for it."""

    submission_id: str
    what: str
    deadline: float


@dataclass(frozen=True)
class ClusterFacts:
    """The live cluster, as reported by a probe job on it."""

    python: str  # full version, e.g. 3.11.7
    machine: str  # x86_64 / aarch64
    system: str
    libc: str  # e.g. glibc-2.36
    ray: str

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def platform(self) -> str:
        return f"{self.system.lower()}_{self.machine}"

    @property
    def glibc(self) -> tuple[int, int] | None:
        name, _, ver = self.libc.partition("-")
        if name != "glibc" or not ver:
            return None
        major, _, minor = ver.partition(".")
        return int(major), int(minor.split(".")[0] or 0)


class RayDashboard:
    def __init__(self, cluster: ClusterConfig, name: str = "cluster"):
        self.cluster = cluster
        self.name = name
        self.base = cluster.dashboard_url
        self.session = requests.Session()
        token = cluster.auth_token()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kw: Any) -> requests.Response:
        url = self.base + path
        kw.setdefault("timeout", self.cluster.request_timeout_s)
        try:
            resp = self.session.request(method, url, **kw)
        except requests.RequestException as e:
            raise ClusterError(
                f"cannot reach the Ray dashboard of cluster {self.name!r} at {self.base} "
                f"({type(e).__name__}); check clusters.{self.name}.dashboard_url. "
                "Nothing was changed."
            ) from None
        if resp.status_code in (401, 403):
            raise ClusterError(
                f"the Ray dashboard at {self.base} refused {method} {path} "
                f"({resp.status_code}: {resp.text[:200]}); Ray >= 2.60 enables token auth by "
                f"default: set clusters.{self.name}.auth_token_env (or auth_token_file) to "
                "the cluster's token (`ray get-auth-token` on the head). Nothing was changed."
            )
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._call(method, path, **kw)
        if resp.status_code >= 400:
            raise ClusterError(
                f"{method} {self.base}{path} answered {resp.status_code}: {resp.text[:2000]}"
            )
        return resp.json() if resp.content else None

    # -- Serve ---------------------------------------------------------------------------
    def serve_details(self) -> dict[str, Any]:
        """``GET /api/serve/applications/``: the running config and every app's status."""
        return self._json("GET", SERVE_API) or {}

    def put_serve_config(self, config: dict[str, Any]) -> None:
        """Replace the cluster's whole Serve config (apps not listed are removed)."""
        body = json.dumps(config, sort_keys=False).encode()
        self._json("PUT", SERVE_API, data=body, headers={"Content-Type": "application/json"})

    # -- resources: does the plan fit? ---------------------------------------------------
    def cluster_resources(self) -> dict[str, float]:
        """The alive nodes' total resources (``GET /nodes?view=summary``), e.g. CPU, memory."""
        return cluster_totals(self._json("GET", "/nodes", params={"view": "summary"}) or {})

    def autoscaler(self) -> bool | None:
        """Whether the cluster can add nodes (``GET /api/cluster_status``); None: unknown."""
        try:
            return has_autoscaler(self._json("GET", "/api/cluster_status") or {})
        except ClusterError:
            return None  # only decides refuse-or-warn; never fail a deploy for it

    def haproxy_actors(self) -> set[str]:
        """Names of the live ``HAProxyManager`` actors (Ray's state API); empty if none."""
        params = {
            "filter_keys": ["class_name", "state"],
            "filter_predicates": ["=", "="],
            "filter_values": ["HAProxyManager", "ALIVE"],
            "limit": 1000,
        }
        data = self._json("GET", "/api/v0/actors", params=params) or {}
        rows = ((data.get("data") or {}).get("result") or {}).get("result") or []
        return {r["name"] for r in rows if r.get("name")}

    # -- packages (the mechanism Ray's job submission uses for working_dir/py_modules) -----
    def package_exists(self, uri: str) -> bool:
        protocol, name = _split_uri(uri)
        resp = self._call("GET", f"/api/packages/{protocol}/{name}")
        if resp.status_code == 404:
            return False
        if resp.status_code >= 400:
            raise ClusterError(f"checking package {uri} answered {resp.status_code}: {resp.text}")
        return True

    def upload_package(self, uri: str, data: bytes) -> None:
        protocol, name = _split_uri(uri)
        self._json("PUT", f"/api/packages/{protocol}/{name}", data=data)

    # -- jobs: the live probe, the node preparation -----------------------------------------
    def submit_job(
        self,
        kind: str,
        entrypoint: str,
        timeout_s: float,
        env_vars: dict[str, str] | None = None,
    ) -> Job:
        """Submit a job that asks for no CPU (it must run on a busy cluster too)."""
        sid = f"mlray-{kind}-{uuid.uuid4().hex[:12]}"
        body: dict[str, Any] = {
            "entrypoint": entrypoint,
            "submission_id": sid,
            "metadata": {"mlray": kind},
            "entrypoint_num_cpus": 0,
        }
        if env_vars:
            body["runtime_env"] = {"env_vars": env_vars}
        deadline = time.monotonic() + timeout_s
        while True:
            resp = self._call("POST", "/api/jobs/", json=body)
            if resp.status_code < 400:
                return Job(sid, kind, deadline)
            # A freshly started head answers before its job agent has registered.
            if (
                resp.status_code in (500, 503)
                and "agent" in resp.text
                and (time.monotonic() < deadline)
            ):
                time.sleep(1.0)
                continue
            raise ClusterError(
                f"POST {self.base}/api/jobs/ (the {kind} job) answered {resp.status_code}: "
                f"{resp.text[:2000]}"
            )

    def job_report(self, job: Job, marker: str) -> dict[str, Any]:
        """Wait for the job, then return the JSON it printed after ``marker``."""
        status = "PENDING"
        while time.monotonic() < job.deadline:
            info = self._json("GET", f"/api/jobs/{job.submission_id}")
            status = info.get("status", "")
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(0.5)
        logs = (self._json("GET", f"/api/jobs/{job.submission_id}/logs") or {}).get("logs", "")
        with contextlib.suppress(ClusterError):  # only housekeeping
            if status not in ("SUCCEEDED", "FAILED", "STOPPED"):
                self._call("POST", f"/api/jobs/{job.submission_id}/stop")
            self._call("DELETE", f"/api/jobs/{job.submission_id}")
        for line in logs.splitlines():
            if line.startswith(marker):
                return json.loads(line[len(marker) :])
        raise ClusterError(
            f"the {job.what} job on cluster {self.name!r} ended {status} without a report; "
            f"its logs:\n{logs[-2000:]}"
        )

    def probe(self, timeout_s: float = 120.0) -> ClusterFacts:
        """Run a tiny job on the cluster and read back its Python, platform and libc."""
        job = self.submit_job("probe", PROBE_ENTRYPOINT, timeout_s)
        return ClusterFacts(**self.job_report(job, PROBE_MARKER))


def _split_uri(uri: str) -> tuple[str, str]:
    protocol, sep, name = uri.partition("://")
    if not sep or not name:
        raise ValueError(f"got {uri!r} for a package URI; expected gcs://_ray_pkg_<hash>.zip")
    return protocol, name
