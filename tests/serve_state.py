"""Readings of a Serve details document (`GET /api/serve/applications/`), shared by the
integration and e2e suites; each suite fetches the document its own way (auth, address)."""

from __future__ import annotations


def replica_ids(details: dict) -> dict[str, list[str]]:
    """App name -> sorted replica ids: equal before and after means nothing restarted."""
    return {
        name: sorted(
            r["replica_id"] for dep in app["deployments"].values() for r in dep.get("replicas", [])
        )
        for name, app in (details.get("applications") or {}).items()
    }


def deployed_configs(details: dict) -> dict[str, dict]:
    """App name -> the app config Serve is running."""
    apps = details.get("applications") or {}
    return {name: app.get("deployed_app_config") for name, app in apps.items()}
