"""make bench-gpu: Triton + the bundled tritonvllm backend against the raw vLLM engine, on GPUs.

On one machine with NVIDIA GPUs, in the GPU serving environment (hack/gpu-env.sh):
(a) the raw vLLM engine: AsyncLLM in process (bench/raw_engine_bench.py), streamed with
    RequestOutputKind.DELTA;
(b) tritonserver with the bundled backend, loading the model repository the operator renders
    for the placement (config.pbtxt and model.json, tensor parallelism included), driven over
    gRPC streaming by several client processes, so the client is not the limit (the highest
    concurrency also runs with twice the client processes, to show it).
Model: a Llama 3 8B-shaped config with ``load_format: dummy`` (random weights, nothing
downloaded) and a word-level tokenizer of 128,256 tokens (hack/tiny_model.py --shape llama-8b).
Workload: 256-token prompts (distinct; prefix caching off), 128 output tokens with ignore_eos
(``--workload eos``: outputs that end on their own, WORKLOADS), a closed loop of C streams per
level after a warm-up round. Output tokens are counted exactly
(token ids on the raw side, the backend's ``num_output_tokens`` on the Triton side).
Writes docs/benchmarks/gpu-tp<N>.md and .png and prints the table.

With ``--paths openai``: the OpenAI path instead, the field's load client
(``vllm bench serve --backend openai``, ``/v1/completions`` streamed) against (c) the same
tritonserver's OpenAI port (vLLM's OpenAI app in the backend stub, ``OPENAI_API_PORT``) and
(d) vLLM's own ``vllm serve``, both up at once on the one GPU (half its memory each), on the same
engine arguments, the levels in alternating order over ``--openai-rounds`` rounds (each row: that
server's median round). Writes docs/benchmarks/gpu-openai.md, .png and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.backend_overhead import (
    GrpcStreams,
    Summary,
    make_tiny_model,
    percentile,
    run_raw,
    summarize,
    tritonserver,
    write_repository,
)
from bench.raw_engine_bench import (
    ENGINE_HISTOGRAM_SERIES,
    ENGINE_HISTOGRAMS,
    MACHINE,
    Level,
    Record,
    arrival_times,
    closed_loop,
    machine_busy_seconds,
    open_loop,
    tree_cpu_seconds,
)
from bench.versions import pinned_versions

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"
MODEL = "llama-8b-dummy"
# Defaults (a variable already set wins): no flashinfer sampler (flashinfer is not installed),
# and no NVLink multicast anywhere (NCCL, torch symmetric memory, NVSHMEM, vLLM's symmetric-memory
# all-reduce): on shared hosts a program using it can take the GPUs out of service.
GPU_ENV = {
    "VLLM_USE_FLASHINFER_SAMPLER": "0",
    "VLLM_ALLREDUCE_USE_SYMM_MEM": "0",
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
    "PYTHONIOENCODING": "utf-8",
}


# An open-loop level's warm-up: a closed loop of this many streams first.
OPEN_LOOP_WARMUP = 64


def prompts(count: int, length: int) -> list[str]:
    """``count`` distinct prompts of ``length`` tokens (BOS + length - 1 words, one token each)."""
    sys.path.insert(0, str(ROOT / "hack"))
    from tiny_model import WORDS

    words = sorted(set(WORDS))
    return [" ".join(random.Random(index).choices(words, k=length - 1)) for index in range(count)]


# ---------------------------------------------------------------------------------------------
# Triton clients: several processes, each a closed loop over its share of the streams


def _client_process(
    model: str,
    grpc: str,
    sampling: dict[str, Any],
    prompt_list: list[str],
    concurrency: int,
    total: int,
    start: Any,
    results: Any,
    times: list[float] | None = None,
) -> None:
    async def run() -> tuple[float, list[Record]]:
        streams = GrpcStreams(grpc, sampling, model=model)
        try:
            await closed_loop(streams.one, prompt_list, concurrency, concurrency)  # warm-up
            await asyncio.get_running_loop().run_in_executor(None, start.wait)
            if times is not None:
                return await open_loop(streams.one, prompt_list, times)
            return await closed_loop(streams.one, prompt_list, concurrency, total)
        finally:
            await streams.close()

    try:
        started, records = asyncio.run(run())
        results.put((started, [vars(r) for r in records], None, time.process_time()))
    except BaseException as err:  # report it to the parent instead of hanging it
        results.put((0.0, [], repr(err), 0.0))


# The engine's own latency histograms (Triton's metrics with REPORT_CUSTOM_METRICS, vLLM's own
# registry for the raw engine): arrival in AsyncLLM to the first token, the part of it spent in
# the engine's waiting queue, and arrival to the finished output.
ENGINE_TTFT, ENGINE_QUEUE, ENGINE_E2E = ENGINE_HISTOGRAMS

# Sampling of the two workloads. "fixed": every output max_tokens long (ignore_eos). "eos": outputs
# that end on their own at varied lengths: sampled at temperature 1 from the dummy weights' near
# uniform distribution over the vocabulary, ending on EOS or one of STOP_IDS (about 1 token in
# 128 is one), at most twice max_tokens; the same parameters on both paths.
WORKLOADS = ("fixed", "eos")
STOP_IDS = list(range(1000, 2000))


def workload_sampling(workload: str, max_tokens: int) -> dict[str, Any]:
    """The sampling parameters of a workload (WORKLOADS)."""
    if workload == "eos":
        return {"temperature": 1.0, "max_tokens": 2 * max_tokens, "stop_token_ids": STOP_IDS}
    return {"temperature": 0, "max_tokens": max_tokens, "ignore_eos": True}


def histogram_totals(metrics: str | None) -> dict[str, float]:
    """``<name>_sum`` and ``<name>_count`` of the engine's TTFT and queue-time histograms, from
    Triton's metrics endpoint (empty without an address or when it cannot be read)."""
    if metrics is None:
        return {}
    import requests

    try:
        text = requests.get(f"http://{metrics}/metrics", timeout=10).text
    except requests.RequestException:
        return {}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ENGINE_HISTOGRAM_SERIES:
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def histogram_totals_after(
    metrics: str | None, before: dict[str, float], requests: int, timeout: float = 10.0
) -> dict[str, float]:
    """``histogram_totals`` once the level's requests are all in it: each finished request adds one
    queue-time observation, and the stats of an engine step can reach Triton just after the step's
    final responses (or a read can fail on a loaded machine), so read until they are there."""
    count = f"{ENGINE_QUEUE}_count"
    deadline = time.monotonic() + timeout
    while True:
        totals = histogram_totals(metrics)
        grown = totals.get(count, 0.0) - before.get(count, 0.0)
        if metrics is None or grown >= requests or time.monotonic() >= deadline:
            return totals
        time.sleep(0.2)


def first_token_waits(records: list[Record], grown: dict[str, float]) -> dict[str, float]:
    """Mean first-token time as the client saw it, as the engine saw it (from arrival in AsyncLLM)
    and the engine's queueing within that, in ms, from the requests' records and the increments
    of the engine's histograms over the level; the difference is spent outside the engine (for
    Triton: client, gRPC, Triton, the stub before ``add_request`` and after the first output)."""
    waits = {
        "client TTFT": 1000 * statistics.fmean(r.first_token - r.sent for r in records),
        "client e2e": 1000 * statistics.fmean(r.done - r.sent for r in records),
    }
    names = (
        ("engine TTFT", ENGINE_TTFT),
        ("engine queue", ENGINE_QUEUE),
        ("engine e2e", ENGINE_E2E),
    )
    for label, name in names:
        count = grown.get(f"{name}_count", 0.0)
        if count > 0:
            waits[label] = 1000 * grown.get(f"{name}_sum", 0.0) / count
    if "engine TTFT" in waits:
        waits["outside the engine"] = waits["client TTFT"] - waits["engine TTFT"]
    if "engine e2e" in waits:
        waits["e2e outside the engine"] = waits["client e2e"] - waits["engine e2e"]
    return waits


# The backend's hop log (backend/tritonvllm/tritonvllm_backend/hops.py): set for the server, it
# appends one line of CLOCK_MONOTONIC times per request.
HOP_LOG_ENV = "TRITONVLLM_HOP_LOG"
# Where a streamed Triton request's time goes, each from one time to the next: the client's own
# (sent, first_token, done) and the backend's hops.
HOP_SEGMENTS = (
    ("client to execute", "sent", "received"),
    ("execute to the loop", "received", "started"),
    ("loop to first output", "started", "first_output"),
    ("first send", "first_output", "first_sent"),
    ("first response to the client", "first_sent", "first_token"),
    ("final output to metrics pushed", "final_output", "pushed"),
    ("final send", "pushed", "final_sent"),
    ("final response to the client", "final_sent", "done"),
)


def backend_hops(records: list[Record], hop_log: Path | None) -> dict[str, float]:
    """Mean ms of each HOP_SEGMENTS segment over ``records``, from the backend's hop log (the
    lines of these records' request ids; empty without a log)."""
    if hop_log is None or not hop_log.exists():
        return {}
    wanted = {r.request_id: r for r in records if r.request_id}
    times: dict[str, dict[str, float]] = {}
    for line in hop_log.read_text().splitlines():
        hops = json.loads(line)
        record = wanted.get(hops.pop("id", ""))
        if record is not None:
            times[record.request_id] = {
                **hops,
                "sent": record.sent,
                "first_token": record.first_token,
                "done": record.done,
            }
    means = {}
    for label, start, end in HOP_SEGMENTS:
        spans = [t[end] - t[start] for t in times.values() if start in t and end in t]
        if spans:
            means[label] = 1000 * statistics.fmean(spans)
    return means | final_waits(list(times.values()))


# Per request, from the hop log: the client's time to its last token less the engine's part
# (the request's start on the engine loop to its final engine output), and the final output's
# way to the client (what a held final response would add).
FINAL_WAITS = (
    "e2e outside the engine p50",
    "e2e outside the engine p99",
    "final output to client p50",
    "final output to client p99",
)


def final_waits(times: list[dict[str, float]]) -> dict[str, float]:
    """FINAL_WAITS in ms over the requests' hop times (with the client's own)."""
    wanted = ("sent", "started", "final_output", "done")
    times = [t for t in times if all(k in t for k in wanted)]
    if not times:
        return {}
    outside = [(t["started"] - t["sent"]) + (t["done"] - t["final_output"]) for t in times]
    final = [t["done"] - t["final_output"] for t in times]
    values = (
        percentile(outside, 0.5), percentile(outside, 0.99),
        percentile(final, 0.5), percentile(final, 0.99),
    )  # fmt: skip
    return {label: 1000 * v for label, v in zip(FINAL_WAITS, values, strict=True)}


def triton_level(
    server_pid: int | None,
    grpc: str,
    sampling: dict[str, Any],
    prompt_list: list[str],
    concurrency: int,
    total: int,
    processes: int,
    model: str = MODEL,
    metrics: str | None = None,
    hop_log: Path | None = None,
    rate: float = 0.0,
) -> tuple[Level, dict[str, float], dict[str, float]]:
    """One level: ``concurrency`` streams and ``total`` requests over ``processes`` clients;
    with a ``rate``, an open loop of that many requests a second instead, after the same
    warm-up: the arrival times ``arrival_times`` gives the raw engine, dealt out to the client
    processes in turn, so that the server is sent the same arrivals as the raw engine.

    CPU is counted for the client processes and, given ``server_pid``, the server's process tree;
    returned with where the first token waited (``first_token_waits``; the engine's part given
    Triton's ``metrics`` address) and, given the server's ``hop_log``, where the requests' time
    went (``backend_hops``).
    """
    processes = max(1, min(processes, concurrency))
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    results = context.Queue()
    workers = []
    times = arrival_times(rate, total) if rate > 0 else None
    for i in range(processes):
        share = concurrency // processes + (1 if i < concurrency % processes else 0)
        requests = total // processes + (1 if i < total % processes else 0)
        mine = prompt_list[i::processes]
        mine_times = None if times is None else times[i::processes]
        args = (model, grpc, sampling, mine, share, requests, start, results, mine_times)
        workers.append(context.Process(target=_client_process, args=args, daemon=True))
    for worker in workers:
        worker.start()
    start.wait(timeout=900)  # every client warmed up: go

    def cpu_now() -> dict[str, float]:
        server = tree_cpu_seconds(server_pid) if server_pid is not None else {}
        return {**server, MACHINE: machine_busy_seconds()}

    before, histograms_before = cpu_now(), histogram_totals(metrics)
    outcomes = [results.get(timeout=1800) for _ in workers]
    after = cpu_now()
    for worker in workers:
        worker.join(timeout=60)
    errors = [error for _, _, error, _ in outcomes if error]
    if errors:
        raise RuntimeError(f"a client process failed: {errors[0]}")
    records = [Record(**r) for _, rs, _, _ in outcomes for r in rs]
    histograms_after = histogram_totals_after(metrics, histograms_before, len(records))
    started = min(s for s, _, _, _ in outcomes)
    cpu = {name: after[name] - before.get(name, 0.0) for name in after}
    # Clients: their whole run (warm-up included), an upper bound of the measured part.
    cpu["clients"] = sum(used for _, _, _, used in outcomes)
    grown = {k: v - histograms_before.get(k, 0.0) for k, v in histograms_after.items()}
    waits = first_token_waits(records, grown)
    level = Level(concurrency, started, records, cpu, rate=rate)
    return level, waits, backend_hops(records, hop_log)


# ---------------------------------------------------------------------------------------------
# The report


def gpu_description() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"
    gpus = out.splitlines()
    name, memory, driver = (part.strip() for part in gpus[0].split(","))
    return f"{len(gpus)} x {name} ({memory}, driver {driver}), {os.cpu_count()} CPU cores"


def stack_versions(python: Path) -> str:
    code = (
        "import vllm, torch, numpy; from importlib.metadata import version as v; "
        "print(f'vLLM {vllm.__version__}, torch {torch.__version__}, numpy {numpy.__version__}, "
        "tritonserver from nvidia-pytriton ' + v('nvidia-pytriton') + ', tritonclient ' + "
        "v('tritonclient') + ', Python ' + __import__('platform').python_version())"
    )
    out = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **GPU_ENV},
        timeout=300,
        check=False,
    )
    return out.stdout.strip() or "versions unknown"


def vllm_version_note() -> str:
    """Names the GPU stack's vLLM as older than the serving image's, when it is."""
    pins = pinned_versions()
    gpu, serving = pins.get("VLLM_GPU_VERSION"), pins.get("VLLM_VERSION")
    if gpu is None or gpu == serving:
        return ""
    return (
        f" vLLM {gpu} (`VLLM_GPU_VERSION`) is not the serving image's and the CPU tests' "
        f"{serving} (`VLLM_VERSION`): the GPU machine's preinstalled torch "
        f"{pins.get('TORCH_GPU_VERSION', '?')} forces it."
    )


def report(
    summaries: list[Summary],
    tp: int,
    settings: dict[str, Any],
    gpu: str,
    versions_line: str,
    out_dir: Path,
    notes: list[str],
    name: str = "",
) -> str:
    """The report's markdown, written with its plot as ``name``.md and .png in ``out_dir``
    (default gpu-tp<tp>)."""
    file_name = name or f"gpu-tp{tp}"
    raw = {_level(s): s for s in summaries if s.path == "raw"}
    lines = [
        f"# GPU: Triton + tritonvllm against the raw vLLM engine, tensor parallel {tp}",
        "",
        f"`make bench-gpu BENCH_ARGS='{settings.get('bench_args', f'--tp {tp}')}'`, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, on {gpu}.",
        f"Versions: {versions_line}.{vllm_version_note()}",
        "",
        "Model: a Llama 3 8B-shaped config (bfloat16) with `load_format: dummy` (random weights) "
        "and a word-level tokenizer of 128,256 tokens (`hack/tiny_model.py --shape llama-8b`). "
        f"Engine arguments (model.json as the operator renders it for TP={tp}, read by both "
        f"sides): `{json.dumps(settings['engine_args'])}`. Sampling: "
        f"`{_sampling_text(settings['sampling'])}`; {settings['prompt_tokens']}-token prompts, "
        "each distinct. Each level: a closed loop of C streams (each sends its next request when "
        "the previous finished) after a warm-up round; the Triton side spreads the streams over "
        "client processes (gRPC `ModelStreamInfer`, one stream per worker). TTFT: request sent "
        "to the first response carrying a token. Responses/request: streamed responses counted "
        "by the client (raw: DELTA outputs the caller received). Ratios are against the raw "
        "engine at the same concurrency.",
        "",
        "| C | path | requests | output tok/s | req/s | TTFT p50 (ms) | TTFT p99 (ms) "
        "| responses/req | tok/s ratio | TTFT p50 overhead (ms) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        base = raw.get(_level(s))
        is_raw = s.path == "raw"
        ratio = s.tokens_per_s / base.tokens_per_s if base else math.nan
        overhead = s.ttft_p50_ms - base.ttft_p50_ms if base else math.nan
        name = (
            "raw vLLM (AsyncLLM, in process)"
            if is_raw
            else f"Triton gRPC, {_processes(s)} client process{'es' if _processes(s) > 1 else ''}"
        )
        lines.append(
            f"| {_level_label(s)} | {name} | {s.requests} | {s.tokens_per_s:.0f} | "
            f"{s.requests_per_s:.2f} | {s.ttft_p50_ms:.1f} | {s.ttft_p99_ms:.1f} | "
            f"{s.responses_per_request:.1f} | {'1.00' if is_raw else f'{ratio:.3f}'} | "
            f"{'-' if is_raw or not base else f'{overhead:+.1f}'} |"
        )
    columns = ["clients", "tritonserver", "backend stub", "AsyncLLM process", "EngineCore"]
    lines += [
        "",
        f"CPU used during each level, in % of one core ({os.cpu_count()} cores); clients: "
        "every client process's whole run, warm-up included; machine: all processes:",
        "",
        "| C | path | " + " | ".join(columns) + " | machine |",
        "| ---: | --- | " + " | ".join("---:" for _ in columns) + " | ---: |",
    ]
    for s in summaries:
        used = dict(s.cpu_percent)
        machine = sum(used.values())  # the benchmark's own plus everything else (OUTSIDE)
        cells = [f"{used[c]:.0f}" if c in used else "-" for c in columns]
        name = "raw" if s.path == "raw" else f"Triton, {_processes(s)} clients"
        lines.append(f"| {_level_label(s)} | {name} | " + " | ".join(cells) + f" | {machine:.0f} |")
    waits = ["client TTFT", "engine TTFT", "engine queue", "outside the engine"]
    lines += _means_table(
        "Where a Triton request's first token waited, mean ms: as the client saw it; as the "
        f"engine saw it (`{ENGINE_TTFT}`: arrival in AsyncLLM to the first token), of which in "
        f"the engine's waiting queue (`{ENGINE_QUEUE}`); and the difference, spent outside the "
        "engine (client, gRPC, Triton's front end, the stub before `add_request` and after the "
        "first output; for the raw engine, its caller in the same process).",
        ("path", "---"),
        waits,
        [
            ("raw" if s.path == "raw" else f"Triton, {_processes(s)} clients", s, s.waits_ms)
            for s in summaries
        ],
    )
    lines += _means_table(
        "Where a Triton request's time went, mean ms, from the backend's hop log "
        f"(`{HOP_LOG_ENV}`; CLOCK_MONOTONIC times of the client and the backend stub on one "
        "machine): to the first token, then from the final output. Loop to first output holds "
        "`add_request` (tokenizing) and the engine's TTFT (above).",
        ("clients", "---:"),
        [label for label, _, _ in HOP_SEGMENTS],
        [(str(_processes(s)), s, s.hops_ms) for s in summaries if s.hops_ms and s.path != "raw"],
    )
    lines += _means_table(
        "Where a request's whole time went, ms: the client's time to its last token and the "
        f"engine's own e2e latency (`{ENGINE_E2E}`: arrival in AsyncLLM to the finished output), "
        "means over the level from the engine's histogram, and their difference (outside the "
        "engine); then per request, from the hop log (Triton only), the same difference (its "
        "start on the engine loop to its final engine output, taken from the client's time) and "
        "the final output's way to the client, p50 and p99.",
        ("path", "---"),
        ["client e2e", "engine e2e", "e2e outside the engine", *FINAL_WAITS],
        [
            (
                "raw" if s.path == "raw" else f"Triton, {_processes(s)} clients",
                s,
                {**s.waits_ms, **s.hops_ms},
            )
            for s in summaries
        ],
    )
    if any(s.rate for s in summaries):
        lines += [
            "",
            "A C of R/s is an open loop instead, after a warm-up round of "
            f"{OPEN_LOOP_WARMUP} streams: requests sent at the same Poisson arrival times of R a "
            "second to both paths (on the Triton side dealt out to the client processes in "
            "turn), each when its time comes whatever is in flight. Both are sent the same "
            "arrivals, so the TTFT difference is what a request pays on its way, not how a "
            "closed loop's arrivals bunch; tokens/s is then the offered load, and a ratio below "
            "1 means that path fell behind it.",
        ]
    if notes:
        lines += ["", *notes]
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{file_name}.md").write_text(text)
    plot(summaries, tp, gpu, out_dir / f"{file_name}.png")
    return text


def _shown_args(argv: list[str]) -> str:
    """The command line as the report shows it: without where it wrote (a machine's paths)."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--out", "--work-dir"):
            skip = True
        elif not arg.startswith(("--out=", "--work-dir=")):
            shown.append(arg)
    return " ".join(shown)


def _sampling_text(sampling: dict[str, Any]) -> str:
    """The sampling parameters as JSON, a long list of stop ids shortened to its range."""
    ids = sampling.get("stop_token_ids")
    if ids and len(ids) > 4:
        sampling = {**sampling, "stop_token_ids": f"{len(ids)} ids, {min(ids)}-{max(ids)}"}
    return json.dumps(sampling)


def _means_table(
    caption: str,
    second: tuple[str, str],
    columns: list[str],
    rows: list[tuple[str, Summary, dict[str, float]]],
) -> list[str]:
    """A caption and a table of means in ms: the level, a ``second`` column (its name and
    alignment), then ``columns`` (each row's name, summary and values; "-" where missing)."""
    lines = [
        "",
        caption,
        "",
        f"| C | {second[0]} | " + " | ".join(columns) + " |",
        f"| ---: | {second[1]} | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for name, summary, values in rows:
        cells = [f"{values[c]:.1f}" if c in values else "-" for c in columns]
        lines.append(f"| {_level_label(summary)} | {name} | " + " | ".join(cells) + " |")
    return lines


def plot(summaries: list[Summary], tp: int, gpu: str, target: Path) -> None:
    """Throughput, TTFT and the ratio by concurrency: raw, Triton with the default number of
    client processes (a line), Triton with more client processes (points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [s for s in summaries if not s.rate]  # closed loops only: x is concurrency
    if not summaries:
        return
    raw = {s.concurrency: s for s in summaries if s.path == "raw"}
    triton = [s for s in summaries if s.path != "raw"]
    fewest: dict[int, int] = {}
    for s in triton:
        fewest[s.concurrency] = min(fewest.get(s.concurrency, 1 << 30), _processes(s))
    line = [s for s in triton if _processes(s) == fewest[s.concurrency]]
    more = [s for s in triton if _processes(s) != fewest[s.concurrency]]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    series = [
        ("raw vLLM (AsyncLLM)", list(raw.values()), "o-", "tab:blue"),
        ("Triton + tritonvllm, gRPC", line, "o-", "tab:orange"),
        ("Triton, twice the client processes", more, "s", "tab:red"),
    ]
    for label, rows, style, color in series:
        if not rows:
            continue
        xs = [s.concurrency for s in rows]
        left.plot(xs, [s.tokens_per_s for s in rows], style, color=color, label=label)
        middle.plot(xs, [s.ttft_p50_ms for s in rows], style, color=color, label=f"{label}, p50")
        compared = [s for s in rows if s.path != "raw" and s.concurrency in raw]
        if compared:  # a run of the Triton path alone has no ratios
            right.plot(
                [s.concurrency for s in compared],
                [s.tokens_per_s / raw[s.concurrency].tokens_per_s for s in compared],
                style,
                color=color,
                label=label,
            )
    left.set(xscale="log", xlabel="concurrency", ylabel="output tokens/s", title="Throughput")
    middle.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="TTFT")
    right.axhline(0.98, color="grey", linestyle="--", label="target 0.98")
    right.set(xscale="log", xlabel="concurrency", ylabel="Triton / raw", title="Throughput ratio")
    right.set_ylim(0, 1.1)
    for axis in (left, middle, right):
        axis.legend(fontsize=8)
    fig.suptitle(f"tritonvllm vs raw vLLM, 8B-shape Llama, TP={tp}, {gpu}", fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def profile_stub(
    server_pid: int, seconds: float, out: Path, processes: int
) -> subprocess.Popen[bytes] | None:
    """py-spy (on PATH) records the backend stub for ``seconds``, after a delay that skips the
    clients' start and warm-up; writes stub-profile-p<processes>.txt (raw) and .svg into out."""
    import shutil

    spy = shutil.which("py-spy")
    stubs = [
        pid
        for pid in _descendants(server_pid)
        if Path(f"/proc/{pid}/comm").read_text().startswith("triton_python")
    ]
    if spy is None or not stubs:
        print(f"no profile: py-spy {spy}, stubs {stubs}", file=sys.stderr, flush=True)
        return None
    out.mkdir(parents=True, exist_ok=True)
    script = (
        f"sleep 8; {spy} record --pid {stubs[0]} --duration {int(seconds)} --rate 200 "
        f"--format raw --output {out}/stub-profile-p{processes}.txt --nonblocking --threads "
        f">{out}/stub-profile-p{processes}.log 2>&1"
    )
    return subprocess.Popen(["bash", "-c", script])


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(children)
        tree |= children
    return sorted(tree - {root})


def _processes(summary: Summary) -> int:
    return int(summary.path.split(":")[1])


def _level(summary: Summary) -> tuple[int, float]:
    """What a row measured: the closed loop's concurrency, or the open loop's rate."""
    return (summary.concurrency, summary.rate)


def _level_label(summary: Summary) -> str:
    return f"{summary.rate:g}/s" if summary.rate else str(summary.concurrency)


def replot(results: Path) -> None:
    """Redraw the plot from a run's saved results (gpu-tp<N>.json)."""
    data = json.loads(results.read_text())
    summaries = [Summary(**s) for s in data["summaries"]]
    plot(summaries, data["tp"], data["gpu"], results.with_suffix(".png"))


# ---------------------------------------------------------------------------------------------
# The OpenAI path: our OpenAI port against `vllm serve`, the field's load client


def openai_paths(
    python: Path,
    work: Path,
    model_dir: Path,
    engine_args: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    """``vllm bench serve`` against our OpenAI port and ``vllm serve``; writes gpu-openai.*"""
    from bench import openai_vs_vllm_serve as oai
    from tests.operator_process import free_ports

    venv = python.parent.parent
    levels = [int(c) for c in (args.openai_concurrency or args.concurrency).split(",")]
    bench_args = argparse.Namespace(
        input_len=args.prompt_tokens,
        output_len=args.max_tokens,
        requests_per_stream=4,
        min_requests=8,
        rounds=args.openai_rounds,
    )
    started = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    ours_port, vllm_port = free_ports(2)
    repository = write_repository(
        work / "openai-repository",
        model_dir,
        engine_args,
        {"OPENAI_API_PORT": str(ours_port), "OPENAI_API_HOST": "127.0.0.1"},
        oai.MODEL,
        args.tp,
    )
    rendered = json.loads((repository / oai.MODEL / "1" / "model.json").read_text())
    rendered.pop("model", None)
    results: list[Any] = []
    gpu = gpu_description()
    versions_line = stack_versions(python)

    def write() -> None:
        header = [
            "# GPU: the backend's OpenAI port against `vllm serve`, same engine, same client",
            "",
            f"`make bench-gpu BENCH_ARGS='--paths openai'` (bench/gpu_bench.py), {started}, on "
            f"{gpu}. Versions: {versions_line}; vLLM 0.24.0 is older than the serving image's "
            "and the CPU tests' (versions.env `VLLM_VERSION`): the GPU machine's preinstalled "
            "torch 2.11 forces it (`VLLM_GPU_VERSION`).",
            "",
            "Model: a Llama 3 8B-shaped config (bfloat16) with `load_format: dummy` (random "
            "weights) and a word-level tokenizer of 128,256 tokens (`hack/tiny_model.py --shape "
            "llama-8b`). Both servers were up at once on the one GPU, on the same engine "
            f"arguments: `{json.dumps(rendered)}` (ours: model.json as the operator renders it, "
            "with `OPENAI_API_PORT` set through spec.triton.config; `vllm serve`: the same as "
            "flags; `max_num_batched_tokens` named because the two entry points default it "
            "differently). Load client: `vllm bench serve --backend openai` (`/v1/completions`, "
            f"streamed), random prompts of {args.prompt_tokens} tokens, {args.max_tokens} output "
            "tokens each (`--ignore-eos`, temperature 0), `--max-concurrency C`, 4 x C requests "
            f"(8 at C=1) after C warm-up requests. {args.openai_rounds} round(s) per level, the "
            "two servers back to back in each, the order alternating; each row is that "
            "server's median round by tokens/s. Target: >= 0.95x `vllm serve`'s "
            "output tok/s and TTFT p50 within 1.1x at every concurrency.",
        ]
        text = oai.render_markdown(
            results, bench_args, started, (0.0, 0.0), header, "gpu-openai.png"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu-openai.md").write_text(text + "".join(f"\n{n}\n" for n in args.note))
        (args.out / "gpu-openai.json").write_text(
            json.dumps(
                {"gpu": gpu, "versions": versions_line, "engine_args": rendered,
                 "results": [r.__dict__ for r in results]},
                indent=1,
            )
        )  # fmt: skip
        if results:
            oai.plot(results, args.out / "gpu-openai.png")

    print("tritonserver with its OpenAI port ...", file=sys.stderr, flush=True)
    begun = time.monotonic()
    # One server after the other: each profiles the GPU's free memory as it starts.
    with oai.tritonserver(
        repository, work / "openai-tritonserver.log", oai.MODEL, avoid=(ours_port, vllm_port)
    ):
        print(f"ready in {time.monotonic() - begun:.0f} s", file=sys.stderr, flush=True)
        begun = time.monotonic()
        with oai.vllm_serve(
            venv, model_dir, vllm_port, rendered, work / "vllm-serve.log"
        ) as theirs:
            print(f"vllm serve ready in {time.monotonic() - begun:.0f} s", file=sys.stderr)
            urls = {"ours": f"http://127.0.0.1:{ours_port}", "vllm": theirs}
            runs = 0
            for level in levels:
                rounds: dict[str, list[Any]] = {target: [] for target in oai.TARGETS}
                for index in range(args.openai_rounds):
                    order = list(oai.TARGETS) if runs % 2 == 0 else list(reversed(oai.TARGETS))
                    runs += 1
                    for target in order:
                        data = oai.bench_level(
                            venv, urls[target], model_dir, level, bench_args,
                            work / f"openai-{target}-c{level}-r{index}.json",
                            work / "openai-client.log",
                        )  # fmt: skip
                        result = oai.Result.from_bench(target, level, data)
                        rounds[target].append(result)
                        print(
                            f"C={level} round {index} {oai.TARGETS[target]}: "
                            f"{result.tokens_per_s:.0f} tok/s, TTFT p50 "
                            f"{result.ttft_p50_ms:.1f} ms, ITL p50 {result.itl_p50_ms:.2f} ms",
                            file=sys.stderr,
                            flush=True,
                        )
                results.extend(oai.median_round(rounds[target]) for target in oai.TARGETS)
                write()  # after every level: a run stopped at its time limit keeps the rest
    write()
    print((args.out / "gpu-openai.md").read_text())


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tp", type=int, default=1, help="tensor parallel size (GPUs)")
    parser.add_argument("--concurrency", default="1,16,64,256", help="comma-separated levels")
    parser.add_argument("--requests", default="", help="requests per level (default 8 at C=1, "
                        "else max(64, 4 x C))")  # fmt: skip
    parser.add_argument(
        "--request-rates", default="",
        help="comma-separated open-loop levels, requests a second (after the closed loops)",
    )  # fmt: skip
    parser.add_argument(
        "--open-loop-seconds", type=float, default=15.0, help="each open-loop level's length"
    )
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--workload", choices=WORKLOADS, default="fixed",
        help="fixed: max-tokens each, ignore_eos; eos: outputs ending on their own (see WORKLOADS)",
    )  # fmt: skip
    parser.add_argument("--name", default="", help="the report's file name (default gpu-tp<N>)")
    parser.add_argument("--client-processes", type=int, default=8)
    parser.add_argument("--paths", default="raw,triton", help="raw,triton and/or openai")
    parser.add_argument("--openai-rounds", type=int, default=2)
    parser.add_argument("--openai-concurrency", default="", help="levels (default --concurrency)")
    parser.add_argument(
        "--openai-gpu-memory-utilization", type=float, default=0.42,
        help="each of the two OpenAI servers' share (both are up at once)",
    )  # fmt: skip
    parser.add_argument(
        "--openai-max-num-batched-tokens", type=int, default=8192,
        help="set for both OpenAI servers (vllm serve's default on this GPU; AsyncLLM's is 2048)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-stub", type=float, default=0.0, metavar="SECONDS",
        help="py-spy the backend stub for this long during the top concurrency (Triton path)",
    )  # fmt: skip
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--work-dir", type=Path, help="keep logs and the repository here")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--note", action="append", default=[], help="a line for the report")
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config.pbtxt parameter, set through spec.triton.config",
    )
    parser.add_argument(
        "--replot", type=Path, help="only redraw the plot of a saved gpu-tp<N>.json"
    )
    args = parser.parse_args(argv)
    if args.replot:
        replot(args.replot)
        return 0
    os.environ.update({k: os.environ.get(k, v) for k, v in GPU_ENV.items()})
    # The servers run in sessions of their own; stopped by a time limit (SIGTERM), unwind so
    # that their context managers stop them, rather than leave them holding the GPU's memory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    totals = [int(n) for n in args.requests.split(",")] if args.requests else []
    # (concurrency, requests, rate): closed loops, then open loops (warmed up with 64 streams).
    levels = [
        (c, totals[i] if totals else (8 if c == 1 else max(64, 4 * c)), 0.0)
        for i, c in enumerate(concurrencies)
    ]
    for rate in (float(r) for r in args.request_rates.split(",") if r):
        levels.append((OPEN_LOOP_WARMUP, max(64, round(rate * args.open_loop_seconds)), rate))
    paths = args.paths.split(",")
    engine_args = {
        "load_format": "dummy",
        "dtype": "bfloat16",
        "max_model_len": 1024,
        "max_num_seqs": max([256, *concurrencies]),
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "enable_prefix_caching": False,
        "seed": 0,
    }
    sampling = workload_sampling(args.workload, args.max_tokens)
    prompt_list = prompts(max(n + c for c, n, _ in levels), args.prompt_tokens)
    gpu_env = Path(
        subprocess.run(
            [str(ROOT / "hack" / "gpu-env.sh"), "--print"],
            capture_output=False,
            stdout=subprocess.PIPE,
            text=True,
            check=True,
            timeout=3600,
        ).stdout.strip()
    )
    python = gpu_env / "venv" / "bin" / "python"
    os.environ["SERVING_ENV"] = str(gpu_env)
    summaries: list[Summary] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir = make_tiny_model(python, work / "model", "--shape", "llama-8b")
        repository = write_repository(
            work / "model-repository",
            model_dir,
            engine_args,
            dict(p.split("=", 1) for p in args.parameter),
            MODEL,
            args.tp,
        )
        if "openai" in paths:
            openai_args = {
                **engine_args,
                "gpu_memory_utilization": args.openai_gpu_memory_utilization,
                "max_num_batched_tokens": args.openai_max_num_batched_tokens,
            }
            openai_paths(python, work, model_dir, openai_args, args)
        if "raw" in paths:
            print("raw vLLM engine ...", file=sys.stderr, flush=True)
            config = {
                "model_json": str(repository / MODEL / "1" / "model.json"),
                "prompts": prompt_list,
                "sampling": sampling,
                "levels": levels,
            }
            begun = time.monotonic()
            raw_levels = run_raw(python, config, work, work / "raw-engine.log")
            print(f"raw done in {time.monotonic() - begun:.0f} s", file=sys.stderr, flush=True)
            summaries += [summarize("raw", level) for level in raw_levels]
            for summary, level in zip(summaries[-len(raw_levels) :], raw_levels, strict=True):
                summary.waits_ms = first_token_waits(level.records, level.engine_histograms)
        if "triton" in paths:
            print("tritonserver ...", file=sys.stderr, flush=True)
            begun = time.monotonic()
            hop_log = work / "hops.jsonl"
            os.environ[HOP_LOG_ENV] = str(hop_log)
            with tritonserver(repository, work / "tritonserver.log", MODEL) as (
                pid, _, grpc, metrics
            ):  # fmt: skip
                print(f"ready in {time.monotonic() - begun:.0f} s", file=sys.stderr, flush=True)
                top = max(concurrencies, default=0)
                for concurrency, total, rate in levels:
                    counts = [args.client_processes]
                    if concurrency == top and not rate:
                        counts.append(2 * args.client_processes)
                    for processes in counts:
                        profile = None
                        if (
                            args.profile_stub
                            and concurrency == top
                            and not rate
                            and processes == counts[0]
                        ):
                            profile = profile_stub(pid, args.profile_stub, args.out, processes)
                        level, waits, hops = triton_level(
                            pid, grpc, sampling, prompt_list, concurrency, total, processes,
                            metrics=metrics, hop_log=hop_log, rate=rate,
                        )  # fmt: skip
                        if profile is not None:
                            profile.wait(timeout=args.profile_stub + 60)
                        used = max(1, min(processes, concurrency))
                        summaries.append(summarize(f"triton:{used}", level))
                        summaries[-1].waits_ms = waits
                        summaries[-1].hops_ms = hops
                        print(
                            f"{_level_label(summaries[-1])} P={used}: "
                            f"{summaries[-1].tokens_per_s:.0f} tok/s",
                            file=sys.stderr,
                            flush=True,
                        )
        if not summaries:
            return 0
        summaries.sort(
            key=lambda s: (
                s.rate,
                s.concurrency,
                s.path != "raw",
                0 if s.path == "raw" else _processes(s),
            )
        )
        engine_args_rendered = json.loads((repository / MODEL / "1" / "model.json").read_text())
        engine_args_rendered.pop("model", None)
        gpu = gpu_description()
        text = report(
            summaries,
            args.tp,
            {
                "engine_args": engine_args_rendered,
                "sampling": sampling,
                "prompt_tokens": args.prompt_tokens,
                "bench_args": _shown_args(argv if argv is not None else sys.argv[1:]),
            },
            gpu,
            stack_versions(python),
            args.out,
            args.note,
            args.name,
        )
        results = {
            "tp": args.tp,
            "gpu": gpu,
            "workload": args.workload,
            "sampling": sampling,
            "summaries": [vars(s) for s in summaries],
        }
        name = args.name or f"gpu-tp{args.tp}"
        (args.out / f"{name}.json").write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
