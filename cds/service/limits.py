"""Bounded memory and time under concurrency, per worker process.

* `Deadline`: the time left of one hook call (``CDS_REQUEST_DEADLINE``, from its arrival). FHIR
  fetching, waiting for a slot and the engine all draw on it.
* `Slots`: at most ``size`` holders at once, at most ``max_queued`` waiting, each wait bounded
  (``CDS_QUEUE_TIMEOUT`` and the deadline); a refused or timed-out wait is `Overloaded` (503 with
  Retry-After), never unbounded growth. Two kinds per process: large request bodies
  (``CDS_MAX_CONCURRENT_LARGE_BODIES``: a large body is read, decoded and evaluated only while its
  slot is held, so at most that many large documents are in memory) and engine evaluations.
* `EngineRunner`: runs the (CPU-bound, synchronous) engine in a thread of a pool as large as its
  slots, with the time left of the deadline. A call whose deadline passes is answered
  `DeadlineExceeded` (503) at once - an error, never "not a candidate"; its slot is released only
  when the thread has finished, so abandoned evaluations cannot pile up.
* `release_memory_soon`: once a large body's answer is built, the memory it held (raw bytes, the
  decoded document, validated resources) is handed back to the operating system (a collection,
  then glibc's ``malloc_trim``), on the event loop's next turn, when the call's objects are gone.
  Without it a worker keeps the high-water mark of its largest request as idle RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cds.errors import DeadlineExceeded, Overloaded

log = logging.getLogger("cds.service")

T = TypeVar("T")


class Deadline:
    """Seconds left of a budget started at construction (monotonic clock)."""

    def __init__(self, seconds: float, *, retry_after: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.at = clock() + seconds
        self.retry_after = retry_after

    def remaining(self) -> float:
        return self.at - self._clock()

    def left(self, what: str) -> float:
        """The time left, or `DeadlineExceeded` if none is."""
        remaining = self.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"the request deadline ({self.seconds:g} s) passed before {what}", retry_after=self.retry_after
            )
        return remaining


class Slots:
    """A bounded number of holders with a bounded, time-limited queue (see the module docstring)."""

    def __init__(self, name: str, size: int, *, max_queued: int, queue_timeout: float, retry_after: int) -> None:
        self.name = name
        self.size = size
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        self.retry_after = retry_after
        self._semaphore = asyncio.Semaphore(size)
        self.waiting = 0
        self.held = 0

    def _overloaded(self, why: str) -> Overloaded:
        log.warning("overloaded", extra={"event": "overloaded", "slots": self.name, "reason": why})
        return Overloaded(f"the service is busy ({self.name}: {why}); try again later", retry_after=self.retry_after)

    async def acquire(self, deadline: Deadline | None = None) -> None:
        if not self._semaphore.locked():
            await self._semaphore.acquire()  # free: returns at once
            self.held += 1
            return
        if self.waiting >= self.max_queued:
            raise self._overloaded("queue full")
        timeout = self.queue_timeout if deadline is None else min(self.queue_timeout, deadline.remaining())
        self.waiting += 1
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._semaphore.acquire()
        except TimeoutError:
            raise self._overloaded("no slot in time") from None
        finally:
            self.waiting -= 1
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._semaphore.release()

    @contextlib.asynccontextmanager
    async def hold(self, deadline: Deadline | None = None) -> AsyncIterator[None]:
        await self.acquire(deadline)
        try:
            yield
        finally:
            self.release()


class EngineRunner:
    """The engine in a bounded thread pool, within the request's deadline (module docstring)."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self._executor = ThreadPoolExecutor(max_workers=slots.size, thread_name_prefix="cds-engine")

    async def run(self, function: Callable[[], T], deadline: Deadline) -> T:
        deadline.left("the evaluation")
        await self.slots.acquire(deadline)
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, function)
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(self._finished)
        try:
            async with asyncio.timeout(max(0.0, deadline.remaining())):
                return await asyncio.shield(future)
        except TimeoutError:
            log.warning("evaluation over the deadline", extra={"event": "deadline", "stage": "engine"})
            raise DeadlineExceeded(
                f"the evaluation did not finish within the request deadline ({deadline.seconds:g} s)",
                retry_after=deadline.retry_after,
            ) from None

    def _finished(self, future: asyncio.Future[Any]) -> None:
        self.slots.release()
        if not future.cancelled():
            future.exception()  # retrieved: an abandoned evaluation's error is not reported twice

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Collect garbage, then return the C heap's free pages to the operating system."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


def release_memory_soon() -> None:
    """`release_memory` on the event loop's next turn (the caller's frame, and with it the large
    objects it references, is gone by then)."""
    asyncio.get_running_loop().call_soon(release_memory)
