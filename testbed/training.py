"""Train and register the example models (examples/models.yml) against the running testbed.

Each model is trained in a throwaway container from the image of the cluster that will serve
it, so python_env.yaml records exactly that cluster's Python (patch included) and platform:

    podman run --rm <mlray-ray:pyX.Y> on the testbed network, MLFLOW_TRACKING_URI=<mlflow container>
      virtualenv --system-site-packages   (the image's mlflow, as Ray's runtime_env pip does)
      pip install -r <requirements file>  (pip cache: the testbed's shared cache volume)
      python examples/train.py ...        (train, log, register, tag, alias)

Idempotent and cheap to rerun: a model whose latest version carries the fingerprint of its
inputs (examples/train.py:fingerprint) is not retrained; only its tags and alias are re-applied,
from the host, without starting a container.

    python -m testbed.training [--model NAME] [--force-new-version] [--jobs 2]   (nox -s train)
    from testbed.training import train_examples; train_examples(testbed)        (fixtures)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from testbed import images, nodes
from testbed.core import MLFLOW_PORT, PIP_CACHE_PATH, Testbed
from testbed.engine import podman_binary, run_podman
from testbed.errors import TestbedError
from testbed.spec import LABEL, REPO_ROOT

EXAMPLES_DIR = REPO_ROOT / "examples"
CATALOG = EXAMPLES_DIR / "models.yml"
TRAIN_SCRIPT = EXAMPLES_DIR / "train.py"
CONTAINER_EXAMPLES = "/examples"
DEFAULT_JOBS = 2  # a 2-core host: pip installs overlap downloads with installs
CONTAINER_TIMEOUT_S = 1800.0
TRAINING_MEMORY = "2g"
FLAVORS = ("xgboost", "catboost")
_PYTHON = re.compile(r"^\d+\.\d+$")
_FILE_PYTHON = re.compile(r"-py(\d)(\d+)-")

# Runs inside the container: $1 is the requirements file, the rest are train.py's options.
# Tags come in the MLRAY_EXAMPLE_TAGS env var (JSON), which needs no shell quoting.
# --no-compile: byte-compiling scipy/pandas/scikit-learn is most of an install (measured 28 of
# 40 s for the xgboost 1.7 set); this throwaway venv compiles only what it imports.
_CONTAINER_SCRIPT = """\
set -eu
requirements="$1"; shift
start=$(date +%s)
python3 -m virtualenv -q --system-site-packages --no-download --no-periodic-update /tmp/venv
/tmp/venv/bin/python -m pip install -q --no-compile -r "/examples/$requirements"
echo "MLRAY_EXAMPLE_PHASE install $(( $(date +%s) - start ))"
exec /tmp/venv/bin/python /examples/train.py --requirements "/examples/$requirements" \
    --tags-json "$MLRAY_EXAMPLE_TAGS" "$@"
"""


@dataclass(frozen=True)
class ExampleModel:
    """One entry of examples/models.yml."""

    name: str
    flavor: str
    python: str  # the image (cluster) Python it is trained with, hence served by
    requirements: str  # file name in examples/
    tags: dict[str, str]
    intended_python: str | None = None
    covers: str = ""

    @property
    def ray_name(self) -> str:
        return self.tags["ray.name"]

    @property
    def cluster(self) -> str:
        """The testbed cluster whose Python it was trained on (where mlray deploys it)."""
        return "py" + self.python.replace(".", "")

    @property
    def mismatched(self) -> bool:
        """True for the deliberate mistake: trained on another Python than its owner meant."""
        return self.intended_python is not None and self.intended_python != self.python

    @property
    def requirements_path(self) -> Path:
        return EXAMPLES_DIR / self.requirements


@dataclass(frozen=True)
class Catalog:
    experiment: str
    alias: str
    models: tuple[ExampleModel, ...]

    def get(self, name: str) -> ExampleModel:
        for model in self.models:
            if model.name == name:
                return model
        known = ", ".join(m.name for m in self.models)
        raise TestbedError(f"got unknown example {name!r}; expected one of {known}")


@dataclass
class Outcome:
    """What happened to one example: trained, unchanged (tags re-applied), or skipped."""

    name: str
    cluster: str
    action: str  # "trained" | "unchanged" | "skipped" | "failed"
    version: str | None = None
    seconds: float = 0.0
    install_seconds: float | None = None
    python_version: str | None = None
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRuntime:
    """What an image's interpreter reports: the inputs of the fingerprint that depend on it."""

    python: str
    mlflow: str


def load_catalog(path: Path = CATALOG) -> Catalog:
    """Parse and check examples/models.yml (shape only; tag values are mlray's to judge)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TestbedError(f"got unreadable {path} ({exc}); expected the examples YAML") from exc
    entries = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TestbedError(f"got no `models:` list in {path}; expected one entry per model")
    models = tuple(_example(entry, path) for entry in entries)
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TestbedError(f"got duplicate model names {dupes} in {path}; expected unique names")
    return Catalog(
        experiment=str(raw.get("experiment") or "mlray-examples"),
        alias=str(raw.get("alias") or "staging"),
        models=models,
    )


def _example(entry: Any, path: Path) -> ExampleModel:
    if not isinstance(entry, dict):
        raise TestbedError(f"got {entry!r} in {path} models; expected a mapping")
    name = str(entry.get("name") or "")
    where = f"{path} model {name or '?'}"
    missing = [k for k in ("name", "flavor", "python", "requirements", "tags") if k not in entry]
    if missing:
        raise TestbedError(f"got no {', '.join(missing)} for {where}; expected all of them")
    if entry["flavor"] not in FLAVORS:
        raise TestbedError(
            f"got flavor {entry['flavor']!r} for {where}; expected one of {', '.join(FLAVORS)}"
        )
    for key in ("python", "intended_python"):
        value = entry.get(key)
        if value is not None and not _PYTHON.match(str(value)):
            raise TestbedError(f"got {key} {value!r} for {where}; expected a quoted 'X.Y'")
    tags = entry["tags"]
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise TestbedError(f"got non-string tags for {where}; expected quoted string values")
    if "ray.name" not in tags:
        raise TestbedError(f"got no ray.name tag for {where}; expected one")
    requirements = str(entry["requirements"])
    if not (EXAMPLES_DIR / requirements).is_file():
        raise TestbedError(f"got missing requirements file {requirements} for {where}")
    return ExampleModel(
        name=name,
        flavor=str(entry["flavor"]),
        python=str(entry["python"]),
        requirements=requirements,
        tags=dict(tags),
        intended_python=str(entry["intended_python"]) if entry.get("intended_python") else None,
        covers=str(entry.get("covers") or ""),
    )


def train_module() -> ModuleType:
    """examples/train.py as a module (stdlib-only at import): one fingerprint implementation."""
    name = "mlray_examples_train"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TRAIN_SCRIPT)
    if spec is None or spec.loader is None:
        raise TestbedError(f"got no loadable {TRAIN_SCRIPT}; expected the training script")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def image_runtime(image: str) -> ImageRuntime:
    """The exact Python and mlflow versions of an image (about a second)."""
    code = (
        "import platform, importlib.metadata as m; "
        "print(platform.python_version(), m.version('mlflow'))"
    )
    proc = run_podman("run", "--rm", "--network=none", image, "python3", "-c", code, timeout=120)
    python, mlflow = proc.stdout.split()[-2:]
    return ImageRuntime(python=python, mlflow=mlflow)


def tracking_uri_of(testbed: Testbed) -> str:
    """MLflow as the host reaches it (its published port), once it answers /health."""
    name = testbed.spec.mlflow_container
    status = nodes.container_status(name)
    if status != "running":
        raise TestbedError(
            f"got MLflow container {name} {status}; expected a running testbed "
            "(run `nox -s up` first)"
        )
    proc = run_podman("port", name, f"{MLFLOW_PORT}/tcp")
    address = proc.stdout.strip().splitlines()[0].replace("0.0.0.0", "127.0.0.1")
    url = f"http://{address}"
    nodes.wait_until(name, nodes.http_ok(f"{url}/health"), "MLflow /health answer", 60)
    return url


def train_examples(
    testbed: Testbed | None = None,
    names: Sequence[str] | None = None,
    force_new_version: bool = False,
    jobs: int = DEFAULT_JOBS,
    catalog: Catalog | None = None,
) -> list[Outcome]:
    """Make MLflow hold every example of the testbed's Pythons; returns one outcome each.

    Needs the testbed running (MLflow, network, images). Models whose Python has no cluster in
    this testbed are skipped. Raises TestbedError naming every model that failed.
    """
    started = time.monotonic()
    testbed = testbed or Testbed.from_file()
    trust = testbed.prepare()
    catalog = catalog or load_catalog()
    chosen = [catalog.get(n) for n in names] if names else list(catalog.models)
    tracking_uri = tracking_uri_of(testbed)
    # Fail in seconds, not after MLflow's default minutes of retries, if MLflow goes away.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    train = train_module()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    runtimes: dict[str, ImageRuntime] = {}
    outcomes: list[Outcome] = []
    pending: list[ExampleModel] = []
    for model in chosen:
        if model.python not in testbed.spec.python:
            outcomes.append(
                Outcome(model.name, model.cluster, "skipped",
                        detail=f"this testbed has no Python {model.python} cluster")
            )  # fmt: skip
            _say(f"{model.name}: skipped (no Python {model.python} cluster in this testbed)")
            continue
        image = images.ray_tag(model.python)
        if model.python not in runtimes:
            if run_podman("image", "exists", image, check=False).returncode != 0:
                raise TestbedError(f"got no image {image}; expected it built (run `nox -s up`)")
            runtimes[model.python] = image_runtime(image)
        runtime = runtimes[model.python]
        begun = time.monotonic()
        fp = train.fingerprint(
            model.flavor,
            train.read_requirements(model.requirements_path),
            python_version=runtime.python,
            mlflow=runtime.mlflow,
        )
        version = None if force_new_version else train.reusable_version(client, model.name, fp)
        if version is None:
            pending.append(model)
            continue
        train.apply_settings(client, model.name, version, model.tags, catalog.alias)
        outcomes.append(
            Outcome(model.name, model.cluster, "unchanged", version,
                    time.monotonic() - begun, python_version=runtime.python,
                    detail="fingerprint matches; tags and alias re-applied")
        )  # fmt: skip
        _say(f"{model.name}: unchanged, version {version} (Python {runtime.python})")

    if pending:
        _say(
            f"training {len(pending)} model(s) in containers, {max(1, jobs)} at a time: "
            + ", ".join(m.name for m in pending)
        )
        env = {
            **trust.pip_env,
            "MLFLOW_TRACKING_URI": testbed.mlflow_internal_url,
            "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONWARNINGS": "ignore",
        }
        runner = _Runner(testbed, env, catalog, force_new_version)
        pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        try:
            outcomes += list(pool.map(runner.run, _largest_first(pending)))
        except BaseException:  # Ctrl-C: stop what runs and what is queued, leave nothing behind
            pool.shutdown(wait=False, cancel_futures=True)
            for model in pending:
                nodes.remove(runner.container_name(model))
            raise
        pool.shutdown()

    order = {m.name: i for i, m in enumerate(catalog.models)}
    outcomes.sort(key=lambda o: order.get(o.name, len(order)))
    _say_summary(outcomes, time.monotonic() - started)
    failed = [o for o in outcomes if o.action == "failed"]
    if failed:
        raise TestbedError(
            f"got {len(failed)} failed training run(s); expected none:\n"
            + "\n".join(f"- {o.name}: {o.detail}" for o in failed)
        )
    return outcomes


def _largest_first(models: list[ExampleModel]) -> list[ExampleModel]:
    """Start the slowest installs first (xgboost 1.7 is a 200 MB wheel) so they overlap."""
    heavy = ("xgboost==1.7", "catboost==")
    return sorted(
        models,
        key=lambda m: -sum(h in m.requirements_path.read_text() for h in heavy),
    )


class _Runner:
    """Runs one model's training container, streaming its output with a prefix."""

    def __init__(
        self, testbed: Testbed, env: dict[str, str], catalog: Catalog, force: bool
    ) -> None:
        self.testbed = testbed
        self.env = env
        self.catalog = catalog
        self.force = force

    def container_name(self, model: ExampleModel) -> str:
        slug = re.sub(r"[^a-z0-9-]+", "-", model.name.lower()).strip("-")
        return f"{self.testbed.spec.name}-train-{slug}"

    def command(self, model: ExampleModel) -> tuple[str, list[str]]:
        spec = self.testbed.spec
        name = self.container_name(model)
        args = [
            podman_binary(), "run", "--rm", "--name", name,
            "--label", f"{LABEL}=1",
            "--label", f"io.mlray.testbed.name={spec.name}",
            "--label", "io.mlray.testbed.role=training",
            "--network", spec.network,
            "--memory", TRAINING_MEMORY,
            "--workdir", "/tmp",
            "-v", f"{EXAMPLES_DIR}:{CONTAINER_EXAMPLES}:ro",
            # The cache every Ray node mounts too: reruns and later deploys reuse the wheels.
            "-v", f"{self.testbed._pip_cache_volume}:{PIP_CACHE_PATH}",
        ]  # fmt: skip
        env = {**self.env, "MLRAY_EXAMPLE_TAGS": json.dumps(model.tags, sort_keys=True)}
        for key, value in sorted(env.items()):
            args += ["-e", f"{key}={value}"]
        args += [
            images.ray_tag(model.python),
            "sh", "-c", _CONTAINER_SCRIPT, "train-example", model.requirements,
            "--flavor", model.flavor, "--name", model.name,
            "--alias", self.catalog.alias, "--experiment", self.catalog.experiment,
        ]  # fmt: skip
        if self.force:
            args.append("--force-new-version")
        return name, args

    def run(self, model: ExampleModel) -> Outcome:
        container, args = self.command(model)
        prefix = model.name.removesuffix(".staging")
        _say(f"{model.name}: starting in {images.ray_tag(model.python)}")
        started = time.monotonic()
        tail: list[str] = []
        result: dict[str, Any] = {}
        install: float | None = None
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        timer = threading.Timer(CONTAINER_TIMEOUT_S, nodes.remove, [container])
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                if line.startswith("MLRAY_EXAMPLE_PHASE install "):
                    install = float(line.split()[-1])
                    _say(f"{model.name}: requirements installed in {install:.0f} s")
                    continue
                if line.startswith("MLRAY_EXAMPLE_RESULT "):
                    result = json.loads(line.removeprefix("MLRAY_EXAMPLE_RESULT "))
                    continue
                tail = [*tail[-39:], line]
                _emit(f"  {prefix} | {line}")
            code = proc.wait()
        except BaseException:
            nodes.remove(container)
            raise
        finally:
            timer.cancel()
        seconds = time.monotonic() - started
        if code != 0 or not result:
            detail = f"exit {code} after {seconds:.0f} s; last lines:\n" + "\n".join(
                f"    {line}" for line in tail[-15:]
            )
            _say(f"{model.name}: FAILED ({detail.splitlines()[0]})")
            return Outcome(model.name, model.cluster, "failed", seconds=seconds, detail=detail)
        action = "trained" if result.get("trained") else "unchanged"
        _say(f"{model.name}: {action} version {result['version']} in {seconds:.0f} s")
        return Outcome(
            model.name, model.cluster, action, str(result["version"]), seconds, install,
            python_version=result.get("python_version"), result=result,
        )  # fmt: skip


_OUTPUT_LOCK = threading.Lock()


def _emit(line: str) -> None:
    """One whole line to stderr: container outputs and progress come from several threads."""
    with _OUTPUT_LOCK:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _say(message: str) -> None:
    _emit(f"[train] {message}")


def _say_summary(outcomes: list[Outcome], total: float) -> None:
    width = max([len(o.name) for o in outcomes] + [5])
    _say(f"{'model':<{width}}  cluster  version  action     seconds  (install)  python")
    for o in outcomes:
        install = f"({o.install_seconds:.0f})" if o.install_seconds is not None else ""
        _say(
            f"{o.name:<{width}}  {o.cluster:<7}  {o.version or '-':<7}  {o.action:<9}  "
            f"{o.seconds:7.1f}  {install:<9}  {o.python_version or '-'}"
        )
    _say(f"done in {total:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--file", help="testbed description (default: testbed/testbed.yml)")
    parser.add_argument("--model", action="append", help="only this example (repeatable)")
    parser.add_argument("--force-new-version", action="store_true",
                        help="train and register a new version even if one matches")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="containers at a time")
    parser.add_argument("--list", action="store_true", help="list the examples and exit")
    args = parser.parse_args(argv)
    # A cancelled CI job sends SIGTERM: unwind like Ctrl-C so training containers are removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        catalog = load_catalog()
        if args.list:
            for m in catalog.models:
                intended = f" (meant for {m.intended_python})" if m.mismatched else ""
                print(f"{m.name:<28} {m.cluster}{intended:<18} {m.ray_name:<20} {m.requirements}")
            return 0
        train_examples(
            Testbed.from_file(args.file),
            names=args.model,
            force_new_version=args.force_new_version,
            jobs=args.jobs,
            catalog=catalog,
        )
    except TestbedError as exc:
        print(f"testbed error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: training containers removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
