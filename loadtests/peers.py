"""What users would run instead of mlray, on the same host, serving the same model version.

    mlflow_serve_w1   `mlflow models serve --env-manager local -w 1` (MLflow's default)
    mlflow_serve_wN   the same with `-w <host cores>`
    mlserver          MLServer with its MLflow runtime (the pins of pyproject's `peers` extra)

Each runs in its own container of the cluster's image (same Python, OS and CPU quota as one
Ray node), in the environment a Ray replica of that model gets: a virtualenv over the image's
site-packages plus the model's pip requirements, the list mlray puts in the app's
`runtime_env.pip`. All answer MLflow's scoring protocol on `/invocations`, so one Locust file
drives them all. The containers carry the testbed label: `nox -s down` removes them too.
"""

from __future__ import annotations

import importlib.metadata
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from loadtests.errors import LoadTestError
from loadtests.runner import say
from loadtests.scenarios import CORES, MLFLOW_W1, MLFLOW_WN, MLSERVER
from mlray.registry import Registry
from testbed import images, nodes
from testbed.core import PIP_CACHE_PATH, Testbed
from testbed.errors import TestbedError

CONTAINER_PORT = 5001
READY_TIMEOUT_S = 900.0  # a cold pip install of the model's requirements included
MLSERVER_FALLBACK = "mlray-peer: parallel_workers=0"  # the log line that says it fell back

# A venv over the image's site-packages with the model's requirements (plus `$EXTRA`).
_VENV = """\
set -eu
printf '%s\\n' "$MLRAY_PEER_REQUIREMENTS" > /tmp/requirements.txt
python3 -m virtualenv -q --system-site-packages --no-download --no-periodic-update /tmp/venv
/tmp/venv/bin/python -m pip install -q --disable-pip-version-check --no-compile \\
    -r /tmp/requirements.txt $MLRAY_PEER_EXTRA
echo "mlray-peer: requirements installed"
export PATH="/tmp/venv/bin:$PATH"
"""

# mlflow starts `uvicorn` from PATH; the image's console script would run the system Python
# (no xgboost there), so PATH gets one that runs the venv's.
_MLFLOW = (
    _VENV
    + """\
printf '#!/bin/sh\\nexec /tmp/venv/bin/python -m uvicorn "$@"\\n' > /tmp/venv/bin/uvicorn
chmod +x /tmp/venv/bin/uvicorn
exec /tmp/venv/bin/python -m mlflow models serve -m "$MLRAY_PEER_MODEL_URI" \\
    --env-manager local -w {workers} -h 0.0.0.0 -p {port}
"""
)

# MLServer reads the model from a local directory. Its default worker pool (parallel_workers
# 1) has failed to start on some Pythons ("no current event loop"); then the model never
# becomes ready, and this script says so and restarts it in-process (parallel_workers 0).
_MLSERVER = (
    _VENV
    + """\
python -c "import mlflow, os; mlflow.artifacts.download_artifacts(
    os.environ['MLRAY_PEER_MODEL_URI'], dst_path='/tmp/model')" >/dev/null
mkdir -p /tmp/mlserver
ports='"http_port": {port}, "grpc_port": 5002, "metrics_port": 5003'
printf '{{%s}}' "$ports" > /tmp/mlserver/settings.json
printf '{{"name": "model", "implementation": "mlserver_mlflow.MLflowRuntime",
  "parameters": {{"uri": "/tmp/model"}}}}' > /tmp/mlserver/model-settings.json
ready() {{
    python3 -c "import urllib.request as u
u.urlopen('http://127.0.0.1:{port}/v2/models/model/ready', timeout=2)" 2>/dev/null
}}
mlserver start /tmp/mlserver > /tmp/mlserver-default.log 2>&1 &
pid=$!
for _ in $(seq 180); do
    if ready; then echo "mlray-peer: parallel_workers=default ready"; wait $pid; exit $?; fi
    kill -0 $pid 2>/dev/null || break
    sleep 1
done
kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
cat /tmp/mlserver-default.log
echo "{fallback} (with the default worker pool: $(grep -E '^[A-Za-z_.]*(Error|Exception)' \\
    /tmp/mlserver-default.log | tail -1 || echo 'not ready in 180 s'))"
printf '{{%s, "parallel_workers": 0}}' "$ports" > /tmp/mlserver/settings.json
exec mlserver start /tmp/mlserver
"""
)


@dataclass(frozen=True)
class PeerKind:
    name: str
    command: str  # what the report says ran
    script: str
    ready_path: str
    extra: tuple[str, ...] = ()  # pip requirements on top of the model's


def mlserver_pins() -> tuple[str, ...]:
    """The `peers` extra of mlray's installed metadata (pyproject.toml): one place for the
    MLServer versions compared against."""
    marker = re.compile(r"""extra\s*==\s*["']peers["']""")
    pins = tuple(
        req.split(";")[0].strip()
        for req in importlib.metadata.requires("mlray") or []
        if marker.search(req)
    )
    if not pins:
        raise LoadTestError(
            "got no `peers` extra in mlray's installed metadata; expected the MLServer pins "
            "(reinstall: pip install -e '.[load]')"
        )
    return pins


def kinds() -> dict[str, PeerKind]:
    port = CONTAINER_PORT
    return {
        MLFLOW_W1: PeerKind(
            MLFLOW_W1,
            "mlflow models serve --env-manager local -w 1",
            _MLFLOW.format(workers=1, port=port),
            "/ping",
        ),
        MLFLOW_WN: PeerKind(
            MLFLOW_WN,
            f"mlflow models serve --env-manager local -w {CORES}",
            _MLFLOW.format(workers=CORES, port=port),
            "/ping",
        ),
        MLSERVER: PeerKind(
            MLSERVER,
            f"mlserver start (MLflow runtime; {', '.join(mlserver_pins())})",
            _MLSERVER.format(port=port, fallback=MLSERVER_FALLBACK),
            "/v2/models/model/ready",
            extra=mlserver_pins(),
        ),
    }


class PeerServer:
    """One peer in its own container. `start()` returns at once (its pip install runs while
    mlray deploys); `wait_ready()` blocks until it answers and fails with its log lines."""

    def __init__(self, testbed: Testbed, kind: PeerKind, python: str, model_uri: str,
                 requirements: list[str]) -> None:  # fmt: skip
        self.testbed = testbed
        self.kind = kind
        self.python = python
        self.model_uri = model_uri
        self.requirements = requirements
        self.container = f"{testbed.spec.name}-peer-{kind.name.lower().replace('_', '-')}"
        self.port = nodes.free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> PeerServer:
        nodes.remove(self.container)
        trust = self.testbed.prepare()
        spec = nodes.ContainerSpec(
            name=self.container,
            image=images.ray_tag(self.python),
            command=["sh", "-c", self.kind.script],
            labels={
                "io.mlray.testbed.name": self.testbed.spec.name,
                "io.mlray.testbed.role": "peer",
            },
            network=self.testbed.spec.network,
            env={
                **trust.pip_env,
                "MLFLOW_TRACKING_URI": self.testbed.mlflow_internal_url,
                "MLRAY_PEER_MODEL_URI": self.model_uri,
                "MLRAY_PEER_REQUIREMENTS": "\n".join(self.requirements),
                "MLRAY_PEER_EXTRA": " ".join(self.kind.extra),  # pins: no spaces, no quoting
            },
            ports={CONTAINER_PORT: self.port},
            volumes={self.testbed._pip_cache_volume: PIP_CACHE_PATH},
            cpus=self.testbed.spec.node.cpus,
            memory=self.testbed.spec.node.memory,
        )
        nodes.start(spec)
        self._started = time.monotonic()
        return self

    def wait_ready(self) -> str:
        try:
            nodes.wait_until(
                self.container,
                nodes.http_ok(f"{self.url}{self.kind.ready_path}"),
                f"{self.kind.ready_path} answer",
                READY_TIMEOUT_S,
            )
        except TestbedError as exc:
            raise LoadTestError(f"peer {self.kind.name} did not start: {exc}") from None
        say(f"peer {self.kind.name}: ready at {self.url} "
            f"({time.monotonic() - self._started:.0f} s after start)")  # fmt: skip
        return self.url

    def notes(self) -> str:
        """What the report should know about how it ran (MLServer's fallback, and why)."""
        if self.kind.name != MLSERVER:
            return ""
        for line in nodes.container_logs(self.container).splitlines():
            if MLSERVER_FALLBACK in line:
                return line.strip()
        return "mlserver ran with its default worker pool"

    def stop(self) -> None:
        nodes.remove(self.container)


class Peers:
    """Every peer, started together and stopped together (a context manager)."""

    def __init__(self, testbed: Testbed, tracking_uri: str, name: str, version: str,
                 names: tuple[str, ...]) -> None:  # fmt: skip
        self.model_uri = f"models:/{name}/{version}"
        info = Registry(tracking_uri).read_version(name, version)
        if info.problem:
            raise LoadTestError(f"cannot serve {self.model_uri} as a peer: {info.problem}")
        python = ".".join((info.python_version or "").split(".")[:2])
        if python not in testbed.spec.python:
            raise LoadTestError(
                f"got Python {info.python_version!r} for {self.model_uri}; expected one of "
                f"the testbed's {testbed.spec.python} to run its peers in"
            )
        every = kinds()
        self.servers = {
            n: PeerServer(testbed, every[n], python, self.model_uri, list(info.pip)) for n in names
        }
        self.urls: dict[str, str] = {}

    def start(self) -> Peers:
        for server in self.servers.values():
            say(f"peer {server.kind.name}: `{server.kind.command}` serving {self.model_uri}, "
                f"starting in {images.ray_tag(server.python)}")  # fmt: skip
            server.start()
        return self

    def wait_ready(self) -> dict[str, str]:
        with ThreadPoolExecutor(max(1, len(self.servers))) as pool:
            urls = pool.map(lambda s: s.wait_ready(), self.servers.values())
            self.urls = dict(zip(self.servers, urls, strict=True))
        return self.urls

    def describe(self) -> dict[str, dict[str, str]]:
        return {
            n: {"server": s.kind.command, "container": s.container, "notes": s.notes()}
            for n, s in self.servers.items()
        }

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> Peers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
