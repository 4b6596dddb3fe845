"""Dynamic batching: rows that arrive within ``window_s`` of the oldest waiting row, up to
``max_batch`` of them, run as one mixed batch; so do generations (prompts), in batches of their
own that share a head and sampling settings.

The model lives on one worker thread: batches, and the loads and unloads of adapters (``call``),
run there one after another, so a load never changes the model under a running batch, and the
event loop keeps accepting requests while the model works. Rows queue while a batch runs; when
it ends, rows that have already waited a whole window go at once, the older kind first.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .engine import Engine, Row
from .generation import Generation
from .metrics import Metrics


@dataclass(eq=False)
class _Waiting:
    row: Row | Generation
    future: asyncio.Future
    arrived: float


class Batcher:
    def __init__(self, engine: Engine, max_batch: int = 32, window_s: float = 0.005, metrics: Metrics | None = None):
        self.engine = engine
        self.max_batch = max_batch
        self.window_s = window_s
        self.metrics = metrics or Metrics()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._generations: collections.deque[_Waiting] = collections.deque()
        self._arrived = asyncio.Event()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="adapterctl-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="adapterctl-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._worker.shutdown(wait=True, cancel_futures=True)

    def submit(self, rows: list[Row]) -> list[asyncio.Future]:
        """Queue rows; each future gets the row's prediction or its error. Cancelling a future
        (its client left) drops the row if its batch has not started."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = [loop.create_future() for _ in rows]
        self._waiting.extend(_Waiting(row, future, now) for row, future in zip(rows, futures))
        self._arrived.set()
        return futures

    def submit_generation(self, job: Generation) -> asyncio.Future:
        """Queue a generation; its future ends when it has (its text goes through ``job.emit``).
        Cancelling the future drops the job if its batch has not started; ``job.cancelled``
        stops it in a running batch."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._generations.append(_Waiting(job, future, loop.time()))
        self._arrived.set()
        return future

    async def call(self, fn, *args):
        """Run ``fn(*args)`` on the model's thread, in turn with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if not self._waiting and not self._generations:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            deadline = min(q[0].arrived for q in (self._waiting, self._generations) if q) + self.window_s
            while (max(len(self._waiting), len(self._generations)) < self.max_batch
                   and (left := deadline - loop.time()) > 0):
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            self._drop_cancelled()
            if self._waiting and (not self._generations or self._waiting[0].arrived <= self._generations[0].arrived):
                batch = [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]
                await self._run(batch, loop.time())
            elif self._generations:
                await self._run_generations(self._take_generations())

    def _drop_cancelled(self) -> None:
        for name in ("_waiting", "_generations"):
            queue = getattr(self, name)
            kept = [w for w in queue if not w.future.cancelled()]
            if len(kept) != len(queue):
                self.metrics.cancelled.inc(len(queue) - len(kept))
                setattr(self, name, collections.deque(kept))

    def _take_generations(self) -> list[_Waiting]:
        """The oldest generation and those waiting that share its key, up to ``max_batch``."""
        key = self._generations[0].row.key
        batch = [w for w in self._generations if w.row.key == key][:self.max_batch]
        self._generations = collections.deque(w for w in self._generations if w not in batch)
        return batch

    async def _run_generations(self, batch: list[_Waiting]) -> None:
        m = self.metrics
        m.batch_rows.observe(len(batch))
        m.batch_adapters.observe(len({w.row.adapter for w in batch}))
        start = time.perf_counter()
        try:
            await self.call(self.engine.generate, [w.row for w in batch])
        except Exception as error:  # noqa: BLE001 - a failed batch fails its generations, not the server
            for w in batch:
                if w.row.finish is None:
                    w.row.fail(error)
        m.batch_seconds.observe(time.perf_counter() - start)
        m.generated_tokens.inc(sum(len(w.row.tokens) for w in batch))
        for w in batch:
            if not w.future.done():
                w.future.set_result(None)

    async def _run(self, batch: list[_Waiting], now: float) -> None:
        m = self.metrics
        for w in batch:
            m.queue_seconds.observe(now - w.arrived)
        m.batch_rows.observe(len(batch))
        m.batch_adapters.observe(len({w.row.adapter for w in batch}))
        start = time.perf_counter()
        try:
            results = await self.call(self.engine.predict, [w.row for w in batch])
        except Exception as error:  # noqa: BLE001 - a failed batch fails its rows, not the server
            results = [error] * len(batch)
        m.batch_seconds.observe(time.perf_counter() - start)
        for w, result in zip(batch, results):
            if w.future.done():  # its client left while the batch ran
                continue
            if isinstance(result, BaseException):
                w.future.set_exception(result)
            else:
                w.future.set_result(result)
