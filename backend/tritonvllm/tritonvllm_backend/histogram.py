"""A Prometheus histogram folded locally, for series observed once per token.

Triton's python backend has no batched ``observe``: each observation is a round trip to the
server process, and an inter-token latency histogram is observed once per generated token (about
11,000 times a second on one GPU under load). Folded here, a flush costs one ``increment`` per
bucket that changed, plus the sum and the count, however many tokens it covers. The series a
scrape shows are a histogram's (``<name>_bucket{le=...}`` cumulative, ``<name>_sum``,
``<name>_count``), exported as counter families.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def le_label(bound: float) -> str:
    """The ``le`` label of a bucket bound, as Prometheus clients write it (``0.25``, ``1``)."""
    return "+Inf" if bound == float("inf") else f"{bound:g}"


@dataclass(frozen=True)
class Folded:
    """What a batch of observations adds: per bucket (cumulative, ``+Inf`` last), sum, count."""

    buckets: list[int]
    total: float
    count: int


def fold(bounds: Sequence[float], values: Iterable[float]) -> Folded:
    """Fold ``values`` into the cumulative buckets of ``bounds`` (sorted, without +Inf)."""
    per_bucket = [0] * (len(bounds) + 1)
    total = 0.0
    count = 0
    for value in values:
        per_bucket[bisect.bisect_left(bounds, value)] += 1
        total += value
        count += 1
    cumulative = []
    running = 0
    for hits in per_bucket:
        running += hits
        cumulative.append(running)
    return Folded(cumulative, total, count)
