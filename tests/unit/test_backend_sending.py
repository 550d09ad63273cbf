"""The response lanes: a response a client waits on (a stream's first, any final) never queues
behind paced responses, each lane keeps its order, and a failed send reaches the request."""

import asyncio
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.sending import GIL_SWITCH_INTERVAL_MS, ResponseLanes, gil_switch_interval


class SlowRoundTrip:
    """Stands in for ResponseSender.send, whose round trip to the server can be held."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[str] = []

    def held(self, name: str) -> None:
        self.release.wait(10)
        self.sent.append(name)

    def quick(self, name: str) -> None:
        self.sent.append(name)


def test_an_urgent_response_overtakes_paced_ones_stuck_in_a_round_trip() -> None:
    lanes = ResponseLanes()
    wire = SlowRoundTrip()

    async def run() -> None:
        paced = [
            asyncio.ensure_future(lanes.send(lambda n=n: wire.held(f"paced-{n}"), urgent=False))
            for n in range(3)
        ]
        await asyncio.wait_for(lanes.send(lambda: wire.quick("first token"), urgent=True), 5)
        assert wire.sent == ["first token"]
        assert not any(task.done() for task in paced)
        wire.release.set()
        await asyncio.wait_for(asyncio.gather(*paced), 5)

    try:
        asyncio.run(run())
    finally:
        wire.release.set()
        lanes.close()
    assert wire.sent == ["first token", "paced-0", "paced-1", "paced-2"]


def test_a_failed_send_raises_in_the_request_that_sent_it() -> None:
    lanes = ResponseLanes()

    def refused() -> None:
        raise RuntimeError("Unable to send response. Response sender has been closed.")

    async def run() -> None:
        with pytest.raises(RuntimeError, match="has been closed"):
            await lanes.send(refused, urgent=False)
        sent: list[str] = []
        await lanes.send(lambda: sent.append("next"), urgent=False)  # the lane still works
        assert sent == ["next"]

    try:
        asyncio.run(run())
    finally:
        lanes.close()


def test_a_send_after_close_is_refused_instead_of_waiting_forever() -> None:
    lanes = ResponseLanes()
    lanes.close()

    async def run() -> None:
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.wait_for(lanes.send(lambda: None, urgent=True), 5)

    asyncio.run(run())


def test_a_cancelled_waiter_does_not_break_the_lane() -> None:
    lanes = ResponseLanes()
    wire = SlowRoundTrip()

    async def run() -> None:
        stuck = asyncio.ensure_future(lanes.send(lambda: wire.held("a"), urgent=False))
        await asyncio.sleep(0.05)
        stuck.cancel()
        wire.release.set()
        await asyncio.wait_for(lanes.send(lambda: wire.quick("b"), urgent=False), 5)

    try:
        asyncio.run(run())
    finally:
        wire.release.set()
        lanes.close()
    assert wire.sent == ["a", "b"]


def test_the_switch_interval_parameter_is_milliseconds_with_a_default() -> None:
    assert gil_switch_interval(None) == GIL_SWITCH_INTERVAL_MS / 1000
    assert gil_switch_interval(" ") == GIL_SWITCH_INTERVAL_MS / 1000
    assert gil_switch_interval("5") == 0.005
    assert gil_switch_interval("0.25") == 0.00025


@pytest.mark.parametrize("value", ["0", "-1", "fast", "nan", "inf", "5000"])
def test_a_bad_switch_interval_names_the_parameter_and_the_range(value: str) -> None:
    with pytest.raises(ValueError, match=r"GIL_SWITCH_INTERVAL_MS must be .* \(0, 1000\]"):
        gil_switch_interval(value)
