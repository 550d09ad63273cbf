"""The raw-engine side of `make bench-backend`, and the load driver both sides share.

Run with the serving environment's python (it needs vLLM); bench/backend_overhead.py does:
    raw_engine_bench.py CONFIG_JSON RESULT_JSON

CONFIG_JSON names the model.json the operator rendered (the same engine arguments tritonserver
loads), the prompts, max_tokens, the concurrency levels and the requests per level. The engine is
vLLM's AsyncLLM in this process, each request streamed with RequestOutputKind.DELTA, driven by the
same closed loop (``closed_loop``) as the Triton clients. RESULT_JSON gets one entry per level:
the per-request records and the CPU seconds each process of this tree used.

Everything at module level is standard library, so bench/backend_overhead.py imports the load
driver and the CPU accounting from here without vLLM.
"""

from __future__ import annotations

import asyncio
import json
import locale
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Record:
    """One request: when it was sent, first token, last response (monotonic s), and counts."""

    sent: float
    first_token: float
    done: float
    tokens: int
    responses: int
    request_id: str = ""  # the id the server saw (Triton's request id), where there is one


@dataclass
class Level:
    """One concurrency level of one path: the requests measured and the CPU each process used."""

    concurrency: int
    started: float
    records: list[Record]
    cpu_s: dict[str, float]
    # The engine's own histograms over the level: ``<name>_sum`` / ``<name>_count`` increments.
    engine_histograms: dict[str, float] = field(default_factory=dict)
    # Requests a second offered in an open loop (``open_loop``); 0 for a closed loop of
    # ``concurrency`` streams.
    rate: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "records": [asdict(r) for r in self.records]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Level:
        records = [Record(**r) for r in data["records"]]
        histograms = data.get("engine_histograms", {})
        return cls(
            data["concurrency"],
            data["started"],
            records,
            data["cpu_s"],
            histograms,
            data.get("rate", 0.0),
        )


# One request: (prompt, sequence number) -> its record.
OneRequest = Callable[[str, int], Awaitable[Record]]


async def closed_loop(
    one: OneRequest, prompts: list[str], concurrency: int, total: int
) -> tuple[float, list[Record]]:
    """``concurrency`` workers send ``total`` requests, each worker one at a time.

    Returns the start time and the records in completion order. Prompts are taken in turn.
    """
    records: list[Record] = []
    counter = iter(range(total))

    async def worker() -> None:
        for index in counter:
            records.append(await one(prompts[index % len(prompts)], index))

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return started, records


def arrival_times(rate: float, count: int, seed: int = 0) -> list[float]:
    """``count`` Poisson arrival times at ``rate`` a second, in seconds from the first (at 0);
    the same for a seed, so that every path of a benchmark is sent the same arrivals."""
    draw = random.Random(seed)
    times = [0.0]
    for _ in range(count - 1):
        times.append(times[-1] + draw.expovariate(rate))
    return times[:count]


async def open_loop(
    one: OneRequest, prompts: list[str], times: list[float]
) -> tuple[float, list[Record]]:
    """One request at each of ``times`` (seconds from the start), each sent when its time comes
    whatever is in flight (an open loop: what a server's clients do, unlike ``closed_loop``,
    whose next request waits for one to finish).

    Returns the start time and the records in completion order. Prompts are taken in turn.
    """
    records: list[Record] = []

    async def send(index: int) -> None:
        records.append(await one(prompts[index % len(prompts)], index))

    started = time.monotonic()
    tasks = []
    for index, due in enumerate(times):
        await asyncio.sleep(max(0.0, started + due - time.monotonic()))
        tasks.append(asyncio.create_task(send(index)))
    await asyncio.gather(*tasks)
    return started, records


async def run_levels(
    one: OneRequest,
    prompts: list[str],
    levels: list[tuple[int, int]] | list[tuple[int, int, float]],
    cpu: Callable[[], dict[str, float]],
    warmup: bool = True,
    histograms: Callable[[], dict[str, float]] | None = None,
) -> list[Level]:
    """Each (concurrency, requests[, rate]) level after a warm-up round of ``concurrency``
    streams, with the CPU ``cpu()`` counts and the increments of the totals ``histograms()``
    reads. A level with a rate (requests a second) is an open loop (``open_loop``)."""
    results = []
    for concurrency, total, *rest in levels:
        rate = float(rest[0]) if rest else 0.0
        if warmup:
            await closed_loop(one, prompts, concurrency, concurrency)
        before, totals_before = cpu(), histograms() if histograms else {}
        if rate > 0:
            started, records = await open_loop(one, prompts, arrival_times(rate, total))
        else:
            started, records = await closed_loop(one, prompts, concurrency, total)
        after, totals_after = cpu(), histograms() if histograms else {}
        used = {name: after[name] - before.get(name, 0.0) for name in after}
        grown = {name: totals_after[name] - totals_before.get(name, 0.0) for name in totals_after}
        results.append(Level(concurrency, started, records, used, grown, rate))
    return results


def tree_cpu_seconds(root: int, root_label: str | None = None) -> dict[str, float]:
    """User+system CPU seconds of ``root`` and its descendants, summed by process name."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ... utime(14) stime(15); comm may hold spaces or parentheses.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry)
        parents[pid], names[pid] = int(fields[1]), comm
        ticks[pid] = int(fields[11]) + int(fields[12])
    tree = {root}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(children)
        tree |= children
    hz = os.sysconf("SC_CLK_TCK")
    total: dict[str, float] = {}
    for pid in tree & ticks.keys():
        name = root_label if pid == root and root_label else process_label(names[pid])
        total[name] = total.get(name, 0.0) + ticks[pid] / hz
    return total


def process_label(comm: str) -> str:
    """A short, stable name for a process of the benchmark."""
    if comm.startswith("triton_python"):
        return "backend stub"
    if comm.startswith("VLLM::EngineCor"):
        return "EngineCore"
    if comm.startswith("VLLM::Worker"):
        return "Worker"
    if comm == "tritonserver":
        return "tritonserver"
    return "other"


MACHINE = "_machine"


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine used (all cores; /proc/stat, less idle)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def raw_engine(config: dict[str, Any]) -> list[Level]:
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_args = json.loads(Path(config["model_json"]).read_text())
    # The server's defaults, as the backend builds its engine (and `vllm serve` its own).
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(**engine_args), usage_context=UsageContext.OPENAI_API_SERVER
    )
    params = SamplingParams(
        **config["sampling"],
        output_kind=RequestOutputKind.DELTA,
    )

    async def one(prompt: str, index: int) -> Record:
        sent = time.monotonic()
        first = 0.0
        tokens = responses = 0
        async for output in engine.generate(prompt, params, request_id=f"raw-{index}-{sent}"):
            produced = len(output.outputs[0].token_ids)
            if produced and not first:
                first = time.monotonic()
            tokens += produced
            responses += 1
        return Record(sent, first, time.monotonic(), tokens, responses)

    try:
        return await run_levels(
            one,
            config["prompts"],
            [
                (int(level[0]), int(level[1]), float(level[2]) if len(level) > 2 else 0.0)
                for level in config["levels"]
            ],
            lambda: {
                **tree_cpu_seconds(os.getpid(), "AsyncLLM process"),
                MACHINE: machine_busy_seconds(),
            },
            config.get("warmup", True),
            engine_histograms,
        )
    finally:
        engine.shutdown()


# The engine's first-token, queueing and end-to-end histograms, as vLLM names them
# (bench/gpu_bench.py).
ENGINE_HISTOGRAMS = (
    "vllm:time_to_first_token_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:e2e_request_latency_seconds",
)
ENGINE_HISTOGRAM_SERIES = frozenset(
    f"{name}_{part}" for name in ENGINE_HISTOGRAMS for part in ("sum", "count")
)


def engine_histograms() -> dict[str, float]:
    """``_sum`` and ``_count`` of ENGINE_HISTOGRAMS in this process's Prometheus registry, where
    vLLM's own stat logger records them."""
    import prometheus_client

    totals: dict[str, float] = {}
    for family in prometheus_client.REGISTRY.collect():
        for sample in family.samples:
            if sample.name in ENGINE_HISTOGRAM_SERIES:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def main() -> None:
    # Importing vLLM (through torch) reads UTF-8 files, whatever the environment's locale.
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    config = json.loads(Path(sys.argv[1]).read_text())
    levels = asyncio.run(raw_engine(config))
    Path(sys.argv[2]).write_text(json.dumps([level.to_json() for level in levels]))


if __name__ == "__main__":
    main()
