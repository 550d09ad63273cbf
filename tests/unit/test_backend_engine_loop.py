"""The engine's event-loop thread: build on it, run requests on it, stop it cleanly."""

import asyncio
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.engine_loop import EngineLoop


class FakeEngine:
    """Stands in for AsyncLLM: records the thread it was built on and its shutdown."""

    def __init__(self) -> None:
        self.thread = threading.current_thread().name
        self.stopped = False


async def build() -> FakeEngine:
    await asyncio.sleep(0)
    return FakeEngine()


async def shutdown(engine: FakeEngine) -> None:
    engine.stopped = True


def test_engine_is_built_and_served_on_the_loop_thread() -> None:
    loop: EngineLoop[FakeEngine] = EngineLoop(name="engine-thread")
    engine = loop.start(build, timeout=5)
    assert engine.thread == "engine-thread"

    async def where() -> str:
        return threading.current_thread().name

    assert loop.call(where(), timeout=5) == "engine-thread"
    loop.stop(shutdown)
    assert engine.stopped


def test_stop_cancels_work_still_running() -> None:
    loop: EngineLoop[FakeEngine] = EngineLoop()
    loop.start(build, timeout=5)
    forever = loop.submit(asyncio.sleep(3600))
    loop.stop(shutdown, timeout=5)
    assert forever.cancelled()


def test_a_failing_build_raises_in_the_caller() -> None:
    async def broken() -> FakeEngine:
        raise RuntimeError("no such model")

    loop: EngineLoop[FakeEngine] = EngineLoop()
    with pytest.raises(RuntimeError, match="no such model"):
        loop.start(broken, timeout=5)
    loop.stop(None)
    with pytest.raises(RuntimeError, match="not started"):
        _ = loop.engine
