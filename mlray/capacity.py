"""Does a Serve config fit the cluster? Pure functions over plain data.

A deploy that cannot be placed otherwise waits its whole timeout while Serve retries, so
``check`` and ``deploy`` add up what the whole config to PUT asks for and compare it with the
cluster's total resources before changing anything. Only what Serve must place for the apps
to become RUNNING counts: ``num_replicas``, or an autoscaling app's minimum (its
``initial_replicas`` when larger). Serve's own actors (controller, proxies) ask for 0 CPU by
default and are not counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GB = 1024**3
TIMES = "\u00d7"  # the multiplication sign
# Ray's resource names, in the order messages list them, and how a message says each.
RESOURCES = ("CPU", "memory", "GPU")
_OPTION = {"CPU": "num_cpus", "memory": "memory", "GPU": "num_gpus"}
_DEFAULT_PER_REPLICA = {"CPU": 1.0, "memory": 0.0, "GPU": 0.0}  # Serve's defaults


@dataclass(frozen=True)
class Ask:
    """One deployment's share: ``replicas`` replicas of ``per_replica`` each."""

    app: str
    deployment: str
    replicas: int
    per_replica: Mapping[str, float]

    def total(self, resource: str) -> float:
        return self.replicas * self.per_replica.get(resource, 0.0)


@dataclass(frozen=True)
class Shortfall:
    """A resource the config asks more of than the cluster has."""

    resource: str
    asked: float
    available: float
    asks: tuple[Ask, ...]

    def amount(self, value: float) -> str:
        return fmt_amount(self.resource, value)

    def breakdown(self) -> str:
        """``iris-a 2 x 0.75, iris-b 1 x 1.0`` (with a multiplication sign): largest first."""
        parts = [
            a
            for a in sorted(self.asks, key=lambda a: -a.total(self.resource))
            if a.total(self.resource) > 0
        ]
        apps = [a.app for a in self.asks]
        return ", ".join(
            f"{a.app if apps.count(a.app) == 1 else a.app + '/' + a.deployment} "
            f"{a.replicas} {TIMES} {_per(self.resource, a.per_replica.get(self.resource, 0.0))}"
            for a in parts
        )


def fmt_amount(resource: str, value: float) -> str:
    if resource == "memory":
        return f"{value / GB:.1f} GB memory"
    return f"{_num(value)} {resource}"


def _per(resource: str, value: float) -> str:
    return f"{value / GB:.1f} GB" if resource == "memory" else _num(value)


def _num(value: float) -> str:
    return f"{round(value, 4):g}" if value != int(value) else f"{value:.1f}"


def replicas_to_place(deployment: Mapping[str, Any]) -> int:
    """What Serve must start before the app is RUNNING."""
    auto = deployment.get("autoscaling_config")
    if deployment.get("num_replicas") not in (None, "auto") and not auto:
        return int(deployment["num_replicas"])
    if isinstance(auto, Mapping):
        low = int(auto.get("min_replicas") or 0)
        initial = auto.get("initial_replicas")
        return max(low, int(initial)) if initial is not None else low
    if deployment.get("num_replicas") == "auto":
        return 1  # Serve's "auto" defaults: min_replicas 1
    return 1  # Serve's default num_replicas


def asks(
    config: Mapping[str, Any],
    effective: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> list[Ask]:
    """Every deployment of every app in a ``ServeDeploySchema`` dict.

    ``effective``: ``{app: {deployment: deployment_config}}`` as the cluster reports it, for
    apps kept as they run whose config leaves resources to the code (Serve's defaults apply
    where neither says).
    """
    effective = effective or {}
    out = []
    for app in config.get("applications") or []:
        name = str(app.get("name", ""))
        running = effective.get(name) or {}
        deployments = list(app.get("deployments") or [])
        named = {d.get("name") for d in deployments}
        deployments += [
            {"name": dn, **dict(d)} for dn, d in running.items() if dn not in named
        ]  # defined in code only: the cluster knows what it runs
        for dep in deployments:
            ran = running.get(dep.get("name")) or {}
            scaling = ("num_replicas", "autoscaling_config")
            says = any(dep.get(k) is not None for k in scaling)
            merged = {k: (dep if says else ran).get(k) for k in scaling}
            opts = {
                **dict(ran.get("ray_actor_options") or {}),
                **{k: v for k, v in (dep.get("ray_actor_options") or {}).items() if v is not None},
            }
            per = {
                r: float(opts[_OPTION[r]])
                if opts.get(_OPTION[r]) is not None
                else _DEFAULT_PER_REPLICA[r]
                for r in RESOURCES
            }
            out.append(Ask(name, str(dep.get("name") or ""), replicas_to_place(merged), per))
    return out


def shortfalls(asked: Iterable[Ask], resources: Mapping[str, float]) -> list[Shortfall]:
    """The resources of which the asks need more than ``resources`` (the cluster's totals)."""
    asked = tuple(asked)
    out = []
    for r in RESOURCES:
        need = sum(a.total(r) for a in asked)
        have = float(resources.get(r, 0.0))
        if need > have + 1e-9:
            out.append(Shortfall(r, need, have, asked))
    return out


def refusal(s: Shortfall, cluster: str, autoscaler: bool | None) -> str:
    """The sentence for one shortfall; "got X for Y; expected Z" plus what to change."""
    where = {
        True: "(an autoscaler may add nodes)",
        False: "(no autoscaler)",
        None: "(autoscaler unknown)",
    }[autoscaler]
    option = f"ray.ray_actor_options.{_OPTION[s.resource]}"
    return (
        f"got a plan asking for {s.amount(s.asked)} ({s.breakdown()}) on cluster {cluster}; "
        f"expected at most the cluster's {s.amount(s.available)} {where}: "
        f"lower {option} or the replicas, or add nodes"
    )


# -- reading the dashboard's answers (pure) -------------------------------------------------
def cluster_totals(nodes_summary: Mapping[str, Any]) -> dict[str, float]:
    """Sum ``resourcesTotal`` of the alive nodes in ``GET /nodes?view=summary``'s answer."""
    data = nodes_summary.get("data") or {}
    totals: dict[str, float] = {}
    for node in data.get("summary") or []:
        raylet = node.get("raylet") or {}
        if raylet.get("state", "ALIVE") != "ALIVE":
            continue
        for k, v in (raylet.get("resourcesTotal") or {}).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    return totals


# `node_<hex id>`; the dashboard camel-cases dict keys, so as a key it reads `node22Da93...`.
_READONLY_NODE_TYPE = re.compile(r"^node_?[0-9a-f]+$", re.IGNORECASE)


def has_autoscaler(cluster_status: Mapping[str, Any]) -> bool | None:
    """Whether the cluster can add nodes, from ``GET /api/cluster_status``.

    Ray's monitor runs on every head; without an autoscaling config it uses a read-only
    provider whose node types are ``node_<id>``. Any other node type means a configured
    autoscaler. None when the answer says nothing (autoscaler v2 does not write it).
    """
    status = (cluster_status.get("data") or {}).get("clusterStatus")
    if not isinstance(status, Mapping):
        return None
    report = status.get("autoscalerReport")
    if not isinstance(report, Mapping):
        return None
    # nodeTypeMapping's values are node types as Ray wrote them (values are not camel-cased).
    types: set[str] = {str(t) for t in (report.get("nodeTypeMapping") or {}).values()}
    for key in ("activeNodes", "idleNodes", "pendingLaunches"):
        types |= set((report.get(key) or {}).keys())
    for key in ("pendingNodes", "failedNodes"):
        types |= {str(n[1]) for n in report.get(key) or [] if len(n) > 1}
    if not types:
        return None
    return any(not _READONLY_NODE_TYPE.match(t) for t in types)


# -- Ray's own word while a deploy waits ----------------------------------------------------
# ray/serve/_private/deployment_state.py, the warning after SLOW_STARTUP_WARNING_S (30 s):
_UNSCHEDULED = re.compile(
    r"taken more than \d+s to be scheduled.*?"
    r"Resources required for each replica: (?P<required>.+?), "
    r"total resources available: (?P<available>.+?)\. Use `ray status`",
    re.S,
)


def unschedulable(message: str) -> bool:
    """Ray says replicas wait for resources the cluster does not have free.

    The same warning also shows while a placed replica installs its runtime env; then Ray's
    free resources cover the ask, and that case is not unschedulable.
    """
    m = _UNSCHEDULED.search(message or "")
    if not m:
        return False
    try:
        required = json.loads(m["required"])
        available = json.loads(m["available"])
    except ValueError:
        return True  # Ray's wording alone
    bundles = required if isinstance(required, list) else [required]
    return any(
        float(v) > float(available.get(k, 0.0)) + 1e-9
        for b in bundles
        if isinstance(b, Mapping)
        for k, v in b.items()
    )
