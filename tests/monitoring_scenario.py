"""The chart's Grafana dashboard on real data, for its test and `make bench-dashboard`.

The parts are real: a tritonserver with the bundled backend serving the tiny model (vLLM on the
CPU), the operator reconciling a TritonVLLMModel of that name on the local control plane, and
Prometheus (hack/autoscaling-tools.sh) scraping Triton's metrics port, the OpenAI port and the
operator's metrics port, labelled as the chart's PodMonitors would label them (namespace, pod).
The dashboard's queries are read from the chart's JSON, with Grafana's variables filled in.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import requests

from tests.autoscaling_scenario import START_TIMEOUT_S, serving_python
from tests.autoscaling_stack import Prometheus, ScrapeTarget, autoscaling_tools, wait_for
from tests.integration.models import Models
from tests.serving.conftest import (
    ROOT,
    Server,
    rendered_files,
    start_tritonserver,
    stop_tritonserver,
    write_repository,
)

DASHBOARD = ROOT / "charts" / "triton-vllm-operator" / "files" / "dashboards" / "triton-vllm.json"
# What Grafana's $__rate_interval becomes here: long enough that the operator's passes at the
# model's creation are still in the window when the queries run.
RATE_INTERVAL = "5m"


@dataclass(frozen=True)
class Query:
    """One target of one panel of the dashboard."""

    panel: str
    legend: str
    expr: str


def dashboard_queries(
    namespace: str, model: str, rate_interval: str = RATE_INTERVAL
) -> list[Query]:
    """Every panel's PromQL, as Grafana sends it with these variables chosen."""
    board = json.loads(DASHBOARD.read_text())
    # As Grafana fills in one chosen value (names need no escaping: no regex characters but '.').
    values = {
        "namespace": namespace,
        "model": model,
        "__rate_interval": rate_interval,
    }
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = re.sub(r"\$(\w+)", lambda m: values[m.group(1)], target["expr"])
            queries.append(Query(panel["title"], target["legendFormat"], expr))
    return queries


@dataclass(frozen=True)
class Served:
    """The running tritonserver: its model name and addresses."""

    name: str
    server: Server


@contextmanager
def served_engine(name: str, work_dir: Path, openai_port: int) -> Iterator[Served]:
    """tritonserver serving the tiny model as `name`, its OpenAI server on `openai_port`."""
    model_dir = work_dir / "tiny-model"
    subprocess.run(
        [str(serving_python()), str(ROOT / "hack" / "tiny_model.py"), str(model_dir)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    repository = write_repository(
        work_dir / "model-repository", rendered_files(name, model_dir, openai_port)
    )
    log = work_dir / "tritonserver.log"
    process, server = start_tritonserver(repository, log, openai_port=openai_port)
    try:
        started = time.monotonic()
        while not _serves(f"http://{server.openai}/v1/models"):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"tritonserver did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield Served(name, server)
    finally:
        stop_tritonserver(process)


def _serves(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def scrape_targets(served: Served, namespace: str, operator_address: str) -> list[ScrapeTarget]:
    """What the chart's PodMonitors scrape, with the target labels they give."""
    pod = {"namespace": namespace, "pod": f"{served.name}-0"}
    assert served.server.openai is not None
    return [
        ScrapeTarget(served.server.metrics, labels=pod, job="serving-metrics"),
        ScrapeTarget(served.server.openai, labels=pod, job="serving-openai"),
        ScrapeTarget(
            operator_address,
            labels={"namespace": "triton-vllm-system", "pod": "operator-0"},
            job="operator",
        ),
    ]


# A scrape times out after its interval: 1 s (the autoscaling tests') was too short for a loaded
# 2-core machine to answer the engine's /metrics every time; the queries' windows are minutes.
SCRAPE_INTERVAL = "3s"


def prometheus(work_dir: Path, targets: list[ScrapeTarget]) -> Prometheus:
    tools = autoscaling_tools()
    return Prometheus(tools / "bin" / "prometheus", work_dir, targets, SCRAPE_INTERVAL)


class Traffic:
    """`clients` OpenAI clients streaming completions back to back, and one malformed request
    to Triton's generate endpoint a second, until the block ends."""

    def __init__(self, served: Served, clients: int = 3) -> None:
        self.served = served
        self.clients = clients
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.completed = 0

    def _client(self) -> None:
        api = openai.OpenAI(
            base_url=f"http://{self.served.server.openai}/v1", api_key="unused", timeout=120
        )
        while not self._stop.is_set():
            stream = api.completions.create(
                model=self.served.name,
                prompt="the quick brown fox",
                max_tokens=48,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            for _ in stream:
                pass
            self.completed += 1

    def _errors(self) -> None:
        url = f"http://{self.served.server.http}/v2/models/{self.served.name}/generate"
        while not self._stop.wait(1.0):
            # No text_input: refused.
            requests.post(url, json={"parameters": {"max_tokens": 4}}, timeout=30)

    def __enter__(self) -> Traffic:
        for target in [self._errors, *[self._client] * self.clients]:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)


def wait_for_scrapes(stack: Prometheus) -> None:
    """Every target scraped once: the operator's counters have a first sample, so that the
    passes that follow show as increases."""
    want = {t.job for t in stack.targets}
    wait_for(
        lambda: {r["metric"]["job"] for r in stack.query("up == 1")} >= want,
        120,
        f"Prometheus to scrape {sorted(str(j) for j in want)}",
    )


def create_model(models: Models, name: str) -> None:
    """A model of the engine's name, reconciled by the operator (its pods are kwok's)."""
    models.create(name, servedModelName=name, tensorParallelSize=1)
    models.wait_condition(name, "Ready", "True", timeout=90)


def wait_for_series(stack: Prometheus, served: Served, namespace: str) -> None:
    probe = f'vllm:num_requests_running{{namespace="{namespace}",model="{served.name}"}}'
    wait_for(lambda: stack.query(probe), 60, "Triton's vLLM series in Prometheus")
