"""Where a request's time goes inside the backend: per-request timestamps, for benchmarks.

Off unless the environment variable ``TRITONVLLM_HOP_LOG`` names a file. Then every request
appends one JSON line: its client's request id and the times it passed each hop, in seconds of
CLOCK_MONOTONIC (what ``time.monotonic()`` reads in every process of the machine, so a client on
the same machine lines them up with its own send and receive times). Lines are written on the
engine loop when a request ends; a line costs a ``write`` call, nothing is kept in memory.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO

HOP_LOG_ENV = "TRITONVLLM_HOP_LOG"
# The hops, in the order a streamed request passes them: ``received`` (``execute`` was called
# with it), ``started`` (its task started on the engine loop), ``first_output`` (the engine's first
# output reached it), ``first_sent`` (its first response was sent: the send returned),
# ``final_output``, ``pushed`` (the metrics recorded so far were pushed) and ``final_sent``. A
# request that is not streamed has no ``first_*``.


class RequestHops:
    """The times one request passed the hops (a no-op without a log)."""

    __slots__ = ("_log", "times")

    def __init__(self, log: HopLog | None, request_id: str, received: float | None) -> None:
        self._log = log
        self.times: dict[str, float | str] = {}
        if log is not None:  # nothing is kept for a request when there is no log
            self.times["id"] = request_id
            if received is not None:
                self.times["received"] = received

    def mark(self, hop: str) -> None:
        if self._log is not None:
            self.times[hop] = time.monotonic()

    def end(self) -> None:
        if self._log is not None:
            self._log.write(self.times)


class HopLog:
    """An append-only JSON-lines file of RequestHops."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    @classmethod
    def from_environment(cls) -> HopLog | None:
        path = os.environ.get(HOP_LOG_ENV, "").strip()
        return cls(path) if path else None

    def write(self, times: dict[str, float | str]) -> None:
        self._file.write(json.dumps(times, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()
