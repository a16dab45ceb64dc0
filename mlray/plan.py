"""Planning: registry state + config + current cluster -> desired Serve config. Pure.

Nothing here does I/O, so every rule (routing, validation, what counts as a change) is unit
tested with plain data. The output is Ray's own ``ServeDeploySchema`` as a dict: the same
YAML ``serve deploy`` accepts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlray.registry import ModelVersionInfo, Unselected
from mlray.tags import Problem, ServeOptions, parse_tags

IMPORT_PATH = "mlray.serving.app:build"
DEPLOYMENT_NAME = "MlflowModel"
MANAGED_BY = "mlray"
SOURCE_REGISTRY = "registry"
SOURCE_PLUGIN = "plugin"
# Keys of the cluster-wide part of ServeDeploySchema carried over from the running cluster.
CLUSTER_KEYS = ("proxy_location", "http_options", "grpc_options", "target_capacity")

PIP_INSTALL_OPTIONS = ("--disable-pip-version-check", "--no-compile")

Action = Literal["add", "update", "remove", "unchanged", "keep"]


@dataclass(frozen=True)
class Skipped:
    label: str
    reason: str
    model_name: str = ""


@dataclass(frozen=True)
class Ready:
    model: ModelVersionInfo
    options: ServeOptions


@dataclass
class Assessment:
    """Which selected models can go to a cluster, and why the others cannot."""

    ready: list[Ready] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # tag errors: refuse the deploy
    invalid: set[str] = field(default_factory=set)  # names of models with tag errors
    warnings: list[str] = field(default_factory=list)


def minor(version: str | None) -> str | None:
    if not version:
        return None
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else None


def assess(
    models: Iterable[ModelVersionInfo],
    unselected: Iterable[Unselected],
    cluster_python: str,
    cluster_python_full: str | None = None,
) -> Assessment:
    """Route models by Python minor and validate the tags of those routed here."""
    out = Assessment()
    for u in unselected:
        out.skipped.append(Skipped(u.name, u.reason))
    names: dict[str, str] = {}
    for m in models:
        if m.problem:
            out.skipped.append(Skipped(m.label, m.problem))
            continue
        trained = minor(m.python_version)
        if trained is None:
            out.skipped.append(
                Skipped(m.label, f"got {m.python_version!r} for python in python_env.yaml")
            )
            continue
        if trained != cluster_python:
            out.skipped.append(
                Skipped(m.label, f"trained on {trained}, cluster runs {cluster_python}")
            )
            continue
        options, problems = parse_tags(m.tags)
        if problems:
            out.problems.extend(p.of(m.name, m.version, m.label) for p in problems)
            out.invalid.add(m.name)
            continue
        assert options is not None
        if options.name in names:
            out.problems.append(
                Problem(
                    f"got ray.name {options.name!r}, already used by {names[options.name]}; "
                    "expected a name unique on the cluster",
                    tag="ray.name",
                    got=options.name,
                    expected="a name unique on the cluster",
                ).of(m.name, m.version, m.label)
            )
            out.invalid.add(m.name)
            continue
        names[options.name] = m.label
        if cluster_python_full and m.python_version != cluster_python_full:
            out.warnings.append(
                f"{m.label}: trained on Python {m.python_version}, cluster runs "
                f"{cluster_python_full}. Served anyway: patch releases of one minor keep the "
                "ABI and pickle formats, so wheels and the model load the same."
            )
        out.ready.append(Ready(m, options))
    return out


def app_config(
    model: ModelVersionInfo,
    options: ServeOptions,
    *,
    tracking_uri: str,
    serving_uri: str,
    source: str = SOURCE_REGISTRY,
) -> dict[str, Any]:
    """One Serve application (``ServeApplicationSchema``) for one model version."""
    actor: dict[str, Any] = {"num_cpus": options.num_cpus, "memory": options.memory_bytes}
    if options.num_gpus is not None:
        actor["num_gpus"] = options.num_gpus
    deployment: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": actor,
        "user_config": options.user_config,
    }
    if options.num_replicas is not None:
        deployment["num_replicas"] = options.num_replicas
    else:
        deployment["autoscaling_config"] = dict(options.autoscaling or {})
    if options.max_ongoing_requests is not None:
        deployment["max_ongoing_requests"] = options.max_ongoing_requests
    deployment["health_check_period_s"] = options.health_check_period_s
    return {
        "name": options.name,
        "route_prefix": f"/{options.name}",
        "import_path": IMPORT_PATH,
        "runtime_env": {
            # Ray's default adds --no-cache-dir: dropping it lets the node's pip cache serve
            # the same wheels to every app and redeploy. --no-compile skips byte-compiling
            # whole stacks (scipy, pandas) at install time, most of a cold install.
            "pip": {
                "packages": list(model.pip),
                "pip_check": False,
                "pip_install_options": list(PIP_INSTALL_OPTIONS),
            },
            "py_modules": [serving_uri],
            "env_vars": {"MLFLOW_TRACKING_URI": tracking_uri, **dict(options.env_vars)},
        },
        "args": {
            "model_uri": model.uri,
            "model_name": model.name,
            "model_version": model.version,
            "run_id": model.run_id,
            "mlray": {"managed_by": MANAGED_BY, "source": source},
        },
        "deployments": [deployment],
    }


def app_source(app_cfg: Mapping[str, Any] | None) -> str | None:
    """``registry`` / ``plugin`` for apps mlray created, None for anybody else's."""
    if not app_cfg:
        return None
    label = (app_cfg.get("args") or {}).get("mlray") or {}
    if isinstance(label, dict) and label.get("managed_by") == MANAGED_BY:
        return str(label.get("source") or SOURCE_REGISTRY)
    return None


@dataclass(frozen=True)
class AppPlan:
    name: str
    action: Action
    reason: str
    model: str = ""


@dataclass
class Plan:
    apps: list[AppPlan]
    config: dict[str, Any]  # the whole ServeDeploySchema to PUT
    conflicts: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return any(a.action in ("add", "update", "remove") for a in self.apps)

    def by_action(self, action: Action) -> list[AppPlan]:
        return [a for a in self.apps if a.action == action]


def _normalize(v: Any) -> Any:
    """Ray echoes some numbers as floats (memory: 536870912.0); compare by value."""
    if isinstance(v, dict):
        return {k: _normalize(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_normalize(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _canon(v: Any) -> str:
    return json.dumps(_normalize(v), sort_keys=True, default=str)


# Maps whose keys are the user's own data, not Ray's schema: Ray echoes them as given, so they
# are compared whole. Projected, an env var whose tag was deleted would read as unchanged.
_WHOLE_KEYS = frozenset({"env_vars"})


def _project(current: Any, like: Any) -> Any:
    """The part of ``current`` that ``like`` specifies (Ray echoes configs with defaults)."""
    if isinstance(like, dict) and isinstance(current, dict):
        return {
            k: current.get(k) if k in _WHOLE_KEYS else _project(current.get(k), v)
            for k, v in like.items()
        }
    if isinstance(like, list) and isinstance(current, list) and len(like) == len(current):
        return [_project(c, v) for c, v in zip(current, like, strict=True)]
    return current


def same_app(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    return current is not None and _canon(_project(current, desired)) == _canon(desired)


def change_reason(current: Mapping[str, Any], desired: Mapping[str, Any]) -> str:
    cur_args, new_args = current.get("args") or {}, desired["args"]
    if cur_args.get("model_uri") != new_args["model_uri"]:
        return f"{cur_args.get('model_uri')} -> {new_args['model_uri']}"
    cur_env, new_env = current.get("runtime_env") or {}, desired["runtime_env"]
    reasons = []
    if _canon(_project(cur_env.get("pip"), new_env["pip"])) != _canon(new_env["pip"]):
        reasons.append("requirements changed")
    if cur_env.get("py_modules") != new_env["py_modules"]:
        reasons.append("serving code changed")
    if cur_env.get("env_vars") != new_env["env_vars"]:
        reasons.append("env vars changed")
    cur_d = (current.get("deployments") or [{}])[0]
    new_d = desired["deployments"][0]
    if _canon(_project(cur_d.get("ray_actor_options"), new_d["ray_actor_options"])) != _canon(
        new_d["ray_actor_options"]
    ):
        reasons.append("resources changed (replicas restart)")
    if _canon(cur_d.get("user_config")) != _canon(new_d.get("user_config")):
        reasons.append("batching changed (applied live, no restart)")
    for k in ("num_replicas", "autoscaling_config", "max_ongoing_requests"):
        if _canon(_project(cur_d.get(k), new_d.get(k))) != _canon(new_d.get(k)):
            reasons.append("scaling changed (applied live, no restart)")
            break
    if _canon(cur_d.get("health_check_period_s")) != _canon(new_d.get("health_check_period_s")):
        reasons.append("health checks changed (applied live, no restart)")
    return "; ".join(dict.fromkeys(reasons)) or "config changed"


def cluster_part(
    current: Mapping[str, Any], http_options: Mapping[str, Any] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in CLUSTER_KEYS:
        if current.get(key) is not None:
            out[key] = copy.deepcopy(current[key])
    if http_options:
        out["http_options"] = {**(out.get("http_options") or {}), **dict(http_options)}
    if isinstance(out.get("http_options"), dict):
        # Read-only fields some Ray versions echo back that the deploy schema rejects.
        for k in ("root_url",):
            out["http_options"].pop(k, None)
    return out


def current_apps(details: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{app name: deployed_app_config}`` from ``GET /api/serve/applications/``."""
    apps = details.get("applications") or {}
    return {
        name: dict(app.get("deployed_app_config") or {})
        for name, app in sorted(apps.items())
        if app.get("deployed_app_config")
    }


def plan_deploy(
    desired_apps: list[tuple[ModelVersionInfo, dict[str, Any]]],
    details: Mapping[str, Any],
    *,
    prune_unmanaged: bool = False,
    http_options: Mapping[str, Any] | None = None,
    hold: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """Decide add/update/remove/unchanged per app and build the config to PUT.

    ``hold``: running apps to keep exactly as they are although their model was not
    deployable this time (refused by the preflight, invalid tags under --skip-invalid).
    """
    current = current_apps(details)
    hold = hold or {}
    apps: list[AppPlan] = []
    configs: dict[str, dict[str, Any]] = {}
    conflicts: list[str] = []
    wanted = {cfg["name"]: (m, cfg) for m, cfg in desired_apps}
    for name, cfg in sorted(current.items()):
        src = app_source(cfg)
        if src == SOURCE_REGISTRY:
            if name in hold and name not in wanted:
                apps.append(
                    AppPlan(
                        name,
                        "keep",
                        "new version not deployable; keeping the running one",
                        _model_of(cfg),
                    )
                )
                configs[name] = cfg
            elif name not in wanted:
                apps.append(AppPlan(name, "remove", "no longer selected", _model_of(cfg)))
            continue
        if prune_unmanaged:
            apps.append(AppPlan(name, "remove", "not managed by mlray (--prune-unmanaged)"))
            continue
        if name in wanted:
            m, _ = wanted.pop(name)
            who = "the MLflow deployments plugin" if src == SOURCE_PLUGIN else "someone else"
            conflicts.append(
                f"{m.label}: got ray.name {name!r}, which names an app deployed by {who}; "
                "expected a free name (or pass --prune-unmanaged to replace it)"
            )
        why = (
            "created by the MLflow deployments plugin"
            if src == SOURCE_PLUGIN
            else ("not managed by mlray")
        )
        apps.append(AppPlan(name, "keep", why, _model_of(cfg)))
        configs[name] = cfg  # sent back exactly as the cluster reported it
    for name, (m, cfg) in sorted(wanted.items()):
        cur = current.get(name)
        if cur is None:
            apps.append(AppPlan(name, "add", "newly selected", m.label))
        elif same_app(cur, cfg):
            apps.append(AppPlan(name, "unchanged", "registry and tags unchanged", m.label))
        else:
            apps.append(AppPlan(name, "update", change_reason(cur, cfg), m.label))
        configs[name] = cfg
    config = cluster_part(details, http_options)
    config["applications"] = [configs[n] for n in sorted(configs)]
    return Plan(apps=sorted(apps, key=lambda a: a.name), config=config, conflicts=conflicts)


def plan_undeploy(
    details: Mapping[str, Any], names: list[str], http_options: Mapping[str, Any] | None = None
) -> tuple[Plan, list[str]]:
    """Remove the named mlray apps (all of them when ``names`` is empty).

    Returns the plan and the names that are not mlray apps on this cluster.
    """
    current = current_apps(details)
    ours = {n for n, c in current.items() if app_source(c) is not None}
    unknown = [n for n in names if n not in ours]
    targets = set(names) if names else ours
    apps, configs = [], {}
    for name, cfg in current.items():
        if name in targets and name in ours:
            apps.append(AppPlan(name, "remove", "undeploy", _model_of(cfg)))
        else:
            apps.append(AppPlan(name, "keep", "not named", _model_of(cfg)))
            configs[name] = cfg
    config = cluster_part(details, http_options)
    config["applications"] = [configs[n] for n in sorted(configs)]
    return Plan(apps=apps, config=config), unknown


def _model_of(cfg: Mapping[str, Any]) -> str:
    args = cfg.get("args") or {}
    if args.get("model_name"):
        return f"{args['model_name']} v{args.get('model_version')}"
    return ""
