"""`python -m testbed idle-cpu`: what the running testbed costs the host when nothing happens.

Reads each container's own CPU counter (its cgroup, from inside it) twice, `seconds` apart:
the share of one core each container used in between. Cheaper and steadier than sampling
`podman stats`, and it counts every process of the container, Ray's daemons included.
"""

from __future__ import annotations

import re
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


# utime+stime (clock ticks), the main thread's voluntary context switches (how often it
# went to sleep, so woke) and the command line of every process in the container.
_PROCS = (
    "for d in /proc/[0-9]*; do "
    "t=$(awk '{print $14+$15}' $d/stat 2>/dev/null) || continue; "
    "v=$(awk '/^voluntary_ctxt_switches/ {print $2}' $d/status 2>/dev/null); "
    "echo \"${d#/proc/} $t ${v:-0} $(tr '\\0' ' ' < $d/cmdline 2>/dev/null | cut -c1-400)\"; done; "
    "getconf CLK_TCK"
)


def parse_processes(lines: list[str]) -> dict[str, tuple[int, int, str]]:
    """{pid: (CPU ticks, main-thread wakeups, short command)} from `_PROCS`' lines (the
    clock-tick line last, not included)."""
    procs: dict[str, tuple[int, int, str]] = {}
    for line in lines[:-1]:
        pid, used, woke, cmd = ([*line.split(" ", 3), "", "", ""])[:4]
        if used.isdigit() and woke.isdigit():
            procs[pid] = (int(used), int(woke), _short(cmd.strip()))
    return procs


def _process_ticks(container: str) -> tuple[dict[str, tuple[int, int, str]], int]:
    lines = engine.run_podman("exec", container, "sh", "-c", _PROCS).stdout.splitlines()
    return parse_processes(lines), int(lines[-1])


def _short(cmd: str) -> str:
    """A replica's command line starts with its runtime_env's interpreter path: name the env."""
    cmd = re.sub(
        r"\S*/runtime_resources/pip/([0-9a-f]{8})\S*/python\S*", r"[pip env \1] python", cmd
    )
    cmd = re.sub(r"\S*/site-packages/|\S*/dist-packages/", "", cmd)
    return cmd[:100]


def top_processes(container: str, seconds: float, top: int = 12) -> list[tuple[float, float, str]]:
    """The processes that used the most CPU over `seconds`: (percent of a core, main-thread
    wakeups a second, command). Every Ray worker process (replicas, Serve's controller and
    proxies) wakes about 100 times a second: the core worker's fixed 10 ms timer."""
    before, hz = _process_ticks(container)
    t0 = time.monotonic()
    time.sleep(seconds)
    after, _ = _process_ticks(container)
    wall = time.monotonic() - t0
    used = [
        (
            round(100 * (t - before[pid][0]) / hz / wall, 2),
            round((woke - before[pid][1]) / wall, 1),
            cmd,
        )
        for pid, (t, woke, cmd) in after.items()
        if pid in before
    ]
    return sorted(used, reverse=True)[:top]


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
