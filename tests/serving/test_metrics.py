"""vLLM's metrics, gauges included, on Triton's metrics port under vLLM's names."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from .clients import http_generate, http_generate_stream, prometheus_samples
from .conftest import MODEL, Server

LABELS = f'model="{MODEL}",version="1"'


def metric_value(server: Server, name: str, labels: str = LABELS) -> float:
    """The value of one metric series (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$")
    for line in server.metric_lines():
        match = pattern.match(line)
        if match and all(part in match["labels"] for part in labels.split(",")):
            return float(match["value"])
    return 0.0


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll until ``condition`` holds (metrics reach Triton a few times a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_engine_metrics_are_exported_with_model_labels(server: Server) -> None:
    http_generate(
        server.http, {"text_input": "The quick brown fox", "parameters": {"max_tokens": 4}}
    )
    assert wait_for(lambda: metric_value(server, "vllm:generation_tokens_total") >= 4)
    names = {line.split("{", 1)[0] for line in server.metric_lines()}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:cache_config_info",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
    ):
        assert name in names, name
    assert metric_value(server, "vllm:prompt_tokens_total") >= 5
    assert metric_value(server, "vllm:generation_tokens_total") >= 4
    assert 0.0 <= metric_value(server, "vllm:kv_cache_usage_perc") <= 1.0
    assert metric_value(server, "vllm:cache_config_info") == 1.0


def test_latency_histograms_are_exported(server: Server) -> None:
    before = metric_value(server, "vllm:time_to_first_token_seconds_count")
    http_generate(
        server.http, {"text_input": "The quick brown fox", "parameters": {"max_tokens": 2}}
    )
    assert wait_for(
        lambda: metric_value(server, "vllm:time_to_first_token_seconds_count") >= before + 1
    )
    assert metric_value(server, "vllm:e2e_request_latency_seconds_count") >= 1


def test_a_scrape_right_after_a_request_sees_it_under_the_official_names(server: Server) -> None:
    """No waiting: the official backend's metrics test scrapes as soon as its requests end."""
    names = (
        "vllm:e2e_request_latency_seconds_count",
        "vllm:time_to_first_token_seconds_count",
        "vllm:time_per_output_token_seconds_count",
        "vllm:request_params_n_count",
        "vllm:request_prompt_tokens_count",
        "vllm:request_generation_tokens_sum",
        "vllm:generation_tokens_total",
    )
    before = {name: metric_value(server, name) for name in names}
    success = metric_value(
        server, "vllm:request_success_total", f'{LABELS},finished_reason="length"'
    )
    for stream in (False, True):
        body = {"text_input": "The quick brown fox", "parameters": {"max_tokens": 5}}
        if stream:
            http_generate_stream(server.http, {**body, "stream": True})
        else:
            http_generate(server.http, body)
    after = {name: metric_value(server, name) for name in names}
    assert after["vllm:e2e_request_latency_seconds_count"] == before[names[0]] + 2
    assert after["vllm:time_to_first_token_seconds_count"] == before[names[1]] + 2
    assert after["vllm:time_per_output_token_seconds_count"] == before[names[2]] + 2 * 4
    assert after["vllm:request_params_n_count"] == before[names[3]] + 2
    assert after["vllm:request_prompt_tokens_count"] == before[names[4]] + 2
    assert after["vllm:request_generation_tokens_sum"] == before[names[5]] + 10
    assert after["vllm:generation_tokens_total"] == before[names[6]] + 10
    assert (
        metric_value(server, "vllm:request_success_total", f'{LABELS},finished_reason="length"')
        == success + 2
    )
    exported = {line.split("{", 1)[0] for line in server.metric_lines()}
    assert "vllm:inter_token_latency_seconds_count" not in exported  # the official name only


def test_the_per_token_histogram_shows_every_bucket_cumulatively(server: Server) -> None:
    """time_per_output_token is folded in the backend (one update per bucket per flush, not one
    per token); a scrape sees a histogram's series: cumulative buckets, +Inf equal to the count."""
    http_generate(
        server.http, {"text_input": "The quick brown fox", "parameters": {"max_tokens": 6}}
    )
    name = "vllm:time_per_output_token_seconds"
    buckets = []
    for line in server.metric_lines():
        match = re.match(rf'^{re.escape(name)}_bucket\{{.*le="([^"]+)".*\}} (\S+)$', line)
        if match:
            buckets.append((float(match[1]), float(match[2])))
    buckets.sort()
    assert len(buckets) == 20 and buckets[-1][0] == float("inf")
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == metric_value(server, f"{name}_count") >= 5
    assert metric_value(server, f"{name}_sum") > 0


def test_e2e_latency_is_the_engines_own_as_on_vllms_port(server: Server) -> None:
    """Both ports export vLLM's own e2e latency of the same requests (arrival to last output),
    not queue + prefill + decode, which leaves out the time in between."""
    for max_tokens in (3, 9):
        http_generate(
            server.http,
            {"text_input": "The quick brown fox", "parameters": {"max_tokens": max_tokens}},
        )
    name = "vllm:e2e_request_latency_seconds"

    def both() -> tuple[tuple[float, float], tuple[float, float]]:
        own = prometheus_samples(f"http://{server.openai}/metrics")
        vllm = tuple(sum(value for _, value in own[f"{name}{part}"]) for part in ("_count", "_sum"))
        triton = (metric_value(server, f"{name}_count"), metric_value(server, f"{name}_sum"))
        return vllm, triton  # type: ignore[return-value]

    assert wait_for(lambda: both()[0][0] == both()[1][0] > 0)
    (vllm_count, vllm_sum), (triton_count, triton_sum) = both()
    assert triton_count == vllm_count
    assert math.isclose(triton_sum, vllm_sum, rel_tol=1e-6, abs_tol=1e-6)
