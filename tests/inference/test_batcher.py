"""The server's dynamic batcher, without HTTP: batch forming, the automatic wait, overload, errors, draining."""
import asyncio
import time

import pytest

from vptune.inference.batcher import AUTO_QUIET, AUTO_WAIT, Batcher, Overloaded


class Recorder:
    """A batch function that takes `seconds` per call and remembers each batch it saw."""

    def __init__(self, seconds: float = 0.0, fail_on=None):
        self.seconds, self.fail_on, self.batches = seconds, fail_on, []

    def __call__(self, items):
        self.batches.append(list(items))
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"bad item {self.fail_on}")
        return [item * 10 for item in items]


def run(coroutine):
    return asyncio.run(coroutine)


def test_items_sent_together_share_a_batch_and_get_their_own_results():
    async def main():
        recorder = Recorder()
        batcher = Batcher(recorder, max_batch=4, max_wait=0.2)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        await batcher.stop()
        return recorder, results

    recorder, results = run(main())
    assert [result for result, _ in results] == [0, 10, 20, 30, 40, 50]
    assert [len(b) for b in recorder.batches] == [4, 2]  # full at max_batch, the rest after the wait
    assert [size for _, size in results] == [4, 4, 4, 4, 2, 2]


def _second_item_joins(max_wait, run_seconds: float, gap: float) -> bool:
    """After one batch that ran `run_seconds`, is an item sent `gap` s after another in the same batch?"""
    async def main():
        recorder = Recorder(run_seconds)
        batcher = Batcher(recorder, max_batch=8, max_wait=max_wait)
        await batcher.start()
        await batcher.submit(-1)  # the batch whose time sets the automatic wait
        recorder.seconds, wait = 0.0, batcher.wait
        await batcher.submit(-2)  # a quicker batch does not shorten the wait
        assert batcher.wait == wait

        async def later():
            await asyncio.sleep(gap)
            return await batcher.submit(2)
        (_, first), (_, second) = await asyncio.gather(batcher.submit(1), later())
        await batcher.stop()
        return first == second == 2, wait

    return run(main())


def test_the_automatic_wait_is_a_fraction_of_the_longest_recent_batch():
    joined, wait = _second_item_joins(None, run_seconds=0.8, gap=0.01)
    assert joined
    assert AUTO_WAIT * 0.8 <= wait < AUTO_WAIT * 0.8 + 0.05
    joined, wait = _second_item_joins(0.0, run_seconds=0.8, gap=0.01)  # a fixed wait of 0: no batching
    assert not joined and wait == 0.0


def test_a_full_queue_raises_overloaded_and_the_rest_still_run():
    async def main():
        recorder = Recorder(0.2)
        batcher = Batcher(recorder, max_batch=1, max_wait=0.0, max_pending=2)
        await batcher.start()
        accepted = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await batcher.submit(9)
        results = await asyncio.gather(*accepted)
        await batcher.stop()
        return results

    assert [result for result, _ in run(main())] == [0, 10]


def test_a_slot_is_taken_before_the_work_and_counted_once():
    """The server takes a slot before reading and decoding an upload: while every slot is held (say by requests
    still decoding), the next request is refused at once, and a submit inside its slot does not count twice."""
    async def main():
        batcher = Batcher(Recorder(), max_batch=4, max_wait=0.0, max_pending=2)
        await batcher.start()
        with batcher.slot(), batcher.slot():
            assert batcher.pending == 2
            with pytest.raises(Overloaded):
                with batcher.slot():
                    pass
        with batcher.slot():
            result = await batcher.submit(7, in_slot=True)
            pending_inside = batcher.pending
        await batcher.stop()
        return result, pending_inside, batcher.pending

    assert run(main()) == ((70, 1), 1, 0)


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs():
    async def main():
        batcher = Batcher(Recorder(fail_on=3), max_batch=2, max_wait=0.2)
        await batcher.start()
        failed = await asyncio.gather(batcher.submit(3), batcher.submit(4), return_exceptions=True)
        after = await batcher.submit(5)
        await batcher.stop()
        return failed, after

    failed, after = run(main())
    assert all(isinstance(err, RuntimeError) and "bad item 3" in str(err) for err in failed)
    assert after == (50, 1)


def test_stop_finishes_every_queued_item():
    async def main():
        recorder = Recorder(0.05)
        batcher = Batcher(recorder, max_batch=2, max_wait=0.0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)  # all five queued
        await batcher.stop()
        return [task.result()[0] for task in tasks]

    assert run(main()) == [0, 10, 20, 30, 40]


def test_a_batch_that_will_not_fill_closes_after_a_quiet_spell():
    """Fewer clients than max_batch: the batch closes AUTO_QUIET x T after the last item, not AUTO_WAIT x T."""
    async def main():
        recorder = Recorder(1.0)
        batcher = Batcher(recorder, max_batch=8, max_wait=None)
        await batcher.start()
        await batcher.submit(-1)  # T = 1 s: wait up to 0.25 s, quiet 0.05 s
        recorder.seconds = 0.0
        started = time.monotonic()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(3)))
        elapsed = time.monotonic() - started
        await batcher.stop()
        return results, elapsed

    results, elapsed = run(main())
    assert [size for _, size in results] == [3, 3, 3]
    assert AUTO_QUIET * 1.0 <= elapsed < AUTO_WAIT * 1.0


def test_warm_up_runs_outside_the_queue_bound_and_sets_the_wait():
    async def main():
        recorder = Recorder(0.4)
        batcher = Batcher(recorder, max_batch=2, max_wait=None, max_pending=1)
        await batcher.start()
        await batcher.warm_up([1, 2, 3])  # more items than max_pending: still runs, in batches of max_batch
        wait = batcher.wait
        await batcher.stop()
        return recorder.batches, wait

    batches, wait = run(main())
    assert batches == [[1, 2], [3]]
    assert AUTO_WAIT * 0.4 <= wait < AUTO_WAIT * 0.4 + 0.05
