"""Pass/fail of each scenario, set from its figures at the end of the run. Pure.

A figure that is missing fails its gate, so a scenario that silently did nothing never passes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from loadtests.chaos.scenarios import (
    HEAD_RESTART_FT_MAX_RECOVERY_S,
    HEAD_RESTART_FT_MIN_SUCCESS,
    HEAD_RESTART_MAX_RECOVERY_S,
    MLFLOW_OUTAGE_MIN_SUCCESS,
    REPLICA_KILL_MAX_RECOVERY_S,
    REPLICA_KILL_MIN_SUCCESS,
    WORKER_KILL_MAX_RECOVERY_S,
    WORKER_KILL_MIN_SUCCESS,
)


@dataclass(frozen=True)
class Outcome:
    """One entry of chaos.json's `scenarios`."""

    passed: bool
    success_rate: float | None
    recovery_s: float | None
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Writer:
    """One concurrent writer: its exit code, the apps it reports deployed, its last words."""

    name: str
    returncode: int
    apps: tuple[str, ...]
    output: str


def rate(requests: int, failures: int) -> float | None:
    return None if requests <= 0 else round(1 - failures / requests, 5)


def _low_success(success: float | None, requests: int, failures: int, floor: float,
                 how: str = "") -> list[str]:  # fmt: skip
    """The success-rate problem of a scenario, if any (`how`: e.g. " after retries")."""
    if success is not None and success >= floor:
        return []
    return [f"got success {success} ({failures} failed of {requests}{how}); expected >= {floor}"]


def _slow_recovery(recovery_s: float | None, limit: float, what: str, tail: str = "") -> list[str]:
    """The recovery-time problem of a scenario, if any: `what` it took `recovery_s` for."""
    if recovery_s is not None and recovery_s <= limit:
        return []
    return [f"got {recovery_s} s {what}; expected <= {limit} s{tail}"]


def replica_kill(requests: int, failures: int, recovery_s: float | None) -> Outcome:
    success = rate(requests, failures)
    problems = _low_success(success, requests, failures, REPLICA_KILL_MIN_SUCCESS)
    problems += _slow_recovery(
        recovery_s, REPLICA_KILL_MAX_RECOVERY_S, "until the replacement replica was RUNNING"
    )
    detail = "; ".join(problems) or (
        f"{requests} requests, {failures} failed; replacement RUNNING {recovery_s} s after SIGKILL"
    )
    return Outcome(not problems, success, recovery_s, detail)


def concurrent_deploy(
    writers: list[Writer],
    served: Mapping[str, str],
    requests: int,
    failures: int,
    converged_s: float | None,
) -> Outcome:
    """No lost update: every app a successful writer reports is served (RUNNING) at the end;
    a writer that failed says why in a message, not a traceback."""
    problems = []
    for w in writers:
        if w.returncode == 0:
            lost = [a for a in w.apps if served.get(a) != "RUNNING"]
            if lost:
                status = ", ".join(f"{a}: {served.get(a, 'absent')}" for a in lost)
                problems.append(f"{w.name} reported {', '.join(lost)} deployed; got {status}")
        elif "Traceback" in w.output or not w.output.strip():
            problems.append(f"{w.name} exited {w.returncode} without a clear message")
    if not any(w.returncode == 0 for w in writers):
        problems.append("got no writer that succeeded; expected at least one")
    summary = ", ".join(f"{w.name} exit {w.returncode}" for w in writers)
    detail = "; ".join(problems) or (
        f"{summary}; every reported app served; {requests} requests under load, {failures} failed"
    )
    return Outcome(not problems, rate(requests, failures), converged_s, detail)


def fuzz_requests(
    statuses: Counter[int],
    transport_errors: int,
    replicas_before: Mapping[str, str],
    replicas_after: Mapping[str, str],
    load_requests: int,
    load_failures: int,
    wanted: int,
) -> Outcome:
    """No 5xx, no dropped connection, the same replicas before and after, load unharmed.

    `success_rate` is the share of fuzzed requests answered below 500 (4xx, or 200 for a
    generated body that happens to be valid)."""
    total = sum(statuses.values()) + transport_errors
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    handled = total - server_errors - transport_errors
    problems = []
    if total < wanted:
        problems.append(f"got {total} fuzzed requests; expected >= {wanted}")
    if server_errors or transport_errors:
        problems.append(f"got {server_errors} 5xx and {transport_errors} dropped; expected 0")
    if not replicas_before or replicas_before != replicas_after:
        problems.append(
            f"got replicas {dict(replicas_after)} after; expected the same as before "
            f"{dict(replicas_before)} (no restart)"
        )
    if load_failures or not load_requests:
        problems.append(f"got {load_failures} failed of {load_requests} load requests; expected 0")
    codes = ", ".join(f"{n}x {s}" for s, n in sorted(statuses.items()))
    detail = "; ".join(problems) or (
        f"{total} fuzzed requests ({codes}); replicas unchanged; {load_requests} load requests, "
        "0 failed"
    )
    return Outcome(not problems, None if not total else round(handled / total, 5), None, detail)


def _not_back(apps: Sequence[str], served: Mapping[str, str]) -> list[str]:
    return [f"{a}: {served.get(a, 'absent')}" for a in apps if served.get(a) != "RUNNING"]


def _apps_back(
    apps: Sequence[str], served: Mapping[str, str], wrong: Mapping[str, str]
) -> list[str]:
    """The problems of a head restart's apps: any not RUNNING again, any answering other
    than before (`wrong`: app -> "before -> after")."""
    problems = []
    missing = _not_back(apps, served)
    if missing:
        problems.append(f"got {', '.join(missing)}; expected every app RUNNING again")
    if wrong:
        problems.append(
            "got other answers than before the restart: "
            + "; ".join(f"{a}: {why}" for a, why in sorted(wrong.items()))
        )
    return problems


def head_restart_redeploy(
    deploy_exit: int | None,
    apps: Sequence[str],
    served: Mapping[str, str],
    wrong: Mapping[str, str],
    recovery_s: float | None,
    requests: int,
    failures: int,
) -> Outcome:
    """`mlray deploy` after the restart brings every app back (RUNNING, the same predictions
    as before) within HEAD_RESTART_MAX_RECOVERY_S of the restart. The traffic's success rate
    over the window is reported, not gated: nothing serves while the head is down."""
    problems = []
    if deploy_exit != 0:
        problems.append(f"got exit {deploy_exit} from `mlray deploy`; expected 0")
    if not apps:
        problems.append("got no app served before the restart; expected the registry's apps")
    problems += _apps_back(apps, served, wrong)
    problems += _slow_recovery(
        recovery_s, HEAD_RESTART_MAX_RECOVERY_S, "from the restart to every app RUNNING"
    )
    detail = "; ".join(problems) or (
        f"{len(apps)} apps RUNNING with the same predictions {recovery_s} s after the head's "
        f"restart; traffic over the window: {requests} requests, {failures} failed"
    )
    return Outcome(not problems, rate(requests, failures), recovery_s, detail)


def head_restart_ft(
    apps: Sequence[str],
    served: Mapping[str, str],
    wrong: Mapping[str, str],
    on_worker: Sequence[str],
    replaced: Sequence[str],
    recovery_s: float | None,
    requests: int,
    failures: int,
) -> Outcome:
    """With the GCS in Redis, the worker's replicas serve through the head's restart (no
    client retries), Serve's new controller adopts them rather than replacing them, and every
    app is whole again within HEAD_RESTART_FT_MAX_RECOVERY_S, the same predictions as
    before, without a deploy."""
    success = rate(requests, failures)
    problems = []
    if not on_worker:
        problems.append("got no replica of the app on the worker at the restart; expected one")
    if replaced:
        problems.append(
            f"got {len(replaced)} replica(s) off the head replaced across the restart "
            f"({', '.join(replaced)}); expected Serve's new controller to recover them (it "
            "replaces a replica whose recovery takes over 30 s)"
        )
    problems += _low_success(success, requests, failures, HEAD_RESTART_FT_MIN_SUCCESS)
    problems += _apps_back(apps, served, wrong)
    problems += _slow_recovery(
        recovery_s,
        HEAD_RESTART_FT_MAX_RECOVERY_S,
        "from the restart to every node and app whole again",
    )
    detail = "; ".join(problems) or (
        f"{success:.2%} of {requests} requests through the worker's ingress succeeded across "
        f"the head's restart; {len(apps)} apps whole again after {recovery_s} s, no deploy"
    )
    return Outcome(not problems, success, recovery_s, detail)


def fuzz_tags(
    exits: Mapping[int, int],
    silent: Sequence[str],
    bugs: Sequence[str],
    cli: Sequence[tuple[int, str]],
    fingerprints: tuple[str, str],
    wanted: int,
    cli_wanted: int,
) -> Outcome:
    """Every check ends in exit 0, or exit 2 with a message; none in a traceback; the
    cluster's Serve config is the same before and after. `exits`/`silent`/`bugs`: the
    in-process checks; `cli`: (exit code, output) of each real `mlray check`."""
    checked = sum(exits.values()) + len(bugs)
    others = {code: n for code, n in exits.items() if code not in (0, 2)}
    cli_bad = [
        f"exit {code}: {out.strip().splitlines()[-1:] or '(no output)'}"
        for code, out in cli
        if code not in (0, 2) or "Traceback" in out or (code == 2 and "mlray: error:" not in out)
    ]
    problems = []
    if checked < wanted:
        problems.append(f"got {checked} tag sets checked in-process; expected >= {wanted}")
    if len(cli) < cli_wanted:
        problems.append(f"got {len(cli)} `mlray check` runs; expected {cli_wanted}")
    if bugs:
        problems.append(f"got {len(bugs)} tracebacks; expected 0. First: {bugs[0][:1500]}")
    if others:
        problems.append(f"got exit codes {others}; expected 0 or 2 only")
    if silent:
        problems.append(f"got {len(silent)} errors without a message, e.g. tags {silent[0]}")
    if cli_bad:
        problems.append(f"got `mlray check` runs without a clean answer: {'; '.join(cli_bad)}")
    if fingerprints[0] != fingerprints[1]:
        problems.append("got a different Serve config after the checks; expected no change")
    clean = checked - len(bugs) - sum(others.values()) - len(silent) + len(cli) - len(cli_bad)
    total = checked + len(cli)
    codes = ", ".join(f"{n}x exit {c}" for c, n in sorted(exits.items()))
    cli_codes = ", ".join(str(code) for code, _ in cli)
    detail = "; ".join(problems) or (
        f"{checked} tag sets checked in-process ({codes}), {len(cli)} `mlray check` runs "
        f"(exits {cli_codes}); no traceback; Serve config unchanged"
    )
    return Outcome(not problems, None if not total else round(clean / total, 5), None, detail)


def mlflow_outage(
    requests: int,
    failures: int,
    outage_s: float,
    started_s: float | None,
    late_s: float | None,
) -> Outcome:
    """The running replicas keep serving while MLflow is paused, and the new replica starts
    from its node's model cache without MLflow (`started_s`: from the ask to RUNNING, during
    the outage; `late_s`: from MLflow's return, when it waited for MLflow after all)."""
    success = rate(requests, failures)
    problems = _low_success(success, requests, failures, MLFLOW_OUTAGE_MIN_SUCCESS)
    if started_s is None:
        after = (
            f"it ran {late_s} s after MLflow's return" if late_s is not None
            else "nor within 180 s of MLflow's return"
        )  # fmt: skip
        problems.append(
            f"got no new replica RUNNING during the {outage_s} s MLflow outage ({after}); "
            "expected it to load the model from its node's model cache"
        )
    detail = "; ".join(problems) or (
        f"{requests} requests, {failures} failed; the new replica RUNNING {started_s} s after "
        f"it was asked, MLflow still paused ({outage_s} s outage)"
    )
    return Outcome(not problems, success, started_s, detail)


def worker_kill(
    requests: int,
    failures: int,
    retried: int,
    moved: int,
    recovery_s: float | None,
    nodes_alive: int,
    nodes_wanted: int,
) -> Outcome:
    """Success as the client sees it (it retries a connection error or a 5xx: scoring is
    idempotent); every app RUNNING without the worker's replicas within
    WORKER_KILL_MAX_RECOVERY_S; the worker a Ray node again once its container is started.
    `moved`: replicas that were on the worker (0: the fault hit no replica)."""
    success = rate(requests, failures)
    problems = _low_success(success, requests, failures, WORKER_KILL_MIN_SUCCESS, " after retries")
    if not moved:
        problems.append("got no replica on the worker before the kill; expected one at least")
    problems += _slow_recovery(
        recovery_s, WORKER_KILL_MAX_RECOVERY_S, "until every app ran without the worker"
    )
    if nodes_alive != nodes_wanted:
        problems.append(
            f"got {nodes_alive} alive Ray nodes after the restart; expected {nodes_wanted}"
        )
    detail = "; ".join(problems) or (
        f"{requests} requests, {failures} failed after {retried} retries; {moved} replicas "
        f"replaced, every app RUNNING {recovery_s} s after the kill; worker rejoined"
    )
    return Outcome(not problems, success, recovery_s, detail)
