"""The operator benchmark runs at its smallest size, so it cannot rot."""

from __future__ import annotations

from pathlib import Path

from bench.operator_scale import main
from tests.kube import ClusterHandle


def test_bench_operator_smoke(cluster: ClusterHandle, tmp_path: Path) -> None:
    assert main(["--sizes", "3", "--idle-seconds", "2", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "operator.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| 3 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[5]) > 0  # the operator wrote something per model
    assert (tmp_path / "operator.png").stat().st_size > 0
