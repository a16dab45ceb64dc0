"""Reading the MLflow Model Registry: the I/O edge on the MLflow side.

Returns plain frozen data (:class:`ModelVersionInfo`); every decision about it is made by the
pure code in :mod:`mlray.plan`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from mlray.config import Selection
from mlray.errors import RegistryError
from mlray.requirements import RequirementsError, flatten, to_pip_list

log = logging.getLogger(__name__)

# The CLI should fail in seconds, not after MLflow's default minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


@dataclass(frozen=True)
class ModelVersionInfo:
    """What mlray needs of one registered model version."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]
    python_version: str | None = None
    pip: tuple[str, ...] = ()
    flavors: tuple[str, ...] = ()
    problem: str | None = None  # artifacts unreadable: the model is refused with this reason
    aliases: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Unselected:
    """A registered model that matched the selection but has no version to serve."""

    name: str
    reason: str


def mlflow_problem(tracking_uri: str, timeout: float = 5.0) -> str | None:
    """Why MLflow's /health does not answer well (unreachable, 5xx), or None."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    url = tracking_uri.rstrip("/") + "/health"
    try:
        resp = requests.get(url, timeout=timeout)
    except requests.RequestException as e:
        return f"cannot reach MLflow at {tracking_uri} ({type(e).__name__})"
    if resp.status_code >= 500:
        return f"MLflow at {tracking_uri} answered {resp.status_code} to /health"
    return None


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear message instead of MLflow's retry loop."""
    problem = mlflow_problem(tracking_uri, timeout)
    if problem and problem.startswith("cannot reach"):
        raise RegistryError(
            f"{problem}; check mlflow.tracking_uri / MLFLOW_TRACKING_URI. Nothing was changed."
        )
    if problem:
        raise RegistryError(problem)


class Registry:
    """A thin wrapper over MlflowClient that speaks in :class:`ModelVersionInfo`."""

    def __init__(self, tracking_uri: str):
        from mlflow.tracking import MlflowClient

        check_reachable(tracking_uri)
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _guard(self, what: str):
        return _Guard(what, self.tracking_uri)

    def selected(self, selection: Selection) -> tuple[list[ModelVersionInfo], list[Unselected]]:
        """The versions the selection rule picks, with their environments read."""
        chosen: list[ModelVersionInfo] = []
        unselected: list[Unselected] = []
        for rm in self._registered_models(selection.name_suffix):
            with self._guard(f"reading versions of {rm.name}"):
                mv = self._version_to_serve(rm.name, selection.alias)
            if mv is None:
                why = (
                    f"no version has alias {selection.alias!r}"
                    if selection.alias
                    else "it has no versions"
                )
                unselected.append(Unselected(rm.name, why))
                continue
            chosen.append(self.read_version(rm.name, str(mv.version), dict(rm.tags or {}), mv))
        return chosen, unselected

    def _registered_models(self, suffix: str) -> Iterator[Any]:
        token = None
        like = suffix.replace("'", "''")
        while True:
            with self._guard("searching registered models"):
                page = self.client.search_registered_models(
                    filter_string=f"name LIKE '%{like}'", max_results=200, page_token=token
                )
            for rm in sorted(page, key=lambda r: r.name):
                if rm.name.endswith(suffix):  # LIKE treats '_' as a wildcard
                    yield rm
            token = page.token
            if not token:
                return

    def _version_to_serve(self, name: str, alias: str | None) -> Any:
        from mlflow.exceptions import MlflowException

        if alias:
            try:
                return self.client.get_model_version_by_alias(name, alias)
            except MlflowException as e:
                if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise
        versions = self.client.search_model_versions(f"name='{name.replace(chr(39), chr(39) * 2)}'")
        return max(versions, key=lambda v: int(v.version), default=None)

    def read_version(
        self, name: str, version: str, model_tags: dict[str, str] | None = None, mv: Any = None
    ) -> ModelVersionInfo:
        """Read tags and the environment files of one version.

        Tags: the registered model's tags, overridden by the version's own, so one version
        can be tuned without touching the others.
        """
        with self._guard(f"reading {name} v{version}"):
            if mv is None:
                mv = self.client.get_model_version(name, version)
            if model_tags is None:
                model_tags = dict(self.client.get_registered_model(name).tags or {})
        tags = {**model_tags, **dict(mv.tags or {})}
        base = dict(
            name=name,
            version=version,
            run_id=mv.run_id,
            tags=tags,
            aliases=tuple(getattr(mv, "aliases", ()) or ()),
        )
        try:
            env = self._read_environment(name, version)
        except _MissingArtifact as e:
            return ModelVersionInfo(**base, problem=str(e))
        return ModelVersionInfo(**base, **env)

    def _read_environment(self, name: str, version: str) -> dict[str, Any]:
        import mlflow.artifacts

        with self._guard(f"locating artifacts of {name} v{version}"):
            root = self.client.get_model_version_download_uri(name, version).rstrip("/")
        with tempfile.TemporaryDirectory(prefix="mlray-") as tmp:

            def read(rel: str) -> str:
                dst = Path(tmp, rel.replace("/", "__"))
                dst.mkdir(parents=True, exist_ok=True)
                try:
                    local = mlflow.artifacts.download_artifacts(
                        artifact_uri=f"{root}/{rel}",
                        dst_path=str(dst),
                        tracking_uri=self.tracking_uri,
                    )
                except Exception as e:  # MLflow raises a different type per artifact store
                    if _looks_missing(e):
                        raise FileNotFoundError(rel) from None
                    raise RegistryError(
                        f"cannot download {rel} of {name} v{version} from {root}: {e}"
                    ) from None
                return Path(local).read_text()

            try:
                mlmodel = yaml.safe_load(read("MLmodel")) or {}
            except FileNotFoundError:
                raise _MissingArtifact("its artifacts have no MLmodel file") from None
            try:
                python_env = yaml.safe_load(read("python_env.yaml")) or {}
            except FileNotFoundError:
                raise _MissingArtifact(
                    "its artifacts have no python_env.yaml (log it with MLflow >= 2.0)"
                ) from None
            deps = [str(d) for d in python_env.get("dependencies") or []]
            try:
                flat = flatten(lambda p: read(p), _requirements_entry(deps))
            except RequirementsError as e:
                raise _MissingArtifact(str(e)) from None
        return {
            "python_version": str(python_env.get("python") or "") or None,
            "pip": tuple(to_pip_list(flat)),
            "flavors": tuple(sorted((mlmodel.get("flavors") or {}).keys())),
        }

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        with self._guard(f"tagging {name} v{version}"):
            for k, v in tags.items():
                self.client.set_model_version_tag(name, version, k, v)

    def delete_registered_model(self, name: str) -> None:
        with self._guard(f"deleting {name}"):
            self.client.delete_registered_model(name)


def _requirements_entry(deps: list[str]) -> str:
    """python_env.yaml names its requirements as ``-r requirements.txt``; follow that."""
    for d in deps:
        if d.startswith("-r"):
            return d[2:].strip()
    return "requirements.txt"


def _looks_missing(e: Exception) -> bool:
    text = str(e).lower()
    return any(s in text for s in ("not found", "no such file", "does not exist", "404"))


class _MissingArtifact(Exception):
    pass


class _Guard:
    """Turn connection-level failures of MLflow calls into one clear RegistryError."""

    def __init__(self, what: str, uri: str):
        self.what, self.uri = what, uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, e: BaseException | None, tb: Any) -> bool:
        if e is None or isinstance(e, RegistryError):
            return False
        from mlflow.exceptions import MlflowException

        if isinstance(e, (MlflowException, requests.RequestException, OSError)):
            raise RegistryError(f"MLflow at {self.uri} failed while {self.what}: {e}") from e
        return False
