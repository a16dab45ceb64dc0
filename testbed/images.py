"""Base and testbed images, rebuilt only when their inputs change.

Each image carries a label with the SHA-256 of everything that shapes it (Dockerfile, helper
scripts, CA bundle, build args, base image id); a build is skipped when the label matches, so a
warm `up` costs nothing here. Builds use the podman CLI because it streams progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlray.live import build_stage, live_terminal, render_build_line
from testbed.engine import podman_binary, run_podman
from testbed.errors import TestbedError
from testbed.spec import REPO_ROOT, TestbedSpec
from testbed.trust import Trust

DOCKER_DIR = REPO_ROOT / "docker"
HASH_LABEL = "io.mlray.testbed-image.inputs"
# Python that each Debian suite ships as python3: what offline mode can build.
DEBIAN_SUITES = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
DEBIAN_PACKAGES = ("python3", "python3-pip", "ca-certificates", "tini")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
REGISTRY_PROBE = "https://registry-1.docker.io/v2/"
BUILD_SCRIPTS = ("prepare-base.sh", "pip-install.sh")


@dataclass(frozen=True)
class ImageSet:
    """Tags of the images one testbed uses."""

    ray: dict[str, str]  # python version -> tag
    mlflow: str


def ray_tag(python: str) -> str:
    return f"localhost/mlray-ray:py{python}"


MLFLOW_TAG = "localhost/mlray-mlflow:latest"
REDIS_TAG = "localhost/mlray-redis:latest"


def build_all(spec: TestbedSpec, trust: Trust, pythons: list[str] | None = None) -> ImageSet:
    """Ensure every image the spec needs exists and is current (building what changed)."""
    pythons = pythons or list(spec.python)
    mode = choose_base_mode(spec)
    _say(f"base images: {mode} mode")
    # One thread per Python: downloads dominate a cold build, so they overlap well.
    with ThreadPoolExecutor(max_workers=len(pythons)) as pool:
        futures = {py: pool.submit(build_ray, spec, trust, py, mode) for py in pythons}
        ray = {py: future.result() for py, future in futures.items()}
    # MLflow is always built on the first Python's Ray image, so per-Python builds agree.
    first = spec.python[0]
    if first in ray:
        build_mlflow(spec, trust, ray[first], first)
    return ImageSet(ray=ray, mlflow=MLFLOW_TAG)


def choose_base_mode(spec: TestbedSpec) -> str:
    """registry when an official Python image is present or the registry answers, else offline."""
    if spec.base != "auto":
        return spec.base
    if all(_image_exists(registry_base(py)) for py in spec.python):
        return "registry"
    return "registry" if _registry_reachable() else "offline"


def registry_base(python: str) -> str:
    return f"docker.io/library/python:{python}-slim"


def _registry_reachable() -> bool:
    """A registry's /v2/ answers 401 with an auth challenge; anything else means no registry."""
    try:
        urllib.request.urlopen(REGISTRY_PROBE, timeout=5)
    except urllib.error.HTTPError as exc:
        return exc.code == 401 and "www-authenticate" in {k.lower() for k in exc.headers}
    except (OSError, ValueError):
        return False
    return False


def base_image(spec: TestbedSpec, python: str, mode: str) -> str:
    """The base image for one Python version, creating it in offline mode."""
    if mode == "registry":
        return registry_base(python)
    suite = DEBIAN_SUITES.get(python)
    if suite is None:
        offline = ", ".join(sorted(DEBIAN_SUITES, key=_version_key))
        raise TestbedError(
            f"got Python {python} for an offline (debootstrap) base image; expected one of "
            f"{offline} (what Debian ships), or registry mode with an "
            "official python image: set `base: registry` in the testbed file or "
            "MLRAY_TESTBED_BASE=registry"
        )
    return build_debian_base(suite)


def build_debian_base(suite: str) -> str:
    """debootstrap a minimal Debian with Python and `podman import` it (no registry needed)."""
    tag = f"localhost/mlray-debian:{suite}"
    mirror = os.environ.get("MLRAY_DEBIAN_MIRROR", DEFAULT_MIRROR)
    inputs = _digest({"suite": suite, "mirror": mirror, "packages": DEBIAN_PACKAGES})
    if _label(tag) == inputs:
        return tag
    if not shutil.which("debootstrap"):
        raise TestbedError(
            f"got no `debootstrap` on PATH for the offline base {tag}; expected it installed "
            "(apt-get install debootstrap), or registry mode (MLRAY_TESTBED_BASE=registry)"
        )
    _say(f"creating {tag} with debootstrap from {mirror} (about a minute)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mlray-{suite}-") as root:
        _stream(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                suite,
                root,
                mirror,
            ],
            what=f"debootstrap {suite}",
            prefix=suite,
        )
        _import_rootfs(Path(root), tag, inputs)
    _say(f"{tag} ready in {time.monotonic() - started:.0f} s")
    return tag


def _import_rootfs(root: Path, tag: str, inputs: str) -> None:
    """tar the tree into `podman import`, with a label so later runs can skip the work."""
    with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
        proc = subprocess.run(
            [
                podman_binary(),
                "import",
                "--change",
                f"LABEL {HASH_LABEL}={inputs}",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise TestbedError(f"got exit {proc.returncode} importing {tag}:\n{proc.stderr[-2000:]}")


def build_ray(spec: TestbedSpec, trust: Trust, python: str, mode: str) -> str:
    base = base_image(spec, python, mode)
    args = {
        "BASE_IMAGE": base,
        "PYTHON_VERSION": python,
        "RAY_VERSION": spec.ray_version,
        "MLFLOW_VERSION": spec.mlflow_version,
        **trust.build_args(),
    }
    return build_image("ray.Dockerfile", ray_tag(python), args, trust)


def build_mlflow(spec: TestbedSpec, trust: Trust, ray_image: str, python: str) -> str:
    """The MLflow server image, based on a Ray image that already holds mlflow (fast)."""
    args = {
        "BASE_IMAGE": ray_image,
        "PYTHON_VERSION": python,
        "MLFLOW_VERSION": spec.mlflow_version,
        **trust.build_args(),
    }
    return build_image("mlflow.Dockerfile", MLFLOW_TAG, args, trust)


def build_redis(spec: TestbedSpec, trust: Trust) -> str:
    """Redis for heads with GCS fault tolerance, on the first Python's Ray image (built
    on demand: only a testbed or a chaos scenario that turns fault tolerance on needs it)."""
    first = spec.python[0]
    ray_image = build_ray(spec, trust, first, choose_base_mode(spec))
    return build_image("redis.Dockerfile", REDIS_TAG, {"BASE_IMAGE": ray_image}, trust)


def build_image(dockerfile: str, tag: str, args: dict[str, str], trust: Trust) -> str:
    """Build `tag` from docker/<dockerfile> unless its inputs' hash label is unchanged."""
    if not args["BASE_IMAGE"].startswith("localhost/") or _image_exists(args["BASE_IMAGE"]):
        base_id = _image_id(args["BASE_IMAGE"])
    else:
        base_id = args["BASE_IMAGE"]  # registry image not pulled yet: podman build pulls it
    files = [dockerfile, *BUILD_SCRIPTS]
    inputs = _digest(
        {
            "files": {name: (DOCKER_DIR / name).read_text() for name in files},
            "ca": hashlib.sha256(trust.ca_bytes()).hexdigest(),
            "args": args,
            "base": base_id,
        }
    )
    if _label(tag) == inputs:
        _say(f"{tag} is up to date")
        return tag
    _say(f"building {tag} from docker/{dockerfile} (base {args['BASE_IMAGE']})")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlray-build-") as ctx:
        for name in files:
            shutil.copy(DOCKER_DIR / name, Path(ctx) / name)
        (Path(ctx) / "extra-ca.pem").write_bytes(trust.ca_bytes())
        cmd = ["podman", "build", "-f", dockerfile, "-t", tag, "--label", f"{HASH_LABEL}={inputs}"]
        if os.environ.get("MLRAY_TESTBED_NO_CACHE"):
            cmd.append("--no-cache")  # a truly cold build, e.g. to measure one
        for key, value in args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        _stream([*cmd, ctx], what=f"build {tag}", prefix=tag.rsplit("/", 1)[-1])
    _say(f"{tag} built in {time.monotonic() - started:.0f} s")
    return tag


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _image_exists(ref: str) -> bool:
    return run_podman("image", "exists", ref, check=False).returncode == 0


def _image_id(ref: str) -> str:
    return run_podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def _label(ref: str) -> str | None:
    """The inputs label of an image, or None when the image does not exist."""
    if not _image_exists(ref):
        return None
    out = run_podman("image", "inspect", "--format", "{{json .Labels}}", ref).stdout
    return (json.loads(out) or {}).get(HASH_LABEL)


_OUTPUT_LOCK = threading.Lock()


class _BuildBoard:
    """On a terminal: one line per image being built, its current stage and elapsed time.

    Shared by the build threads; rich's Live draws it on stderr and prints other stderr
    lines (``[testbed] ...``) above it. The last frame stays on screen when builds end.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, list[Any]] = {}  # image -> [stage, started, finished or None]
        self.live: Any = None

    def begin(self, image: str) -> None:
        from rich.console import Console
        from rich.live import Live

        with self.lock:
            self.rows[image] = ["starting", time.monotonic(), None]
            if self.live is None:
                console = Console(file=sys.stderr, force_terminal=True)
                self.live = Live(get_renderable=self._render, console=console,
                                 refresh_per_second=2, redirect_stderr=True)  # fmt: skip
                self.live.start()

    def line(self, image: str, line: str) -> None:
        with self.lock:
            self.rows[image][0] = build_stage(line, self.rows[image][0])

    def end(self, image: str, outcome: str) -> None:
        with self.lock:
            row = self.rows[image]
            row[0], row[2] = f"{outcome} ({row[0]})", time.monotonic()
            if self.live is not None and all(r[2] is not None for r in self.rows.values()):
                self.live.stop()  # draws the last frame, which stays
                self.live, self.rows = None, {}

    def _render(self) -> Any:  # a rich renderable
        from rich.text import Text

        width = self.live.console.width if self.live is not None else 80
        now = time.monotonic()
        return Text(
            "\n".join(
                render_build_line(image, stage, (done or now) - started, width)
                for image, (stage, started, done) in list(self.rows.items())
            )
        )


_BOARD = _BuildBoard()


def _stream(cmd: list[str], what: str, prefix: str) -> None:
    """Run a long step with its output streamed (progress), keeping the tail for errors.

    Lines carry a prefix because builds for several Pythons run at once. On a terminal, one
    live line per image shows its stage instead, and the full output goes to a log file.
    """
    tail: list[str] = []
    live = live_terminal(sys.stderr)
    log_path = Path(tempfile.gettempdir()) / f"mlray-build-{prefix.replace(':', '-')}.log"
    if live:
        _say(f"{prefix}: full build log in {log_path}")
    with (
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
        open(log_path if live else os.devnull, "w") as log,
    ):
        assert proc.stdout is not None
        if live:
            _BOARD.begin(prefix)
        try:
            for line in proc.stdout:
                if live:
                    log.write(line)
                    _BOARD.line(prefix, line)
                else:
                    with _OUTPUT_LOCK:
                        sys.stderr.write(f"  {prefix} | {line}")
                tail = [*tail[-79:], line.rstrip()]
        finally:
            if live:
                _BOARD.end(prefix, "done" if proc.wait() == 0 else "FAILED")
    if proc.returncode != 0:
        joined = "\n".join(tail)
        raise TestbedError(f"got exit {proc.returncode} from {what}; expected success:\n{joined}")


def _say(message: str) -> None:
    print(f"[testbed] {message}", file=sys.stderr, flush=True)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
