"""Dynamic batching for the server: requests that arrive close together share one forward pass.

A request puts its item on a queue and awaits a future. One worker coroutine takes the first waiting item, then
keeps taking until the batch is full (`max_batch`) or the wait is over (see below), and runs the
batch function in a single worker thread, so the event loop goes on accepting requests (and filling the next
batch) while the model computes. A queue bound (`max_pending`) turns overload into an immediate `Overloaded`
(HTTP 503) instead of an ever longer wait. `stop()` lets every queued item finish: a graceful shutdown loses no
accepted request.

By default the wait follows the model and the hardware instead of a constant. With T the longest of the last 16
batch run times (about 200 ms for a CPU forward pass, a few ms on a GPU), a batch that is not full closes T/4
after its first item, or sooner, once T/20 has passed without a new item: requests that come in a burst (clients
that all got their answers from the last batch) are all caught, and a batch that will not fill (fewer clients
than max_batch) does not sit out the whole wait. A batch closed too early leaves stragglers that pay a whole
forward pass for a few images (on a 2-core CPU a batch of 2 runs at about half the images/s of a batch of 16); a
5 ms constant did that on a CPU and would be long on a GPU. The longest, not the average: an average shrinks with
every small batch, which shortens the next wait and makes small batches likelier still.

Why not a library: `batched` (mixedbread's AsyncBatchProcessor) does the collecting, but it runs the batch
function on the event loop itself (a CPU-bound forward pass there stalls every connection), has no queue bound
to answer 503 from, and no drain on shutdown; benchmarks/serve_bench.py measures the two side by side.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence


AUTO_WAIT = 0.25  # automatic wait: at most this fraction of the longest recent batch run time ...
AUTO_QUIET = 0.05  # ... and no longer than this fraction of it without a new item
RECENT_BATCHES = 16


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
        max_wait: seconds to wait for more items after the first of a batch arrives; None: automatic, from the
            longest of the last RECENT_BATCHES run times (no wait until a batch has run).
        max_pending: most items waiting or running at once; `submit` raises Overloaded beyond it.
    """

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32,
                 max_wait: float | None = None, max_pending: int = 256) -> None:
        if max_batch < 1 or (max_wait is not None and max_wait < 0) or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1 and max_wait >= 0 (or None)")
        self.run_batch, self.max_batch, self.max_wait, self.max_pending = run_batch, max_batch, max_wait, max_pending
        self.stats = BatchStats()
        self._run_seconds: deque[float] = deque(maxlen=RECENT_BATCHES)  # for the automatic wait
        self._queue: asyncio.Queue | None = None
        self._pending = 0
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vptune-batch")

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def wait(self) -> float:
        """Most seconds the first item of the next batch will wait for others."""
        if self.max_wait is not None:
            return self.max_wait
        return AUTO_WAIT * max(self._run_seconds, default=0.0)

    @property
    def quiet(self) -> float:
        """Seconds without a new item after which a batch that is not full closes before `wait` is over."""
        if self.max_wait is not None:
            return self.max_wait  # a fixed wait is the whole rule
        return AUTO_QUIET * max(self._run_seconds, default=0.0)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """A place among the `max_pending`, taken before a request's own work (reading, decoding) starts, so a
        request that will be refused costs nothing: raises Overloaded when every place is taken."""
        if self._pending >= self.max_pending:
            raise Overloaded(f"{self._pending} requests are already waiting")
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1

    async def submit(self, item: Any, *, in_slot: bool = False) -> tuple[Any, int]:
        """The item's result and the size of the batch it ran in. `in_slot`: the caller holds a `slot()`."""
        if self._queue is None or self._worker is None or self._worker.done():
            raise RuntimeError("the batcher is not running")
        with contextlib.nullcontext() if in_slot else self.slot():
            future = asyncio.get_running_loop().create_future()
            await self._queue.put((item, future))
            return await future

    async def warm_up(self, items: list[Any]) -> None:
        """Run `items` (in batches of at most max_batch) before serving, outside the queue and its bound: the
        batch function's first-call costs are paid here, and the automatic wait starts from a real batch time."""
        for start in range(0, len(items), self.max_batch):
            await self._call(items[start:start + self.max_batch])

    async def stop(self) -> None:
        """Finish every queued item, then stop the worker."""
        if self._queue is not None and self._worker is not None:
            await self._queue.put(None)  # after everything already queued
            await self._worker
        self._thread.shutdown(wait=True)

    async def _work(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch, stopping = [first], False
            last = time.monotonic()
            deadline, quiet = last + self.wait, self.quiet
            while len(batch) < self.max_batch:
                timeout = min(deadline, last + quiet) - time.monotonic()
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), max(0.0, timeout))
                except asyncio.TimeoutError:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                last = time.monotonic()
            await self._run(batch)
            if stopping:
                return

    async def _call(self, items: list[Any]) -> Sequence[Any]:
        """The batch function on `items`, in the worker thread; a run that returns counts toward the wait."""
        started = time.monotonic()
        results = await asyncio.get_running_loop().run_in_executor(self._thread, self.run_batch, items)
        self._run_seconds.append(time.monotonic() - started)
        return results

    async def _run(self, batch: list) -> None:
        try:
            results = await self._call([item for item, _ in batch])
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
