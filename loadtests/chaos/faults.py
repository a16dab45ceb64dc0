"""Faults injected into the testbed's containers, and what Ray reports about replicas.

The Ray images are minimal Debian: no `ps`, `pgrep` or `/bin/kill`. A replica is found through
the dashboard (its pid), confirmed by its process title in `/proc/<pid>/cmdline` inside the
container (Ray titles it `ray::ServeReplica:<app>:<deployment>`), and killed with the shell's
builtin `kill -9`.
"""

from __future__ import annotations

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
