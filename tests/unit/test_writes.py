"""Concurrent writers of one Serve config: intent, fingerprint, violations, merge (pure), and
the writer's retry against an in-memory Serve config that replaces everything on PUT, as
Ray's does."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import mlray.deploy as deploy_mod
from mlray.deploy import ConfigWriter
from mlray.errors import DeployFailed
from mlray.plan import AppPlan, Plan
from mlray.writes import Intent, fingerprint, merged, violations


def app(name: str, version: str = "1") -> dict[str, Any]:
    return {"name": name, "route_prefix": f"/{name}", "import_path": "mlray.serving.app:build",
            "args": {"model_uri": f"models:/{name}/{version}"},
            "deployments": [{"name": "MlflowModel", "num_replicas": 1}]}  # fmt: skip


def details(*apps: dict[str, Any]) -> dict[str, Any]:
    """GET /api/serve/applications/ after a PUT of `apps` (Ray echoes defaults back)."""
    out: dict[str, Any] = {"http_options": {"host": "0.0.0.0", "port": 8000}, "applications": {}}
    for cfg in apps:
        echoed = copy.deepcopy(cfg)
        echoed["deployments"][0]["graceful_shutdown_timeout_s"] = 20.0
        out["applications"][cfg["name"]] = {"status": "RUNNING", "deployed_app_config": echoed}
    return out


def plan_of(actions: dict[str, str], apps: list[dict[str, Any]]) -> Plan:
    return Plan(apps=[AppPlan(n, a, "") for n, a in actions.items()],  # type: ignore[arg-type]
                config={"applications": apps})  # fmt: skip


def test_intent_answers_for_added_updated_and_unchanged_apps_not_for_kept_ones():
    plan = plan_of({"a": "add", "b": "update", "c": "unchanged", "k": "keep", "r": "remove"},
                   [app("a"), app("b", "2"), app("c"), app("k")])  # fmt: skip
    intent = Intent.of(plan)
    assert sorted(intent.put) == ["a", "b", "c"]
    assert intent.remove == {"r"}


def test_fingerprint_moves_with_any_app_and_ignores_status():
    one = details(app("a"))
    busy = copy.deepcopy(one)
    busy["applications"]["a"]["status"] = "DEPLOYING"
    assert fingerprint(one) == fingerprint(busy)
    assert fingerprint(one) != fingerprint(details(app("a"), app("b")))
    assert fingerprint(one) != fingerprint(details(app("a", "2")))


def test_a_deleting_app_has_no_config_so_a_removal_holds():
    gone = details(app("k"))
    gone["applications"]["r"] = {"status": "DELETING", "deployed_app_config": None}
    assert violations(gone, Intent(put={"k": app("k")}, remove=frozenset({"r"}))) == []


def test_violations_name_dropped_reverted_and_resurrected_apps():
    intent = Intent(put={"a": app("a", "2"), "b": app("b")}, remove=frozenset({"r"}))
    now = details(app("a", "1"), app("r"))  # b dropped, a reverted, r put back
    assert violations(now, intent) == [
        "a: replaced by another config", "b: dropped", "r: put back",
    ]  # fmt: skip
    assert violations(details(app("a", "2"), app("b"), app("x")), intent) == []


def test_merge_keeps_what_others_put_and_applies_ours_on_top():
    intent = Intent(put={"a": app("a", "2")}, remove=frozenset({"r"}))
    config = merged(details(app("a"), app("p"), app("r")), intent, {"port": 9000})
    assert [a["name"] for a in config["applications"]] == ["a", "p"]
    assert config["applications"][0]["args"]["model_uri"] == "models:/a/2"
    assert config["http_options"] == {"host": "0.0.0.0", "port": 9000}


class ServeStore:
    """Ray's semantics for one config: GET returns the last PUT, PUT replaces everything.

    ``interleave`` runs before the n-th GET (0-based), to put another writer's PUT there.
    """

    def __init__(self, *apps: dict[str, Any]) -> None:
        self.apps = list(apps)
        self.gets = 0
        self.puts: list[list[str]] = []
        self.interleave: dict[int, list[dict[str, Any]]] = {}

    def serve_details(self) -> dict[str, Any]:
        if self.gets in self.interleave:
            self.apps = self.interleave[self.gets]
        self.gets += 1
        return details(*self.apps)

    def put_serve_config(self, config: dict[str, Any]) -> None:
        self.apps = copy.deepcopy(config["applications"])
        self.puts.append([a["name"] for a in self.apps])


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(deploy_mod.time, "sleep", lambda s: None)


def writer_for(store: ServeStore, plan: Plan, read: dict[str, Any]) -> ConfigWriter:
    return ConfigWriter(store, plan, read, None, lambda line="": None)  # type: ignore[arg-type]


def test_a_write_between_read_and_put_is_merged_not_dropped():
    store = ServeStore(app("k"))
    read = store.serve_details()  # the plan's read: k only
    store.interleave[1] = [app("k"), app("p")]  # the plugin's PUT lands before our re-read
    writer = writer_for(store, plan_of({"k": "keep", "a": "add"}, [app("k"), app("a")]), read)
    writer.put()
    assert store.puts == [["a", "k", "p"]]


def test_a_later_put_from_an_older_read_is_detected_and_ours_put_again():
    store = ServeStore(app("k"))
    read = store.serve_details()
    writer = writer_for(store, plan_of({"k": "keep", "a": "add"}, [app("k"), app("a")]), read)
    writer.put()
    store.apps = [app("k"), app("p")]  # the other writer read before our PUT, put after it
    assert writer.check(store.serve_details()) is True
    assert store.puts[-1] == ["a", "k", "p"]
    assert writer.check(store.serve_details()) is False


def test_a_writer_that_keeps_losing_fails_with_a_clear_error_after_its_retries():
    store = ServeStore()
    writer = writer_for(store, plan_of({"a": "add"}, [app("a")]), store.serve_details())
    writer.retries = 2
    writer.put()
    with pytest.raises(DeployFailed) as e:
        for _ in range(5):
            store.apps = [app("p")]
            writer.check(store.serve_details())
    assert "another writer replaced the Serve config" in str(e.value) and "a: dropped" in str(
        e.value
    )
    assert e.value.exit_code == 1


def test_the_wait_lasts_at_least_the_settle_time_after_the_last_put():
    t = [100.0]
    store = ServeStore()
    writer = ConfigWriter(store, plan_of({"a": "add"}, [app("a")]), store.serve_details(), None,
                          lambda line="": None, settle_s=3.0, clock=lambda: t[0])  # type: ignore[arg-type]  # fmt: skip
    writer.put()
    assert not writer.settled()
    t[0] += 3.0
    assert writer.settled()
