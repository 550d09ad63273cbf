"""The operator's own Prometheus metrics, under the names controller-runtime and client-go export,
so dashboards and alerts written for Go operators read them as they are: work-queue depth and
latency, reconciles by result, API requests by verb and code, leader status; plus the models by
condition, counted from the cache at scrape time.

The metrics live in one registry of this module, as controller-runtime's live in its global
`metrics.Registry`: the work queue, the controller, the API client and the leader elector record
into it wherever they are, and `serve` exposes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()
# The name controller-runtime gives the queue and the controller (its `name` and `controller`
# labels): the lowercased kind.
CONTROLLER = "tritonvllmmodel"
# Kubernetes verbs the API client's requests are counted under.
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
RESULTS = ("success", "error", "requeue")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

WORKQUEUE_DEPTH = Gauge(
    "workqueue_depth", "Current depth of the work queue.", ["name"], registry=REGISTRY
)
WORKQUEUE_ADDS = Counter(
    "workqueue_adds_total", "Keys added to the work queue.", ["name"], registry=REGISTRY
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries_total", "Keys added again after a failure.", ["name"], registry=REGISTRY
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long a key waits in the work queue before a worker takes it.",
    ["name"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long a worker takes over one key.",
    ["name"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Reconcile passes by result: success, error (a bug or an API error), requeue (retried).",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Duration of one reconcile pass.",
    ["controller"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "rest_client_requests_total",
    "API server requests by verb and HTTP code ('<error>' when none came back).",
    ["verb", "code"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "tritonvllm_operator_api_errors_total",
    "API server requests that failed, by verb: unreachable, timed out, or answered 429 or 5xx.",
    ["verb"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "leader_election_master_status",
    "1 while this replica leads and reconciles, else 0.",
    ["name"],
    registry=REGISTRY,
)

# Every label set a dashboard reads exists from the start at 0: a rate over it is 0, not "no
# data", before the first error, and the first observations show as an increase.
for _result in RESULTS:
    RECONCILE_TOTAL.labels(CONTROLLER, _result)
RECONCILE_TIME.labels(CONTROLLER)
for _verb in VERBS:
    API_ERRORS.labels(_verb)
LEADER.labels(CONTROLLER).set(0)


def verb(method: str, query: Iterable[tuple[str, str]] | None, collection: bool) -> str:
    """The Kubernetes verb of one request."""
    if method == "GET":
        if any(k == "watch" and v == "true" for k, v in query or ()):
            return "watch"
        return "list" if collection else "get"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


def count_request(verb_: str, code: int | None) -> None:
    """One API request and its outcome; None: no answer came back."""
    API_REQUESTS.labels(verb_, "<error>" if code is None else str(code)).inc()
    if code is None or code == 429 or code >= 500:
        API_ERRORS.labels(verb_).inc()


def set_leading(leading: bool) -> None:
    LEADER.labels(CONTROLLER).set(1 if leading else 0)


class ModelConditions(Collector):
    """`tritonvllm_models{condition, status}`: how many models have each condition in each
    status (and `tritonvllm_models_total`), read from the cache at scrape time."""

    def __init__(self, models: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self._models = models

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts: dict[tuple[str, str], int] = {}
        total = 0
        for body in self._models():
            total += 1
            for condition in (body.get("status") or {}).get("conditions") or []:
                key = (str(condition.get("type")), str(condition.get("status")))
                counts[key] = counts.get(key, 0) + 1
        family = GaugeMetricFamily(
            "tritonvllm_models",
            "TritonVLLMModels by condition and its status.",
            labels=["condition", "status"],
        )
        for (type_, status), count in sorted(counts.items()):
            family.add_metric([type_, status], count)
        yield family
        yield GaugeMetricFamily("tritonvllm_models_total", "TritonVLLMModels watched.", total)


def serve(bind_address: str, models: Callable[[], Iterable[Mapping[str, Any]]]) -> int:
    """Serve /metrics on `host:port` (":port" binds every address); returns the port."""
    host, _, port = bind_address.rpartition(":")
    REGISTRY.register(ModelConditions(models))
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=REGISTRY)
    bound: int = server.server_port
    return bound
