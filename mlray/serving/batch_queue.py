"""A batch queue that closes a batch as soon as nothing more can join it (pure asyncio).

Why not ``@serve.batch``: Ray Serve's ``_BatchQueue.wait_for_batch`` reads ``max_batch_size``
and ``batch_wait_timeout_s`` when a batch starts and ends the wait only on a full batch or the
timeout. Under moderate load a partial batch (4 requests, say, with a max of 16) then waits the
whole timeout for requests that are not coming. This queue knows which requests are still on
their way (they entered the replica and are being read or parsed: ``incoming()``), so a batch
closes on whichever comes first:

- it is full (``max_batch_size`` items);
- nothing is on its way (``incoming()`` count 0): every request that could join has joined;
- under load, nothing has been on its way for a short linger (below);
- ``batch_wait_timeout_s`` has passed since its first item was submitted.

The linger: requests still outside the replica (in a proxy, or in the HTTP server before the
handler runs) are invisible to ``incoming()``, so under concurrent load a batch closing on
"nothing on the way" often misses requests a millisecond out. When recent batches were large
(a running mean of at least ``LINGER_MIN_BATCH``, each batch counted at the size it had when
nothing was on its way, before any linger, so that the linger does not feed itself), a batch
with nothing on its way waits for stragglers up to ``LINGER_PREDICT_FRACTION`` of the recent
predict time (running mean of the handler's duration), and never more than
``LINGER_TIMEOUT_FRACTION`` of ``batch_wait_timeout_s``; it still closes at once when full.
Light traffic (recent batches of 1-2, or no predict measured yet) gets no linger, and
neither does a batch whose first request found the replica idle (nothing queued, no batch
being handled): a request that arrives with nothing else queued is handled at once, even
right after a burst.

One batch is handled at a time (a single worker task awaits the handler), so while the
predictor is busy the next requests gather and go together, up to the maximum, without a
further wait when nothing else is on its way. New settings apply from the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

FULL = "full"
NOTHING_ON_THE_WAY = "nothing_on_the_way"
LINGER = "linger"
TIMEOUT = "timeout"
CLOSE_REASONS = (FULL, NOTHING_ON_THE_WAY, LINGER, TIMEOUT)

LINGER_MIN_BATCH = 3.0  # running mean batch size from which the replica counts as under load
LINGER_PREDICT_FRACTION = 0.5  # the linger's bound, as a fraction of the recent predict time
LINGER_TIMEOUT_FRACTION = 0.25  # and as a fraction of batch_wait_timeout_s
RECENT_WEIGHT = 0.5  # weight of the newest batch in the running means


@dataclass
class _Entry:
    item: Any
    future: asyncio.Future[Any]
    submitted_at: float
    found_idle: bool  # nothing queued and no batch being handled when it was submitted


class BatchQueue(Generic[T, R]):
    """Gathers submitted items into batches for ``handler`` (one batch at a time).

    ``handler`` takes a list of items and returns one result per item, in order; each caller
    of ``submit`` gets its own result. An exception from ``handler`` is raised to every caller
    of that batch, and the queue goes on with the next one. A caller cancelled while waiting
    is dropped from its batch (or its result discarded), the others are unaffected.

    ``close_early=False`` turns off the close on "nothing on the way": a batch then waits for
    a full batch or the timeout, as Ray Serve's does; ``linger=False`` turns off the linger
    (both kept for the micro-bench).
    """

    def __init__(
        self,
        handler: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
        *,
        close_early: bool = True,
        linger: bool = True,
    ) -> None:
        self._handler = handler
        self._max_batch_size = 1
        self._timeout_s = 0.0
        self.configure(max_batch_size, batch_wait_timeout_s)
        self.close_early = close_early
        self.linger = linger
        self.recent_batch = 0.0  # running means of batch sizes and of the handler's seconds
        self.recent_predict_s = 0.0
        self._entries: deque[_Entry] = deque()
        self._incoming = 0
        # Made in the loop that first submits (the replica's __init__ may run elsewhere).
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._handling = False
        self.closed_by: Counter[str] = Counter({reason: 0 for reason in CLOSE_REASONS})
        self.at_once = 0  # batches of one, on an idle queue, closed without any wait

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def batch_wait_timeout_s(self) -> float:
        return self._timeout_s

    @property
    def incoming_count(self) -> int:
        return self._incoming

    def linger_s(self, batch_wait_timeout_s: float) -> float:
        """How long a batch with nothing on its way waits for stragglers; 0 unless under load."""
        if not self.linger or self.recent_batch < LINGER_MIN_BATCH:
            return 0.0
        return min(
            LINGER_PREDICT_FRACTION * self.recent_predict_s,
            LINGER_TIMEOUT_FRACTION * batch_wait_timeout_s,
        )

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """New settings, used from the next batch on (the one gathering keeps its own)."""
        size, wait = max_batch_size, batch_wait_timeout_s
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"got {size!r} for max_batch_size; expected an int >= 1")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise ValueError(f"got {wait!r} for batch_wait_timeout_s; expected a number >= 0")
        self._max_batch_size = max_batch_size
        self._timeout_s = float(batch_wait_timeout_s)

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request as on its way while it is read and parsed: batches wait for it.

        Leave the block and ``submit`` with no ``await`` in between, so that the worker never
        sees the count drop before the item is queued. A request that will not be submitted
        (bad input, not mergeable) just leaves the block; a batch waiting only for it closes.
        """
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            if self._wake is not None:
                self._wake.set()

    async def submit(self, item: T) -> R:
        """``handler``'s result for ``item``, once its batch has been handled."""
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="mlray-batch-queue")
        future: asyncio.Future[R] = loop.create_future()
        idle = not self._handling and not self._live()
        self._entries.append(_Entry(item, future, loop.time(), idle))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self._live():
                self._wake.clear()
                await self._wake.wait()
            gathered = await self._gather()
            if gathered is None:  # every caller of this batch was cancelled
                continue
            batch, waited = gathered
            if len(batch) == 1 and batch[0].found_idle and not waited:
                self.at_once += 1
            self._handling = True
            started = asyncio.get_running_loop().time()
            try:
                await self._handle(batch)
            finally:
                self._handling = False
                elapsed = asyncio.get_running_loop().time() - started
                self.recent_predict_s += RECENT_WEIGHT * (elapsed - self.recent_predict_s)

    def _live(self) -> int:
        """Entries whose caller still waits; cancelled ones are dropped here."""
        if any(entry.future.done() for entry in self._entries):
            self._entries = deque(e for e in self._entries if not e.future.done())
        return len(self._entries)

    async def _gather(self) -> tuple[list[_Entry], bool] | None:
        """The next batch, closed by the first rule that holds, and whether it waited."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        max_size, timeout_s = self._max_batch_size, self._timeout_s
        linger_s = self.linger_s(timeout_s)
        linger_until: float | None = None  # set when nothing is on the way for the first time
        unlingered = 0  # the batch's size then: what it would have been without the linger
        waited = False
        while True:
            live = self._live()
            if live == 0:
                return None
            now = loop.time()
            deadline = until = self._entries[0].submitted_at + timeout_s
            nothing_on_the_way = self.close_early and self._incoming == 0
            # A batch begun by a request that found the replica idle never lingers: only
            # requests that arrived while it was busy wait for stragglers.
            lingers = linger_s > 0 and not self._entries[0].found_idle
            reason = ""
            if live >= max_size:
                reason = FULL
            elif nothing_on_the_way and not lingers:
                reason = NOTHING_ON_THE_WAY
            elif now >= deadline:
                reason = TIMEOUT
            elif nothing_on_the_way:
                if linger_until is None:
                    linger_until, unlingered = now + linger_s, live
                until = min(linger_until, deadline)
                reason = LINGER if now >= linger_until else ""
            if not reason:
                waited = True
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), until - now)
                continue
            self.closed_by[reason] += 1
            batch = [self._entries.popleft() for _ in range(min(live, max_size))]
            size = unlingered or len(batch)  # the load as seen without the linger's own effect
            self.recent_batch += RECENT_WEIGHT * (size - self.recent_batch)
            return batch, waited

    async def _handle(self, batch: list[_Entry]) -> None:
        try:
            results = await self._handler([entry.item for entry in batch])
            if len(results) != len(batch):
                raise ValueError(
                    f"got {len(results)} results from the batch handler for a batch of "
                    f"{len(batch)}; expected one per item"
                )
        except Exception as ex:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(ex)
            return
        except BaseException:  # the worker is cancelled: no caller may wait forever
            for entry in batch:
                entry.future.cancel()
            raise
        for entry, result in zip(batch, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)


__all__ = ["CLOSE_REASONS", "FULL", "LINGER", "NOTHING_ON_THE_WAY", "TIMEOUT", "BatchQueue"]
