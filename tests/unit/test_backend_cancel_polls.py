"""Cancellation polls: whatever the number of requests in flight, each is asked whether its
client cancelled at least once every CANCEL_WITHIN_SECONDS, so a cancelled request of 1,000 in
flight is aborted within half a second (not after the seconds a fixed cap per poll took)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
import pytest
from tritonvllm_backend.cancel_polls import (
    ASK_ALL_UP_TO,
    CANCEL_POLL_SECONDS,
    CANCEL_WITHIN_SECONDS,
    PollTurns,
)


def test_the_bound_is_half_a_second_with_the_poll_interval() -> None:
    assert CANCEL_WITHIN_SECONDS + CANCEL_POLL_SECONDS <= 0.5


@pytest.mark.parametrize("inflight", [1, 3, 64, 100, 1000, 4096])
def test_every_request_in_flight_is_asked_within_the_bound(inflight: int) -> None:
    turns = PollTurns[int]()
    requests = list(range(inflight))
    polls = math.floor(CANCEL_WITHIN_SECONDS / CANCEL_POLL_SECONDS + 1e-9)
    for _ in range(3):  # any window of that many polls covers every request
        asked: set[int] = set()
        for _ in range(polls):
            asked.update(turns.next(requests))
        assert asked == set(requests)


def test_few_requests_are_all_asked_at_every_poll() -> None:
    turns = PollTurns[int]()
    assert turns.next(list(range(ASK_ALL_UP_TO))) == list(range(ASK_ALL_UP_TO))


def test_a_poll_asks_only_its_share_of_many_requests() -> None:
    turns = PollTurns[int]()
    asked = turns.next(list(range(1000)))
    assert len(asked) == math.ceil(1000 * CANCEL_POLL_SECONDS / CANCEL_WITHIN_SECONDS)
    assert turns.next(list(range(1000)))[0] == len(asked)  # the next poll goes on from there


def test_turns_go_on_when_requests_come_and_go() -> None:
    turns = PollTurns[int]()
    turns.next(list(range(1000)))
    assert set(turns.next(list(range(10)))) == set(range(10))
    assert turns.next([]) == []
