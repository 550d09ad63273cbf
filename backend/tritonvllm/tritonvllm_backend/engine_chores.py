"""What vLLM's own server does for its engine beside serving, done here when its OpenAI port is
off (with the port on, vLLM's app does it in its lifespan): log the engine's stats every
VLLM_LOG_STATS_INTERVAL seconds (throughput lines; the stat loggers' periodic work), and freeze
the heap built while loading, so that full GC passes skip it while serving."""

from __future__ import annotations

import asyncio
import gc
from typing import Any


async def log_stats_every(engine: Any, seconds: float) -> None:
    """Call the engine's ``do_log_stats`` every ``seconds`` (runs for the loop's lifetime)."""
    while True:
        await asyncio.sleep(seconds)
        await engine.do_log_stats()


def freeze_loaded_heap() -> int:
    """Move everything allocated so far to the oldest generation and freeze it (vLLM's
    ``freeze_gc_heap``); ``gc.unfreeze()`` at unload lets the engine be collected. Returns how
    many objects are frozen."""
    gc.collect(0)
    gc.collect(1)
    gc.collect(2)
    gc.freeze()
    return gc.get_freeze_count()
