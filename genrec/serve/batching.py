"""Dynamic micro-batching: concurrent requests wait in a queue and are answered together.

A batch closes when it holds ``max_batch`` requests or ``max_wait`` seconds after its first
request arrived, whichever comes first; it is answered by one call of ``handle(batch)`` on a single
worker thread, so the event loop keeps accepting requests meanwhile (the next batch gathers while
one decodes). With batching off every request is its own batch, on the same worker thread (one
recommender call per request, one at a time: the baseline the load benchmark compares against).

Only asyncio and the standard library: no web framework here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Q = TypeVar("Q")
R = TypeVar("R")


class MicroBatcher(Generic[Q, R]):
    """``await batcher.submit(q)`` returns ``handle([... q ...])``'s answer for q.

    ``handle`` gets a list of requests and returns one answer per request, in order; an exception
    it raises is the answer of every request of that batch. Start with :meth:`start` inside the
    running event loop, stop with :meth:`stop`. ``stats`` counts batches and requests.
    """

    def __init__(
        self,
        handle: Callable[[Sequence[Q]], Sequence[R]],
        *,
        max_batch: int = 64,
        max_wait: float = 0.002,
        enabled: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait}")
        self.handle = handle
        self.max_batch = int(max_batch) if enabled else 1
        self.max_wait = float(max_wait) if enabled else 0.0
        self.enabled = enabled
        self.stats = {"batches": 0, "requests": 0, "largest_batch": 0}
        self._waiting: collections.deque = collections.deque()  # (arrival, query, future)
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrec-serve")

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._worker.shutdown(wait=True)

    async def submit(self, query: Q) -> R:
        if self._arrived is None:
            raise RuntimeError("the batcher is not started")
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((time.monotonic(), query, done))
        self._arrived.set()
        return await done

    async def _next(self, timeout: float | None):
        """The oldest waiting request, or None when none came within ``timeout`` seconds. (The
        requests wait in a deque, not an asyncio.Queue: a timed-out wait never loses one.)"""
        while not self._waiting:
            self._arrived.clear()
            if timeout is None:
                await self._arrived.wait()
                continue
            if timeout <= 0:
                return None
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return None
        return self._waiting.popleft()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            batch = [first]
            deadline = first[0] + self.max_wait  # measured from the first request's arrival
            while len(batch) < self.max_batch:
                item = await self._next(deadline - time.monotonic())
                if item is None:
                    break
                batch.append(item)
            live = [(q, f) for _, q, f in batch if not f.cancelled()]  # a client that left
            if not live:
                continue
            self.stats["batches"] += 1
            self.stats["requests"] += len(live)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
            try:
                answers = await loop.run_in_executor(self._worker, self.handle, [q for q, _ in live])
                if len(answers) != len(live):
                    raise RuntimeError(f"{len(answers)} answers for a batch of {len(live)} requests")
            except Exception as e:  # every request of the batch gets the error
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), a in zip(live, answers, strict=True):
                if not f.done():
                    f.set_result(a)
