"""The GPU benchmark's load driver, against the CPU server: several client processes share the
streams, and every request's tokens and responses are counted (no timed asserts)."""

from __future__ import annotations

import pytest

from bench.backend_overhead import summarize
from bench.gpu_bench import prompts, triton_level

from .clients import MODEL
from .conftest import Server

pytestmark = pytest.mark.serving

MAX_TOKENS = 8


def test_client_processes_count_every_token_of_every_request(server: Server) -> None:
    sampling = {"temperature": 0, "max_tokens": MAX_TOKENS, "ignore_eos": True}
    prompt_list = prompts(16, 12)
    assert len(set(prompt_list)) == 16
    assert all(len(p.split()) == 11 for p in prompt_list)  # + BOS = 12 tokens
    level, waits = triton_level(
        None, server.grpc, sampling, prompt_list, 6, 12, 3, model=MODEL, metrics=server.metrics
    )
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
