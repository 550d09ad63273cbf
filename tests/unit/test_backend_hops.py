"""The backend's hop log: off without TRITONVLLM_HOP_LOG; with it, one JSON line per request, in
the order the request passed its hops."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.hops import HOP_LOG_ENV, HopLog, RequestHops


def test_without_the_variable_there_is_no_log_and_hops_record_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HOP_LOG_ENV, raising=False)
    assert HopLog.from_environment() is None
    hops = RequestHops(None, "r1", 1.0)
    hops.mark("started")
    hops.end()
    assert hops.times == {}  # nothing kept for a request without a log


def test_each_request_appends_one_line_of_its_hop_times(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "hops.jsonl"
    path.write_text('{"id":"earlier"}\n')  # a server restarted on the same file: appended to
    monkeypatch.setenv(HOP_LOG_ENV, str(path))
    log = HopLog.from_environment()
    assert log is not None
    for request_id in ("a", "b"):
        hops = RequestHops(log, request_id, received=0.5)
        for hop in ("started", "first_output", "final_sent"):
            hops.mark(hop)
        hops.end()
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["earlier", "a", "b"]
    for line in lines[1:]:
        assert list(line) == ["id", "received", "started", "first_output", "final_sent"]
        times = [line[hop] for hop in ("received", "started", "first_output", "final_sent")]
        assert times[0] == 0.5 and times == sorted(times)
