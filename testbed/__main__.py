"""`python -m testbed {images,up,down,status}`: the commands the nox sessions call."""

from __future__ import annotations

import argparse
import sys

from testbed.errors import TestbedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    parser.add_argument("--file", help="testbed description (default: testbed/testbed.yml)")
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images", help="build (or confirm cached) images")
    images.add_argument("--python", action="append", help="only these Python versions")
    up = sub.add_parser("up", help="start everything and write the mlray config.yml")
    up.add_argument("--fresh", action="store_true", help="recreate even if a matching one runs")
    sub.add_parser("down", help="remove everything carrying the testbed label")
    args = parser.parse_args(argv)

    from testbed.core import Testbed

    testbed = Testbed.from_file(args.file)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
