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


def test_a_burst_of_events_about_a_known_key_is_one_pass_and_a_new_key_goes_at_once() -> None:
    async def scenario() -> tuple[str, int]:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("known")
        queue.done(await queue.get())
        for _ in range(10):  # the Deployment's status, its pods, ...
            queue.add_coalesced("known", 0.05)
        queue.add_coalesced("new", 0.05)
        first = await queue.get()  # at once: a new key does not wait
        queue.done(first)
        assert len(queue) == 0
        await asyncio.sleep(0.1)
        passes = 0
        while len(queue):
            queue.done(await queue.get())
            passes += 1
        return first, passes

    assert asyncio.run(scenario()) == ("new", 1)
