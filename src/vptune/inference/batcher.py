"""Dynamic batching for the server: requests that arrive close together share one forward pass.

A request puts its item on a queue and awaits a future. One worker coroutine takes the first waiting item, then
keeps taking until the batch is full (`max_batch`) or `max_wait` has passed since that first item, and runs the
batch function in a single worker thread, so the event loop goes on accepting requests (and filling the next
batch) while the model computes. A queue bound (`max_pending`) turns overload into an immediate `Overloaded`
(HTTP 503) instead of an ever longer wait. `stop()` lets every queued item finish: a graceful shutdown loses no
accepted request.

Why not a library: `batched` (mixedbread's AsyncBatchProcessor) does the collecting, but it runs the batch
function on the event loop itself (a CPU-bound forward pass there stalls every connection), has no queue bound
to answer 503 from, and no drain on shutdown; benchmarks/serve_bench.py measures the two side by side.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence


class Overloaded(Exception):
    """The queue is full: the caller should retry later."""


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0


class Batcher:
    """Collects items from concurrent callers into batches for `run_batch(items) -> results` (same order).

    Args:
        run_batch: called in a worker thread with a list of at most `max_batch` items.
        max_batch: most items in one call.
        max_wait: seconds to wait for more items after the first of a batch arrives.
        max_pending: most items waiting or running at once; `submit` raises Overloaded beyond it.
    """

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32,
                 max_wait: float = 0.005, max_pending: int = 256) -> None:
        if max_batch < 1 or max_wait < 0 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1 and max_wait >= 0")
        self.run_batch, self.max_batch, self.max_wait, self.max_pending = run_batch, max_batch, max_wait, max_pending
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._pending = 0
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vptune-batch")

    @property
    def pending(self) -> int:
        return self._pending

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())

    async def submit(self, item: Any) -> tuple[Any, int]:
        """The item's result and the size of the batch it ran in."""
        if self._queue is None or self._worker is None or self._worker.done():
            raise RuntimeError("the batcher is not running")
        if self._pending >= self.max_pending:
            raise Overloaded(f"{self._pending} requests are already waiting")
        self._pending += 1
        future = asyncio.get_running_loop().create_future()
        try:
            await self._queue.put((item, future))
            return await future
        finally:
            self._pending -= 1

    async def stop(self) -> None:
        """Finish every queued item, then stop the worker."""
        if self._queue is not None and self._worker is not None:
            await self._queue.put(None)  # after everything already queued
            await self._worker
        self._thread.shutdown(wait=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch, stopping = [first], False
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            await self._run(loop, batch)
            if stopping:
                return

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        items = [item for item, _ in batch]
        try:
            results = await loop.run_in_executor(self._thread, self.run_batch, items)
        except Exception as err:  # every caller of this batch gets the error (a bug: the server answers 500)
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result((result, len(batch)))
