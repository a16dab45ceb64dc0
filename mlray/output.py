"""``--output json|yaml``: the records ``status``, ``check`` and ``deploy`` print for scripts.

A stable interface: fields are added, never renamed or removed (docs/output.md; the JSON
schema is pinned by ``tests/unit/output_schema.json``). Conversions from what the commands
compute are pure, so they are unit-tested on plain data.
"""

from __future__ import annotations

import copy
import json
import re
import typing
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from mlray.plan import Assessment, Plan, Skipped, app_source
from mlray.tags import Problem

OutputFormat = Literal["text", "json", "yaml"]
_LABEL = re.compile(r"^(?P<name>.+) v(?P<version>\d+)$")

Ingress = Literal["haproxy", "proxy", "mixed", "unknown"]
INGRESS_DOC = (
    "how requests enter the cluster: 'haproxy' (Ray Serve's HAProxy ingress, "
    "RAY_SERVE_ENABLE_HA_PROXY=1 on every node), 'proxy' (Serve's classic Python HTTP proxy), "
    "'mixed' (nodes differ), 'unknown' (Serve is not running yet)"
)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Replicas(_Record):
    ready: int = Field(description="replicas in state RUNNING, over the app's deployments")
    target: int = Field(description="replicas Serve aims for (target_num_replicas, summed)")


class AppRecord(_Record):
    """One Serve application on the cluster."""

    name: str = Field(description="Serve application name (ray.name); its route is /<name>")
    model: str | None = Field(
        description="registered model name; null for an app mlray did not deploy"
    )
    version: str | None = Field(
        description="registered model version; null for an app mlray did not deploy"
    )
    source: Literal["registry", "plugin"] | None = Field(
        description="who deployed it: `mlray deploy` (registry), the MLflow deployments "
        "plugin (plugin), or null for anybody else"
    )
    status: str = Field(
        description="Serve's application status: RUNNING, DEPLOYING, DEPLOY_FAILED, "
        "UNHEALTHY, DELETING, NOT_STARTED"
    )
    replicas: Replicas = Field(description="replicas running and wanted")
    endpoint: str | None = Field(
        description="URL of the app's /invocations; null when it has no route"
    )
    ingress: Ingress = Field(description=INGRESS_DOC)
    message: str = Field(
        description="Serve's messages for the app and its deployments, after mlray's own "
        "hint when it has one (an mlray app short of replicas while MLflow does not answer: "
        "new replicas wait to load their model); '' if none"
    )


class StatusOutput(_Record):
    """``mlray status --output json``."""

    cluster: str = Field(description="cluster name from the config")
    ingress: Ingress = Field(description=INGRESS_DOC)
    apps: list[AppRecord] = Field(description="every Serve application, sorted by name")


class ModelRef(_Record):
    model: str = Field(description="registered model name")
    version: str | None = Field(description="registered model version; null if none applies")


class SkippedRecord(ModelRef):
    reason: str = Field(description="why the model is not for this cluster (not an error)")


class ProblemRecord(_Record):
    """Something that stops a model from being deployed."""

    model: str | None = Field(description="registered model name")
    version: str | None = Field(description="registered model version")
    tag: str | None = Field(description="the ray.* tag at fault; null when no one tag is")
    got: str | None = Field(description="what was found; null when the tag is missing")
    expected: str | None = Field(description="what would be accepted")
    message: str = Field(description="the whole sentence, as the text output prints it")


class CheckOutput(_Record):
    """``mlray check --output json``: printed even when the check fails (exit code 2)."""

    cluster: str = Field(description="cluster name from the config")
    ingress: Ingress = Field(description=INGRESS_DOC)
    ok: bool = Field(description="true when nothing would stop a deploy (exit code 0)")
    ready: list[ModelRef] = Field(description="models a deploy would serve")
    skipped: list[SkippedRecord] = Field(description="selected models meant for another cluster")
    problems: list[ProblemRecord] = Field(
        description="invalid tags, uninstallable requirements, and resources the cluster "
        "lacks (tag: CPU, memory or GPU); any makes the exit code 2"
    )
    warnings: list[str] = Field(description="served anyway, but worth knowing")


class ActionRecord(_Record):
    app: str = Field(description="Serve application name")
    action: Literal["add", "update", "remove", "unchanged", "keep"] = Field(
        description="what the deploy does to the app"
    )
    reason: str = Field(description="why")
    model: str | None = Field(description="registered model name; null if not known")
    version: str | None = Field(description="registered model version; null if not known")


class DeployedApp(AppRecord):
    seconds: float | None = Field(
        description="seconds from applying the config until the app reached its final "
        "status; null for an app the deploy did not add or update"
    )


class DeployOutput(_Record):
    """``mlray deploy --output json``; nothing is printed to stdout when the deploy fails."""

    cluster: str = Field(description="cluster name from the config")
    dry_run: bool = Field(description="true for --dry-run: nothing was changed")
    applied: bool = Field(description="true when a new Serve config was sent to the cluster")
    actions: list[ActionRecord] = Field(description="the plan, one record per app")
    apps: list[DeployedApp] = Field(
        description="final state of every app the plan keeps (empty for a dry run)"
    )
    skipped: list[SkippedRecord] = Field(description="selected models meant for another cluster")
    problems: list[ProblemRecord] = Field(
        description="models left out (--skip-invalid, or refused by the wheel preflight); "
        "their running apps are kept"
    )
    warnings: list[str] = Field(description="served anyway, but worth knowing")
    serve_config: dict[str, Any] | None = Field(
        description="for a dry run, the Serve config that would be applied; else null"
    )
    seconds: float = Field(description="seconds the command took")


SCHEMAS: dict[str, type[BaseModel]] = {
    "status": StatusOutput,
    "check": CheckOutput,
    "deploy": DeployOutput,
}


# -- conversions (pure) ---------------------------------------------------------------------

MASK = "***"
# Env var names that usually hold credentials; their values are never printed.
_SECRET_NAME = re.compile(
    r"(?i)(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|API_?KEY|ACCESS_?KEY|"
    r"PRIVATE_?KEY|AUTH|SESSION|COOKIE|DSN)"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def mask_env_vars(env: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """Values of credential-like names, and credentials inside URLs, replaced by ``***``."""
    out, masked = {}, 0
    for key, value in env.items():
        if _SECRET_NAME.search(key):
            out[key] = MASK
        else:
            out[key] = _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", str(value))
        masked += out[key] != value
    return out, masked


def mask_secrets(config: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A Serve config safe to print: env var secrets masked. Returns it and how many."""
    out = copy.deepcopy(dict(config))
    masked = 0
    for app in out.get("applications") or []:
        envs = [app.get("runtime_env") or {}]
        envs += [
            (d.get("ray_actor_options") or {}).get("runtime_env") or {}
            for d in app.get("deployments") or []
        ]
        for env in envs:
            if env.get("env_vars"):
                env["env_vars"], n = mask_env_vars(env["env_vars"])
                masked += n
    return out, masked


def ingress_mode(details: Mapping[str, Any], haproxy_actors: set[str]) -> Ingress:
    """Which ingress the cluster's Serve proxies run, from the proxies Serve reports.

    In HAProxy mode Serve keeps the proxy's actor name and runs ``HAProxyManager`` under
    it; ``haproxy_actors`` are the names of the live actors of that class.
    """
    names = {p.get("actor_name") for p in (details.get("proxies") or {}).values()}
    names.discard(None)
    if not names:
        return "unknown"
    on_haproxy = names & haproxy_actors
    if on_haproxy == names:
        return "haproxy"
    return "mixed" if on_haproxy else "proxy"


def split_label(label: str) -> tuple[str, str | None]:
    """``"iris.staging v3"`` -> ``("iris.staging", "3")``; a bare name has no version."""
    m = _LABEL.match(label)
    return (m["name"], m["version"]) if m else (label, None)


def app_message(app: Mapping[str, Any]) -> str:
    parts = [app.get("message") or ""]
    for d in (app.get("deployments") or {}).values():
        if d.get("message"):
            parts.append(f"{d.get('name')}: {d['message']}")
    return " | ".join(p for p in parts if p)[:4000]


def replica_counts(app: Mapping[str, Any]) -> tuple[int, int]:
    """Replicas RUNNING and replicas Serve aims for, summed over the app's deployments."""
    ready = target = 0
    for d in (app.get("deployments") or {}).values():
        target += int(d.get("target_num_replicas") or 0)
        ready += sum(1 for r in d.get("replicas") or [] if r.get("state") == "RUNNING")
    return ready, target


def app_records(
    details: Mapping[str, Any], serve_url: str, ingress: Ingress = "unknown"
) -> list[AppRecord]:
    """Every app of ``GET /api/serve/applications/``, as status records."""
    out = []
    for name, app in sorted((details.get("applications") or {}).items()):
        conf = app.get("deployed_app_config") or {}
        args = conf.get("args") or {}
        source = app_source(conf)
        ready, target = replica_counts(app)
        route = app.get("route_prefix") or conf.get("route_prefix") or ""
        version = args.get("model_version")
        out.append(
            AppRecord(
                name=name,
                model=args.get("model_name") if source else None,
                version=str(version) if source and version is not None else None,
                source=source if source in ("registry", "plugin") else None,  # type: ignore[arg-type]
                status=app.get("status", "?"),
                replicas=Replicas(ready=ready, target=target),
                endpoint=f"{serve_url}{route}/invocations" if route else None,
                ingress=ingress,
                message=app_message(app),
            )
        )
    return out


def table_rows(apps: list[AppRecord]) -> list[dict[str, str]]:
    """The text table of ``mlray status`` (and the plugin's deployment descriptions)."""
    return [
        {
            "APP": a.name,
            "MODEL": (a.model or "-") if a.source else "(not mlray)",
            "VERSION": a.version or "-",
            "STATUS": a.status,
            "REPLICAS": f"{a.replicas.ready}/{a.replicas.target}",
            "ENDPOINT": a.endpoint or "-",
        }
        for a in apps
    ]


def why_lines(apps: list[AppRecord]) -> list[str]:
    """For the text status, under the table: why each app that is not RUNNING with all its
    replicas is not (Ray's messages, and mlray's own hints)."""
    return [
        f"{a.name}: {' '.join(a.message.split())}"  # one line each: Ray's may hold newlines
        for a in apps
        if a.message and (a.status != "RUNNING" or a.replicas.ready < a.replicas.target)
    ]


def problem_record(p: str) -> ProblemRecord:
    q = p if isinstance(p, Problem) else Problem(p)
    return ProblemRecord(
        model=q.model, version=q.version, tag=q.tag, got=q.got, expected=q.expected, message=str(q)
    )


def refused_record(s: Skipped, expected: str) -> ProblemRecord:
    """A model the wheel preflight refused: its requirements are what is wrong."""
    name, version = split_label(s.label)
    return ProblemRecord(
        model=s.model_name or name, version=version, tag=None, got=s.reason,
        expected=expected, message=f"{s.label}: {s.reason}",
    )  # fmt: skip


def skipped_record(s: Skipped) -> SkippedRecord:
    name, version = split_label(s.label)
    return SkippedRecord(model=s.model_name or name, version=version, reason=s.reason)


def action_record(app: str, action: str, reason: str, model_label: str) -> ActionRecord:
    name, version = split_label(model_label) if model_label else (None, None)
    return ActionRecord(app=app, action=action, reason=reason, model=name, version=version)  # type: ignore[arg-type]


def check_output(
    cluster: str,
    assessment: Assessment,
    refused: list[Skipped],
    wheels_for: str,
    capacity: list[Problem] | None = None,
    ingress: Ingress = "unknown",
) -> CheckOutput:
    """``wheels_for``: what the preflight needed, e.g. "wheels for Python 3.11 on linux_x86_64".

    ``capacity``: the plan asks more than the cluster has (tag: the resource, e.g. CPU).
    """
    problems = [problem_record(p) for p in assessment.problems]
    problems += [refused_record(s, wheels_for) for s in refused]
    problems += [problem_record(p) for p in capacity or []]
    return CheckOutput(
        cluster=cluster,
        ingress=ingress,
        ok=not problems,
        ready=[ModelRef(model=r.model.name, version=r.model.version) for r in assessment.ready],
        skipped=[skipped_record(s) for s in assessment.skipped],
        problems=problems,
        warnings=list(assessment.warnings),
    )


def deploy_output(
    cluster: str,
    plan: Plan,
    *,
    assessment: Assessment,
    refused: list[Skipped],
    wheels_for: str,
    dry_run: bool,
    applied: bool,
    apps: list[AppRecord],
    timeline: Mapping[str, float],
    seconds: float,
) -> DeployOutput:
    """``apps``: the cluster's apps read after the deploy; those the plan keeps are reported."""
    checked = check_output(cluster, assessment, refused, wheels_for)
    kept = {a.name for a in plan.apps if a.action != "remove"}
    changed = {a.name for a in plan.apps if a.action in ("add", "update")}
    return DeployOutput(
        cluster=cluster,
        dry_run=dry_run,
        applied=applied,
        actions=[action_record(a.name, a.action, a.reason, a.model) for a in plan.apps],
        apps=[
            DeployedApp(
                **a.model_dump(), seconds=timeline.get(a.name) if a.name in changed else None
            )
            for a in apps
            if a.name in kept and not dry_run
        ],
        skipped=checked.skipped,
        problems=checked.problems,
        warnings=checked.warnings,
        serve_config=mask_secrets(plan.config)[0] if dry_run else None,
        seconds=round(seconds, 1),
    )


def render(record: BaseModel, fmt: OutputFormat) -> str:
    data = record.model_dump(mode="json")
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100).rstrip()
    return json.dumps(data, indent=2)


def json_schemas() -> dict[str, Any]:
    """Every record's JSON schema, by command: what tests/unit/output_schema.json pins."""
    return {cmd: model.model_json_schema() for cmd, model in SCHEMAS.items()}


def _type_name(annotation: Any) -> str:
    """``str | None`` -> ``string or null``, as the docs table says it."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin in (list,):
        return f"list of {_type_name(args[0])}"
    if origin in (dict,):
        return "object"
    if args:  # a union
        return " or ".join(_type_name(a) for a in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


DOC_ORDER: list[type[BaseModel]] = [
    StatusOutput, AppRecord, Replicas, CheckOutput, ModelRef, SkippedRecord, ProblemRecord,
    DeployOutput, ActionRecord, DeployedApp,
]  # fmt: skip


def reference_markdown() -> str:
    """The field tables of docs/output.md, generated so the docs cannot drift from the models."""
    out = []
    for model in DOC_ORDER:
        out += [f"### {model.__name__}", ""]
        if model.__doc__ and model.__module__ == __name__ and model.__doc__.strip():
            out += [model.__doc__.strip().splitlines()[0], ""]
        out += ["| field | type | meaning |", "|---|---|---|"]
        for name, f in model.model_fields.items():
            out.append(f"| `{name}` | {_type_name(f.annotation)} | {f.description or ''} |")
        out.append("")
    return "\n".join(out).rstrip()


if __name__ == "__main__":  # python -m mlray.output > tests/unit/output_schema.json
    print(json.dumps(json_schemas(), indent=2, sort_keys=True))
