"""The GPU benchmark's load driver, against the CPU server: several client processes share the
streams, and every request's tokens and responses are counted (no timed asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.backend_overhead import run_raw, summarize, write_repository
from bench.gpu_bench import HOP_SEGMENTS, first_token_waits, prompts, triton_level

from .clients import MODEL
from .conftest import Server

pytestmark = pytest.mark.serving

MAX_TOKENS = 8


def test_client_processes_count_every_token_of_every_request(server: Server) -> None:
    sampling = {"temperature": 0, "max_tokens": MAX_TOKENS, "ignore_eos": True}
    prompt_list = prompts(16, 12)
    assert len(set(prompt_list)) == 16
    assert all(len(p.split()) == 11 for p in prompt_list)  # + BOS = 12 tokens
    level, waits, hops = triton_level(
        None, server.grpc, sampling, prompt_list, 6, 12, 3,
        model=MODEL, metrics=server.metrics, hop_log=server.hop_log,
    )  # fmt: skip
    assert level.concurrency == 6
    assert len(level.records) == 12
    for record in level.records:
        assert record.tokens == MAX_TOKENS
        assert 1 <= record.responses <= MAX_TOKENS
        assert record.sent <= record.first_token <= record.done
    summary = summarize("triton:3", level)
    assert summary.tokens_per_request == MAX_TOKENS
    assert summary.cpu_percent["clients"] > 0

    # Where the first tokens waited: the engine's own view (its histograms, pushed to Triton
    # before each final response) is part of what the client saw.
    assert set(waits) == {"client TTFT", "engine TTFT", "engine queue", "outside the engine"}
    assert 0 <= waits["engine queue"] <= waits["engine TTFT"] <= waits["client TTFT"]
    assert waits["outside the engine"] == waits["client TTFT"] - waits["engine TTFT"]

    # Where the time went inside the backend: every request of the level has its line in the
    # hop log, its times in the order the request passed them, between the client's own.
    assert server.hop_log is not None
    lines = [json.loads(line) for line in server.hop_log.read_text().splitlines()]
    by_id = {line["id"]: line for line in lines}
    order = ["received", "started", "first_output", "first_sent", "final_output", "pushed",
             "final_sent"]  # fmt: skip
    for record in level.records:
        times = by_id[record.request_id]
        passed = [times[hop] for hop in order if hop in times]
        assert {"received", "started", "final_output", "pushed", "final_sent"} <= set(times)
        assert record.sent <= passed[0] and passed == sorted(passed)
        assert passed[-1] <= record.done
    assert {"client to execute", "loop to first output", "final send"} <= set(hops)
    assert set(hops) <= {label for label, _, _ in HOP_SEGMENTS}
    assert hops["client to execute"] > 0 and hops["final send"] > 0


def test_the_raw_engine_reports_its_own_queue_and_first_token_times_per_level(
    serving_python: Path, tiny_model: Path, tmp_path: Path
) -> None:
    repository = write_repository(
        tmp_path / "repository", tiny_model, {"dtype": "float32", "max_model_len": 2048}
    )
    config = {
        "model_json": str(repository / MODEL / "1" / "model.json"),
        "prompts": prompts(8, 12),
        "sampling": {"temperature": 0, "max_tokens": MAX_TOKENS, "ignore_eos": True},
        "levels": [[1, 3], [4, 8]],
    }
    levels = run_raw(serving_python, config, tmp_path, tmp_path / "raw.log")
    assert [len(level.records) for level in levels] == [3, 8]
    for level in levels:
        # The warm-up round is not counted: exactly the level's requests, from vLLM's registry.
        grown = level.engine_histograms
        assert grown["vllm:time_to_first_token_seconds_count"] == len(level.records)
        assert grown["vllm:request_queue_time_seconds_count"] == len(level.records)
        waits = first_token_waits(level.records, grown)
        assert 0 <= waits["engine queue"] <= waits["engine TTFT"] <= waits["client TTFT"]
    saved = json.loads((tmp_path / "raw-result.json").read_text())
    assert saved[1]["engine_histograms"] == levels[1].engine_histograms
