"""`python -m testbed {doctor,prepare-host,images,up,down,idle-cpu}`: what nox sessions call.

`doctor` and `prepare-host` need only the standard library, so `setup-host.sh` and CI can run
them with the host's bare python3 before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.errors import TestbedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    parser.add_argument("--file", help="testbed description (default: testbed/testbed.yml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check the container engine contract (✓/✗), build nothing")
    sub.add_parser("prepare-host", help="write the containers.conf drop-in this host needs, if any")
    images = sub.add_parser("images", help="build (or confirm cached) images")
    images.add_argument("--python", action="append", help="only these Python versions")
    up = sub.add_parser("up", help="start everything and write the mlray config.yml")
    up.add_argument("--fresh", action="store_true", help="recreate even if a matching one runs")
    sub.add_parser("down", help="remove everything carrying the testbed label")
    idle = sub.add_parser("idle-cpu", help="each running container's CPU share while idle")
    idle.add_argument("--seconds", type=float, default=60.0, help="measuring window (60)")
    idle.add_argument("--processes", action="store_true", help="also each one's top processes")
    args = parser.parse_args(argv)

    try:
        if args.command == "doctor":
            from testbed import doctor
            from testbed.spec import default_state_dir

            return doctor.main(default_state_dir())
        if args.command == "prepare-host":
            from testbed.spec import default_state_dir

            return _prepare_host(default_state_dir())
        from testbed.core import Testbed

        testbed = Testbed.from_file(args.file)
        if args.command == "idle-cpu":
            from testbed import idle

            testbed.prepare()
            print(idle.report(idle.measure(args.seconds), args.seconds))
            if args.processes:
                names = idle.running_containers()
                with ThreadPoolExecutor(len(names)) as pool:
                    tops = pool.map(lambda n: idle.top_processes(n, args.seconds), names)
                for name, top in zip(names, tops, strict=True):
                    print(f"\n{name}: top processes over {args.seconds:.0f} s "
                          "(share of a core, main-thread wakeups a second)")  # fmt: skip
                    for pct, woke, cmd in top:
                        print(f"  {pct:5.2f}%  {woke:6.1f}/s  {cmd}")
            return 0
        if args.command == "images":
            testbed.build_images(args.python)
        elif args.command == "up":
            testbed.up(reuse=not args.fresh)
            print(testbed.endpoints())
        elif args.command == "down":
            testbed.down()
            print("testbed removed (images kept)")
    except TestbedError as exc:
        print(f"testbed error: {exc}", file=sys.stderr)
        return 1
    return 0


def _prepare_host(state_dir: Path) -> int:
    from testbed import engine

    changes = engine.configure_host(state_dir)
    for change in changes:
        print(f"[setup-host] {change}", file=sys.stderr)
    if not changes:
        print("[setup-host] Podman settings: nothing to change on this host", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
