"""Concurrent writers of one cluster's Serve config: optimistic concurrency. Pure.

``PUT /api/serve/applications/`` replaces the whole config and Ray has no conditional PUT, so
a read-modify-write (``mlray deploy``, the plugin's ``apply_one``) drops the apps another
writer put between its read and its PUT. Each writer therefore states its *intent* (the apps
it puts, the apps it removes), compares a fingerprint of the apps right before its PUT (and
merges its intent into what runs now if they moved), and after the PUT keeps checking that
its intent still holds: a later PUT built from an older read shows up as a violation, and
the writer puts its intent again, merged into the config as it is then.

This relies on what Ray reports: ``deployed_app_config`` of each app is the checkpoint the
controller stores synchronously with every PUT, so the apps that carry one are exactly the
apps of the last PUT.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlray.plan import Plan, cluster_part, current_apps, same_app

# Apps a writer answers for: the ones it adds or updates, and its own ones it keeps unchanged
# (a deploy reports those as served too).
OWN_ACTIONS = ("add", "update", "unchanged")


@dataclass(frozen=True)
class Intent:
    """What one writer wants to hold after its PUT, whatever else runs beside it."""

    put: Mapping[str, Mapping[str, Any]]  # app name -> the config it must run
    remove: frozenset[str]

    @classmethod
    def of(cls, plan: Plan) -> Intent:
        configs = {a["name"]: a for a in plan.config.get("applications") or []}
        return cls(
            put={a.name: configs[a.name] for a in plan.apps if a.action in OWN_ACTIONS},
            remove=frozenset(a.name for a in plan.by_action("remove")),
        )


def fingerprint(details: Mapping[str, Any]) -> str:
    """A digest of the apps of the last PUT (their configs), to see whether anyone wrote."""
    canon = json.dumps(current_apps(details), sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def violations(details: Mapping[str, Any], intent: Intent) -> list[str]:
    """Where the cluster's config contradicts ``intent``: what a later PUT undid."""
    current = current_apps(details)
    found = []
    for name, cfg in sorted(intent.put.items()):
        if name not in current:
            found.append(f"{name}: dropped")
        elif not same_app(current[name], cfg):
            found.append(f"{name}: replaced by another config")
    found += [f"{name}: put back" for name in sorted(intent.remove) if name in current]
    return found


def merged(
    details: Mapping[str, Any], intent: Intent, http_options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The config to PUT now: every app as it runs, with ``intent`` applied on top."""
    configs: dict[str, Any] = {
        name: cfg for name, cfg in current_apps(details).items() if name not in intent.remove
    }
    configs.update({name: dict(cfg) for name, cfg in intent.put.items()})
    config = cluster_part(details, http_options)
    config["applications"] = [configs[n] for n in sorted(configs)]
    return config
