"""The Grafana dashboard's queries on real data, plotted (`make bench-dashboard`).

The scenario of the dashboard's test (tests/monitoring_scenario.py: a real tritonserver with the
bundled backend on the tiny model, the operator on the local control plane, Prometheus scraping
Triton's metrics port, the OpenAI port and the operator): a model is created, then load steps
through 1, 3 and 6 streaming clients. Every panel's PromQL is read from the chart's dashboard
JSON, evaluated over the run with query_range, and drawn one panel per subplot, as Grafana
would (rates over 30 s windows): docs/monitoring/dashboard.png.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from kubernetes import client, config

from tests.integration.models import Models, running_operator
from tests.kube import ensure_cluster
from tests.monitoring_scenario import (
    Query,
    Traffic,
    create_model,
    dashboard_queries,
    prometheus,
    scrape_targets,
    served_engine,
    wait_for_scrapes,
    wait_for_series,
)
from tests.operator_process import free_ports

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "monitoring" / "dashboard.png"
MODEL = "chat"


def _namespace(api: client.ApiClient) -> str:
    name = f"bench-dashboard-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata={"name": name}))
    while not core.list_namespaced_service_account(name).items:
        time.sleep(0.2)
    return name


def _plot(series: dict[str, list[tuple[Query, list[tuple[float, float]]]]], t0: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(series)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for query, points in series[panel]:
            if points:
                ax.plot([t - t0 for t, _ in points], [v for _, v in points], label=query.legend)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("s", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Triton vLLM dashboard: the chart's queries on a real tritonserver and operator")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--step-seconds", type=int, default=40, help="seconds per load step")
    args = parser.parse_args(argv)
    cluster = ensure_cluster()
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    api = config.new_client_from_config(str(cluster.kubeconfig))
    namespace = _namespace(api)
    try:
        with (
            served_engine(MODEL, work / "engine", free_ports(1)[0]) as served,
            running_operator(cluster, work / "operator.log") as operator,
        ):
            targets = scrape_targets(served, namespace, f"127.0.0.1:{operator.metrics_port}")
            stack = prometheus(work / "prometheus", targets)
            stack.start()
            try:
                wait_for_scrapes(stack)
                t0 = time.time()
                create_model(Models(api, namespace), MODEL)
                wait_for_series(stack, served, namespace)
                for clients in (1, 3, 6):
                    with Traffic(served, clients=clients):
                        time.sleep(args.step_seconds)
                time.sleep(10)
                end = time.time()
                series: dict[str, list[tuple[Query, list[tuple[float, float]]]]] = defaultdict(list)
                for query in dashboard_queries(namespace, MODEL, rate_interval="30s"):
                    data = stack.api(
                        "query_range",
                        {"query": query.expr, "start": str(t0), "end": str(end), "step": "2"},
                    )
                    for result in data["result"]:
                        labels = result["metric"]
                        legend = query.legend.replace("{{model}}", labels.get("model", ""))
                        for key in ("result", "verb", "condition", "status"):
                            legend = legend.replace("{{" + key + "}}", labels.get(key, ""))
                        points = [(float(t), float(v)) for t, v in result["values"]]
                        series[query.panel].append((Query(query.panel, legend, ""), points))
                _plot(series, t0)
            finally:
                stack.stop()
    finally:
        client.CoreV1Api(api).delete_namespace(namespace)
        cluster.release()
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
