"""The commands' work: read registry and cluster, plan, apply, wait. I/O lives here.

Order matters for "bad input loses nothing": everything that can refuse (config, MLflow,
live cluster facts, tags, wheels) runs before the only write, the PUT of the Serve config.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, TextIO

import yaml

from mlray import capacity, node_envs, preflight
from mlray.config import MlrayConfig
from mlray.errors import ClusterError, ConfigError, DeployFailed, TagError, UsageError
from mlray.live import AppBoard, AppRow, app_row, live_terminal
from mlray.node_envs import NodeEnvs
from mlray.output import (
    MASK,
    AppRecord,
    Ingress,
    app_message,
    app_records,
    ingress_mode,
    mask_secrets,
    table_rows,
)
from mlray.plan import (
    SOURCE_REGISTRY,
    AppPlan,
    Assessment,
    Plan,
    Skipped,
    app_config,
    app_source,
    assess,
    cluster_part,
    current_apps,
    plan_deploy,
    plan_undeploy,
    same_app,
)
from mlray.ray_api import ClusterFacts, Job, RayDashboard
from mlray.registry import Registry, mlflow_problem
from mlray.serving_package import ServingPackage, build_serving_package, publish_serving_package
from mlray.tags import Problem
from mlray.writes import Intent, fingerprint, merged, violations

TERMINAL_BAD = ("DEPLOY_FAILED",)


@dataclass
class Options:
    dry_run: bool = False
    prune_unmanaged: bool = False
    skip_invalid: bool = False
    timeout_s: float = 600.0
    preflight: bool = True
    use_cache: bool = True
    # seconds Ray may report replicas as unschedulable before the wait gives up; 0: never
    unschedulable_timeout_s: float = 60.0
    # build each changed app's environment on every alive node (mlray/node_envs.py)
    prepare_nodes: bool = True


@dataclass
class Report:
    """What happened, for the CLI to print and for tests and the plugin to inspect."""

    cluster: str
    facts: ClusterFacts | None = None
    assessment: Assessment | None = None
    refused: list[Skipped] = field(default_factory=list)
    plan: Plan | None = None
    # the plan asks more CPU/memory/GPU than the cluster has, and it cannot add nodes
    capacity: list[Problem] = field(default_factory=list)
    applied: bool = False
    # app -> seconds from applying the config until it reached its last status seen
    timeline: dict[str, float] = field(default_factory=dict)
    ingress: Ingress = "unknown"
    node_envs: NodeEnvs | None = None


class Console:
    """Where the commands talk to the person: progress lines, and results.

    With ``--output json|yaml`` it writes to stderr, keeping stdout for the record; with
    ``--quiet`` it drops the progress lines and keeps the results.
    """

    def __init__(self, out: TextIO | None = None, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet

    def __call__(self, line: str = "") -> None:
        if not self.quiet:
            print(line, file=self.out, flush=True)

    @property
    def live(self) -> bool:
        """Progress shown in place (a terminal), rather than as plain timestamped lines."""
        return live_terminal(self.out, self.quiet)

    def result(self, text: str) -> None:
        """What the command was asked for (a table, a config, a verdict): never dropped."""
        print(text, file=self.out, flush=True)


def _live_facts(
    dash: RayDashboard, cluster_name: str, cfg: MlrayConfig, probed: ClusterFacts | None = None
) -> ClusterFacts:
    """Check config against the live cluster: a wrong Python would break every replica.
    ``probed``: facts of an earlier probe of this cluster, checked the same way."""
    cluster = cfg.cluster(cluster_name)
    facts = probed or dash.probe()
    problems = []
    if facts.python_minor != cluster.python:
        problems.append(
            f"got python {cluster.python!r} for clusters.{cluster_name}; "
            f"expected {facts.python_minor!r}: the live cluster runs Python {facts.python}"
        )
    if facts.platform != cluster.platform:
        problems.append(
            f"got platform {cluster.platform!r} for clusters.{cluster_name}; "
            f"expected {facts.platform!r}: the live cluster reports it"
        )
    if problems:
        raise ConfigError("config disagrees with the live cluster:\n  - " + "\n  - ".join(problems))
    return facts


def prepare(
    cfg: MlrayConfig,
    cluster_name: str,
    opts: Options,
    say: Console,
    probed: ClusterFacts | None = None,
    registry: Registry | None = None,
) -> tuple[Report, RayDashboard, Registry]:
    """Everything up to the plan: read, validate, preflight. Changes nothing anywhere.

    ``probed`` and ``registry`` let a caller checking many times (the chaos suite's
    ``fuzz_tags``) reuse one probe (a Ray job of seconds) and one MLflow client."""
    cluster = cfg.cluster(cluster_name)
    dash = RayDashboard(cluster, cluster_name)

    def probe() -> ClusterFacts:
        say(f"Probing cluster {cluster_name} at {cluster.dashboard_url}")
        return _live_facts(dash, cluster_name, cfg, probed)

    report, registry = prepare_with(cfg, cluster_name, opts, say, probe, registry)
    return report, dash, registry


def prepare_with(
    cfg: MlrayConfig,
    cluster_name: str,
    opts: Options,
    say: Console,
    cluster_facts: Callable[[], ClusterFacts],
    registry: Registry | None = None,
) -> tuple[Report, Registry]:
    """:func:`prepare` with the cluster's facts from a live probe (deploy) or config (export)."""
    cluster = cfg.cluster(cluster_name)
    report = Report(cluster=cluster_name)
    registry = registry or Registry(cfg.tracking_uri)
    say(
        f"Reading registry {cfg.tracking_uri} (models named *{cfg.selection.name_suffix}"
        + (f", alias @{cfg.selection.alias})" if cfg.selection.alias else ", latest version)")
    )
    models, unselected = registry.selected(cfg.selection)
    facts = cluster_facts()
    report.facts = facts
    say(f"  Python {facts.python}, {facts.platform}, {facts.libc}, Ray {facts.ray}")
    # Facts from config know only the minor: no warning about patch releases then.
    full = facts.python if facts.python != cluster.python else None
    a = assess(models, unselected, cluster.python, full)
    report.assessment = a
    if a.problems and not opts.skip_invalid:
        raise TagError(a.problems)
    if opts.preflight and a.ready:
        target = preflight.Target(cluster.python, cluster.platform, facts.glibc)
        say(
            f"Preflight: resolving wheels of {len(a.ready)} model(s) for "
            f"Python {cluster.python} on {cluster.platform}"
        )
        results = preflight.check_many(
            {r.model.label: r.model.pip for r in a.ready}, target, use_cache=opts.use_cache
        )
        for r in list(a.ready):
            res = results[r.model.label]
            if not res.ok:
                report.refused.append(Skipped(r.model.label, res.message, r.model.name))
                a.ready.remove(r)
    return report, registry


def _held_apps(report: Report, details: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Apps of models refused this time: kept as they run, so a bad new version loses nothing."""
    refused = {s.model_name for s in report.refused}
    if report.assessment:
        refused |= report.assessment.invalid
    return {
        name: cfg
        for name, cfg in current_apps(details).items()
        if app_source(cfg) == SOURCE_REGISTRY
        and (cfg.get("args") or {}).get("model_name") in refused
    }


def deploy(
    cfg: MlrayConfig, cluster_name: str, opts: Options, say: Console | None = None
) -> Report:
    say = say or Console()
    report, dash, registry = prepare(cfg, cluster_name, opts, say)
    cluster = cfg.cluster(cluster_name)
    package = build_serving_package()
    desired, details, plan = _plan(
        cfg, cluster_name, report, dash, opts, serving_uri(cfg, cluster_name, package)
    )
    held = _held_apps(report, details)
    print_assessment(report, say)
    print_plan(plan, say)
    if plan.conflicts:
        raise UsageError(
            "refusing to overwrite apps mlray does not manage:\n  - "
            + "\n  - ".join(plan.conflicts)
        )
    if plan.changes:
        fit_check(dash, report, plan, details, say)
        if report.capacity:
            raise UsageError(
                "the plan does not fit the cluster; nothing was changed:\n  - "
                + "\n  - ".join(report.capacity)
            )
    if opts.dry_run:
        say("\nDry run: nothing was changed. The Serve config (`serve deploy` accepts it):")
        shown, masked = mask_secrets(plan.config)
        if masked:
            say(f"({masked} secret-looking env var value(s) shown as {MASK}; Ray gets them as set)")
        say.result("---\n" + to_yaml(shown).rstrip())
        return report
    if not plan.changes:
        apps = details.get("applications") or {}
        busy = [
            n for n in (c["name"] for _, c in desired) if apps.get(n, {}).get("status") != "RUNNING"
        ]
        say.result("\nNothing to change." + (f" Waiting for {', '.join(busy)}." if busy else ""))
        if busy:
            wait_until_running(
                dash, plan, opts.timeout_s, say, timeline=report.timeline,
                unschedulable_s=opts.unschedulable_timeout_s,
            )  # fmt: skip
        return report
    ship_serving_code(cfg, cluster_name, dash, package, say)
    say(f"Applying the Serve config to {cluster_name} ({len(plan.config['applications'])} apps)")
    writer = ConfigWriter(dash, plan, details, cluster.http_options, say)
    writer.put()
    report.applied = True
    # Submitted now, so other nodes build while the replicas start; read after the wait.
    job = _start_node_envs(dash, plan, opts, say) if opts.prepare_nodes else None
    wait_until_running(
        dash, plan, opts.timeout_s, say, timeline=report.timeline,
        unschedulable_s=opts.unschedulable_timeout_s, writer=writer,
    )  # fmt: skip
    if job is not None:
        report.node_envs = finish_node_envs(dash, job, say)
    _write_back(registry, plan, desired, cluster_name, cluster.serve_url, say)
    say.result(f"Done: {cluster_name} serves {len(desired) + len(held)} model(s).")
    return report


def _start_node_envs(dash: RayDashboard, plan: Plan, opts: Options, say: Console) -> Job | None:
    """Submit the job that builds the added and updated apps' environments on every node."""
    changed = {a.name for a in plan.apps if a.action in ("add", "update")}
    every = plan.config["applications"]
    apps = [a for a in every if a["name"] in changed]
    return start_node_envs(dash, apps, opts.timeout_s, say, every_app=every)


def start_node_envs(
    dash: RayDashboard,
    apps: list[dict[str, Any]],
    timeout_s: float,
    say: Console,
    every_app: list[dict[str, Any]] | None = None,
) -> Job | None:
    """Submit the job that builds these apps' environments on every alive node and puts
    their models in each node's model cache (also what a node that joined after the deploy
    needs: the chaos suite's worker_kill). ``every_app``: all the cluster will run, whose
    cached models stay; without it, no cached model is removed."""
    envs = node_envs.envs_to_prepare(apps)
    if not envs:
        return None
    models = node_envs.models_to_fetch(apps, every_app)
    say(
        f"Preparing {len(envs)} app environment(s) on every node (new replicas skip pip)"
        + (f" and caching {len(models)} model(s) there" if models else "")
    )
    try:
        return dash.submit_job(
            "node-envs", node_envs.ENTRYPOINT, timeout_s,
            env_vars=node_envs.job_env(envs, timeout_s, models),
        )  # fmt: skip
    except ClusterError as e:  # the apps serve without it; scale-out only gets slower
        say(f"warning: could not start preparing the nodes: {e}")
        return None


def finish_node_envs(dash: RayDashboard, job: Job, say: Console) -> NodeEnvs | None:
    try:
        done = NodeEnvs.from_report(dash.job_report(job, node_envs.MARKER))
    except ClusterError as e:
        say(f"warning: preparing the nodes did not finish: {e}")
        return None
    say(f"Nodes prepared: {done.summary()}")
    for line in done.failures:
        say(f"warning: environment not built: {line} (a replica placed there builds it)")
    for line in done.warm_failures:
        say(f"note: not pre-imported: {line} (a replica placed there compiles it)")
    for line in done.model_failures:
        say(f"note: model not cached: {line} (a replica placed there downloads it)")
    return done


def serving_uri(cfg: MlrayConfig, cluster_name: str, package: ServingPackage) -> str:
    """The py_modules URI of the serving code, as the cluster's nodes will fetch it."""
    store = cfg.cluster(cluster_name).serving_code
    return package.uri(store, cfg.cluster_tracking_uri(cluster_name))


def ship_serving_code(
    cfg: MlrayConfig, cluster_name: str, dash: RayDashboard, package: ServingPackage, say: Console
) -> None:
    """Put the serving code where ``serving_uri`` points, unless it is already there."""
    if cfg.cluster(cluster_name).serving_code == "gcs":
        if not dash.package_exists(package.gcs_uri):
            say(f"Uploading serving code as {package.gcs_uri} ({len(package.data)} bytes)")
            dash.upload_package(package.gcs_uri, package.data)
    elif publish_serving_package(package, cfg.tracking_uri):
        uri = serving_uri(cfg, cluster_name, package)
        say(f"Stored serving code in MLflow's artifact store: {uri} ({len(package.data)} bytes)")


def _plan(
    cfg: MlrayConfig,
    cluster_name: str,
    report: Report,
    dash: RayDashboard,
    opts: Options,
    serving_uri: str,
) -> tuple[list[tuple[Any, dict[str, Any]]], dict[str, Any], Plan]:
    """The desired apps, the cluster's Serve details and the plan between them."""
    desired = desired_apps(cfg, cluster_name, report, serving_uri)
    details = dash.serve_details()
    plan = plan_deploy(
        desired,
        details,
        prune_unmanaged=opts.prune_unmanaged,
        http_options=cfg.cluster(cluster_name).http_options,
        hold=_held_apps(report, details),
    )
    report.plan = plan
    return desired, details, plan


def desired_apps(
    cfg: MlrayConfig, cluster_name: str, report: Report, serving_uri: str
) -> list[tuple[Any, dict[str, Any]]]:
    """One Serve app per model the assessment found ready: what deploy and export send."""
    assert report.assessment is not None
    return [
        (
            r.model,
            app_config(
                r.model,
                r.options,
                tracking_uri=cfg.cluster_tracking_uri(cluster_name),
                serving_uri=serving_uri,
            ),
        )
        for r in report.assessment.ready
    ]


def fit_check(
    dash: RayDashboard, report: Report, plan: Plan, details: dict[str, Any], say: Console
) -> None:
    """Add up what the whole config to PUT asks for; compare with the cluster's totals.

    Without an autoscaler a plan that does not fit would only wait for its timeout, so it
    goes to ``report.capacity`` (refused); with one (or when unknown), it is a warning.
    """
    kept = {a.name for a in plan.apps if a.action in ("keep", "unchanged")}
    effective = {
        name: {
            d: dep.get("deployment_config") or {}
            for d, dep in (app.get("deployments") or {}).items()
        }
        for name, app in (details.get("applications") or {}).items()
        if name in kept
    }
    short = capacity.shortfalls(capacity.asks(plan.config, effective), dash.cluster_resources())
    if not short:
        return
    autoscaler = dash.autoscaler()
    found = [
        Problem(
            capacity.refusal(s, report.cluster, autoscaler),
            tag=s.resource,
            got=s.amount(s.asked),
            expected=f"at most {s.amount(s.available)}",
        )
        for s in short
    ]
    if autoscaler is False:
        report.capacity = found
        return
    assert report.assessment is not None
    for p in found:
        note = (
            "deploying anyway: an autoscaler may add nodes"
            if autoscaler
            else ("deploying anyway: could not tell whether the cluster autoscales")
        )
        report.assessment.warnings.append(f"{p} ({note})")
        say(f"warning  {p} ({note})")


def _write_back(
    registry: Registry,
    plan: Plan,
    desired: list[tuple[Any, dict[str, Any]]],
    cluster_name: str,
    serve_url: str,
    say: Console,
) -> None:
    """Record where each version now runs, so the registry answers "where is this served?"."""
    changed = {a.name for a in plan.apps if a.action in ("add", "update")}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for model, cfg in desired:
        if cfg["name"] not in changed:
            continue
        tags = {
            "mlray.cluster": cluster_name,
            "mlray.endpoint": f"{serve_url}{cfg['route_prefix']}/invocations",
            "mlray.deployed_at": now,
        }
        try:
            registry.set_version_tags(model.name, model.version, tags)
        except Exception as e:  # the deploy itself succeeded; do not fail it for bookkeeping
            say(f"warning: could not tag {model.label} with its endpoint: {e}")


class ConfigWriter:
    """Puts a plan's Serve config and keeps its intent in place against concurrent writers.

    Ray's PUT replaces the whole config with no compare-and-swap (see :mod:`mlray.writes`):
    right before the PUT the apps are read again and, if they moved since the plan was
    made, the intent is merged into them; while waiting, a violated intent (a later PUT
    built from an older read dropped or reverted ours) is put again, merged, at most
    ``retries`` times, else the deploy fails. The wait ends no sooner than ``settle_s``
    after the last PUT, so a PUT still in flight from another writer is seen.
    """

    def __init__(
        self,
        dash: RayDashboard,
        plan: Plan,
        read: dict[str, Any],
        http_options: dict[str, Any] | None,
        say: Callable[..., None],
        retries: int = 5,
        settle_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dash, self.plan, self.say, self.clock = dash, plan, say, clock
        self.http_options = http_options
        self.intent = Intent.of(plan)
        self.seen = fingerprint(read)
        self.retries, self.settle_s = retries, settle_s
        self.reapplied = 0
        self.put_at: float | None = None

    def put(self, config: dict[str, Any] | None = None) -> None:
        config = config or self.plan.config
        now = self.dash.serve_details()
        if fingerprint(now) != self.seen:
            self.say("  the Serve config changed since it was read (another deploy?): merging")
            config = merged(now, self.intent, self.http_options)
        self.dash.put_serve_config(config)
        self.put_at = self.clock()

    def check(self, details: dict[str, Any]) -> bool:
        """True when the intent was violated and has just been put again."""
        bad = violations(details, self.intent)
        if not bad:
            return False
        if self.reapplied >= self.retries:
            raise DeployFailed(
                f"another writer replaced the Serve config {self.reapplied + 1} times and "
                "undid this deploy's apps; gave up (run the deploy again when the other one "
                "is done):\n  - " + "\n  - ".join(bad)
            )
        self.reapplied += 1
        self.say(
            "  a concurrent PUT undid our apps (" + "; ".join(bad) + "): putting them again, "
            f"merged with what runs now ({self.reapplied}/{self.retries})"
        )
        time.sleep(random.uniform(0.0, 1.0))  # two writers retrying in step would collide again
        self.seen = fingerprint(details)
        self.put(merged(details, self.intent, self.http_options))
        return True

    def settled(self) -> bool:
        return self.put_at is None or self.clock() - self.put_at >= self.settle_s


def wait_until_running(
    dash: RayDashboard,
    plan: Plan,
    timeout_s: float,
    say: Console,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    timeline: dict[str, float] | None = None,
    unschedulable_s: float = 60.0,
    writer: ConfigWriter | None = None,
) -> None:
    """Poll until every planned app runs the new config, showing each status change.

    A waiting app's message from Ray is shown when it changes: it says why (pip install,
    resources). When Ray has said for ``unschedulable_s`` (0: never) that an app's replicas
    cannot be scheduled, waiting longer will not help: fail now rather than at the timeout.
    ``timeline`` gets, per app, the seconds at which it reached its latest status.
    """
    want = {a["name"]: a for a in plan.config["applications"]}
    gone = {a.name for a in plan.by_action("remove")}
    board = AppBoard(say.out) if say.live else None
    plain = say if board is None else (lambda line="": None)
    # Apps of others the plan kept: another writer may remove them meanwhile; not ours to wait.
    optional = {a.name for a in plan.by_action("keep")}
    try:
        _wait_loop(
            dash, want, gone, timeout_s, plain, board, poll_s, clock, timeline, unschedulable_s,
            writer, optional,
        )  # fmt: skip
    finally:
        if board is not None:
            board.stop()


def _wait_loop(
    dash: RayDashboard,
    want: dict[str, dict[str, Any]],
    gone: set[str],
    timeout_s: float,
    say: Callable[..., None],
    board: AppBoard | None,
    poll_s: float,
    clock: Callable[[], float],
    timeline: dict[str, float] | None,
    unschedulable_s: float,
    writer: ConfigWriter | None = None,
    optional: set[str] | None = None,
) -> None:
    start = clock()
    last: dict[str, str] = {}
    said: dict[str, str] = {}
    stuck_since: dict[str, float] = {}
    shown: dict[str, str] = {}  # the live row's message: Ray's last one while not RUNNING
    reached: dict[str, float] = {}  # when an app reached RUNNING: its row's clock stops
    last_beat = start
    while True:
        details = dash.serve_details()
        if writer is not None and writer.check(details):
            continue  # our apps were put again: read the cluster anew
        apps = details.get("applications") or {}
        pending, failed, stuck = [], [], []
        rows: list[AppRow] = []
        for name, cfg in want.items():
            if name in (optional or ()) and name not in apps:
                continue
            app = apps.get(name) or {}
            status = app.get("status", "NOT_STARTED")
            if not same_app(app.get("deployed_app_config"), cfg) and status == "RUNNING":
                status = "APPLYING"
            if last.get(name) != status:
                say(f"  [{clock() - start:5.1f}s] {name}: {status}")
                last[name] = status
                if timeline is not None:
                    timeline[name] = round(clock() - start, 1)
            message = app_message(app) if status != "RUNNING" else ""
            if message and said.get(name) != message:
                say(f"  [{clock() - start:5.1f}s] {name}: {message}")
            said[name] = message
            if status == "RUNNING":
                reached.setdefault(name, clock() - start)
            else:
                reached.pop(name, None)
                shown[name] = message or shown.get(name, "")
            elapsed = reached.get(name, clock() - start)
            rows.append(app_row(name, status, app, elapsed, shown.get(name, "")))
            if status in TERMINAL_BAD:
                failed.append(f"{name}: {status}: {app_message(app)}")
            elif status != "RUNNING":
                pending.append(f"{name} {status}")
                if capacity.unschedulable(message):
                    since = stuck_since.setdefault(name, clock())
                    if unschedulable_s > 0 and clock() - since >= unschedulable_s:
                        stuck.append(f"{name}: {message}")
                else:
                    stuck_since.pop(name, None)
        pending += [f"{n} DELETING" for n in gone if n in apps]
        rows += [app_row(n, "DELETING", apps[n], clock() - start, "") for n in gone if n in apps]
        if board is not None:
            board.update(rows)
        if failed:
            raise DeployFailed("deploy failed:\n  - " + "\n  - ".join(failed))
        if stuck:
            raise DeployFailed(
                f"Ray could not schedule the replicas for {unschedulable_s:.0f}s "
                "(--unschedulable-timeout); giving up before the timeout. Lower the resources "
                "or replicas, or add nodes:\n  - " + "\n  - ".join(stuck)
            )
        if not pending and (writer is None or writer.settled()):
            return
        if clock() - start > timeout_s:
            msgs = [f"{n}: {app_message(apps.get(n) or {})}" for n in want if n in apps]
            raise DeployFailed(
                f"timed out after {timeout_s:.0f}s waiting for: {', '.join(pending)}\n"
                + "\n".join(f"  {m}" for m in msgs if m.split(": ", 1)[1])
            )
        if clock() - last_beat >= 15:
            say(f"  [{clock() - start:5.1f}s] waiting for {', '.join(pending)}")
            last_beat = clock()
        time.sleep(poll_s)


def undeploy(
    cfg: MlrayConfig, cluster_name: str, names: list[str], opts: Options, say: Console | None = None
) -> Plan:
    say = say or Console()
    cluster = cfg.cluster(cluster_name)
    dash = RayDashboard(cluster, cluster_name)
    details = dash.serve_details()
    plan, unknown = plan_undeploy(details, names, http_options=cluster.http_options)
    if unknown:
        ours = sorted(n for n, c in current_apps(details).items() if app_source(c))
        raise UsageError(
            f"got {', '.join(unknown)} for app names; expected apps mlray deployed on "
            f"{cluster_name}: {', '.join(ours) or 'none'}. Nothing was changed."
        )
    print_plan(plan, say)
    if opts.dry_run or not plan.changes:
        say.result("Nothing was changed." if opts.dry_run else "Nothing to remove.")
        return plan
    writer = ConfigWriter(dash, plan, details, cluster.http_options, say)
    writer.put()
    wait_until_running(dash, plan, opts.timeout_s, say, writer=writer)
    say.result(f"Removed {len(plan.by_action('remove'))} app(s) from {cluster_name}.")
    return plan


def check(
    cfg: MlrayConfig,
    cluster_name: str,
    opts: Options,
    say: Console | None = None,
    probed: ClusterFacts | None = None,
    registry: Registry | None = None,
) -> Report:
    """The preflight alone: everything deploy checks, nothing applied."""
    say = say or Console()
    report = check_report(cfg, cluster_name, opts, say, probed, registry)
    check_verdict(report, say)
    return report


def check_report(
    cfg: MlrayConfig,
    cluster_name: str,
    opts: Options,
    say: Console | None = None,
    probed: ClusterFacts | None = None,
    registry: Registry | None = None,
) -> Report:
    """Every problem of every model: tag errors do not stop the wheels of the others.
    ``probed``, ``registry``: see :func:`prepare`."""
    say = say or Console()
    report, dash, _ = prepare(
        cfg, cluster_name, replace(opts, skip_invalid=True), say, probed, registry
    )
    print_assessment(report, say)
    uri = serving_uri(cfg, cluster_name, build_serving_package())
    _, details, plan = _plan(cfg, cluster_name, report, dash, opts, uri)
    report.ingress = ingress_mode(details, dash.haproxy_actors())
    say(f"  Ingress: {describe_ingress(report.ingress)}")
    fit_check(dash, report, plan, details, say)
    for p in report.capacity:
        say(f"refused  {p}")
    return report


def check_verdict(report: Report, say: Console) -> None:
    """Raise for what :func:`check_report` found (exit code 2), or say OK."""
    assert report.assessment is not None
    if report.assessment.problems:
        raise TagError(report.assessment.problems)
    if report.refused:
        raise UsageError(f"{len(report.refused)} model(s) cannot be installed on {report.cluster}")
    if report.capacity:
        raise UsageError(
            "the models do not fit the cluster:\n  - " + "\n  - ".join(report.capacity)
        )
    say.result(f"OK: {len(report.assessment.ready)} model(s) ready for {report.cluster}.")


def wheels_for(cfg: MlrayConfig, cluster_name: str) -> str:
    """What the wheel preflight asks of a model's requirements on this cluster."""
    cluster = cfg.cluster(cluster_name)
    return f"wheels for Python {cluster.python} on {cluster.platform}"


def describe_ingress(mode: Ingress) -> str:
    return {
        "haproxy": "haproxy (Ray Serve's HAProxy ingress)",
        "proxy": "proxy (Ray Serve's classic HTTP proxy; docs/performance.md: HAProxy is faster)",
        "mixed": "mixed (some nodes run HAProxy, some the classic proxy)",
        "unknown": "unknown (Serve is not running yet)",
    }[mode]


def status_records(cfg: MlrayConfig, cluster_name: str) -> tuple[Ingress, list[AppRecord]]:
    """The cluster's ingress mode, and a record per Serve app."""
    cluster = cfg.cluster(cluster_name)
    dash = RayDashboard(cluster, cluster_name)
    details = dash.serve_details()
    ingress = ingress_mode(details, dash.haproxy_actors())
    return ingress, with_mlflow_hint(app_records(details, cluster.serve_url, ingress), cfg)


def with_mlflow_hint(records: list[AppRecord], cfg: MlrayConfig) -> list[AppRecord]:
    """A replica of an mlray app on a node without the model in its cache (one that joined
    after the deploy) loads it from MLflow when it starts. While MLflow does not answer,
    such a replica waits, and Ray only says it is slow to initialize: so when an mlray app
    has fewer replicas ready than wanted, ask MLflow, and put its answer first in those
    apps' messages."""
    short = {r.name for r in records if r.source and r.replicas.ready < r.replicas.target}
    problem = mlflow_problem(cfg.tracking_uri) if short else None
    if not problem:
        return records
    hint = (
        f"{problem} (from this host): a replica that starts now on a node without the model "
        "in its cache loads it from MLflow, so it waits until MLflow answers"
    )
    return [
        r.model_copy(update={"message": " | ".join(p for p in (hint, r.message) if p)})
        if r.name in short
        else r
        for r in records
    ]


def status_rows(cfg: MlrayConfig, cluster_name: str) -> list[dict[str, str]]:
    return table_rows(status_records(cfg, cluster_name)[1])


def print_assessment(report: Report, say: Console) -> None:
    a = report.assessment
    if a is None:
        return
    for s in a.skipped:
        say(f"skipped  {s.label}: {s.reason}")
    for s in report.refused:
        say(f"refused  {s.label}: {s.reason}")
    for p in a.problems:
        say(f"invalid  {p}")
    for w in a.warnings:
        say(f"warning  {w}")


def print_plan(plan: Plan, say: Console) -> None:
    say("\nPlan:")
    if not plan.apps:
        say("  (no apps)")
    width = max((len(a.name) for a in plan.apps), default=0)
    for a in plan.apps:
        model = f" [{a.model}]" if a.model else ""
        say(f"  {a.action:<9} {a.name:<{width}}{model}: {a.reason}")


def to_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)


__all__ = ["ClusterError", "Options", "Report", "check", "deploy", "status_rows", "undeploy"]


def apply_one(
    cfg: MlrayConfig,
    cluster_name: str,
    name: str,
    app: dict[str, Any] | None,
    timeout_s: float = 600.0,
    say: Console | None = None,
) -> Plan:
    """Add, replace (``app``) or remove (None) one app, keeping every other app as it runs.

    Used by the MLflow deployments plugin, which manages single deployments by name.
    """
    say = say or Console()
    cluster = cfg.cluster(cluster_name)
    dash = RayDashboard(cluster, cluster_name)
    details = dash.serve_details()
    current = current_apps(details)
    apps, configs = [], {}
    for n, c in current.items():
        if n == name:
            continue
        apps.append(AppPlan(n, "keep", "not named"))
        configs[n] = c
    if app is None:
        apps.append(AppPlan(name, "remove", "deleted"))
    else:
        action = "update" if name in current else "add"
        if name in current and same_app(current[name], app):
            action = "unchanged"
        apps.append(AppPlan(name, action, "requested"))
        configs[name] = app
    config = cluster_part(details, cluster.http_options)
    config["applications"] = [configs[n] for n in sorted(configs)]
    plan = Plan(apps=apps, config=config)
    if not plan.changes:
        return plan
    if app is not None:
        ship_serving_code(cfg, cluster_name, dash, build_serving_package(), say)
    writer = ConfigWriter(dash, plan, details, cluster.http_options, say)
    writer.put()
    wait_until_running(dash, plan, timeout_s, say, writer=writer)
    return plan
