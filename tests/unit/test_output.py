"""`--output json|yaml`: records built from plain data, a pinned schema, stdout for records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mlray import cli
from mlray.deploy import Report
from mlray.errors import ClusterError
from mlray.output import (
    AppRecord,
    Replicas,
    app_records,
    check_output,
    deploy_output,
    ingress_mode,
    json_schemas,
    mask_secrets,
    reference_markdown,
    render,
    table_rows,
)
from mlray.plan import Skipped, assess, plan_deploy
from mlray.registry import Unselected
from tests.unit.test_plan import TAGS, cluster_with, desired, model

HERE = Path(__file__).resolve().parent
DOCS = HERE.parents[1] / "docs"
CONFIG = str(HERE.parents[1] / "config.example.yml")
SERVE = "http://ray:8000"


def details() -> dict:
    ((_, cfg),) = desired(model())  # fmt: skip
    plugin = {**cfg, "name": "by-plugin", "route_prefix": "/by-plugin", "args": {**cfg["args"], "mlray": {
        "managed_by": "mlray", "source": "plugin"}}}  # fmt: skip
    d = cluster_with(cfg, plugin, extra={"theirs": {"import_path": "x:app"}})
    apps = d["applications"]
    apps["iris"]["route_prefix"] = "/iris"
    apps["iris"]["deployments"] = {"MlflowModel": {
        "name": "MlflowModel", "target_num_replicas": 2, "message": "scaling up",
        "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}]}}  # fmt: skip
    apps["theirs"]["status"] = "DEPLOY_FAILED"
    apps["theirs"]["message"] = "boom"
    return d


def test_app_records_from_serve_details():
    recs = {r.name: r for r in app_records(details(), SERVE)}
    iris = recs["iris"]
    assert (iris.model, iris.version, iris.source, iris.status) == (
        "iris.staging",
        "1",
        "registry",
        "RUNNING",
    )
    assert iris.replicas == Replicas(ready=1, target=2)
    assert iris.endpoint == f"{SERVE}/iris/invocations"
    assert iris.ingress == "unknown"  # the cluster's mode is the caller's to pass
    assert {r.ingress for r in app_records(details(), SERVE, "haproxy")} == {"haproxy"}
    assert iris.message == "MlflowModel: scaling up"
    assert (
        recs["by-plugin"].source == "plugin"
        and recs["by-plugin"].endpoint == f"{SERVE}/by-plugin/invocations"
    )
    theirs = recs["theirs"]
    assert (theirs.model, theirs.version, theirs.source, theirs.endpoint) == (
        None,
        None,
        None,
        None,
    )
    assert (theirs.status, theirs.message) == ("DEPLOY_FAILED", "boom")


def test_table_rows_keep_the_text_status_columns():
    rows = {r["APP"]: r for r in table_rows(app_records(details(), SERVE))}
    assert rows["iris"] == {"APP": "iris", "MODEL": "iris.staging", "VERSION": "1", "STATUS": "RUNNING",
                            "REPLICAS": "1/2", "ENDPOINT": f"{SERVE}/iris/invocations"}  # fmt: skip
    assert rows["theirs"]["MODEL"] == "(not mlray)" and rows["theirs"]["ENDPOINT"] == "-"


def test_check_record_has_every_problem_as_model_version_tag_got_expected():
    bad = model(name="bad.staging", version="4", tags={**TAGS, "ray.name": "bad",
                "ray.ray_actor_options.num_cpus": "abc", "ray.num_replicas": "0"})  # fmt: skip
    dup = model(name="dup.staging", version="2")  # same ray.name as iris.staging
    a = assess([model(), bad, dup, model(name="old.staging", python="3.9.1")],
               [Unselected("empty.staging", "it has no versions")], "3.11")  # fmt: skip
    refused = [Skipped("nowheel.staging v3", "catboost==1.1.1 has no wheel", "nowheel.staging")]
    rec = check_output("py311", a, refused, "wheels for Python 3.11 on linux_x86_64")
    assert rec.ok is False
    got = [(p.model, p.version, p.tag, p.got, p.expected) for p in rec.problems]
    assert got == [
        ("bad.staging", "4", "ray.num_replicas", "0", "a whole number >= 1"),
        ("bad.staging", "4", "ray.ray_actor_options.num_cpus", "abc", "a number > 0"),
        ("dup.staging", "2", "ray.name", "iris", "a name unique on the cluster"),
        ("nowheel.staging", "3", None, "catboost==1.1.1 has no wheel",
         "wheels for Python 3.11 on linux_x86_64"),
    ]  # fmt: skip
    assert (
        rec.problems[0].message
        == "bad.staging v4: got '0' for ray.num_replicas; expected a whole number >= 1"
    )
    assert [(s.model, s.version) for s in rec.skipped] == [
        ("empty.staging", None),
        ("old.staging", "1"),
    ]
    assert [(r.model, r.version) for r in rec.ready] == [("iris.staging", "1")]


def test_missing_and_unknown_tags_are_records_too():
    tags = {k: v for k, v in TAGS.items() if k != "ray.ray_actor_options.memory"}
    a = assess([model(tags={**tags, "ray.user_config.max_batchsize": "4"})], [], "3.11")
    rec = check_output("py311", a, [], "")
    assert {(p.tag, p.got, p.expected) for p in rec.problems} == {
        ("ray.ray_actor_options.memory", None, "a number > 0"),
        ("ray.user_config.max_batchsize", "ray.user_config.max_batchsize", "ray.user_config.max_batch_size"),
    }  # fmt: skip


def test_clean_check_is_ok():
    rec = check_output("py311", assess([model()], [], "3.11"), [], "")
    assert rec.ok and rec.problems == []


def test_deploy_record_has_the_plan_and_final_apps_with_seconds():
    d = details()
    new = model(name="new.staging", version="7", tags={**TAGS, "ray.name": "new"})
    plan = plan_deploy(desired(new), d)
    a = assess([new], [], "3.11")
    final = [*app_records(d, SERVE), AppRecord(name="new", model="new.staging", version="7",
             source="registry", status="RUNNING", replicas=Replicas(ready=1, target=1),
             endpoint=f"{SERVE}/new/invocations", ingress="proxy", message="")]  # fmt: skip
    rec = deploy_output("py311", plan, assessment=a, refused=[], wheels_for="", dry_run=False,
                        applied=True, apps=final, timeline={"new": 41.3, "theirs": 0.0}, seconds=50.04)  # fmt: skip
    acts = {x.app: (x.action, x.model, x.version) for x in rec.actions}
    assert acts["new"] == ("add", "new.staging", "7")
    assert acts["iris"] == ("remove", "iris.staging", "1")
    assert acts["theirs"] == ("keep", None, None)
    assert {x.name: x.seconds for x in rec.apps} == {"by-plugin": None, "new": 41.3, "theirs": None}
    assert rec.seconds == 50.0 and rec.serve_config is None and rec.applied


def test_dry_run_record_carries_the_serve_config_and_no_apps():
    plan = plan_deploy(desired(model()), cluster_with())
    rec = deploy_output("py311", plan, assessment=assess([model()], [], "3.11"), refused=[],
                        wheels_for="", dry_run=True, applied=False, apps=[], timeline={},
                        seconds=1.0)  # fmt: skip
    assert rec.apps == [] and rec.serve_config == plan.config


def test_json_and_yaml_carry_the_same_record():
    rec = check_output("py311", assess([model()], [], "3.11"), [], "")
    assert (
        json.loads(render(rec, "json")) == yaml.safe_load(render(rec, "yaml")) == rec.model_dump()
    )


PROXIES = {
    "n1": {"actor_name": "SERVE_PROXY_ACTOR-n1"},
    "n2": {"actor_name": "SERVE_PROXY_ACTOR-n2"},
}


@pytest.mark.parametrize(
    "haproxy,expected",
    [
        ({"SERVE_PROXY_ACTOR-n1", "SERVE_PROXY_ACTOR-n2"}, "haproxy"),
        ({"SERVE_PROXY_ACTOR-n1"}, "mixed"),
        (set(), "proxy"),
        ({"SERVE_PROXY_ACTOR-elsewhere"}, "proxy"),
    ],
)
def test_ingress_mode_from_the_proxies_serve_reports(haproxy, expected):
    """In HAProxy mode Serve names the HAProxyManager actor like the proxy it replaces."""
    assert ingress_mode({"proxies": PROXIES}, haproxy) == expected


def test_ingress_is_unknown_before_serve_runs():
    assert ingress_mode({"proxies": {}}, {"SERVE_PROXY_ACTOR-n1"}) == "unknown"
    assert ingress_mode({}, set()) == "unknown"


def test_schema_is_pinned():
    """Changing a record changes scripts' contract: regenerate on purpose with
    `python -m mlray.output > tests/unit/output_schema.json` (add fields; never rename)."""
    assert json_schemas() == json.loads((HERE / "output_schema.json").read_text())


def test_output_docs_match_the_records():
    assert reference_markdown() in (DOCS / "output.md").read_text()


# -- the CLI: records on stdout, people's text on stderr, exit codes unchanged ------------------
def test_status_json_goes_to_stdout_alone(monkeypatch, capsys):
    monkeypatch.setattr(
        cli, "status_records", lambda cfg, c: ("proxy", app_records(details(), SERVE, "proxy"))
    )
    assert cli.main(["status", CONFIG, "py311", "--output", "json"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["ingress"] == "proxy"
    assert data["cluster"] == "py311" and [a["name"] for a in data["apps"]] == [
        "by-plugin",
        "iris",
        "theirs",
    ]
    assert out.err == ""


def test_status_text_is_the_table_even_when_quiet(monkeypatch, capsys):
    monkeypatch.setattr(
        cli, "status_records", lambda cfg, c: ("proxy", app_records(details(), SERVE, "proxy"))
    )
    assert cli.main(["status", CONFIG, "py311", "-q"]) == 0
    assert "iris.staging" in capsys.readouterr().out


def test_error_in_json_mode_goes_to_stderr_with_its_exit_code(monkeypatch, capsys):
    def unreachable(cfg, c):
        raise ClusterError("cannot reach http://ray:8265")

    monkeypatch.setattr(cli, "status_records", unreachable)
    assert cli.main(["status", CONFIG, "py311", "-o", "json"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "mlray: error: cannot reach" in out.err
    assert cli.main(["status", "no-such-config.yml", "py311", "-o", "json"]) == 2
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("fmt,load", [("json", json.loads), ("yaml", yaml.safe_load)])
def test_failed_check_prints_its_record_then_fails_with_2(monkeypatch, capsys, fmt, load):
    bad = model(tags={**TAGS, "ray.num_replicas": "x"})

    def report(cfg, cluster, opts, say):
        say("Reading registry ...")  # progress: must land on stderr
        return Report(cluster=cluster, assessment=assess([bad], [], "3.11"))

    monkeypatch.setattr(cli, "check_report", report)
    assert cli.main(["check", CONFIG, "py311", "-o", fmt]) == 2
    out = capsys.readouterr()
    data = load(out.out)
    assert data["ok"] is False and data["problems"][0]["tag"] == "ray.num_replicas"
    assert "Reading registry" in out.err and "1 tag problem(s)" in out.err


def test_quiet_drops_progress_but_not_errors(monkeypatch, capsys):
    def report(cfg, cluster, opts, say):
        say("Reading registry ...")
        return Report(
            cluster=cluster,
            assessment=assess([model(tags={**TAGS, "ray.num_replicas": "x"})], [], "3.11"),
        )

    monkeypatch.setattr(cli, "check_report", report)
    assert cli.main(["check", CONFIG, "py311", "-o", "json", "-q"]) == 2
    out = capsys.readouterr()
    assert "Reading registry" not in out.err and "tag problem" in out.err


def test_dry_run_output_masks_secret_env_vars_and_url_credentials():
    app = {
        "name": "iris",
        "runtime_env": {
            "env_vars": {
                "MLFLOW_TRACKING_URI": "https://bob:hunter2@mlflow.example.com",
                "AWS_SECRET_ACCESS_KEY": "abc",
                "DB_PASSWORD": "pw",
                "OMP_NUM_THREADS": "1",
            }
        },
        "deployments": [{"ray_actor_options": {"runtime_env": {"env_vars": {"HF_TOKEN": "t"}}}}],
    }
    config = {"applications": [app]}
    shown, masked = mask_secrets(config)
    env = shown["applications"][0]["runtime_env"]["env_vars"]
    assert env == {
        "MLFLOW_TRACKING_URI": "https://***@mlflow.example.com",
        "AWS_SECRET_ACCESS_KEY": "***",
        "DB_PASSWORD": "***",
        "OMP_NUM_THREADS": "1",
    }
    inner = shown["applications"][0]["deployments"][0]["ray_actor_options"]["runtime_env"]
    assert inner["env_vars"] == {"HF_TOKEN": "***"} and masked == 4
    assert "hunter2" not in json.dumps(shown)
    assert app["runtime_env"]["env_vars"]["DB_PASSWORD"] == "pw"  # the input is untouched


def test_status_says_why_an_app_is_short_of_replicas_and_names_an_mlflow_outage(
    monkeypatch, capsys
):
    """chaos mlflow_outage: a new replica waits for MLflow to load its model, and Ray says
    only that it is slow to initialize. The text status printed no message at all."""
    from mlray import deploy
    from mlray.config import load_config

    cfg = load_config(CONFIG)
    asked = []

    def down(uri, timeout=5.0):
        asked.append(uri)
        return f"cannot reach MLflow at {uri} (ReadTimeout)"

    monkeypatch.setattr(deploy, "mlflow_problem", down)
    recs = {r.name: r for r in deploy.with_mlflow_hint(app_records(details(), SERVE), cfg)}
    assert asked == [cfg.tracking_uri]
    assert recs["iris"].message == (
        f"cannot reach MLflow at {cfg.tracking_uri} (ReadTimeout) (from this host): a replica "
        "that starts now on a node without the model in its cache loads it from MLflow, so it "
        "waits until MLflow answers"
        " | MlflowModel: scaling up"
    )
    assert recs["theirs"].message == "boom"  # not mlray's: it may not load from MLflow
    monkeypatch.setattr(deploy, "mlflow_problem", lambda uri, timeout=5.0: None)
    assert deploy.with_mlflow_hint(app_records(details(), SERVE), cfg) == app_records(
        details(), SERVE
    )
    whole = details()
    whole["applications"]["iris"]["deployments"]["MlflowModel"]["target_num_replicas"] = 1
    asked.clear()
    monkeypatch.setattr(deploy, "mlflow_problem", down)
    deploy.with_mlflow_hint(app_records(whole, SERVE), cfg)
    assert asked == []  # every app whole: MLflow is not asked

    monkeypatch.setattr(
        cli, "status_records", lambda cfg, c: ("proxy", app_records(details(), SERVE, "proxy"))
    )
    assert cli.main(["status", CONFIG, "py311", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "iris: MlflowModel: scaling up" in out and "theirs: boom" in out
    assert not any(line.startswith("by-plugin:") for line in out)
