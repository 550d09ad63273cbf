"""The GPU benchmark's load driver, against the CPU server: several client processes share the
streams, and every request's tokens and responses are counted (no timed asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.backend_overhead import run_raw, summarize, write_repository
from bench.gpu_bench import FINAL_WAITS, HOP_SEGMENTS, first_token_waits, prompts, triton_level

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
    assert set(waits) == {
        "client TTFT",
        "engine TTFT",
        "engine queue",
        "outside the engine",
        "client e2e",
        "engine e2e",
        "e2e outside the engine",
    }
    assert 0 <= waits["engine queue"] <= waits["engine TTFT"] <= waits["client TTFT"]
    assert waits["outside the engine"] == waits["client TTFT"] - waits["engine TTFT"]
    # The whole request likewise: the engine's own e2e (arrival to its last output) is part of
    # the client's time to its last token.
    assert 0 < waits["engine e2e"] <= waits["client e2e"]
    assert waits["e2e outside the engine"] == waits["client e2e"] - waits["engine e2e"]

    # Where the time went inside the backend: every request of the level has its line in the
    # hop log, its times in the order the request passed them, after the client sent it.
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
        # A send returns once Triton took the response: the client may have it a little sooner.
        assert times["pushed"] <= record.done
    assert {"client to execute", "loop to first output", "final send"} <= set(hops)
    assert set(hops) <= {label for label, _, _ in HOP_SEGMENTS} | set(FINAL_WAITS)
    assert hops["client to execute"] > 0 and hops["final send"] > 0
    # Per request: the client's time beyond the engine's part, and the final output's way out.
    assert set(FINAL_WAITS) <= set(hops)
    assert hops["e2e outside the engine p50"] <= hops["e2e outside the engine p99"]
    assert hops["final output to client p50"] <= hops["final output to client p99"]


def test_an_open_loop_sends_at_its_rate_over_the_client_processes(server: Server) -> None:
    sampling = {"temperature": 0, "max_tokens": MAX_TOKENS, "ignore_eos": True}
    level, waits, _ = triton_level(
        None, server.grpc, sampling, prompts(16, 12), 4, 12, 3,
        model=MODEL, metrics=server.metrics, rate=20.0,
    )  # fmt: skip
    assert level.rate == 20.0
    assert len(level.records) == 12
    assert all(record.tokens == MAX_TOKENS for record in level.records)
    # Three processes at a third of the rate each: the sends spread over about 12 / 20 s, not
    # bunched at the start as a closed loop of 4 streams would (12 requests at once, 4 at a time).
    sent = sorted(record.sent for record in level.records)
    assert sent[-1] - sent[0] > 0.1
    assert summarize("triton:3", level).rate == 20.0
    assert 0 <= waits["engine queue"] <= waits["engine TTFT"] <= waits["client TTFT"]


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
        "levels": [[1, 3], [4, 8], [2, 6, 20.0]],  # the last an open loop of 20 requests a second
    }
    levels = run_raw(serving_python, config, tmp_path, tmp_path / "raw.log")
    assert [len(level.records) for level in levels] == [3, 8, 6]
    assert [level.rate for level in levels] == [0.0, 0.0, 20.0]
    for level in levels:
        # The warm-up round is not counted: exactly the level's requests, from vLLM's registry.
        grown = level.engine_histograms
        assert grown["vllm:time_to_first_token_seconds_count"] == len(level.records)
        assert grown["vllm:request_queue_time_seconds_count"] == len(level.records)
        waits = first_token_waits(level.records, grown)
        assert 0 <= waits["engine queue"] <= waits["engine TTFT"] <= waits["client TTFT"]
    saved = json.loads((tmp_path / "raw-result.json").read_text())
    assert saved[1]["engine_histograms"] == levels[1].engine_histograms
