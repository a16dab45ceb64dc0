"""What a replica actually runs: library versions as imported, for ``/metadata``.

Stdlib only and free of MLflow and Ray, so it is unit-testable. The point is to show the
version each replica *imported*, which is what proves that two apps on one cluster really run
conflicting library versions side by side.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# MLflow flavor name -> the module that flavor wraps, where they differ.
_FLAVOR_MODULES = {
    "pytorch": "torch",
    "spark": "pyspark",
    "paddle": "paddle",
    "gluon": "mxnet",
    "h2o": "h2o",
}
# Flavor names that are MLflow plumbing, not a library.
_NOT_LIBRARIES = {"python_function"}

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def requirement_names(lines: Iterable[str]) -> list[str]:
    """Distribution names in a requirements.txt, in order, without pins, extras or markers.

    Pip options (``-r``, ``-c``, ``--index-url``), comments and bare URLs are skipped: they name
    no distribution, and nested files are not part of a logged model's own list.
    """
    names: list[str] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-") or "://" in line.split("@", 1)[0]:
            continue
        match = _REQUIREMENT_NAME.match(line)
        if match and match.group(1) not in names:
            names.append(match.group(1))
    return names


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([0-9][^\s;#,*]*)\s*$")
# A pin of the left one is met by the right one's distribution (MLflow's own equivalence).
_SATISFIED_BY = {"mlflow": ("mlflow", "mlflow-skinny")}


def _same_version(a: str, b: str) -> bool:
    """1.2 == 1.2.0, as pip compares releases; anything else (rc, local) must match exactly."""

    def release(v: str) -> tuple[str, ...]:
        parts = v.split(".")
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        return tuple(parts)

    return release(a) == release(b)


def requirement_mismatches(
    lines: Iterable[str], installed: Callable[[str], str | None] = installed_version
) -> list[str]:
    """Exact pins (``name==version``, no marker) that the replica's environment does not meet.

    What MLflow's ``load_model`` warns about, without its scan that maps every installed
    distribution to its modules (a third of ``load_model`` for an xgboost model, on every
    replica start). Pins with markers, ranges and URLs are skipped: pip already resolved them.
    """
    found = []
    for raw in lines:
        match = _PIN.match(raw.split("#", 1)[0])
        if not match:
            continue
        name, pinned = match.groups()
        versions = [installed(dist) for dist in _SATISFIED_BY.get(name.lower(), (name,))]
        got = [v for v in versions if v is not None]
        if not any(_same_version(v, pinned) for v in got):
            found.append(f"{name}=={pinned} (installed: {', '.join(got) or 'none'})")
    return found


def library_versions(dists: Iterable[str]) -> dict[str, str | None]:
    return {dist: installed_version(dist) for dist in dists}


def flavor_libraries(flavors: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each flavor: its module, the version imported here, and the version it was logged with.

    The version logged with comes from the flavor's own ``*_version`` key in MLmodel (e.g.
    ``sklearn_version``); the imported one from ``module.__version__`` in this process.
    """
    result: dict[str, dict[str, Any]] = {}
    for flavor, conf in flavors.items():
        if flavor in _NOT_LIBRARIES:
            continue
        module_name = _FLAVOR_MODULES.get(flavor, flavor)
        logged = {
            k: v for k, v in (conf or {}).items() if k.endswith("_version") and isinstance(v, str)
        }
        entry: dict[str, Any] = {"module": module_name, "logged_with": logged or None}
        try:
            module = sys.modules.get(module_name) or importlib.import_module(module_name)
            entry["version"] = getattr(module, "__version__", None)
        except Exception as ex:  # a flavor without an importable module of that name
            entry["version"] = None
            entry["import_error"] = f"{type(ex).__name__}: {ex}"
        result[flavor] = entry
    return result
