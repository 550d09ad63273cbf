"""Every query of the chart's Grafana dashboard returns data from a real Prometheus scraping a real
tritonserver (Triton's metrics port and the OpenAI port) and the operator's metrics port, while
the engine serves requests and the operator reconciles a model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.autoscaling_stack import Prometheus, wait_for
from tests.integration.models import Models, running_operator
from tests.kube import ClusterHandle
from tests.monitoring_scenario import (
    Served,
    Traffic,
    create_model,
    dashboard_queries,
    prometheus,
    scrape_targets,
    served_engine,
    wait_for_scrapes,
    wait_for_series,
)
from tests.operator_process import OperatorProcess, free_ports

pytestmark = [pytest.mark.cluster, pytest.mark.serving]

MODEL = "chat"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def served(work: Path) -> Iterator[Served]:
    with served_engine(MODEL, work / "engine", free_ports(1)[0]) as running:
        yield running


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, work: Path) -> Iterator[OperatorProcess]:
    with running_operator(cluster, work / "operator.log") as process:
        yield process


def _has_data(stack: Prometheus, expr: str) -> bool:
    """At least one series with a number (histogram_quantile over no observations is NaN)."""
    return any(not math.isnan(float(item["value"][1])) for item in stack.query(expr))


def test_every_dashboard_query_returns_data_from_the_engine_and_the_operator(
    api_client: client.ApiClient,
    namespace: str,
    served: Served,
    operator: OperatorProcess,
    work: Path,
) -> None:
    targets = scrape_targets(served, namespace, f"127.0.0.1:{operator.metrics_port}")
    stack = prometheus(work / "prometheus", targets)
    stack.start()
    try:
        wait_for_scrapes(stack)
        create_model(Models(api_client, namespace), MODEL)
        wait_for_series(stack, served, namespace)
        queries = dashboard_queries(namespace, MODEL)
        assert len(queries) >= 15
        with Traffic(served):
            for query in queries:
                wait_for(
                    lambda q=query: _has_data(stack, q.expr),
                    90,
                    f"data for {query.panel} / {query.legend}: {query.expr}",
                    interval=1.0,
                )
    finally:
        stack.stop()
