"""The locally folded histogram adds exactly what one observe() per value would."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.histogram import fold, le_label

BOUNDS = [0.01, 0.1, 1.0]


def test_values_land_in_cumulative_buckets_with_prometheus_le_semantics() -> None:
    folded = fold(BOUNDS, [0.005, 0.01, 0.05, 0.5, 7.0])
    assert folded.buckets == [2, 3, 4, 5]  # le=0.01 includes 0.01 itself; +Inf counts all
    assert folded.count == 5 and abs(folded.total - 7.565) < 1e-9


def test_an_empty_batch_adds_nothing() -> None:
    assert fold(BOUNDS, []).buckets == [0, 0, 0, 0]


def test_le_labels_are_written_as_prometheus_clients_write_them() -> None:
    assert [le_label(b) for b in [0.025, 1.0, 10.0, float("inf")]] == ["0.025", "1", "10", "+Inf"]
