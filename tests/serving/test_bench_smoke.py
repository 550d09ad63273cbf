"""The backend benchmark runs at its smallest size, so it cannot rot (no timed asserts)."""

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
