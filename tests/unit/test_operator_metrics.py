"""The operator's own metrics: what the work queue, the API client and the model cache record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import generate_latest

from triton_vllm_operator.runtime import metrics
from triton_vllm_operator.runtime.workqueue import WorkQueue


def _value(metric: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(metric, labels)
    return 0.0 if value is None else value


@pytest.mark.parametrize(
    ("method", "query", "collection", "verb"),
    [
        ("GET", [("watch", "true")], True, "watch"),
        ("GET", [("limit", "500")], True, "list"),
        ("GET", None, False, "get"),
        ("POST", None, True, "create"),
        ("PUT", None, False, "update"),
        ("PATCH", None, False, "patch"),
        ("DELETE", None, False, "delete"),
    ],
)
def test_requests_are_counted_under_kubernetes_verbs(
    method: str, query: list[tuple[str, str]] | None, collection: bool, verb: str
) -> None:
    assert metrics.verb(method, query, collection) == verb


def test_unanswered_throttled_and_server_errors_count_as_api_errors_not_404s() -> None:
    before = _value("tritonvllm_operator_api_errors_total", verb="patch")
    for code in (None, 429, 500, 503):
        metrics.count_request("patch", code)
    for code in (200, 404, 409, 422):
        metrics.count_request("patch", code)
    assert _value("tritonvllm_operator_api_errors_total", verb="patch") == before + 4
    assert _value("rest_client_requests_total", verb="patch", code="<error>") >= 1


def test_every_verb_and_result_is_exported_at_zero_before_anything_happens() -> None:
    text = generate_latest(metrics.REGISTRY).decode()
    for verb in metrics.VERBS:
        assert f'tritonvllm_operator_api_errors_total{{verb="{verb}"}}' in text
    for result in metrics.RESULTS:
        assert f'result="{result}"' in text


def test_the_work_queue_records_depth_adds_waits_and_work() -> None:
    name = "test-queue"

    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue(name=name)
        queue.add("a")
        queue.add("b")
        queue.add("a")  # deduplicated: one add counted for it
        assert _value("workqueue_depth", name=name) == 2
        key = await queue.get()
        assert _value("workqueue_depth", name=name) == 1
        queue.done(key)
        queue.retry("b")

    asyncio.run(run())
    assert _value("workqueue_adds_total", name=name) == 2
    assert _value("workqueue_queue_duration_seconds_count", name=name) == 1
    assert _value("workqueue_work_duration_seconds_count", name=name) == 1
    assert _value("workqueue_retries_total", name=name) == 1


def test_models_are_counted_by_condition_and_status_at_scrape_time() -> None:
    models: list[dict[str, Any]] = [
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {},  # not reconciled yet
    ]
    families = {f.name: f for f in metrics.ModelConditions(lambda: models).collect()}
    samples = {
        (s.labels["condition"], s.labels["status"]): s.value
        for s in families["tritonvllm_models"].samples
    }
    assert samples == {("Ready", "True"): 2, ("Ready", "False"): 1}
    assert families["tritonvllm_models_total"].samples[0].value == 4
