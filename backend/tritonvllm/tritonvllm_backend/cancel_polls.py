"""Which requests in flight to ask Triton about cancellation at each poll (pure).

Each ``is_cancelled()`` is a round trip from the stub to the server, so a poll does not ask every
request: the requests take turns, and each poll asks just enough of them that every request in
flight is asked at least once every CANCEL_WITHIN_SECONDS, however many are in flight (and up
to ASK_ALL_UP_TO, all of them at every poll). A cancelled request is then aborted within that
time plus one poll interval.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

CANCEL_POLL_SECONDS = 0.1
CANCEL_WITHIN_SECONDS = 0.4
ASK_ALL_UP_TO = 64

T = TypeVar("T")


class PollTurns(Generic[T]):
    """Round-robin turns over the requests in flight."""

    def __init__(
        self, poll_seconds: float = CANCEL_POLL_SECONDS, within: float = CANCEL_WITHIN_SECONDS
    ) -> None:
        self._share = poll_seconds / within
        self._start = 0

    def next(self, inflight: list[T]) -> list[T]:
        """The requests to ask at this poll, from those in flight (in their order)."""
        count = len(inflight)
        per_poll = max(math.ceil(count * self._share), ASK_ALL_UP_TO)
        if per_poll >= count:
            return list(inflight)
        start = self._start % count
        self._start = start + per_poll
        return [inflight[(start + offset) % count] for offset in range(per_poll)]
