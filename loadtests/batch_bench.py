"""Micro-bench of the batch queue, in process: no Ray, no server, no containers.

    python -m loadtests.batch_bench                  # c = 1, 8, 32; 3 s per run
    python -m loadtests.batch_bench --levels 8 --seconds 5 --wait-ms 20

A model of one replica, not a claim about the real server. Closed-loop clients (no think
time) each send one request after another; a request spends ``--network-ms`` outside the
replica (half each way, each half drawn uniformly within +-``--jitter`` of itself so that
clients do not move in lockstep; the replica cannot see it), then passes a proxy that handles
one request at a time for ``--proxy-ms`` each (a sleep on one "proxy" thread: HAProxy and
Serve's HTTP proxy, which spread a burst of requests out and which the replica cannot see
either), is "read and parsed" on the event loop (``--parse-ms`` of busy CPU, holding the loop
as the GIL-bound parse does), then predicted on one predict thread whose cost is
``--base-ms`` + ``--row-ms`` per row (a sleep in the thread; with ``--cpu-bound``, busy CPU
holding the GIL instead, so that a predict competes with the loop as pandas and most small
models do and fewer, larger batches free CPU). Modes:

- ``unbatched``: every request predicted on its own;
- ``ray``: a batch closes only when full or at the timeout (Ray Serve's ``wait_for_batch``);
- ``ray+bypass``: that, but a request with nothing pending is predicted at once (mlray before
  its own queue);
- ``mlray-nolinger``: ``mlray.serving.batch_queue`` without its linger: it also closes a batch
  as soon as nothing more is on its way;
- ``mlray``: ``mlray.serving.batch_queue``, which under load lingers a little for stragglers
  before closing on "nothing on the way".

Prints rps, p50 and p99 latency, the mean batch size and how batches closed (full / nothing
more on its way / after a linger / timeout) per mode and concurrency; with ``--repeat N``
every run is done N times, modes interleaved, and each figure is the median (the close counts
are those of the middle run). Figures move with the host's load: compare modes within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

from mlray.serving.batch_queue import CLOSE_REASONS, BatchQueue

MODES = ("unbatched", "ray", "ray+bypass", "mlray-nolinger", "mlray")
WARMUP_S = 0.5


@dataclass
class Settings:
    seconds: float = 3.0
    max_batch_size: int = 16
    wait_s: float = 0.02
    base_s: float = 0.001
    row_s: float = 0.00005
    rows: int = 1
    parse_s: float = 0.0002
    network_s: float = 0.001
    jitter: float = 0.5
    proxy_s: float = 0.0002
    cpu_bound: bool = False


@dataclass
class Result:
    mode: str
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    closed: str  # batches closed full / nothing on the way / linger / timeout, after warm-up


@dataclass
class _Replica:
    mode: str
    settings: Settings
    pool: concurrent.futures.ThreadPoolExecutor
    sizes: list[int] = field(default_factory=list)
    pending: int = 0
    queue: BatchQueue[int, int] | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.queue = BatchQueue(
            self._predict_batch,
            s.max_batch_size,
            s.wait_s,
            close_early=self.mode.startswith("mlray"),
            linger=self.mode == "mlray",
        )

    def _predict(self, n_requests: int) -> None:
        cost = self.settings.base_s + self.settings.row_s * self.settings.rows * n_requests
        (_spin if self.settings.cpu_bound else time.sleep)(cost)

    async def _on_thread(self, n_requests: int) -> None:
        self.sizes.append(n_requests)
        await asyncio.get_running_loop().run_in_executor(self.pool, self._predict, n_requests)

    async def _predict_batch(self, items: list[int]) -> list[int]:
        await self._on_thread(len(items))
        return items

    async def handle(self, item: int) -> int:
        assert self.queue is not None
        with self.queue.incoming():
            await asyncio.sleep(0)  # the body arrives
            _spin(self.settings.parse_s)
        if self.mode == "unbatched":
            await self._on_thread(1)
            return item
        if self.mode == "ray+bypass":
            others = self.pending
            self.pending += 1
            try:
                if others == 0:
                    await self._on_thread(1)
                    return item
                return await self.queue.submit(item)
            finally:
                self.pending -= 1
        return await self.queue.submit(item)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _run(mode: str, clients: int, s: Settings) -> Result:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
    proxy = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy")
    loop = asyncio.get_running_loop()
    replica = _Replica(mode, s, pool)
    start = time.perf_counter()
    measure_from, stop_at = start + WARMUP_S, start + WARMUP_S + s.seconds
    latencies: list[float] = []
    rng = random.Random(f"{mode}/{clients}")

    def outside() -> float:
        return s.network_s / 2 * (1 + s.jitter * (2 * rng.random() - 1))

    sizes_before: list[int] = []
    closed_before: list[dict[str, int]] = []

    async def client(n: int) -> None:
        k = 0
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            await asyncio.sleep(outside())
            if s.proxy_s:
                await loop.run_in_executor(proxy, time.sleep, s.proxy_s)
            await replica.handle(n * 1_000_000 + k)
            await asyncio.sleep(outside())
            done = time.perf_counter()
            if measure_from <= sent and done <= stop_at:
                latencies.append(done - sent)
            k += 1

    async def mark_warmup_end() -> None:
        await asyncio.sleep(WARMUP_S)
        sizes_before.append(len(replica.sizes))
        assert replica.queue is not None
        closed_before.append(dict(replica.queue.closed_by))

    await asyncio.gather(mark_warmup_end(), *(client(n) for n in range(clients)))
    pool.shutdown(wait=True)
    proxy.shutdown(wait=True)
    sizes = replica.sizes[sizes_before[0] :] if sizes_before else replica.sizes
    ordered = sorted(latencies)
    assert replica.queue is not None
    before = closed_before[0] if closed_before else {}
    closed = [replica.queue.closed_by[k] - before.get(k, 0) for k in CLOSE_REASONS]
    return Result(
        mode=mode,
        clients=clients,
        rps=len(latencies) / s.seconds,
        p50_ms=1e3 * statistics.median(ordered) if ordered else float("nan"),
        p99_ms=1e3 * ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan"),
        mean_batch=statistics.fmean(sizes) if sizes else float("nan"),
        closed="/".join(map(str, closed)) if mode != "unbatched" else "-",
    )


def run(modes: list[str], levels: list[int], settings: Settings, repeat: int = 1) -> list[Result]:
    results = []
    for clients in levels:
        rounds = [[asyncio.run(_run(mode, clients, settings)) for mode in modes]
                  for _ in range(repeat)]  # fmt: skip
        for i in range(len(modes)):
            result = _median([r[i] for r in rounds])
            print(_row(result), flush=True)
            results.append(result)
    return results


def _median(results: list[Result]) -> Result:
    if len(results) == 1:
        return results[0]
    return Result(
        mode=results[0].mode,
        clients=results[0].clients,
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        mean_batch=statistics.median(r.mean_batch for r in results),
        closed=results[len(results) // 2].closed,
    )


def _row(r: Result) -> str:
    return (
        f"| {r.mode} | {r.clients} | {r.rps:.0f} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms "
        f"| {r.mean_batch:.1f} | {r.closed} |"
    )


def _csv(cast: type, text: str, what: str) -> list:
    try:
        values = [cast(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise SystemExit(f"got {text!r} for {what}; expected a comma-separated list")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.batch_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--levels", default="1,8,32", help="client counts (default 1,8,32)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; medians shown")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--wait-ms", type=float, default=20.0, help="batch_wait_timeout_s, ms")
    parser.add_argument("--base-ms", type=float, default=1.0, help="predict cost per call")
    parser.add_argument("--row-ms", type=float, default=0.05, help="predict cost per row")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--parse-ms", type=float, default=0.2, help="loop time per request")
    parser.add_argument("--network-ms", type=float, default=1.0, help="round trip outside")
    parser.add_argument("--jitter", type=float, default=0.5, help="of each network half, 0..1")
    parser.add_argument("--proxy-ms", type=float, default=0.2, help="proxy time per request")
    parser.add_argument(
        "--cpu-bound", action="store_true", help="predict spins holding the GIL, not sleeps"
    )
    args = parser.parse_args(argv)
    modes = _csv(str, args.modes, "--modes")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"got {unknown} for --modes; expected some of {list(MODES)}")
    settings = Settings(
        seconds=args.seconds,
        max_batch_size=args.max_batch_size,
        wait_s=args.wait_ms / 1e3,
        base_s=args.base_ms / 1e3,
        row_s=args.row_ms / 1e3,
        rows=args.rows,
        parse_s=args.parse_ms / 1e3,
        network_s=args.network_ms / 1e3,
        jitter=args.jitter,
        proxy_s=args.proxy_ms / 1e3,
        cpu_bound=args.cpu_bound,
    )
    if args.repeat < 1:
        raise SystemExit(f"got {args.repeat} for --repeat; expected an integer >= 1")
    if args.proxy_ms < 0:
        raise SystemExit(f"got {args.proxy_ms} for --proxy-ms; expected a number >= 0")
    if not 0 <= args.jitter <= 1:
        raise SystemExit(f"got {args.jitter} for --jitter; expected a number from 0 to 1")
    print(
        f"# model: predict {args.base_ms} ms + {args.row_ms} ms/row x {args.rows} row(s), "
        f"parse {args.parse_ms} ms on the loop, {args.network_ms} ms outside "
        f"(+-{args.jitter:.0%}), proxy {args.proxy_ms} ms one at a time; max_batch_size "
        f"{args.max_batch_size}, wait {args.wait_ms} ms; {args.seconds} s per run"
    )
    print("| mode | clients | rps | p50 | p99 | mean batch | closed full/early/linger/timeout |")
    print("|---|---:|---:|---:|---:|---:|---|")
    run(modes, _csv(int, args.levels, "--levels"), settings, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
