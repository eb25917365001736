"""Micro-batching of model calls for the HTTP server.

Requests wait in a bounded queue; one worker thread takes up to `max_batch` of them (waiting at most
`max_wait_s` for a batch to fill) and runs the model once for all. A full queue refuses new work at once
(`Busy`), so memory stays bounded however many clients call. Workers of several batchers can share one lock,
so that only one model call runs at a time and they do not fight over the CPU cores.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from polyvox.sysmem import trim_heap

log = logging.getLogger(__name__)


class Busy(RuntimeError):
    """The queue is full, or an answer did not come in time."""


class Batcher:
    """Run `fn(inputs) -> outputs` (one output per input, same order) in batches on a worker thread."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], name: str, max_batch: int = 16,
                 max_wait_s: float = 0.005, max_queue: int = 64, lock: threading.Lock | None = None):
        self.fn, self.name, self.max_batch, self.max_wait_s = fn, name, max_batch, max_wait_s
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.lock = lock or threading.Lock()
        self.batches = 0  # batches run so far (for /health)
        self.items = 0
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    async def submit(self, x: Any, timeout_s: float) -> Any:
        """The output for `x`; raises Busy when the queue is full or no answer comes within `timeout_s`."""
        fut: Future = Future()
        try:
            self.queue.put_nowait((x, fut))
        except queue.Full:
            raise Busy(f"the server is busy ({self.queue.maxsize} {self.name} requests waiting); retry later") from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout_s)
        except asyncio.TimeoutError:
            fut.cancel()  # a request still queued is dropped by the worker
            raise Busy(f"no answer within {timeout_s:g} s; the server is overloaded, retry later") from None

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)

    def _next_batch(self) -> list[tuple[Any, Future]] | None:
        first = self.queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:  # closing: finish this batch first
                self.queue.put(None)
                break
            batch.append(item)
        return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]  # skip timed-out requests
            if not live:
                continue
            with self.lock:
                self._run(live)
                trim_heap()

    def _run(self, batch: list[tuple[Any, Future]]) -> None:
        try:
            outs = self.fn([x for x, _ in batch])
        except Exception as e:
            if len(batch) > 1:  # find the request at fault: the others still get their answers
                log.warning("%s batch of %d failed (%s); running its requests one by one", self.name, len(batch), e)
                for one in batch:
                    self._run([one])
                return
            log.exception("%s request failed", self.name)
            batch[0][1].set_exception(e)
            return
        self.batches += 1
        self.items += len(batch)
        for (_, fut), out in zip(batch, outs, strict=True):
            fut.set_result(out)
