"""make bench-gpu's report: each Triton row against the raw engine's row of the same level, a
closed loop's concurrency or an open loop's rate, and the hop table for the Triton rows only."""

from pathlib import Path

from bench.backend_overhead import Summary
from bench.gpu_bench import final_waits, report, workload_sampling


def _row(
    path: str, concurrency: int, tokens_per_s: float, ttft_ms: float, rate: float = 0.0
) -> Summary:
    hops = {} if path == "raw" else {"client to execute": 3.0}
    return Summary(
        path, concurrency, 100, 10.0, tokens_per_s, 8.0, ttft_ms, 2 * ttft_ms, 1000.0, 12.0,
        128.0, {"clients": 50.0}, {"client TTFT": ttft_ms}, hops, rate,
    )  # fmt: skip


def test_open_loop_rows_are_compared_with_the_raw_engine_at_the_same_rate(tmp_path: Path) -> None:
    rows = [
        _row("raw", 256, 10_000, 200),
        _row("triton:8", 256, 9_700, 400),
        _row("raw", 64, 9_000, 150, rate=40.0),
        _row("triton:8", 64, 8_800, 160, rate=40.0),
    ]
    settings = {"engine_args": {}, "sampling": {}, "prompt_tokens": 256}
    text = report(rows, 1, settings, "a GPU", "versions", tmp_path, [])
    lines = text.splitlines()
    closed = next(line for line in lines if line.startswith("| 256 | Triton gRPC"))
    opened = next(line for line in lines if line.startswith("| 40/s | Triton gRPC"))
    assert closed.endswith("| 0.970 | +200.0 |")
    assert opened.endswith("| 0.978 | +10.0 |")
    assert "open loop" in text
    hop_rows = [line for line in lines if line.startswith(("| 256 | 8 |", "| 40/s | 8 |"))]
    assert len(hop_rows) == 2  # Triton rows only; the raw engine has no backend hops
    assert (tmp_path / "gpu-tp1.md").read_text() == text
    assert (tmp_path / "gpu-tp1.png").stat().st_size > 0


def test_a_run_of_the_triton_path_alone_still_gets_its_report_and_plot(tmp_path: Path) -> None:
    # bench-gpu --paths triton: no raw rows, so no ratios, but the table and the plot are made
    rows = [_row("triton:8", 64, 9_000, 150), _row("triton:8", 256, 9_700, 400)]
    settings = {"engine_args": {}, "sampling": {}, "prompt_tokens": 256}
    text = report(rows, 1, settings, "a GPU", "versions", tmp_path, [])
    assert any(line.startswith("| 256 | Triton gRPC") for line in text.splitlines())
    assert (tmp_path / "gpu-tp1.png").stat().st_size > 0


def test_a_held_final_response_shows_in_the_time_outside_the_engine() -> None:
    # one request answered 1 ms after its final engine output, one held 300 ms
    quick = {"sent": 0.0, "started": 0.01, "final_output": 1.0, "done": 1.001}
    held = {"sent": 0.0, "started": 0.02, "final_output": 1.0, "done": 1.3}
    waits = final_waits([quick, held])
    assert round(waits["e2e outside the engine p50"]) == 11
    assert round(waits["e2e outside the engine p99"]) == 320
    assert round(waits["final output to client p50"]) == 1
    assert round(waits["final output to client p99"]) == 300


def test_the_eos_workload_ends_outputs_on_stop_tokens_not_at_max_tokens() -> None:
    fixed, eos = workload_sampling("fixed", 128), workload_sampling("eos", 128)
    assert fixed["ignore_eos"] and fixed["max_tokens"] == 128
    assert not eos.get("ignore_eos") and eos["temperature"] > 0 and eos["stop_token_ids"]
