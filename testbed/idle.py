"""`python -m testbed idle-cpu`: what the running testbed costs the host when nothing happens.

Reads each container's own CPU counter (its cgroup, from inside it) twice, `seconds` apart:
the share of one core each container used in between. Cheaper and steadier than sampling
`podman stats`, and it counts every process of the container, Ray's daemons included.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from testbed import engine
from testbed.errors import TestbedError
from testbed.spec import LABEL

# cgroup v1 (cpuacct, nanoseconds) or v2 (cpu.stat's usage_usec), as the container sees it.
_READ = (
    "cat /sys/fs/cgroup/cpuacct/cpuacct.usage 2>/dev/null && exit 0; "
    "awk '$1 == \"usage_usec\" {print $2 * 1000}' /sys/fs/cgroup/cpu.stat"
)


def _cpu_ns(container: str) -> int:
    out = engine.run_podman("exec", container, "sh", "-c", _READ).stdout.strip()
    try:
        return int(float(out.splitlines()[0]))
    except (ValueError, IndexError):
        raise TestbedError(
            f"got {out!r} for {container}'s CPU counter; expected nanoseconds from its cgroup"
        ) from None


def running_containers() -> list[str]:
    out = engine.run_podman(
        "ps", "--filter", f"label={LABEL}=1", "--format", "{{.Names}}"
    ).stdout.split()
    return sorted(out)


def measure(seconds: float, containers: list[str] | None = None) -> dict[str, float]:
    """{container: percent of one core} over `seconds`."""
    names = containers if containers is not None else running_containers()
    if not names:
        raise TestbedError("got no running testbed containers; expected `nox -s up` first")
    with ThreadPoolExecutor(len(names)) as pool:
        start, t0 = list(pool.map(_cpu_ns, names)), time.monotonic()
        time.sleep(seconds)
        end, t1 = list(pool.map(_cpu_ns, names)), time.monotonic()
    wall_ns = (t1 - t0) * 1e9
    return {n: round(100 * (b - a) / wall_ns, 1) for n, a, b in zip(names, start, end, strict=True)}


def report(shares: dict[str, float], seconds: float) -> str:
    width = max(len(n) for n in shares)
    lines = [f"{n:<{width}}  {pct:5.1f}% of a core" for n, pct in shares.items()]
    total = sum(shares.values())
    lines.append(f"{'total':<{width}}  {total:5.1f}% of a core over {seconds:.0f} s")
    return "\n".join(lines)
