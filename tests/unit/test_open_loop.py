"""The benchmarks' open loop: requests sent at Poisson arrival times whatever is in flight, every
one of them recorded, the arrival times the same for every run of a seed."""

import asyncio
import itertools
import statistics
import time

from bench.raw_engine_bench import Record, arrival_times, open_loop


def test_requests_go_out_at_their_times_whatever_is_in_flight() -> None:
    sent_at: list[float] = []
    in_flight = 0
    most = 0

    async def one(prompt: str, index: int) -> Record:
        nonlocal in_flight, most
        sent = time.monotonic()
        sent_at.append(sent)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.2)  # far longer than the mean gap: a closed loop would wait
        in_flight -= 1
        return Record(sent, sent + 0.01, time.monotonic(), 1, 1, str(index))

    times = arrival_times(200.0, 60, seed=3)
    started, records = asyncio.run(open_loop(one, ["p"], times))
    assert len(records) == 60
    # Each went out at its time or after it, never before (the loop's clock: 5 ms of slack).
    assert all(at - started >= due - 0.005 for at, due in zip(sent_at, times, strict=True))
    assert sorted(int(r.request_id) for r in records) == list(range(60))
    assert most > 10  # requests overlapped: none waited for another to finish
    span = sent_at[-1] - started
    # 59 gaps of 5 ms on average; one at a time they would take 12 s (a loaded machine: slack)
    assert 0.1 < span < 6
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert statistics.pstdev(gaps) > 0  # not a fixed pace


def test_a_seed_gives_the_same_schedule() -> None:
    async def schedule(seed: int) -> list[int]:
        order: list[int] = []

        async def one(prompt: str, index: int) -> Record:
            order.append(index)
            return Record(0.0, 0.0, 0.0, 0, 0)

        await open_loop(one, ["a", "b"], arrival_times(1000.0, 20, seed))
        return order

    assert asyncio.run(schedule(1)) == list(range(20))
    times = arrival_times(5.0, 4000, 1)
    assert times == arrival_times(5.0, 4000, 1) != arrival_times(5.0, 4000, 2)
    assert times[0] == 0.0 and times == sorted(times)
    assert abs(times[-1] / 3999 - 0.2) < 0.02  # a mean gap of 1 / rate
