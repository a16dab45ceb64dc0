"""MLflow deployments plugin: ``mlflow deployments <verb> -t mlray:/<cluster>``.

For teams that drive deployments from MLflow's own CLI or ``get_deploy_client``. Apps made
here are labelled as the plugin's, so ``mlray deploy`` keeps them (it reconciles only the
apps it derives from the registry). The config file comes from ``MLRAY_CONFIG``
(default ``./config.yml``).
"""

from __future__ import annotations

import os
import re
from typing import Any

import requests
from mlflow.deployments import BaseDeploymentClient
from mlflow.exceptions import MlflowException

from mlray import preflight
from mlray.config import MlrayConfig, load_config
from mlray.deploy import Console, apply_one, serving_uri, status_rows
from mlray.errors import MlrayError
from mlray.payload import scoring_payload
from mlray.plan import SOURCE_PLUGIN, app_config, app_source, current_apps
from mlray.ray_api import RayDashboard
from mlray.registry import Registry
from mlray.serving_package import build_serving_package
from mlray.tags import TAG_PREFIX, TAG_SPECS, parse_tags

_SHORT = {k.rsplit(".", 1)[-1]: k for k in TAG_SPECS}
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


def target_help() -> str:
    keys = ", ".join(sorted(_SHORT))
    return (
        "Target mlray:/<cluster> deploys a registered model to a Ray Serve cluster named in "
        "the mlray config (MLRAY_CONFIG, default ./config.yml). model_uri must be "
        "models:/<name>/<version> or models:/<name>@<alias>. -C options (strings) set the "
        f"deployment like the model's ray.* tags do, by full tag or short name: {keys}. "
        "Memory is in GB. The model's own ray.* tags are the defaults."
    )


def run_local(target: str, name: str, model_uri: str, flavor: str | None = None,
              config: dict[str, Any] | None = None) -> None:  # fmt: skip
    raise MlflowException(
        "mlray has no local mode: use `mlflow models serve` to try a model locally, or the "
        "testbed (`nox -s up`) for a local Ray cluster"
    )


def _user_error(e: MlrayError) -> MlflowException:
    return MlflowException(str(e), error_code="INVALID_PARAMETER_VALUE")


class RayServeDeploymentClient(BaseDeploymentClient):
    """Deployments are Serve applications; their name is the route: /<name>/invocations."""

    def __init__(self, target_uri: str):
        super().__init__(target_uri)
        self.cluster_name = target_uri.split(":", 1)[-1].strip("/")
        path = os.environ.get("MLRAY_CONFIG", "config.yml")
        try:
            self.cfg: MlrayConfig = load_config(path)
            self.cluster = self.cfg.cluster(self.cluster_name)
        except MlrayError as e:
            raise _user_error(e) from None

    def _app(self, name: str, model_uri: str, config: dict[str, Any] | None) -> dict[str, Any]:
        m = _MODELS_URI.match(model_uri or "")
        if not m:
            raise MlflowException(
                f"got {model_uri!r} for model_uri; expected models:/<name>/<version> or "
                "models:/<name>@<alias>", error_code="INVALID_PARAMETER_VALUE",
            )  # fmt: skip
        registry = Registry(self.cfg.tracking_uri)
        version = m["version"]
        if version is None:
            version = str(registry.client.get_model_version_by_alias(m["name"], m["alias"]).version)
        model = registry.read_version(m["name"], version)
        if model.problem:
            raise MlflowException(f"{model.label}: {model.problem}")
        tags = {k: v for k, v in model.tags.items() if k.startswith(TAG_PREFIX)}
        for key, value in (config or {}).items():
            tags[key if key.startswith(TAG_PREFIX) else _SHORT.get(key, TAG_PREFIX + key)] = str(
                value
            )
        tags[TAG_PREFIX + "name"] = name
        options, problems = parse_tags(tags)
        if problems or options is None:
            raise MlflowException(
                f"{model.label}: " + "; ".join(problems), error_code="INVALID_PARAMETER_VALUE"
            )
        trained = ".".join((model.python_version or "").split(".")[:2])
        if trained != self.cluster.python:
            raise MlflowException(
                f"{model.label}: trained on {trained or 'unknown Python'}, cluster "
                f"{self.cluster_name} runs {self.cluster.python}",
                error_code="INVALID_PARAMETER_VALUE",
            )
        facts = RayDashboard(self.cluster, self.cluster_name).probe()
        res = preflight.check(
            model.pip, preflight.Target(self.cluster.python, self.cluster.platform, facts.glibc)
        )
        if not res.ok:
            raise MlflowException(
                f"{model.label}: {res.message}", error_code="INVALID_PARAMETER_VALUE"
            )
        return app_config(
            model, options, tracking_uri=self.cfg.cluster_tracking_uri(self.cluster_name),
            serving_uri=serving_uri(self.cfg, self.cluster_name, build_serving_package()),
            source=SOURCE_PLUGIN,
        )  # fmt: skip

    def _apply(self, name: str, app: dict[str, Any] | None) -> None:
        try:
            apply_one(self.cfg, self.cluster_name, name, app, say=Console())
        except MlrayError as e:
            raise _user_error(e) from None

    def create_deployment(self, name, model_uri, flavor=None, config=None, endpoint=None):
        if name in self._apps():
            raise MlflowException(f"deployment {name!r} exists; use update",
                                  error_code="RESOURCE_ALREADY_EXISTS")  # fmt: skip
        self._apply(name, self._app(name, model_uri, config))
        return {"name": name, "flavor": flavor or "python_function"}

    def update_deployment(self, name, model_uri=None, flavor=None, config=None, endpoint=None):
        current = self._owned(name)
        uri = model_uri or (current.get("args") or {}).get("model_uri")
        self._apply(name, self._app(name, uri, config))
        return {"name": name, "flavor": flavor or "python_function"}

    def delete_deployment(self, name, config=None, endpoint=None):
        if name not in self._apps():
            return None  # MLflow's contract: deleting a missing deployment is not an error
        self._owned(name)
        self._apply(name, None)
        return None

    def list_deployments(self, endpoint=None):
        return [self._describe(r) for r in self._rows()]

    def get_deployment(self, name, endpoint=None):
        for r in self._rows():
            if r["APP"] == name:
                return self._describe(r)
        raise MlflowException(f"no deployment {name!r} on cluster {self.cluster_name}",
                              error_code="RESOURCE_DOES_NOT_EXIST")  # fmt: skip

    def predict(self, deployment_name=None, inputs=None, endpoint=None):
        from mlflow.deployments import PredictionsResponse

        payload = scoring_payload(inputs)
        url = f"{self.cluster.serve_url}/{deployment_name}/invocations"
        resp = requests.post(url, json=payload, timeout=120)
        if resp.status_code != 200:
            raise MlflowException(f"{url} answered {resp.status_code}: {resp.text[:2000]}")
        return PredictionsResponse.from_json(resp.text)

    # -- helpers ---------------------------------------------------------------------------
    def _apps(self) -> dict[str, dict[str, Any]]:
        try:
            return current_apps(RayDashboard(self.cluster, self.cluster_name).serve_details())
        except MlrayError as e:
            raise _user_error(e) from None

    def _owned(self, name: str) -> dict[str, Any]:
        cfg = self._apps().get(name)
        if cfg is None:
            raise MlflowException(f"no deployment {name!r} on cluster {self.cluster_name}",
                                  error_code="RESOURCE_DOES_NOT_EXIST")  # fmt: skip
        if app_source(cfg) != SOURCE_PLUGIN:
            raise MlflowException(
                f"deployment {name!r} is managed by `mlray deploy` (or not by mlray); change it "
                "through the registry instead", error_code="INVALID_PARAMETER_VALUE",
            )  # fmt: skip
        return cfg

    def _rows(self) -> list[dict[str, str]]:
        try:
            return status_rows(self.cfg, self.cluster_name)
        except MlrayError as e:
            raise _user_error(e) from None

    @staticmethod
    def _describe(row: dict[str, str]) -> dict[str, Any]:
        return {
            "name": row["APP"],
            "flavor": "python_function",
            "model": row["MODEL"],
            "version": row["VERSION"],
            "status": row["STATUS"],
            "replicas": row["REPLICAS"],
            "endpoint": row["ENDPOINT"],
        }
