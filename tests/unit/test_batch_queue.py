"""mlray's batch queue (mlray.serving.batch_queue) against a fake, thread-bound predictor.

Timing bounds are generous (the host is shared): "not delayed" means well under a 1 s batch
wait, never a tight latency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from mlray.serving import batch_queue
from mlray.serving.batch_queue import BatchQueue

LONG_WAIT_S = 3.0
QUICK_S = 1.5  # "not delayed by the 3 s wait", with room for a busy CI host


class FakePredictor:
    """Sync 'model' on a 1-thread executor: doubles each item, records batches and overlap."""

    def __init__(self, cost_s: float = 0.005, fail_on: Any = None, threads: int = 1) -> None:
        self.cost_s = cost_s
        self.fail_on = fail_on
        self.batches: list[list[Any]] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads)

    def predict(self, items: list[Any]) -> list[Any]:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            time.sleep(self.cost_s)
            self.batches.append(list(items))
            if self.fail_on is not None and self.fail_on in items:
                raise RuntimeError(f"got {self.fail_on!r} in the batch; expected numbers")
            return [item * 2 for item in items]
        finally:
            with self._lock:
                self.running -= 1

    async def handler(self, items: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.predict, items)

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout=20))


def _queue(fake: FakePredictor, size: int = 16, wait_s: float = LONG_WAIT_S, **kw: Any):
    return BatchQueue(fake.handler, max_batch_size=size, batch_wait_timeout_s=wait_s, **kw)


async def _request(queue: BatchQueue, item: Any, parse_s: float = 0.0) -> Any:
    """One request as the replica runs it: on its way while 'parsed', then submitted."""
    with queue.incoming():
        await asyncio.sleep(parse_s)
    return await queue.submit(item)


def test_a_lone_request_is_not_delayed_by_the_batch_wait():
    fake = FakePredictor()
    queue = _queue(fake)

    async def main():
        start = time.monotonic()
        result = await _request(queue, 21)
        return result, time.monotonic() - start

    result, elapsed = run(main)
    assert result == 42
    assert elapsed < QUICK_S, elapsed
    assert fake.sizes == [1]
    assert queue.closed_by[batch_queue.NOTHING_ON_THE_WAY] == 1
    assert queue.at_once == 1


def test_without_early_close_a_lone_request_waits_the_timeout():
    """The Ray-like mode the bench compares against: the test above can fail."""
    fake = FakePredictor()
    queue = _queue(fake, wait_s=0.2, close_early=False)

    async def main():
        start = time.monotonic()
        await _request(queue, 1)
        return time.monotonic() - start

    assert run(main) >= 0.19
    assert queue.closed_by[batch_queue.TIMEOUT] == 1 and queue.at_once == 0


def test_requests_submitted_together_share_one_batch():
    fake = FakePredictor()
    queue = _queue(fake)

    async def main():
        return await asyncio.gather(*(_request(queue, i) for i in range(5)))

    assert run(main) == [0, 2, 4, 6, 8]
    assert fake.batches == [[0, 1, 2, 3, 4]]


def test_a_batch_waits_for_requests_on_their_way_then_closes_early():
    fake = FakePredictor()
    queue = _queue(fake)

    async def main():
        start = time.monotonic()
        results = await asyncio.gather(
            _request(queue, 1), _request(queue, 2, parse_s=0.02), _request(queue, 3, 0.05)
        )
        return results, time.monotonic() - start

    results, elapsed = run(main)
    assert results == [2, 4, 6]
    assert fake.sizes == [3]  # the first waited for the two still being parsed
    assert elapsed < QUICK_S, elapsed  # and the batch did not wait out the 3 s
    assert queue.closed_by[batch_queue.NOTHING_ON_THE_WAY] == 1


def test_a_batch_closes_at_the_timeout_when_a_request_stays_on_its_way():
    fake = FakePredictor()
    queue = _queue(fake, wait_s=0.05)

    async def main():
        slow = asyncio.create_task(_request(queue, 2, parse_s=2.0))
        start = time.monotonic()
        first = await _request(queue, 1)
        elapsed = time.monotonic() - start
        return first, elapsed, await slow

    first, elapsed, second = run(main)
    assert (first, second) == (2, 4)
    assert 0.04 <= elapsed < QUICK_S, elapsed
    assert fake.sizes == [1, 1]
    assert queue.closed_by[batch_queue.TIMEOUT] == 1


def test_arrivals_during_a_busy_predict_go_together_without_a_further_wait():
    fake = FakePredictor(cost_s=0.15)
    queue = _queue(fake)

    async def main():
        start = time.monotonic()
        first = asyncio.create_task(_request(queue, 0))
        await asyncio.sleep(0.03)  # the first batch is predicting now
        later = []
        for i in (1, 2, 3):
            later.append(asyncio.create_task(_request(queue, i)))
            await asyncio.sleep(0.01)
        results = await asyncio.gather(first, *later)
        return results, time.monotonic() - start

    results, elapsed = run(main)
    assert results == [0, 2, 4, 6]
    assert fake.batches == [[0], [1, 2, 3]]
    assert elapsed < 0.3 + QUICK_S, elapsed  # two predicts, no 3 s batch wait


def test_max_batch_size_is_respected():
    fake = FakePredictor()
    queue = _queue(fake, size=4)

    async def main():
        return await asyncio.gather(*(_request(queue, i) for i in range(10)))

    assert run(main) == [i * 2 for i in range(10)]
    assert fake.sizes == [4, 4, 2]
    assert queue.closed_by[batch_queue.FULL] == 2


def test_predicts_never_overlap_and_every_caller_gets_its_own_result():
    # 4 threads: only the queue (one batch at a time) keeps predicts from overlapping here.
    fake = FakePredictor(cost_s=0.002, threads=4)
    queue = _queue(fake, size=8, wait_s=0.01)

    async def client(n: int) -> list[bool]:
        checks = []
        for k in range(6):
            item = n * 100 + k
            checks.append(await _request(queue, item, parse_s=0.001 * (k % 3)) == item * 2)
        return checks

    async def main():
        return await asyncio.gather(*(client(n) for n in range(20)))

    results = run(main)
    assert all(all(checks) for checks in results)
    assert fake.max_running == 1
    assert sum(fake.sizes) == 120 and max(fake.sizes) <= 8
    assert max(fake.sizes) > 1


def test_a_caller_cancelled_while_waiting_does_not_break_the_others():
    fake = FakePredictor()
    queue = _queue(fake)

    async def main():
        release = asyncio.Event()

        async def held_open():
            with queue.incoming():  # keeps the batch gathering
                await release.wait()
            return await queue.submit(3)

        holder = asyncio.create_task(held_open())
        cancelled = asyncio.create_task(queue.submit(1))
        kept = asyncio.create_task(queue.submit(2))
        await asyncio.sleep(0.02)
        cancelled.cancel()
        await asyncio.sleep(0.01)
        release.set()
        results = await asyncio.gather(kept, holder)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return results

    assert run(main) == [4, 6]
    assert fake.batches == [[2, 3]]


def test_a_caller_cancelled_during_its_predict_does_not_break_the_queue():
    fake = FakePredictor(cost_s=0.1)
    queue = _queue(fake)

    async def main():
        gone = asyncio.create_task(queue.submit(1))
        stays = asyncio.create_task(queue.submit(2))
        await asyncio.sleep(0.03)
        gone.cancel()
        first = await stays
        return first, await _request(queue, 5)

    assert run(main) == (4, 10)
    assert fake.batches == [[1, 2], [5]]


def test_a_handler_error_reaches_every_caller_of_the_batch_and_the_queue_goes_on():
    fake = FakePredictor(fail_on="bad")
    queue = _queue(fake)

    async def main():
        outcomes = await asyncio.gather(
            _request(queue, "bad"), _request(queue, 1), return_exceptions=True
        )
        return outcomes, await _request(queue, 7)

    outcomes, after = run(main)
    assert all(isinstance(o, RuntimeError) and "'bad'" in str(o) for o in outcomes), outcomes
    assert after == 14


def test_a_handler_answering_the_wrong_number_of_results_fails_its_callers_only():
    calls = []

    async def handler(items):
        calls.append(items)
        return items[:1] if len(calls) == 1 else items

    queue = BatchQueue(handler, max_batch_size=4, batch_wait_timeout_s=LONG_WAIT_S)

    async def main():
        first = await asyncio.gather(queue.submit(1), queue.submit(2), return_exceptions=True)
        return first, await queue.submit(3)

    first, after = run(main)
    assert all(isinstance(o, ValueError) and "got 1 results" in str(o) for o in first), first
    assert after == 3


def test_new_settings_apply_from_the_next_batch():
    fake = FakePredictor()
    queue = _queue(fake, size=2)

    async def main():
        await asyncio.gather(*(_request(queue, i) for i in range(4)))
        queue.configure(3, LONG_WAIT_S)
        await asyncio.gather(*(_request(queue, i) for i in range(4)))
        queue.configure(16, 0.05)
        queue.close_early = False  # so the new timeout is what closes the next batch
        start = time.monotonic()
        await _request(queue, 9)
        return time.monotonic() - start

    elapsed = run(main)
    assert fake.sizes == [2, 2, 3, 1, 1]
    assert 0.04 <= elapsed < QUICK_S, elapsed
    assert (queue.max_batch_size, queue.batch_wait_timeout_s) == (16, 0.05)


def test_a_batch_gathering_keeps_the_settings_it_started_with():
    fake = FakePredictor()
    queue = _queue(fake, size=2)

    async def main():
        release = asyncio.Event()

        async def held_open(item):
            with queue.incoming():
                await release.wait()
            return await queue.submit(item)

        first = asyncio.create_task(queue.submit(0))
        holders = [asyncio.create_task(held_open(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.02)  # the batch of 0 is gathering, with max 2
        queue.configure(8, LONG_WAIT_S)
        release.set()
        await asyncio.gather(first, *holders)

    run(main)
    assert fake.sizes == [2, 2]


@pytest.mark.parametrize(
    ("size", "wait", "message"),
    [
        (0, 0.01, "max_batch_size"),
        (True, 0.01, "max_batch_size"),
        (2.0, 0.01, "max_batch_size"),
        (4, -1, "batch_wait_timeout_s"),
        (4, "0.1", "batch_wait_timeout_s"),
    ],
)
def test_configure_refuses_bad_settings(size, wait, message):
    queue = BatchQueue(FakePredictor().handler)
    with pytest.raises(ValueError, match=message):
        queue.configure(size, wait)
    assert (queue.max_batch_size, queue.batch_wait_timeout_s) == (8, 0.01)


def test_a_request_that_leaves_without_submitting_releases_the_batch():
    fake = FakePredictor()
    queue = _queue(fake)

    async def main():
        async def bad_input():
            with queue.incoming():
                await asyncio.sleep(0.02)
                raise ValueError("got bad JSON for the body; expected an object")

        start = time.monotonic()
        outcomes = await asyncio.gather(queue.submit(1), bad_input(), return_exceptions=True)
        return outcomes, time.monotonic() - start

    outcomes, elapsed = run(main)
    assert outcomes[0] == 2 and isinstance(outcomes[1], ValueError)
    assert elapsed < QUICK_S, elapsed
    assert queue.incoming_count == 0


def _under_load(queue: BatchQueue, batch: float = 8.0, predict_s: float = 0.4) -> None:
    """As if recent batches averaged ``batch`` requests and ``predict_s`` seconds."""
    queue.recent_batch, queue.recent_predict_s = batch, predict_s


def _stragglers(linger: bool) -> tuple[list[int], dict[str, int]]:
    """Sustained load (two batches of 8, 1.2 s each), then a blocker that keeps the replica
    busy; a request arrives while it runs, and a straggler 0.25 s after it ends, as one still
    in the proxy that no ``incoming()`` announces: batch sizes and close counts."""
    fake = FakePredictor(cost_s=1.2)
    queue = _queue(fake, linger=linger)

    async def main():
        for _ in range(2):
            await asyncio.gather(*(_request(queue, i) for i in range(8)))
        blocker = asyncio.create_task(_request(queue, 99))  # found the replica idle
        await asyncio.sleep(0.2)
        busy = asyncio.create_task(_request(queue, 100))  # arrives while 99 is predicted
        await asyncio.sleep(1.25)
        await asyncio.gather(blocker, busy, _request(queue, 101))

    run(main)
    return fake.sizes, dict(queue.closed_by)


def test_under_load_a_batch_lingers_for_a_straggler_nothing_announced():
    # Linger min(0.5 x ~0.9 s, 0.25 x 3 s) ~ 0.45 s after the blocker ends at ~1.2 s: the
    # straggler at ~1.45 s joins request 100's batch.
    sizes, closed = _stragglers(linger=True)
    assert sizes == [8, 8, 1, 2]
    assert closed[batch_queue.LINGER] == 1


def test_without_the_linger_the_straggler_misses_the_batch():
    """The test above can fail: the batch closes on "nothing on the way" at once."""
    sizes, closed = _stragglers(linger=False)
    assert sizes == [8, 8, 1, 1, 1]
    assert closed[batch_queue.LINGER] == 0


def test_a_request_that_finds_the_replica_idle_never_lingers_even_right_after_a_burst():
    """The integration suite caught the first version: a lone request right after a burst
    lingered, since the load signal (recent batch sizes) was still high."""
    fake = FakePredictor(cost_s=0.2)
    queue = _queue(fake)

    async def main():
        await asyncio.gather(*(_request(queue, i) for i in range(16)))
        assert queue.linger_s(LONG_WAIT_S) > 0  # the load signal is still up
        start = time.monotonic()
        await _request(queue, 1)
        return time.monotonic() - start

    assert run(main) < QUICK_S
    assert queue.closed_by[batch_queue.LINGER] == 0 and queue.at_once == 1


def test_after_light_traffic_a_lone_request_is_predicted_at_once_whatever_the_predict_time():
    fake = FakePredictor()
    queue = _queue(fake)
    _under_load(queue, batch=1.5, predict_s=100.0)  # recent batches of 1-2: no load
    assert queue.linger_s(LONG_WAIT_S) == 0.0

    async def main():
        start = time.monotonic()
        await _request(queue, 1)
        return time.monotonic() - start

    assert run(main) < QUICK_S
    assert queue.at_once == 1 and queue.closed_by[batch_queue.NOTHING_ON_THE_WAY] == 1


def test_a_fresh_queue_never_lingers_and_load_that_ends_stops_the_linger():
    fake = FakePredictor(cost_s=0.05)
    queue = _queue(fake)
    assert queue.linger_s(LONG_WAIT_S) == 0.0  # no predict measured yet

    async def main():
        await asyncio.gather(*(_request(queue, i) for i in range(16)))
        lingered = queue.linger_s(LONG_WAIT_S)
        for i in range(4):  # the load is gone: lone requests, one after another
            await _request(queue, i)
        return lingered

    lingered = run(main)
    assert 0 < lingered <= batch_queue.LINGER_PREDICT_FRACTION * QUICK_S
    assert queue.linger_s(LONG_WAIT_S) == 0.0
    assert fake.sizes == [16, 1, 1, 1, 1]
    assert queue.at_once >= 2  # the last lone requests went at once again


def test_the_linger_is_bounded_by_a_fraction_of_the_predict_and_of_the_timeout():
    queue = _queue(FakePredictor())
    _under_load(queue, predict_s=0.4)
    assert queue.linger_s(3.0) == pytest.approx(batch_queue.LINGER_PREDICT_FRACTION * 0.4)
    _under_load(queue, predict_s=100.0)
    assert queue.linger_s(3.0) == pytest.approx(batch_queue.LINGER_TIMEOUT_FRACTION * 3.0)
    assert queue.linger_s(0.0) == 0.0
    queue.linger = False
    assert queue.linger_s(3.0) == 0.0


def test_a_request_that_came_while_busy_lingers_and_never_waits_the_timeout():
    fake = FakePredictor(cost_s=0.4)
    queue = _queue(fake)

    async def main():
        for _ in range(2):
            await asyncio.gather(*(_request(queue, i) for i in range(8)))
        blocker = asyncio.create_task(_request(queue, 99))
        await asyncio.sleep(0.1)
        start = time.monotonic()
        await _request(queue, 100)  # alone, arrived while 99 was predicted
        elapsed = time.monotonic() - start
        await blocker
        return elapsed

    elapsed = run(main)
    assert elapsed < LONG_WAIT_S - 0.5, elapsed
    assert queue.closed_by[batch_queue.LINGER] == 1 and queue.closed_by[batch_queue.TIMEOUT] == 0
    assert fake.sizes == [8, 8, 1, 1]


def test_a_lingering_batch_closes_at_once_when_full():
    # Batches of 8 at 1 s, then a blocker: a linger of ~0.44 s once it ends at ~1 s. Request 1
    # arrives while it runs; seven more at ~1.15 s fill the lingering batch.
    fake = FakePredictor(cost_s=1.0)
    queue = _queue(fake, size=8)

    async def main():
        for _ in range(2):
            await asyncio.gather(*(_request(queue, i) for i in range(8)))
        blocker = asyncio.create_task(_request(queue, 99))
        await asyncio.sleep(0.2)
        first = asyncio.create_task(_request(queue, 1))
        await asyncio.sleep(0.95)
        await asyncio.gather(blocker, first, *(_request(queue, i) for i in range(2, 9)))

    run(main)
    assert fake.batches[-1] == list(range(1, 9))
    assert queue.closed_by[batch_queue.LINGER] == 0 and queue.closed_by[batch_queue.FULL] == 3
