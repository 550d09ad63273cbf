"""An asyncio event loop on its own thread, where the vLLM engine and every request live.

Triton calls ``execute`` on the stub's main thread; requests are handed to this loop with
``submit`` so the engine keeps batching while responses are sent. Nothing here knows Triton or
vLLM: the engine is built by a coroutine factory run on the loop. The loop is uvloop's where it is
installed (as in the serving environment: ``vllm serve`` runs on it too), else asyncio's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class EngineLoop(Generic[T]):
    """Own a thread running an event loop, and the object (the engine) built on it."""

    def __init__(self, name: str = "tritonvllm-engine") -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._engine: T | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def engine(self) -> T:
        if self._engine is None:
            raise RuntimeError("the engine is not started")
        return self._engine

    def start(self, build: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Start the thread and build the engine on it; raise what building raised."""
        self._thread.start()
        self._engine = self.call(_awaited(build), timeout)
        return self._engine

    def submit(self, coro: Coroutine[Any, Any, R]) -> concurrent.futures.Future[R]:
        """Schedule a coroutine on the loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run a coroutine on the loop and wait for its result."""
        return self.submit(coro).result(timeout)

    def stop(self, shutdown: Callable[[T], Awaitable[None]] | None, timeout: float = 30.0) -> None:
        """Cancel what still runs, shut the engine down, stop the loop and join the thread."""
        if not self._thread.is_alive():
            return
        try:
            self.call(self._drain(shutdown), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._engine = None

    async def _drain(self, shutdown: Callable[[T], Awaitable[None]] | None) -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if shutdown is not None and self._engine is not None:
            await shutdown(self._engine)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop if uvloop is installed, else asyncio's default one."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _awaited(build: Callable[[], Awaitable[T]]) -> T:
    return await build()
