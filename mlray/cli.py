"""``mlray``: the only place user-facing errors are caught and turned into exit codes.

Exit codes: 0 ok, 1 deploy or runtime failure, 2 usage, config or validation error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mlray import __version__
from mlray.config import load_config
from mlray.deploy import Console, Options, check, deploy, status_rows, undeploy
from mlray.errors import MlrayError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlray",
        description="Serve MLflow Model Registry models on Ray Serve clusters.",
    )
    p.add_argument("--version", action="version", version=f"mlray {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log HTTP and MLflow calls")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("config", help="path to config.yml")
        c.add_argument("cluster", help="a cluster name from the config")
        return c

    d = command("deploy", "make the cluster serve exactly the selected models")
    d.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and the Serve config YAML; change nothing",
    )
    d.add_argument(
        "--prune-unmanaged", action="store_true", help="also remove Serve apps mlray did not deploy"
    )
    d.add_argument(
        "--skip-invalid",
        action="store_true",
        help="deploy the valid models even if others have tag errors",
    )
    d.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for every app to be RUNNING (default 600)",
    )
    d.add_argument(
        "--no-preflight", action="store_true", help="skip the wheel preflight (not recommended)"
    )
    d.add_argument("--no-cache", action="store_true", help="ignore cached preflight results")

    command("status", "show each Serve app's model, version, status, replicas, endpoint")

    u = command("undeploy", "remove mlray apps (all of them if no NAME is given)")
    u.add_argument("names", nargs="*", metavar="NAME", help="app names (ray.name) to remove")
    u.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    u.add_argument("--timeout", type=float, default=300.0, metavar="S")

    c = command("check", "validate config, tags, live cluster and wheels; change nothing")
    c.add_argument("--no-cache", action="store_true", help="ignore cached preflight results")
    return p


def _table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no Serve applications)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    say = Console()
    if args.command == "deploy":
        deploy(
            cfg,
            args.cluster,
            Options(
                dry_run=args.dry_run,
                prune_unmanaged=args.prune_unmanaged,
                skip_invalid=args.skip_invalid,
                timeout_s=args.timeout,
                preflight=not args.no_preflight,
                use_cache=not args.no_cache,
            ),
            say,
        )
    elif args.command == "status":
        say(_table(status_rows(cfg, args.cluster)))
    elif args.command == "undeploy":
        undeploy(
            cfg,
            args.cluster,
            args.names,
            Options(dry_run=args.dry_run, timeout_s=args.timeout),
            say,
        )
    elif args.command == "check":
        check(cfg, args.cluster, Options(use_cache=not args.no_cache), say)
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
