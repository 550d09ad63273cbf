"""make bench-backend: Triton + the bundled tritonvllm backend against the raw vLLM engine.

The same prompts, sampling parameters and engine arguments go through
(a) the raw vLLM engine: AsyncLLM in process (bench/raw_engine_bench.py, serving venv),
    streamed with RequestOutputKind.DELTA;
(b) a real tritonserver with the bundled backend, over gRPC streaming (one bidirectional stream
    per client worker) and over HTTP (/generate_stream, server-sent events),
at each concurrency level: a closed loop of C workers, each sending its next request when the
previous one finished, after a warm-up round. Measured: output tokens/s and requests/s over the
level's wall time, time to first token (p50/p99: request sent -> first response with a token),
streamed responses per request (counted by the client), and the CPU each process used.

The model is the tiny random Llama of hack/tiny_model.py (every generation runs to max_tokens;
ignore_eos is set anyway), the model repository is the one the operator renders
(``model_repository_files``): config.pbtxt as deployed, model.json read by both sides.
Writes docs/benchmarks/backend.md and backend.png and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.raw_engine_bench import (
    MACHINE,
    Level,
    Record,
    machine_busy_seconds,
    run_levels,
    tree_cpu_seconds,
)
from tests.operator_process import free_ports

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"
MODEL = "tiny"
PATHS = ("raw", "grpc", "http")
PATH_NAMES = {
    "raw": "raw vLLM (AsyncLLM)",
    "grpc": "Triton gRPC stream",
    "http": "Triton HTTP generate_stream",
}
COLORS = {"raw": "tab:blue", "grpc": "tab:orange", "http": "tab:green"}
# Fixed prompts, words of the tiny model's vocabulary (one token each, plus BOS).
PROMPTS = [
    "The capital of France is",
    "The quick brown fox jumps over the lazy dog and then",
    "Once upon a time there was a little girl who lived in a house near the sea",
    "Write a story about the moon and the stars",
    "The people of the city began to walk along the river",
    "My father said that the most important thing in life is",
    "Every morning the boy would read a book under the big tree",
    "Here is a list of the different animals that live on the mountain",
]
OUTSIDE = "not this benchmark"
CPU_COLUMNS = [
    "client",
    "tritonserver",
    "backend stub",
    "AsyncLLM process",
    "EngineCore",
    "Worker",
    "other",
]
START_TIMEOUT_S = 600
# backend.md from this line on is written by hand and kept when the script rewrites the file.
KEPT_MARKER = (
    "<!-- written by hand from here on: kept when make bench-backend rewrites this file -->"
)
REQUEST_TIMEOUT_S = 600


@dataclass
class Summary:
    path: str
    concurrency: int
    requests: int
    wall_s: float
    tokens_per_s: float
    requests_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    latency_p50_ms: float
    responses_per_request: float
    tokens_per_request: float
    cpu_percent: dict[str, float]
    # Where the first token waited, in ms (Triton levels of make bench-gpu; see gpu_bench.py).
    waits_ms: dict[str, float] = field(default_factory=dict)
    # Where a Triton request's time went, in ms, from the backend's hop log (gpu_bench.py).
    hops_ms: dict[str, float] = field(default_factory=dict)
    # Requests a second offered in an open loop; 0 for a closed loop of ``concurrency`` streams.
    rate: float = 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(path: str, level: Level) -> Summary:
    records = level.records
    wall = max(r.done for r in records) - level.started
    cpu = dict(level.cpu_s)
    machine = cpu.pop(MACHINE, math.nan)
    cpu[OUTSIDE] = max(0.0, machine - sum(cpu.values()))
    tokens = sum(r.tokens for r in records)
    return Summary(
        path=path,
        concurrency=level.concurrency,
        requests=len(records),
        wall_s=wall,
        tokens_per_s=tokens / wall,
        requests_per_s=len(records) / wall,
        ttft_p50_ms=statistics.median((r.first_token - r.sent) * 1000 for r in records),
        ttft_p99_ms=percentile([(r.first_token - r.sent) * 1000 for r in records], 0.99),
        latency_p50_ms=statistics.median((r.done - r.sent) * 1000 for r in records),
        responses_per_request=statistics.fmean(r.responses for r in records),
        tokens_per_request=tokens / len(records),
        cpu_percent={name: 100 * s / wall for name, s in cpu.items()},
        rate=level.rate,
    )


# ---------------------------------------------------------------------------------------------
# The model, its repository, the raw engine run


def serving_env() -> Path:
    out = subprocess.run(
        [str(ROOT / "hack" / "serving-env.sh"), "--print"],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return Path(out.stdout.strip())


def make_tiny_model(serving_python: Path, out: Path, *options: str) -> Path:
    """hack/tiny_model.py OUT [OPTIONS] with the given python (it needs transformers)."""
    subprocess.run(
        [str(serving_python), str(ROOT / "hack" / "tiny_model.py"), str(out), *options],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def write_repository(
    root: Path,
    model_dir: Path,
    engine_args: dict[str, Any],
    parameters: dict[str, str] | None = None,
    name: str = MODEL,
    tensor_parallel_size: int = 1,
) -> Path:
    """The model repository exactly as the operator renders it for a pod.

    ``parameters`` go through the model's spec.triton.config, as a user would set them.
    """
    from triton_vllm_operator.api import TritonVLLMModel
    from triton_vllm_operator.render import model_repository_files

    model = TritonVLLMModel.model_validate(
        {
            "apiVersion": "tritonvllm.io/v1alpha1",
            "kind": "TritonVLLMModel",
            "metadata": {"name": name},
            "spec": {
                "model": str(model_dir),
                "engineArgs": engine_args,
                # Triton's path is measured here; bench/openai_vs_vllm_serve.py measures the other.
                "openai": {"enabled": False},
                "triton": {
                    "config": {
                        "parameters": {
                            key: {"string_value": value}
                            for key, value in (parameters or {}).items()
                        }
                    }
                    if parameters
                    else {}
                },
            },
        }
    )
    for relative, content in model_repository_files(model, tensor_parallel_size).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def run_raw(serving_python: Path, config: dict[str, Any], work: Path, log: Path) -> list[Level]:
    """The raw engine side, in its own process with the serving venv's python."""
    config_file, result_file = work / "raw-config.json", work / "raw-result.json"
    config_file.write_text(json.dumps(config))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with log.open("w") as log_file:
        done = subprocess.run(
            [
                str(serving_python),
                str(ROOT / "bench" / "raw_engine_bench.py"),
                str(config_file),
                str(result_file),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
            timeout=3600,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the raw engine run failed:\n{log.read_text()[-4000:]}")
    return [Level.from_json(level) for level in json.loads(result_file.read_text())]


# ---------------------------------------------------------------------------------------------
# tritonserver and its clients


@contextlib.contextmanager
def tritonserver(
    repository: Path, log: Path, model: str = MODEL, avoid: tuple[int, ...] = ()
) -> Iterator[tuple[int, str, str, str]]:
    """hack/run-tritonserver.sh on free 127.0.0.1 ports; yields (pid, http, grpc, metrics)
    addresses once ready.

    ``avoid``: ports chosen for other servers (such as the model's OpenAI port), not yet bound.
    """
    import requests

    http, grpc, metrics = free_ports(3)
    while set(avoid) & {http, grpc, metrics}:
        http, grpc, metrics = free_ports(3)
    env = {
        **os.environ,
        "TRITON_HTTP_PORT": str(http),
        "TRITON_GRPC_PORT": str(grpc),
        "TRITON_METRICS_PORT": str(metrics),
    }
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [str(ROOT / "hack" / "run-tritonserver.sh"), str(repository)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(requests.RequestException):
                url = f"http://127.0.0.1:{http}/v2/models/{model}/ready"
                if requests.get(url, timeout=5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver did not become ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield process.pid, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"127.0.0.1:{metrics}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def count_tokens(text: str) -> int:
    """The tiny model's tokens are whole words, each with its leading space."""
    return len(text.split())


class GrpcStreams:
    """A pool of bidirectional gRPC streams, one per client worker, on one channel.

    Requests are built as tritonclient's synchronous client builds them, with
    ``triton_enable_empty_final_response`` so every response says whether it is the last.
    """

    def __init__(self, url: str, sampling: dict[str, Any], model: str = MODEL) -> None:
        import tritonclient.grpc.aio as grpcaio

        self._client = grpcaio.InferenceServerClient(url)
        self._sampling = json.dumps(sampling)
        self._model = model
        self._idle: list[_Stream] = []
        self._all: list[_Stream] = []

    async def one(self, prompt: str, index: int) -> Record:
        stream = self._idle.pop() if self._idle else self._open()
        try:
            return await stream.request(self._request(prompt))
        finally:
            self._idle.append(stream)

    def _open(self) -> _Stream:
        stream = _Stream(self._client)
        self._all.append(stream)
        return stream

    def _request(self, prompt: str) -> Any:
        import numpy as np
        import tritonclient.grpc as grpcclient
        from tritonclient.grpc._utils import _get_inference_request

        text = grpcclient.InferInput("text_input", [1], "BYTES")
        text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
        stream = grpcclient.InferInput("stream", [1], "BOOL")
        stream.set_data_from_numpy(np.array([True]))
        sampling = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
        sampling.set_data_from_numpy(np.array([self._sampling.encode()], dtype=np.object_))
        counts = grpcclient.InferInput("return_num_output_tokens", [1], "BOOL")
        counts.set_data_from_numpy(np.array([True]))
        request = _get_inference_request(
            model_name=self._model,
            inputs=[text, stream, sampling, counts],
            model_version="",
            request_id=uuid.uuid4().hex,
            outputs=None,
            sequence_id=0,
            sequence_start=False,
            sequence_end=False,
            priority=0,
            timeout=None,
            parameters=None,
        )
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        return request

    async def close(self) -> None:
        for stream in self._all:
            await stream.close()
        await self._client.close()


class _Stream:
    """One ModelStreamInfer call fed from a queue; serves one request at a time."""

    def __init__(self, client: Any) -> None:
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._call = client._client_stub.ModelStreamInfer(self._feed(), timeout=None)

    async def _feed(self) -> AsyncIterator[Any]:
        while True:
            request = await self._requests.get()
            if request is None:
                return
            yield request

    async def request(self, request: Any) -> Record:
        from tritonclient.grpc import InferResult

        sent = time.monotonic()
        first = 0.0
        tokens = responses = 0
        await self._requests.put(request)
        while True:
            message = await asyncio.wait_for(self._call.read(), REQUEST_TIMEOUT_S)
            if message.error_message:
                raise RuntimeError(f"stream error: {message.error_message}")
            response = message.infer_response
            if response.outputs:
                produced = int(InferResult(response).as_numpy("num_output_tokens").sum())
                if produced and not first:
                    first = time.monotonic()
                tokens += produced
                responses += 1
            if response.parameters["triton_final_response"].bool_param:
                return Record(sent, first, time.monotonic(), tokens, responses, request.id)

    async def close(self) -> None:
        await self._requests.put(None)
        self._call.cancel()


class HttpStreams:
    """POST /v2/models/<model>/generate_stream, reading the server-sent events."""

    def __init__(self, url: str, sampling: dict[str, Any], concurrency: int) -> None:
        import aiohttp

        self._url = f"http://{url}/v2/models/{MODEL}/generate_stream"
        self._sampling = json.dumps(sampling)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(concurrency, 1)),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )

    async def one(self, prompt: str, index: int) -> Record:
        body = {"text_input": prompt, "stream": True, "sampling_parameters": self._sampling}
        sent = time.monotonic()
        first = 0.0
        tokens = responses = 0
        async with self._session.post(self._url, json=body) as response:
            response.raise_for_status()
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[5:])
                if "error" in event:
                    raise RuntimeError(f"generate_stream error: {event['error']}")
                produced = count_tokens(event.get("text_output", ""))
                if produced and not first:
                    first = time.monotonic()
                tokens += produced
                responses += 1
        return Record(sent, first, time.monotonic(), tokens, responses)

    async def close(self) -> None:
        await self._session.close()


async def run_triton_path(
    path: str,
    server_pid: int,
    http: str,
    grpc: str,
    sampling: dict[str, Any],
    levels: list[tuple[int, int]],
) -> list[Level]:
    def cpu() -> dict[str, float]:
        return {
            **tree_cpu_seconds(server_pid),
            "client": time.process_time(),
            MACHINE: machine_busy_seconds(),
        }

    results = []
    for concurrency, total in levels:
        client: GrpcStreams | HttpStreams = (
            GrpcStreams(grpc, sampling)
            if path == "grpc"
            else HttpStreams(http, sampling, concurrency)
        )
        try:
            results += await run_levels(client.one, PROMPTS, [(concurrency, total)], cpu)
        finally:
            await client.close()
    return results


# ---------------------------------------------------------------------------------------------
# The report


def machine_description() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    memory = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.0f} GiB"
    return (
        f"{model}, {os.cpu_count()} cores, {memory} memory, {platform.machine()}, "
        f"Linux {platform.release()}"
    )


def versions(serving_python: Path) -> str:
    code = (
        "import vllm, torch, numpy; from importlib.metadata import version as v; "
        "print(f'vLLM {vllm.__version__} (vllm-cpu), torch {torch.__version__}, "
        "tritonserver from nvidia-pytriton ' + v('nvidia-pytriton') + ', "
        "Python ' + __import__('platform').python_version())"
    )
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    out = subprocess.run(
        [str(serving_python), "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    from importlib.metadata import version

    client = f"tritonclient {version('tritonclient')}, aiohttp {version('aiohttp')}"
    return f"{out.stdout.strip() or 'serving versions unknown'}; clients: {client}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


def report(
    summaries: list[Summary],
    out_dir: Path,
    settings: dict[str, Any],
    machine: str,
    versions_line: str,
    notes: list[str],
) -> str:
    raw = {s.concurrency: s for s in summaries if s.path == "raw"}
    lines = [
        "# Backend overhead: Triton + tritonvllm against the raw vLLM engine",
        "",
        f"`make bench-backend`, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"on {machine}.",
        f"Versions: {versions_line}.",
        "",
        f"Model: the tiny random Llama of hack/tiny_model.py; engine arguments (model.json as the "
        f"operator renders it, read by both sides): `{json.dumps(settings['engine_args'])}`, "
        "`VLLM_CPU_KVCACHE_SPACE=1`. config.pbtxt as the operator renders it "
        f"(parameters: {settings['parameters']})."
        + (
            " The Triton clients ran at SCHED_FIFO priority 10 (`--client-realtime`)."
            if settings.get("client_realtime")
            else ""
        ),
        f"Sampling: `{json.dumps(settings['sampling'])}`; {len(PROMPTS)} fixed prompts in turn. "
        "Each level: a closed loop of C workers (each sends its next request when the previous "
        f"finished), {settings['requests']} requests, after a warm-up round of C requests. "
        "TTFT: request sent to the first response carrying a token, measured by the client "
        "(for the raw engine: the caller of `AsyncLLM.generate`). Responses/request: streamed "
        "responses counted by the client (raw: DELTA outputs). Ratios are against the raw "
        "engine at the same concurrency.",
        "",
        "| C | path | output tok/s | req/s | TTFT p50 (ms) | TTFT p99 (ms) | e2e p50 (ms) "
        "| responses/req | tok/s ratio | TTFT p50 overhead (ms) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        base = raw.get(s.concurrency)
        ratio = s.tokens_per_s / base.tokens_per_s if base else math.nan
        overhead = s.ttft_p50_ms - base.ttft_p50_ms if base else math.nan
        lines.append(
            f"| {s.concurrency} | {PATH_NAMES[s.path]} | {s.tokens_per_s:.0f} | "
            f"{s.requests_per_s:.1f} | {s.ttft_p50_ms:.1f} | {s.ttft_p99_ms:.1f} | "
            f"{s.latency_p50_ms:.0f} | {s.responses_per_request:.1f} | "
            f"{'1.00' if s.path == 'raw' else fmt_ratio(ratio)} | "
            f"{'-' if s.path == 'raw' or not base else f'{overhead:+.1f}'} |"
        )
    components = [
        name for name in CPU_COLUMNS if any(s.cpu_percent.get(name, 0) >= 0.5 for s in summaries)
    ]
    lines += [
        "",
        f"CPU used during each level, in % of one core (this machine has {os.cpu_count()} "
        f"cores: {100 * (os.cpu_count() or 1)}% is all of it); the last column is what other "
        "processes of the machine used meanwhile:",
        "",
        "| C | path | " + " | ".join(components) + f" | benchmark total | {OUTSIDE} |",
        "| ---: | --- | " + " | ".join("---:" for _ in components) + " | ---: | ---: |",
    ]
    for s in summaries:
        cells = [f"{s.cpu_percent[c]:.0f}" if c in s.cpu_percent else "-" for c in components]
        total = sum(v for name, v in s.cpu_percent.items() if name != OUTSIDE)
        lines.append(
            f"| {s.concurrency} | {PATH_NAMES[s.path]} | "
            + " | ".join(cells)
            + f" | {total:.0f} | {s.cpu_percent.get(OUTSIDE, math.nan):.0f} |"
        )
    if notes:
        lines += ["", *notes]
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "backend.md"
    kept = target.read_text().partition(KEPT_MARKER) if target.exists() else ("", "", "")
    if kept[1]:  # findings written by hand below the marker survive a rerun
        text += "\n" + kept[1] + kept[2]
    target.write_text(text)
    plot(summaries, out_dir / "backend.png")
    return text


def plot(summaries: list[Summary], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = {s.concurrency: s for s in summaries if s.path == "raw"}
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    for path in PATHS:
        rows = [s for s in summaries if s.path == path]
        if not rows:
            continue
        xs = [s.concurrency for s in rows]
        color = COLORS[path]
        left.plot(xs, [s.tokens_per_s for s in rows], "o-", color=color, label=PATH_NAMES[path])
        middle.plot(
            xs, [s.ttft_p50_ms for s in rows], "o-", color=color, label=f"{PATH_NAMES[path]} p50"
        )
        if path != "raw":
            ratio_rows = [s for s in rows if s.concurrency in raw]
            right.plot(
                [s.concurrency for s in ratio_rows],
                [s.tokens_per_s / raw[s.concurrency].tokens_per_s for s in ratio_rows],
                "o-",
                color=color,
                label=PATH_NAMES[path],
            )
    left.set(xscale="log", xlabel="concurrency", ylabel="output tokens/s", title="Throughput")
    middle.set(
        xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="Time to first token"
    )
    right.axhline(0.95, color="grey", linestyle="--", label="target 0.95")
    right.set(xscale="log", xlabel="concurrency", ylabel="Triton / raw", title="Throughput ratio")
    right.set_ylim(bottom=0)
    for axis in (left, middle, right):
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated levels")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per level (default max(32, 4*C))"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--paths", default=",".join(PATHS), help="raw,grpc,http")
    parser.add_argument("--model-dir", type=Path, help="an existing tiny model (else made)")
    parser.add_argument("--work-dir", type=Path, help="keep logs and the repository here")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--note", action="append", default=[], help="a line for the report")
    parser.add_argument(
        "--client-realtime",
        action="store_true",
        help="run the Triton clients at SCHED_FIFO priority 10 (root), as if on a machine of "
        "their own: on a small machine they otherwise wait for CPU behind vLLM's spinning "
        "processes",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config.pbtxt parameter, set through spec.triton.config (e.g. "
        "ENABLE_VLLM_HEALTH_CHECK=false)",
    )
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    paths = [p for p in args.paths.split(",") if p]
    if unknown := set(paths) - set(PATHS):
        parser.error(f"unknown paths {sorted(unknown)}")
    levels = [(c, args.requests or max(32, 4 * c)) for c in concurrencies]
    parameters = dict(p.split("=", 1) for p in args.parameter)
    engine_args = {
        "dtype": "float32",
        "max_model_len": 2048,
        "max_num_seqs": max(64, *concurrencies),
        "seed": 0,
    }
    sampling = {"temperature": 0, "max_tokens": args.max_tokens, "ignore_eos": True}

    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        env = serving_env()
        serving_python = env / "venv" / "bin" / "python"
        model_dir = args.model_dir or make_tiny_model(serving_python, work / "tiny-model")
        repository = write_repository(work / "model-repository", model_dir, engine_args, parameters)
        pbtxt = (repository / MODEL / "config.pbtxt").read_text()
        rendered = re.findall(r'key: "(\w+)"\s+value \{\s+string_value: "([^"]*)"', pbtxt)
        summaries: list[Summary] = []
        if "raw" in paths:
            print("raw vLLM engine ...", file=sys.stderr, flush=True)
            config = {
                "model_json": str(repository / MODEL / "1" / "model.json"),
                "prompts": PROMPTS,
                "sampling": sampling,
                "levels": levels,
            }
            raw_levels = run_raw(serving_python, config, work, work / "raw-engine.log")
            summaries += [summarize("raw", level) for level in raw_levels]
        triton_paths = [p for p in paths if p != "raw"]
        if triton_paths:
            print("tritonserver ...", file=sys.stderr, flush=True)
            with tritonserver(repository, work / "tritonserver.log") as (pid, http, grpc, _):
                if args.client_realtime:  # after the server started: it must not inherit it
                    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
                try:
                    for path in triton_paths:
                        print(f"{path} ...", file=sys.stderr, flush=True)
                        levels_done = asyncio.run(
                            run_triton_path(path, pid, http, grpc, sampling, levels)
                        )
                        summaries += [summarize(path, level) for level in levels_done]
                finally:
                    if args.client_realtime:
                        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        summaries.sort(key=lambda s: (s.concurrency, PATHS.index(s.path)))
        requests_note = str(args.requests) if args.requests else "max(32, 4 x C)"
        text = report(
            summaries,
            args.out,
            {
                "engine_args": engine_args,
                "sampling": sampling,
                "requests": requests_note,
                "parameters": ", ".join(f"`{k}={v}`" for k, v in rendered),
                "client_realtime": args.client_realtime,
            },
            machine_description(),
            versions(serving_python),
            args.note,
        )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
