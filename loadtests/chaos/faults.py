"""Faults injected into the testbed's containers, and what Ray reports about replicas.

The Ray images are minimal Debian: no `ps`, `pgrep` or `/bin/kill`. A replica is found through
the dashboard (its pid), confirmed by its process title in `/proc/<pid>/cmdline` inside the
container (Ray titles it `ray::ServeReplica:<app>:<deployment>`), and killed with the shell's
builtin `kill -9`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from loadtests.errors import LoadTestError
from testbed.engine import run_podman


def replicas(details: Mapping[str, Any], app: str) -> list[dict[str, Any]]:
    """Every replica Ray reports for `app` (all deployments), as its dicts."""
    application = (details.get("applications") or {}).get(app) or {}
    return [
        r
        for deployment in (application.get("deployments") or {}).values()
        for r in deployment.get("replicas") or []
    ]


def running_identities(details: Mapping[str, Any], app: str) -> dict[str, str]:
    """{replica id: "actor id/pid"} of the RUNNING replicas: a restart changes it."""
    return {
        str(r.get("replica_id")): f"{r.get('actor_id')}/{r.get('pid')}"
        for r in replicas(details, app)
        if r.get("state") == "RUNNING"
    }


def kill_replica(containers: Sequence[str], app: str, pid: int) -> str:
    """SIGKILL the replica process `pid` of `app` in whichever container runs it; the name
    of that container. The title check keeps a same-numbered process elsewhere alive."""
    marker = f"ray::ServeReplica:{app}:"
    script = (
        f'title="$(tr "\\000" " " < /proc/{pid}/cmdline 2>/dev/null)"; '
        f'case "$title" in "{marker}"*) kill -9 {pid} && echo killed;; esac'
    )
    for container in containers:
        proc = run_podman("exec", container, "sh", "-c", script, check=False, timeout=60)
        if "killed" in proc.stdout:
            return container
    raise LoadTestError(f"got no process {pid} titled {marker}* in {list(containers)}")


def with_replicas(details: Mapping[str, Any], app: str, count: int) -> dict[str, Any]:
    """The cluster's Serve config as it runs, `app`'s deployments set to `count` replicas:
    what a PUT asks for to scale `app` without touching anything else (no MLflow involved)."""
    from mlray.plan import cluster_part, current_apps

    apps = current_apps(details)
    if app not in apps:
        raise LoadTestError(f"got apps {sorted(apps)}; expected {app}")
    conf = copy.deepcopy(apps[app])
    for deployment in conf.get("deployments") or []:
        deployment["num_replicas"] = count
    apps[app] = conf
    config = cluster_part(details, None)
    config["applications"] = [apps[n] for n in sorted(apps)]
    return config


def head_node(details: Mapping[str, Any]) -> str | None:
    """The head's Ray node id: Serve's controller runs there."""
    return (details.get("controller_info") or {}).get("node_id")


def replicas_on_other_nodes(
    details: Mapping[str, Any], apps: Sequence[str]
) -> dict[str, list[str]]:
    """{app: ids of its RUNNING replicas on any node but the head} (the worker's, with one)."""
    return _running_by_node(details, apps, on_head=False)


def replicas_on_head(details: Mapping[str, Any], apps: Sequence[str]) -> dict[str, list[str]]:
    """{app: ids of its RUNNING replicas on the head}: what a head restart takes with it."""
    return _running_by_node(details, apps, on_head=True)


def _running_by_node(
    details: Mapping[str, Any], apps: Sequence[str], on_head: bool
) -> dict[str, list[str]]:
    head = head_node(details)
    return {
        app: [
            str(r.get("replica_id"))
            for r in replicas(details, app)
            if r.get("state") == "RUNNING" and (r.get("node_id") == head) == on_head
        ]
        for app in apps
    }


def replaced(details: Mapping[str, Any], before: Mapping[str, Sequence[str]]) -> list[str]:
    """Ids of the `before` replicas ({app: ids}) that no longer run: stopped and replaced."""
    gone: list[str] = []
    for app, ids in before.items():
        running = running_identities(details, app)
        gone += [rid for rid in ids if rid not in running]
    return gone


def whole_without(details: Mapping[str, Any], gone: Mapping[str, Sequence[str]]) -> bool:
    """Every app in `gone` RUNNING with all its target replicas, none of them a `gone` one."""
    from mlray.output import replica_counts

    for app, ids in gone.items():
        application = (details.get("applications") or {}).get(app) or {}
        ready, target = replica_counts(application)
        running = running_identities(details, app)
        if application.get("status") != "RUNNING" or ready < target or set(ids) & set(running):
            return False
    return True
