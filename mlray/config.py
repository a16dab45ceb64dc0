"""``config.yml``: validated at the edge into typed objects.

Errors read "got X for Y; expected Z" with the dotted path into the file, so a typo is
found without reading code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlray.errors import ConfigError

Platform = Literal["linux_x86_64", "linux_aarch64"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowSettings(_Strict):
    tracking_uri: str = Field(
        description="MLflow tracking server URI. The MLFLOW_TRACKING_URI env var overrides it. "
        "Auth comes from MLflow's own variables (MLFLOW_TRACKING_TOKEN, "
        "MLFLOW_TRACKING_USERNAME/PASSWORD).",
        min_length=1,
    )


class Selection(_Strict):
    name_suffix: str = Field(
        default=".staging",
        description="Registered models whose name ends with this suffix are selected.",
        min_length=1,
    )
    alias: str | None = Field(
        default=None,
        description="Serve the version this alias points to (models:/<name>@<alias>). "
        "Unset: serve the latest (highest-numbered) version.",
        pattern=r"^[A-Za-z0-9_-]+$",
    )


class ClusterConfig(_Strict):
    dashboard_url: str = Field(
        description="Ray dashboard URL (its REST API applies Serve configs and runs probes).",
        pattern=r"^https?://",
    )
    serve_url: str = Field(
        description="Ray Serve HTTP proxy URL as reached by clients of the endpoints.",
        pattern=r"^https?://",
    )
    python: str = Field(
        description="The major.minor Python the cluster runs, e.g. '3.11'. Checked live.",
        pattern=r"^3\.\d{1,2}$",
    )
    platform: Platform = Field(
        default="linux_x86_64", description="The cluster nodes' OS and CPU. Checked live."
    )
    auth_token_env: str | None = Field(
        default=None,
        description="Env var holding the Ray auth token (Ray >= 2.60 enables token auth "
        "by default); sent as 'Authorization: Bearer <token>'.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )
    auth_token_file: str | None = Field(
        default=None,
        description="File holding the Ray auth token (Ray writes ~/.ray/auth_token on the "
        "head). Used when auth_token_env is unset.",
        min_length=1,
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow URI as reached from inside the cluster, when it differs from "
        "the CLI host's (e.g. a container name). Default: mlflow.tracking_uri.",
    )
    serving_code: Literal["mlflow", "gcs"] = Field(
        default="mlflow",
        description="Where the apps fetch mlray's serving code from. 'mlflow': MLflow's "
        "artifact store over HTTP (needs `mlflow server --serve-artifacts`, the default); "
        "it survives head restarts and serves new clusters. 'gcs': the Ray head's GCS, for "
        "tracking servers without an artifact proxy; gone after a head restart without GCS "
        "fault tolerance, until the next deploy.",
    )
    http_options: dict[str, Any] | None = Field(
        default=None,
        description="Passed to Serve's http_options (e.g. {host: 0.0.0.0, port: 8000}). "
        "Unset: keep what the cluster runs.",
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Timeout of each dashboard REST call."
    )

    @field_validator("dashboard_url", "serve_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    def auth_token(self) -> str | None:
        if self.auth_token_env:
            token = os.environ.get(self.auth_token_env, "").strip()
            if not token:
                raise ConfigError(
                    f"got no value for env var {self.auth_token_env} (auth_token_env); "
                    "expected the Ray auth token"
                )
            return token
        if self.auth_token_file:
            path = Path(self.auth_token_file).expanduser()
            try:
                token = path.read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"cannot read auth_token_file {path}: {e.strerror}; expected a file "
                    "holding the Ray auth token"
                ) from None
            if not token:
                raise ConfigError(f"got an empty auth_token_file {path}; expected a token")
            return token
        return None


class MlrayConfig(_Strict):
    mlflow: MlflowSettings
    selection: Selection = Selection()
    clusters: dict[str, ClusterConfig] = Field(min_length=1)

    @field_validator("clusters")
    @classmethod
    def _names(cls, v: dict[str, ClusterConfig]) -> dict[str, ClusterConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"got {name!r} for a cluster name; expected [A-Za-z0-9_.-]+")
        return v

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow.tracking_uri

    def cluster(self, name: str) -> ClusterConfig:
        try:
            return self.clusters[name]
        except KeyError:
            known = ", ".join(sorted(self.clusters)) or "none"
            raise ConfigError(
                f"got {name!r} for the cluster; expected one of the config's clusters: {known}"
            ) from None

    def cluster_tracking_uri(self, name: str) -> str:
        return self.cluster(name).mlflow_tracking_uri or self.tracking_uri


def _describe(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "missing":
        return f"missing {where}; it is required"
    if err["type"] == "extra_forbidden":
        return f"got unknown key {where}; check its spelling"
    got = err.get("input")
    return f"got {got!r} for {where}; expected {err['msg'].removeprefix('Value error, ')}"


def parse_config(data: Any, source: str = "config") -> MlrayConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"got {type(data).__name__} for {source}; expected a YAML mapping")
    try:
        return MlrayConfig.model_validate(data)
    except ValidationError as e:
        problems = "\n".join(f"  - {_describe(err)}" for err in e.errors())
        raise ConfigError(f"{source} is invalid:\n{problems}") from None


def load_config(path: str | os.PathLike[str]) -> MlrayConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    return parse_config(data, source=str(p))
