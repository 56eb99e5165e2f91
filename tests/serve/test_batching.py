"""genrec.serve.batching.MicroBatcher with a stand-in handler: batches close at max_batch or
max_wait after their first request, answers go back to their own requests, an error reaches every
request of its batch only, batching off means one request per call, and the event loop keeps
running while a batch is handled."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from genrec.serve.batching import MicroBatcher


class Recorder:
    """A handler that answers q -> q * 10 and records each batch (and its thread)."""

    def __init__(self, delay: float = 0.0, fail_on=None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay, self.fail_on = delay, fail_on

    def __call__(self, batch):
        self.batches.append(list(batch))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in batch:
            raise ValueError(f"bad request {self.fail_on}")
        return [q * 10 for q in batch]


async def _run(batcher: MicroBatcher, queries, gap: float = 0.0):
    await batcher.start()
    try:
        tasks = []
        for q in queries:
            tasks.append(asyncio.create_task(batcher.submit(q)))
            if gap:
                await asyncio.sleep(gap)
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await batcher.stop()


def test_answers_go_to_their_requests_in_batches_of_at_most_max_batch():
    handler = Recorder()
    got = asyncio.run(_run(MicroBatcher(handler, max_batch=8, max_wait=0.05), list(range(30))))
    assert got == [q * 10 for q in range(30)]
    assert [len(b) for b in handler.batches] == [8, 8, 8, 6]
    assert sorted(q for b in handler.batches for q in b) == list(range(30))
    assert handler.threads and threading.main_thread().name not in handler.threads


def test_a_batch_closes_max_wait_after_its_first_request():
    handler = Recorder()
    # Requests 150 ms apart with a 10 ms wait: each batch closes before the next request arrives.
    got = asyncio.run(_run(MicroBatcher(handler, max_batch=64, max_wait=0.01), [1, 2, 3], gap=0.15))
    assert got == [10, 20, 30] and handler.batches == [[1], [2], [3]]


def test_batching_off_answers_one_request_per_call():
    handler = Recorder()
    batcher = MicroBatcher(handler, max_batch=64, max_wait=1.0, enabled=False)
    assert asyncio.run(_run(batcher, list(range(5)))) == [0, 10, 20, 30, 40]
    assert handler.batches == [[q] for q in range(5)]
    assert batcher.stats == {"batches": 5, "requests": 5, "largest_batch": 1}


def test_an_error_reaches_the_requests_of_its_batch_only():
    handler = Recorder(fail_on=3)
    got = asyncio.run(_run(MicroBatcher(handler, max_batch=4, max_wait=0.05), list(range(8))))
    assert all(isinstance(g, ValueError) for g in got[:4]) and got[4:] == [40, 50, 60, 70]


def test_the_event_loop_runs_while_a_batch_is_handled():
    async def main():
        batcher = MicroBatcher(Recorder(delay=0.5), max_batch=4, max_wait=0.0)
        await batcher.start()
        try:
            pending = asyncio.create_task(batcher.submit(1))
            await asyncio.sleep(0.05)  # the batch is being handled now
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            ticked = time.perf_counter() - t
            assert not pending.done()
            assert await pending == 10
            return ticked
        finally:
            await batcher.stop()

    assert asyncio.run(main()) < 0.2


@pytest.mark.parametrize("options", [{"max_batch": 0}, {"max_wait": -1.0}])
def test_bad_settings_are_refused(options):
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), **options)
