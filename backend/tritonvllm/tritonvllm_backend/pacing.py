"""How long a stream gathers tokens between responses under load, and the gathering (pure).

The stub sends a few thousand responses a second at most (one thread, one shared-memory message
and Triton's response path each), while an engine batching hundreds of streams produces tens of
thousands of tokens a second. So under load the streams that are producing output share a
budget: with N of them each sends at most one response per N / STREAM_RESPONSES_PER_SECOND
seconds (never more than MAX_PAUSE_SECONDS apart), and the outputs the engine gives meanwhile are
merged into that response. A stream's first response is never held, and a finished output (EOS,
a stop string, max_tokens, an abort) ends the pause at once: the final response leaves as soon as
the engine produced it. The budget is the config.pbtxt parameter STREAM_RESPONSES_PER_SECOND.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Generic, Protocol, Self, TypeVar

STREAM_RESPONSES_PER_SECOND = 1000.0
PACE_ABOVE_STREAMS = 4
# Tokens of one stream never wait longer than this for their response.
MAX_PAUSE_SECONDS = 0.2


def response_budget(value: str | None) -> float:
    """The STREAM_RESPONSES_PER_SECOND parameter: a positive number; unset means the default."""
    if value is None or not value.strip():
        return STREAM_RESPONSES_PER_SECOND
    try:
        budget = float(value)
    except ValueError:
        budget = 0.0
    if not budget > 0 or budget == float("inf"):
        raise ValueError(
            f"parameter STREAM_RESPONSES_PER_SECOND must be a positive number, not {value!r}"
        )
    return budget


def stream_pause(
    streaming: int, responses_per_second: float = STREAM_RESPONSES_PER_SECOND
) -> float:
    """Seconds a stream gathers output before its next response: 0 with few streams producing
    output (``streaming``), else their share of the budget, capped at MAX_PAUSE_SECONDS."""
    if streaming <= PACE_ABOVE_STREAMS:
        return 0.0
    return min(streaming / responses_per_second, MAX_PAUSE_SECONDS)


class Output(Protocol):
    """What the gathering needs of an engine output (vLLM's RequestOutput)."""

    @property
    def finished(self) -> bool: ...

    def add(self, next_output: Self, aggregate: bool) -> None: ...


OutputT = TypeVar("OutputT", bound=Output)


class GatheredOutputs(Generic[OutputT]):
    """One request's engine outputs, those that come within a pause merged into one.

    While a stream pauses the next output is awaited all the same (on a task of its own), so a
    finished one is seen the moment the engine gives it; unfinished ones are merged (vLLM's own
    ``RequestOutput.add``, as its output collector merges DELTA outputs nobody took yet).
    """

    def __init__(self, outputs: AsyncIterator[OutputT]) -> None:
        self._outputs = outputs
        self._next: asyncio.Future[OutputT] | None = None
        self._finished = False

    async def next(self, until: float | None = None) -> OutputT | None:
        """The next output, merged with those that follow it up to the loop time ``until``
        (returned at once when finished); None when the engine's outputs ended."""
        try:
            output = await self._take()
        except StopAsyncIteration:
            return None
        loop = asyncio.get_running_loop()
        while until is not None and not output.finished:
            remaining = until - loop.time()
            if remaining <= 0:
                break
            if self._next is None:
                self._next = asyncio.ensure_future(anext(self._outputs))
            done, _ = await asyncio.wait((self._next,), timeout=remaining)
            if not done:
                break
            following, self._next = self._next, None
            try:
                output.add(following.result(), aggregate=True)
            except StopAsyncIteration:
                break
        self._finished = output.finished
        return output

    async def _take(self) -> OutputT:
        if self._next is None:
            return await anext(self._outputs)
        following, self._next = self._next, None
        return await following

    async def aclose(self) -> None:
        """Let the engine's generator end; before its finished output that is an abort."""
        if self._finished and self._next is None:
            async for _ in self._outputs:  # ends at once: closing it now would abort
                pass
            return
        following, self._next = self._next, None
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await following
        aclose = getattr(self._outputs, "aclose", None)
        if aclose is not None:
            await aclose()
