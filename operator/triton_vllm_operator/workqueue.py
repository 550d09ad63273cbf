"""A work queue of model keys, as client-go's: a key waits at most once, is never processed by two
workers at once, and one added while it is processed runs again afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Deduplicating FIFO with per-key exponential backoff for retries."""

    def __init__(self, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay

    def add(self, key: K) -> None:
        """Ask for `key` to be reconciled (again)."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    async def get(self) -> K:
        """The next key; the caller must call done(key) when finished with it."""
        key = await self._queue.get()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def retry(self, key: K) -> float:
        """Add `key` again after its backoff; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = float(min(self._base_delay * 2**failures, self._max_delay))
        asyncio.get_running_loop().call_later(delay, self.add, key)
        return delay

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._dirty)
