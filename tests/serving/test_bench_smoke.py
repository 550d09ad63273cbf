"""The backend benchmarks run at their smallest size, so they cannot rot (no timed asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.backend_overhead import KEPT_MARKER, main

pytestmark = pytest.mark.serving

PATHS = ("raw vLLM (AsyncLLM)", "Triton gRPC stream", "Triton HTTP generate_stream")


def test_bench_backend_smoke(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "backend.md").write_text(f"# an older run\n\n{KEPT_MARKER}\n\nFindings by hand.\n")
    args = ["--concurrency", "1,4", "--requests", "4", "--max-tokens", "8"]
    paths = ["--model-dir", str(tiny_model), "--work-dir", str(tmp_path / "work")]
    assert main([*args, *paths, "--out", str(out)]) == 0
    table = (out / "backend.md").read_text()
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| C | path | output tok/s"))
    throughput_rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        throughput_rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert sorted((row[0], row[1]) for row in throughput_rows) == sorted(
        (c, path) for c in ("1", "4") for path in PATHS
    )
    for row in throughput_rows:
        assert float(row[2]) > 0, row  # output tokens/s
        assert float(row[3]) > 0, row  # requests/s
        assert float(row[7]) >= 1, row  # streamed responses per request
    assert (out / "backend.png").stat().st_size > 0
    # The new tables replace the old run's; what was written by hand below the marker stays.
    assert "an older run" not in table
    assert table.endswith(f"{KEPT_MARKER}\n\nFindings by hand.\n")


def test_bench_openai_smoke(tiny_model: Path, tmp_path: Path) -> None:
    """bench-openai at its smallest: both servers answer `vllm bench serve`; the table is kept."""
    from bench.openai_vs_vllm_serve import KEPT_MARKER as OPENAI_KEPT
    from bench.openai_vs_vllm_serve import main as openai_main

    out = tmp_path / "out"
    out.mkdir()
    (out / "openai.md").write_text(f"# an older run\n\n{OPENAI_KEPT}\n\nFindings by hand.\n")
    args = [
        "--concurrency",
        "2",
        "--rounds",
        "1",
        "--min-requests",
        "4",
        "--requests-per-stream",
        "1",
    ]
    sizes = ["--input-len", "16", "--output-len", "8"]
    paths = ["--model-dir", str(tiny_model), "--work-dir", str(tmp_path / "work")]
    assert openai_main([*args, *sizes, *paths, "--out", str(out)]) == 0
    table = (out / "openai.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 2 | ")]
    servers = {row.split("|")[2].strip() for row in rows}
    assert {"Triton + tritonvllm, OpenAI port", "vllm serve"} <= servers
    for row in rows[:2]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2] == "4" and float(cells[3]) > 0, row  # every request done; tokens/s
    assert (out / "openai.png").stat().st_size > 0
    assert "an older run" not in table
    assert table.endswith(f"{OPENAI_KEPT}\n\nFindings by hand.\n")
