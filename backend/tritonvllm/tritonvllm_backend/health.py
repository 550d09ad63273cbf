"""Whether the vLLM engine is alive: its ``errored`` flag, and with ENABLE_VLLM_HEALTH_CHECK its
``check_health()``, asked off the request path (the official backend asks before each batch).

The flag is read on every request, so it must exist: ``require_death_flag`` refuses, at load, an
engine whose class lacks it (a vLLM that renamed it would otherwise never be seen dead).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

DEATH_FLAG = "errored"
WATCH_SECONDS = 0.25
# A health check that has not answered in this long counts as failed.
CHECK_TIMEOUT_SECONDS = 10.0


class EngineHealthError(Exception):
    """The engine cannot tell whether it died."""


def require_death_flag(engine: Any) -> None:
    """Raise EngineHealthError unless the engine's class has the ``errored`` flag."""
    if not hasattr(type(engine), DEATH_FLAG):
        raise EngineHealthError(
            f"{type(engine).__name__} has no {DEATH_FLAG!r} attribute: this vLLM version "
            "cannot tell the backend that its engine died"
        )


class EngineHealth:
    """The engine's health as the request path sees it: a flag read, no round trip."""

    def __init__(self, engine: Any, check_health: bool) -> None:
        require_death_flag(engine)
        self._engine = engine
        self._check_health = check_health
        self._failed_check: str | None = None

    @property
    def dead(self) -> bool:
        return self._failed_check is not None or bool(getattr(self._engine, DEATH_FLAG))

    @property
    def reason(self) -> str:
        """Why the engine counts as dead (for the log)."""
        return self._failed_check or "the vLLM engine died"

    async def watch(self, on_dead: Callable[[], None]) -> None:
        """Call ``on_dead`` (on a thread of its own) once the engine died or failed a check."""
        while not self.dead:
            await asyncio.sleep(WATCH_SECONDS)
            if self._check_health and not self.dead:
                await self._check()
        threading.Thread(target=on_dead, name="tritonvllm-engine-dead", daemon=True).start()

    async def _check(self) -> None:
        try:
            await asyncio.wait_for(self._engine.check_health(), CHECK_TIMEOUT_SECONDS)
        except Exception as err:  # whatever it raises, the engine is not healthy
            self._failed_check = f"the vLLM engine failed its health check: {err!r}"
