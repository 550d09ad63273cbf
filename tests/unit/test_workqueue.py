"""The controller's work queue: one wait per key, one worker per key, new models first."""

from __future__ import annotations

import asyncio

from triton_vllm_operator.runtime.workqueue import WorkQueue


def test_a_key_added_twice_waits_once_and_one_added_while_processed_runs_again() -> None:
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        queue.add("a")
        assert len(queue) == 1
        key = await queue.get()
        queue.add("a")  # changed while being reconciled
        got = [key]
        queue.done(key)
        got.append(await queue.get())
        queue.done("a")
        return got

    assert asyncio.run(scenario()) == ["a", "a"]


def test_new_keys_go_before_keys_seen_already() -> None:
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("old")
        queue.done(await queue.get())
        queue.add("old")
        queue.add("new")
        first = await queue.get()
        second = await queue.get()
        return [first, second]

    assert asyncio.run(scenario()) == ["new", "old"]


def test_failures_back_off_exponentially_and_success_resets() -> None:
    async def scenario() -> list[float]:
        queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.04)
        delays = [queue.retry("k") for _ in range(4)]
        queue.forget("k")
        delays.append(queue.retry("k"))
        await asyncio.sleep(0.06)
        assert len(queue) == 1
        return delays

    assert asyncio.run(scenario()) == [0.01, 0.02, 0.04, 0.04, 0.01]


def test_a_key_added_after_a_delay_comes_back_once_however_often_it_is_asked() -> None:
    async def scenario() -> tuple[list[str], int]:
        queue: WorkQueue[str] = WorkQueue()
        for _ in range(5):  # one pass per event while a download runs: one timer
            queue.add_after("a", 0.05)
        assert len(queue) == 0
        got = [await asyncio.wait_for(queue.get(), 1)]
        queue.done("a")
        await asyncio.sleep(0.2)
        return got, len(queue)

    assert asyncio.run(scenario()) == (["a"], 0)
