"""A work queue of model keys, as client-go's: a key waits at most once, is never processed by two
workers at once, and one added while it is processed runs again afterwards.

Keys never reconciled yet go first: at scale, a new model's first pass (which creates its
children) should not wait behind re-checks of models that already have theirs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from . import metrics

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Deduplicating FIFO, new keys first, with per-key exponential backoff for retries."""

    def __init__(
        self, base_delay: float = 0.5, max_delay: float = 60.0, name: str = metrics.CONTROLLER
    ) -> None:
        self._new: deque[K] = deque()
        self._known: deque[K] = deque()
        self._ready = asyncio.Event()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._done_once: set[K] = set()
        self._failures: dict[K, int] = {}
        self._later: dict[K, asyncio.TimerHandle] = {}
        self._soon: dict[K, asyncio.TimerHandle] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay
        # For the metrics: when each waiting key was added, when each key in work was taken.
        self._added_at: dict[K, float] = {}
        self._taken_at: dict[K, float] = {}
        self._depth = metrics.WORKQUEUE_DEPTH.labels(name)
        self._adds = metrics.WORKQUEUE_ADDS.labels(name)
        self._retries = metrics.WORKQUEUE_RETRIES.labels(name)
        self._waited = metrics.WORKQUEUE_QUEUE_DURATION.labels(name)
        self._worked = metrics.WORKQUEUE_WORK_DURATION.labels(name)

    def _push(self, key: K) -> None:
        (self._known if key in self._done_once else self._new).append(key)
        self._ready.set()

    def add(self, key: K) -> None:
        """Ask for `key` to be reconciled (again)."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._added_at.setdefault(key, time.monotonic())
        self._adds.inc()
        self._depth.set(len(self._dirty))
        if key not in self._processing:
            self._push(key)

    async def get(self) -> K:
        """The next key; the caller must call done(key) when finished with it."""
        while not (self._new or self._known):
            self._ready.clear()
            await self._ready.wait()
        key = self._new.popleft() if self._new else self._known.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        now = time.monotonic()
        self._waited.observe(now - self._added_at.pop(key, now))
        self._taken_at[key] = now
        self._depth.set(len(self._dirty))
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        self._done_once.add(key)
        taken = self._taken_at.pop(key, None)
        if taken is not None:
            self._worked.observe(time.monotonic() - taken)
        if key in self._dirty:
            self._push(key)

    def drop(self, key: K) -> None:
        """`key` is gone (its model was deleted): forget what was known of it."""
        self._done_once.discard(key)
        self._failures.pop(key, None)
        self._added_at.pop(key, None)
        for timers in (self._later, self._soon):
            timer = timers.pop(key, None)
            if timer:
                timer.cancel()

    def retry(self, key: K) -> float:
        """Add `key` again after its backoff; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self._retries.inc()
        delay = float(min(self._base_delay * 2**failures, self._max_delay))
        asyncio.get_running_loop().call_later(delay, self.add, key)
        return delay

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` again after `delay`; one such timer per key, however often it is asked."""
        if key in self._later:
            return

        def due() -> None:
            self._later.pop(key, None)
            self.add(key)

        self._later[key] = asyncio.get_running_loop().call_later(delay, due)

    def add_coalesced(self, key: K, delay: float) -> None:
        """An event about `key`: a key never reconciled goes at once; a known one after `delay`,
        so that the burst of events one change causes (its children's status, its pods) is one
        pass, not one each."""
        if key not in self._done_once or key in self._dirty:
            self.add(key)
            return
        if key in self._soon:
            return

        def due() -> None:
            self._soon.pop(key, None)
            self.add(key)

        self._soon[key] = asyncio.get_running_loop().call_later(delay, due)

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._dirty)
