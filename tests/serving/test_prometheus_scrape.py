"""A real Prometheus (tests/autoscaling_stack.py) scrapes vLLM's own /metrics on a real
tritonserver's OpenAI port, labelled as a Kubernetes pod scrape would label it: the series a
KEDA prometheus trigger reads for the model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.autoscaling_stack import Prometheus, ScrapeTarget, autoscaling_tools

from .clients import http_generate
from .conftest import ROOT, Server

POD = {"namespace": "models", "pod": "tiny-7d9f-0"}
SELECTOR = '{namespace="models",pod="tiny-7d9f-0"}'


@pytest.fixture(scope="module")
def prometheus(server: Server) -> Iterator[Prometheus]:
    work = Path(os.environ.get("WORK_DIR", ROOT / ".work")) / "serving-tests" / "prometheus"
    assert server.openai is not None
    prom = Prometheus(
        autoscaling_tools() / "bin" / "prometheus",
        work,
        [ScrapeTarget(server.openai, "/metrics", POD, job="tiny")],
    )
    prom.start()
    yield prom
    prom.stop()


def test_prometheus_scrapes_the_openai_ports_vllm_metrics_with_pod_labels(
    server: Server, prometheus: Prometheus
) -> None:
    # The engine's queue gauges are there from the first scrape, under the pod's labels.
    waiting = prometheus.wait_for_value(
        f"vllm:num_requests_waiting{SELECTOR}", lambda v: v is not None, timeout=30
    )
    assert waiting == 0
    assert prometheus.query_value(f"sum(vllm:num_requests_running{SELECTOR})") == 0
    kv = prometheus.query_value(f"max(vllm:kv_cache_usage_perc{SELECTOR})")
    assert kv is not None and 0 <= kv <= 1
    (series,) = prometheus.query(f"vllm:num_requests_waiting{SELECTOR}")
    assert series["metric"]["job"] == "tiny"
    assert series["metric"]["instance"] == server.openai

    # A request's tokens reach the counter Prometheus scrapes.
    before = prometheus.query_value(f"sum(vllm:generation_tokens_total{SELECTOR})") or 0
    http_generate(
        server.http, {"text_input": "The quick brown fox", "parameters": {"max_tokens": 4}}
    )
    prometheus.wait_for_value(
        f"sum(vllm:generation_tokens_total{SELECTOR})",
        lambda v: v is not None and v >= before + 4,
        timeout=30,
    )
