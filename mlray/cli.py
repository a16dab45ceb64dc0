"""``mlray``: the only place user-facing errors are caught and turned into exit codes.

Exit codes: 0 ok, 1 deploy or runtime failure, 2 usage, config or validation error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from mlray import __version__
from mlray.config import load_config
from mlray.deploy import (
    Console,
    Options,
    check,
    check_report,
    check_verdict,
    deploy,
    describe_ingress,
    status_records,
    undeploy,
    wheels_for,
)
from mlray.errors import MlrayError, UsageError
from mlray.export import export_rayservice
from mlray.output import (
    StatusOutput,
    check_output,
    deploy_output,
    render,
    table_rows,
    why_lines,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlray",
        description="Serve MLflow Model Registry models on Ray Serve clusters.",
    )
    p.add_argument("--version", action="version", version=f"mlray {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log HTTP and MLflow calls")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, output: bool = False) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("config", help="path to config.yml")
        c.add_argument("cluster", help="a cluster name from the config")
        c.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
        if output:
            c.add_argument(
                "-o",
                "--output",
                choices=("text", "json", "yaml"),
                default="text",
                help="json or yaml: print a record to stdout (see docs/output.md), "
                "the human text to stderr",
            )
        return c

    d = command("deploy", "make the cluster serve exactly the selected models", output=True)
    d.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and the Serve config YAML; change nothing",
    )
    d.add_argument(
        "--prune-unmanaged", action="store_true", help="also remove Serve apps mlray did not deploy"
    )
    d.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for every app to be RUNNING (default 600)",
    )
    d.add_argument(
        "--unschedulable-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="give up when Ray has said for S seconds that replicas cannot be scheduled "
        "(default 60; 0: wait for --timeout)",
    )
    d.add_argument(
        "--no-prepare-nodes",
        action="store_true",
        help="do not build each changed app's environment on every node (by default a "
        "deploy does, so a scale-out onto another node does not wait for pip)",
    )
    _model_checks(d, "deploy")

    command(
        "status", "show each Serve app's model, version, status, replicas, endpoint", output=True
    )

    u = command("undeploy", "remove mlray apps (all of them if no NAME is given)")
    u.add_argument("names", nargs="*", metavar="NAME", help="app names (ray.name) to remove")
    u.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    u.add_argument("--timeout", type=float, default=300.0, metavar="S")

    e = command("export", "write the plan as a KubeRay RayService manifest; needs no Ray cluster")
    e.add_argument(
        "--format",
        choices=("rayservice",),
        default="rayservice",
        help="what to write: a KubeRay RayService (the only format yet)",
    )
    e.add_argument(
        "-o",
        "--output-file",
        metavar="FILE",
        help="write the manifest to FILE instead of stdout (progress goes to stderr)",
    )
    _model_checks(e, "export")

    c = command(
        "check", "validate config, tags, live cluster and wheels; change nothing", output=True
    )
    c.add_argument("--no-cache", action="store_true", help="ignore cached preflight results")
    return p


def _model_checks(c: argparse.ArgumentParser, verb: str) -> None:
    """The flags deploy and export share: both run the same checks of the models."""
    c.add_argument(
        "--skip-invalid",
        action="store_true",
        help=f"{verb} the valid models even if others have tag errors",
    )
    c.add_argument(
        "--no-preflight", action="store_true", help="skip the wheel preflight (not recommended)"
    )
    c.add_argument("--no-cache", action="store_true", help="ignore cached preflight results")


def _write_manifest(text: str, path: str | None, say: Console) -> None:
    if not path:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise UsageError(f"cannot write the manifest to {path}: {e.strerror}") from None
    say(f"Wrote {path}")


def _table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no Serve applications)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    fmt = getattr(args, "output", "text")
    # With a record on stdout, everything for people goes to stderr: `... -o json | jq` works,
    # and so does `mlray export ... | kubectl apply -f -`.
    to_stderr = fmt != "text" or args.command == "export"
    say = Console(sys.stderr if to_stderr else sys.stdout, quiet=args.quiet)

    def emit(record: BaseModel) -> None:
        print(render(record, fmt), flush=True)

    cfg = load_config(args.config)
    if args.command == "deploy":
        started = time.monotonic()
        opts = Options(
            dry_run=args.dry_run,
            prune_unmanaged=args.prune_unmanaged,
            skip_invalid=args.skip_invalid,
            timeout_s=args.timeout,
            preflight=not args.no_preflight,
            use_cache=not args.no_cache,
            unschedulable_timeout_s=args.unschedulable_timeout,
            prepare_nodes=not args.no_prepare_nodes,
        )
        report = deploy(cfg, args.cluster, opts, say)
        if fmt != "text":
            assert report.plan is not None and report.assessment is not None
            apps = [] if args.dry_run else status_records(cfg, args.cluster)[1]
            emit(
                deploy_output(
                    args.cluster, report.plan, assessment=report.assessment,
                    refused=report.refused, wheels_for=wheels_for(cfg, args.cluster),
                    dry_run=args.dry_run, applied=report.applied, apps=apps,
                    timeline=report.timeline, seconds=time.monotonic() - started,
                )
            )  # fmt: skip
    elif args.command == "status":
        ingress, records = status_records(cfg, args.cluster)
        if fmt == "text":
            say(f"Ingress: {describe_ingress(ingress)}")
            say.result(_table(table_rows(records)))
            for line in why_lines(records):
                say.result(line)
        else:
            emit(StatusOutput(cluster=args.cluster, ingress=ingress, apps=records))
    elif args.command == "undeploy":
        undeploy(
            cfg,
            args.cluster,
            args.names,
            Options(dry_run=args.dry_run, timeout_s=args.timeout),
            say,
        )
    elif args.command == "export":
        opts = Options(
            skip_invalid=args.skip_invalid,
            preflight=not args.no_preflight,
            use_cache=not args.no_cache,
        )
        _, manifest = export_rayservice(cfg, args.cluster, opts, say)
        _write_manifest(manifest, args.output_file, say)
    elif args.command == "check":
        opts = Options(use_cache=not args.no_cache)
        if fmt == "text":
            check(cfg, args.cluster, opts, say)
        else:  # the record first: its problems are the answer, even when the check fails
            report = check_report(cfg, args.cluster, opts, say)
            assert report.assessment is not None
            emit(check_output(args.cluster, report.assessment, report.refused,
                              wheels_for(cfg, args.cluster), report.capacity,
                              report.ingress))  # fmt: skip
            check_verdict(report, say)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(args)
    except MlrayError as e:
        print(f"mlray: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("mlray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
