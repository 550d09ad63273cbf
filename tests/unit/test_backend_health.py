"""Engine health: vLLM's death flag must exist (a rename fails the load instead of a dead
engine staying ready), and with ENABLE_VLLM_HEALTH_CHECK a failed check_health() makes the
engine count as dead even while vLLM's flag says alive."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
import pytest
from tritonvllm_backend import health
from tritonvllm_backend.health import EngineHealth, EngineHealthError, require_death_flag


class RenamedFlagEngine:
    """Stands in for a vLLM whose engine no longer has ``errored`` (a fault of an upgrade)."""

    is_dead = False


class FailingHealthCheckEngine:
    """Stands in for an engine whose check_health() fails while ``errored`` is still False, a
    fault the real engine cannot be made to show on demand."""

    errored = False
    checks = 0

    async def check_health(self) -> None:
        self.checks += 1
        raise RuntimeError("engine core unresponsive")


class HealthyEngine:
    errored = False
    checks = 0

    async def check_health(self) -> None:
        self.checks += 1


def test_an_engine_without_the_death_flag_is_refused_at_load() -> None:
    with pytest.raises(EngineHealthError, match="no 'errored' attribute"):
        require_death_flag(RenamedFlagEngine())
    with pytest.raises(EngineHealthError):
        EngineHealth(RenamedFlagEngine(), check_health=False)


def watch_briefly(engine: object, check: bool, seconds: float) -> bool:
    """Whether on_dead was called within ``seconds`` of watching."""
    called = threading.Event()
    watched = EngineHealth(engine, check_health=check)

    async def run() -> None:
        task = asyncio.ensure_future(watched.watch(called.set))
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    return called.wait(1.0)


def test_with_the_health_check_on_a_failed_check_is_a_dead_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "WATCH_SECONDS", 0.01)
    engine = FailingHealthCheckEngine()
    assert watch_briefly(engine, check=True, seconds=0.3)
    watched = EngineHealth(engine, check_health=True)
    assert not watched.dead
    asyncio.run(watched._check())
    assert watched.dead and "engine core unresponsive" in watched.reason


def test_with_the_health_check_off_check_health_is_never_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "WATCH_SECONDS", 0.01)
    engine = FailingHealthCheckEngine()
    assert not watch_briefly(engine, check=False, seconds=0.2)
    assert engine.checks == 0


def test_a_healthy_engine_is_checked_and_stays_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "WATCH_SECONDS", 0.01)
    engine = HealthyEngine()
    assert not watch_briefly(engine, check=True, seconds=0.2)
    assert engine.checks > 0
