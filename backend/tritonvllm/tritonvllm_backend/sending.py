"""Two sender threads: responses a client waits on never queue behind paced ones.

The python backend's ``ResponseSender.send`` blocks its thread for a round trip to the server
process (it releases the GIL meanwhile), so sends on one thread go one at a time. Under load that
thread has a queue of paced stream responses, and a stream's first token or a request's final
response queued behind them reaches the client late: a longer time to first token, and in a
closed loop a later next request. So they go on a lane of their own. Paced responses keep one
thread: a request awaits its previous send before taking its next engine output, so while the
lane is busy vLLM merges the new tokens into fewer, fuller responses. A request's responses stay
in order whatever their lanes, because each waits for the one before it.

A sender thread needs the GIL back after each round trip, and so does the stub's main thread for
each ``execute``, while the engine loop thread holds it for long stretches under load. CPython
makes a waiting thread wait up to its switch interval (5 ms by default) before the holder must let
go; ``GIL_SWITCH_INTERVAL_MS`` sets it for the stub.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

GIL_SWITCH_INTERVAL_MS = 5.0  # CPython's own default

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", Callable[[], None]]


class ResponseLanes:
    """An urgent and a paced sender thread, each sending in the order given."""

    def __init__(self, name: str = "tritonvllm-send") -> None:
        self._queues: dict[bool, queue.SimpleQueue[_Item | None]] = {
            True: queue.SimpleQueue(),
            False: queue.SimpleQueue(),
        }
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(lane,),
                name=f"{name}-{'urgent' if urgent else 'paced'}",
                daemon=True,
            )
            for urgent, lane in self._queues.items()
        ]
        for thread in self._threads:
            thread.start()

    async def send(self, deliver: Callable[[], None], urgent: bool) -> None:
        """Run ``deliver`` on a sender thread; raise what it raised."""
        if self._closed:
            raise RuntimeError("the response senders are closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queues[urgent].put((loop, done, deliver))
        await done

    def close(self) -> None:
        """Send what is queued, then stop the threads."""
        self._closed = True
        for lane in self._queues.values():
            lane.put(None)
        for thread in self._threads:
            thread.join()

    @staticmethod
    def _run(lane: queue.SimpleQueue[_Item | None]) -> None:
        while (item := lane.get()) is not None:
            loop, done, deliver = item
            error: BaseException | None = None
            try:
                deliver()
            except Exception as err:
                error = err
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, done, error)


def _settle(done: asyncio.Future[Any], error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def gil_switch_interval(value: str | None) -> float:
    """The GIL_SWITCH_INTERVAL_MS parameter, in seconds: a positive number of milliseconds;
    unset means GIL_SWITCH_INTERVAL_MS."""
    if value is None or not value.strip():
        return GIL_SWITCH_INTERVAL_MS / 1000
    try:
        milliseconds = float(value)
    except ValueError:
        milliseconds = 0.0
    if not 0 < milliseconds <= 1000:
        raise ValueError(
            f"parameter GIL_SWITCH_INTERVAL_MS must be a number of milliseconds in (0, 1000], "
            f"not {value!r}"
        )
    return milliseconds / 1000
