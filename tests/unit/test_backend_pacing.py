"""Stream pacing: every token goes out at once under light load; under load the streams that are
producing output share a budget of responses per second, no pause is longer than the cap, and a
finished output (EOS, a stop string, an abort) ends a pause at once: no final answer is held."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
import pytest
from tritonvllm_backend.pacing import (
    MAX_PAUSE_SECONDS,
    PACE_ABOVE_STREAMS,
    STREAM_RESPONSES_PER_SECOND,
    GatheredOutputs,
    response_budget,
    stream_pause,
)


def test_few_streams_send_every_token_at_once() -> None:
    for streaming in range(PACE_ABOVE_STREAMS + 1):
        assert stream_pause(streaming) == 0.0


def test_under_load_streams_share_the_response_budget() -> None:
    pauses = {n: stream_pause(n) for n in (16, 64, 128)}
    for streaming, pause in pauses.items():
        # N streams, each one response per pause: N / pause responses a second in all.
        assert streaming / pause == STREAM_RESPONSES_PER_SECOND
    assert pauses[16] < pauses[64] < pauses[128]


def test_no_pause_is_longer_than_the_cap() -> None:
    assert stream_pause(256) == stream_pause(1024) == stream_pause(100_000) == MAX_PAUSE_SECONDS


def test_the_budget_is_a_config_parameter() -> None:
    assert response_budget(None) == response_budget("") == STREAM_RESPONSES_PER_SECOND
    assert response_budget("500") == 500.0
    assert stream_pause(50, responses_per_second=500.0) == 0.1


def test_a_bad_budget_says_what_to_set() -> None:
    for bad in ("0", "-5", "fast", "inf", "nan"):
        with pytest.raises(ValueError, match="STREAM_RESPONSES_PER_SECOND must be a positive"):
            response_budget(bad)


@dataclass
class Output:
    """The parts of vLLM's RequestOutput the gathering uses (its DELTA text and ``add``)."""

    text: str
    finished: bool = False
    merged: int = 1

    def add(self, next_output: Output, aggregate: bool) -> None:
        assert aggregate
        self.text += next_output.text
        self.finished |= next_output.finished
        self.merged += 1


@dataclass
class Engine:
    """Stands in for an engine's per-request generator: yields outputs at set times."""

    timeline: list[tuple[float, Output]]
    closed: bool = False
    yielded: list[str] = field(default_factory=list)

    async def outputs(self) -> AsyncIterator[Output]:
        started = time.monotonic()
        try:
            for at, output in self.timeline:
                await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                self.yielded.append(output.text)
                yield output
        except (asyncio.CancelledError, GeneratorExit):
            self.closed = True  # vLLM aborts the engine request here
            raise


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_outputs_within_a_pause_are_merged_into_one() -> None:
    engine = Engine(
        [(0.0, Output("a")), (0.01, Output("b")), (0.02, Output("c")), (30.0, Output("d"))]
    )

    async def take() -> list[str]:
        gathered = GatheredOutputs(engine.outputs())
        first = await gathered.next()
        assert first is not None
        until = asyncio.get_running_loop().time() + 0.2
        second = await gathered.next(until)
        assert second is not None
        await gathered.aclose()
        return [first.text, second.text]

    assert run(take()) == ["a", "bc"]
    assert engine.closed  # never finished: closing it aborts the engine request


def test_a_finished_output_ends_the_pause_at_once() -> None:
    # The engine ends the request (EOS) 50 ms into a 30 s pause.
    engine = Engine([(0.0, Output("a")), (0.02, Output("b")), (0.05, Output(".", True))])

    async def take() -> tuple[Output, float]:
        gathered = GatheredOutputs(engine.outputs())
        assert await gathered.next() is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        final = await gathered.next(started + 30.0)
        assert final is not None
        waited = loop.time() - started
        await gathered.aclose()
        return final, waited

    final, waited = run(take())  # type: ignore[misc]
    assert final.text == "b." and final.finished
    assert waited < 15.0, "the final output waited for the pause"
    assert not engine.closed  # a finished request is not aborted


def test_an_output_that_comes_after_the_pause_is_not_held_for_more() -> None:
    engine = Engine([(0.0, Output("a")), (0.3, Output("b")), (0.35, Output("c", True))])

    async def take() -> list[str]:
        gathered = GatheredOutputs(engine.outputs())
        texts = []
        until = None
        while (output := await gathered.next(until)) is not None:
            texts.append(output.text)
            until = asyncio.get_running_loop().time() + 0.05
        await gathered.aclose()
        return texts

    assert run(take()) == ["a", "b", "c"]


def test_a_cancelled_stream_aborts_its_engine_request_mid_pause() -> None:
    engine = Engine([(0.0, Output("a")), (60.0, Output("b", True))])

    async def take() -> None:
        gathered = GatheredOutputs(engine.outputs())
        await gathered.next()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gathered.next(asyncio.get_running_loop().time() + 30), 0.1)
        await gathered.aclose()

    run(take())
    assert engine.closed
