"""Wheel preflight: will every requirement install on the cluster, before we touch it?

Ray installs a model's pip list when a replica starts; a package with no wheel for the
cluster's Python or CPU then fails minutes later, deep in a replica log. Asking pip to
resolve the same list for the cluster's tags (``--dry-run --only-binary=:all:``) finds
that in seconds on the CLI host and names the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CACHE_TTL_S = 7 * 24 * 3600
_INDEX_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT")
# Default when the cluster's libc is unknown: manylinux2014, what nearly every wheel targets.
DEFAULT_GLIBC = (2, 17)


@dataclass(frozen=True)
class Target:
    python: str  # major.minor
    platform: str  # linux_x86_64 / linux_aarch64
    glibc: tuple[int, int] | None = None

    def pip_platforms(self) -> list[str]:
        arch = self.platform.removeprefix("linux_")
        major, top = self.glibc or DEFAULT_GLIBC
        tags = [f"manylinux_{major}_{m}_{arch}" for m in range(top, 4, -1)]
        legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
        tags += [f"{name}_{arch}" for name, m in legacy.items() if m <= top]
        return tags


@dataclass(frozen=True)
class PreflightResult:
    ok: bool
    message: str = ""
    cached: bool = False


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base, "mlray", "preflight")


def _key(pip_list: Sequence[str], target: Target) -> str:
    blob = json.dumps(
        {
            "pip": list(pip_list),
            "target": [target.python, target.platform, target.glibc],
            "index": {k: os.environ.get(k) for k in _INDEX_ENV},
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def check(pip_list: Sequence[str], target: Target, use_cache: bool = True) -> PreflightResult:
    """Resolve ``pip_list`` for ``target``; successes are cached for a week."""
    key = _key(pip_list, target)
    hit = cache_dir() / f"{key}.json"
    if use_cache and hit.exists() and time.time() - hit.stat().st_mtime < CACHE_TTL_S:
        return PreflightResult(ok=True, message="cached", cached=True)
    result = _run_pip(pip_list, target)
    if result.ok and use_cache:
        hit.parent.mkdir(parents=True, exist_ok=True)
        hit.write_text(json.dumps({"ok": True, "at": time.time()}))
    return result


def _run_pip(pip_list: Sequence[str], target: Target) -> PreflightResult:
    with tempfile.TemporaryDirectory(prefix="mlray-preflight-") as tmp:
        req = Path(tmp, "requirements.txt")
        req.write_text("\n".join(pip_list) + "\n")
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--no-input", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", target.python,
            "--implementation", "cp", "--target", str(Path(tmp, "target")),
            "--report", str(Path(tmp, "report.json")),
        ]  # fmt: skip
        for p in target.pip_platforms():
            cmd += ["--platform", p]
        cmd += ["-r", str(req)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode == 0:
        return PreflightResult(ok=True)
    return PreflightResult(ok=False, message=explain_failure(proc.stderr, target))


_NO_DIST = re.compile(r"No matching distribution found for (\S+)")
_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement (\S+)")


def explain_failure(stderr: str, target: Target) -> str:
    """pip's error, reduced to the package at fault and the target it has no wheel for."""
    m = _NO_DIST.search(stderr) or _NO_VERSION.search(stderr)
    where = f"Python {target.python} on {target.platform}"
    if m:
        return f"{m.group(1)} has no wheel for {where} (pip: {m.group(0)})"
    if "ResolutionImpossible" in stderr or "conflict" in stderr.lower():
        lines = [ln for ln in stderr.splitlines() if ln.strip()][-6:]
        return f"requirements conflict for {where}: " + " | ".join(x.strip() for x in lines)
    tail = " | ".join(ln.strip() for ln in stderr.splitlines() if ln.strip())[-600:]
    return f"pip cannot resolve the requirements for {where}: {tail}"


def check_many(
    lists: dict[str, Sequence[str]], target: Target, use_cache: bool = True, workers: int = 4
) -> dict[str, PreflightResult]:
    """Preflight several models at once; pip spends most of its time waiting on the index."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {k: pool.submit(check, v, target, use_cache) for k, v in lists.items()}
        return {k: f.result() for k, f in futures.items()}
