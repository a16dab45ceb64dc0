"""`mlflow models serve` on the same host, serving the same model version mlray serves.

It runs in a container of the cluster's own image (same Python, OS and CPU quota as one Ray
node), in the environment a Ray replica of that model gets: a virtualenv over the image's
site-packages plus the model's pip requirements, exactly the list mlray puts in the app's
`runtime_env.pip`. Then `mlflow models serve --env-manager local -w 1`, MLflow's own server
with one worker, its default. The container carries the testbed label, so `nox -s down`
removes it with the rest.
"""

from __future__ import annotations

import time

from loadtests.errors import LoadTestError
from loadtests.runner import say
from mlray.registry import Registry
from testbed import images, nodes
from testbed.core import PIP_CACHE_PATH, Testbed
from testbed.errors import TestbedError

CONTAINER_PORT = 5001
READY_TIMEOUT_S = 900.0  # a cold pip install of the model's requirements included

_SCRIPT = f"""\
set -eu
printf '%s\\n' "$MLRAY_BASELINE_REQUIREMENTS" > /tmp/requirements.txt
python3 -m virtualenv -q --system-site-packages --no-download --no-periodic-update /tmp/venv
/tmp/venv/bin/python -m pip install -q --disable-pip-version-check --no-compile \\
    -r /tmp/requirements.txt
echo "mlray-baseline: requirements installed"
# mlflow starts `uvicorn` from PATH; the image's console script would run the system Python
# (no xgboost there), so PATH gets one that runs the venv's.
printf '#!/bin/sh\nexec /tmp/venv/bin/python -m uvicorn "$@"\n' > /tmp/venv/bin/uvicorn
chmod +x /tmp/venv/bin/uvicorn
export PATH="/tmp/venv/bin:$PATH"
exec /tmp/venv/bin/python -m mlflow models serve -m "$MLRAY_BASELINE_MODEL_URI" \\
    --env-manager local -w 1 -h 0.0.0.0 -p {CONTAINER_PORT}
"""


class BaselineServer:
    """A context manager: `start()` returns at once (the install runs while mlray deploys),
    `wait_ready()` blocks until `/ping` answers and fails with the container's log lines."""

    def __init__(self, testbed: Testbed, tracking_uri: str, name: str, version: str) -> None:
        self.testbed = testbed
        self.tracking_uri = tracking_uri
        self.model_uri = f"models:/{name}/{version}"
        self.info = Registry(tracking_uri).read_version(name, version)
        if self.info.problem:
            raise LoadTestError(
                f"cannot serve {self.model_uri} as the baseline: {self.info.problem}"
            )
        python = ".".join((self.info.python_version or "").split(".")[:2])
        if python not in testbed.spec.python:
            raise LoadTestError(
                f"got Python {self.info.python_version!r} for {self.model_uri}; expected one of "
                f"the testbed's {testbed.spec.python} to run its baseline in"
            )
        self.python = python
        self.container = f"{testbed.spec.name}-baseline"
        self.port = nodes.free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> BaselineServer:
        nodes.remove(self.container)
        trust = self.testbed.prepare()
        spec = nodes.ContainerSpec(
            name=self.container,
            image=images.ray_tag(self.python),
            command=["sh", "-c", _SCRIPT],
            labels={
                "io.mlray.testbed.name": self.testbed.spec.name,
                "io.mlray.testbed.role": "baseline",
            },
            network=self.testbed.spec.network,
            env={
                **trust.pip_env,
                "MLFLOW_TRACKING_URI": self.testbed.mlflow_internal_url,
                "MLRAY_BASELINE_MODEL_URI": self.model_uri,
                "MLRAY_BASELINE_REQUIREMENTS": "\n".join(self.info.pip),
            },
            ports={CONTAINER_PORT: self.port},
            volumes={self.testbed._pip_cache_volume: PIP_CACHE_PATH},
            cpus=self.testbed.spec.node.cpus,
            memory=self.testbed.spec.node.memory,
        )
        say(f"baseline: `mlflow models serve -m {self.model_uri} --env-manager local -w 1` "
            f"starting in {spec.image} ({len(self.info.pip)} requirements to install)")  # fmt: skip
        nodes.start(spec)
        self._started = time.monotonic()
        return self

    def wait_ready(self) -> str:
        try:
            nodes.wait_until(
                self.container, nodes.http_ok(f"{self.url}/ping"), "/ping answer", READY_TIMEOUT_S
            )
        except TestbedError as exc:
            raise LoadTestError(f"the baseline server did not start: {exc}") from None
        say(f"baseline: ready at {self.url} ({time.monotonic() - self._started:.0f} s after start)")
        return self.url

    def stop(self) -> None:
        nodes.remove(self.container)

    def __enter__(self) -> BaselineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
