"""make bench-operator: how the operator scales, on the local control plane with kwok GPU nodes.

For each N: create N TritonVLLMModels (TP=1, one replica each) in a fresh namespace and measure
create-to-Deployment latency (client clock: the create call's return to the Deployment's ADDED
watch event), the time until all are Scheduled and all are Ready, the operator's API writes per
model (apiserver_request_total), the writes in an idle window after convergence, and the
operator's peak RSS. The operator resyncs once per idle window, so the idle window also
shows what a resync of every model costs: its CPU time and its writes (none). Writes
docs/benchmarks/operator.md and operator.png.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, watch

from tests.kube import ClusterHandle, ensure_cluster, gpu_node_manifest
from tests.operator_process import CRD, OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"
GROUP, VERSION, PLURAL = "tritonvllm.io", "v1alpha1", "tritonvllmmodels"
BENCH_PRODUCT = "NVIDIA-H100-80GB-HBM3"
# Writes only the operator makes here: PATCH of models (status) and server-side apply (APPLY)
# or DELETE of children. Events are left out: the controller-manager and the scheduler post them
# too, and the metric does not tell who posted.
OPERATOR_WRITES = re.compile(
    r'apiserver_request_total\{[^}]*resource="'
    r'(tritonvllmmodels|configmaps|services|deployments|poddisruptionbudgets)"'
)
WRITE_VERBS = ("APPLY", "PATCH", "DELETE")  # server-side apply counts as APPLY
# Present during the idle window: models the operator refuses (a bad engine argument) and one
# whose Deployment the API server refuses (a toleration without key must use Exists).
INVALID_SPECS = [{"engineArgs": {"max_modle_len": 4096}}] * 4 + [
    {"tolerations": [{"operator": "Equal", "value": "x"}]}
]


@dataclass
class Result:
    models: int
    p50_ms: float
    p99_ms: float
    all_scheduled_s: float
    all_ready_s: float
    writes_per_model: float
    idle_writes: int
    peak_rss_mb: float
    resync_cpu_s: float  # operator CPU seconds per resync of every model


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.25)
    raise TimeoutError(f"{what} not reached in {timeout:g}s")


def operator_writes(cluster: ClusterHandle) -> int:
    """PATCH requests to models and their children: in this setup, only the operator's."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if not OPERATOR_WRITES.match(line):
            continue
        verb = re.search(r'verb="([A-Z]+)"', line)
        resource = re.search(r'resource="([a-z]+)"', line)
        if not verb or not resource:
            continue
        if verb.group(1) in WRITE_VERBS:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resyncs(log: Path) -> int:
    return log.read_text().count("resync:") if log.exists() else 0


def add_bench_nodes(cluster: ClusterHandle, count: int) -> list[str]:
    names = [f"bench-gpu-{i:03d}" for i in range(count)]
    nodes = [
        gpu_node_manifest(n, 8, labels={"pool": "bench"}, cpu="192", memory="2048Gi") for n in names
    ]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": nodes}),
    )
    cluster.kubectl("wait", "--for=condition=Ready", "node", "-l", "pool=bench", "--timeout=120s")
    return names


def conditions_true(custom: client.CustomObjectsApi, namespace: str, type_: str) -> int:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return sum(
        1
        for item in items
        for c in item.get("status", {}).get("conditions", [])
        if c["type"] == type_ and c["status"] == "True"
    )


def conditions_false(custom: client.CustomObjectsApi, namespace: str, type_: str) -> int:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return sum(
        1
        for item in items
        for c in item.get("status", {}).get("conditions", [])
        if c["type"] == type_ and c["status"] == "False"
    )


def run_size(
    cluster: ClusterHandle, api: client.ApiClient, operator: OperatorProcess, n: int, idle_s: float
) -> Result:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-{n}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    wait_for(lambda: bool(core.list_namespaced_service_account(namespace).items), 30, "default SA")
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch_deployments() -> None:
        apps = client.AppsV1Api(api)
        w = watch.Watch()
        for event in w.stream(apps.list_namespaced_deployment, namespace, timeout_seconds=600):
            if event["type"] == "ADDED":
                seen.setdefault(event["object"].metadata.name, time.monotonic())
            if stop.is_set() or len(seen) >= n:
                w.stop()

    watcher = threading.Thread(target=watch_deployments, daemon=True)
    watcher.start()
    time.sleep(1)  # let the watch open before the first create
    writes_before = operator_writes(cluster)
    created: dict[str, float] = {}
    start = time.monotonic()
    for i in range(n):
        name = f"m{i:04d}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TritonVLLMModel",
            "metadata": {"name": name},
            "spec": {
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "tensorParallelSize": 1,
                "nodeSelector": {"pool": "bench"},
            },
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        created[name] = time.monotonic()
    timeout = 120 + n * 0.5
    wait_for(lambda: len(seen) >= n, timeout, "all Deployments")
    wait_for(lambda: conditions_true(custom, namespace, "Scheduled") >= n, timeout, "all Scheduled")
    all_scheduled = time.monotonic() - start
    try:
        wait_for(lambda: conditions_true(custom, namespace, "Ready") >= n, timeout, "all Ready")
        all_ready = time.monotonic() - start
    except TimeoutError as err:
        print(f"N={n}: {err}; reported as not reached")
        all_ready = math.nan
    writes_after = operator_writes(cluster)
    for i, spec in enumerate(INVALID_SPECS):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TritonVLLMModel",
            "metadata": {"name": f"invalid-{i}"},
            "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 1, **spec},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_for(
        lambda: conditions_false(custom, namespace, "Accepted") >= len(INVALID_SPECS),
        60,
        "the invalid models to be refused",
    )
    time.sleep(2)  # the last status write of their passes
    idle_start = operator_writes(cluster)
    pid = operator.process.pid if operator.process else 0
    cpu_start, resyncs_start = cpu_seconds(pid), resyncs(operator.log_path)
    time.sleep(idle_s)
    idle_writes = operator_writes(cluster) - idle_start
    # Idle but for the resyncs: their CPU is the window's (the watches' own cost is small).
    done = resyncs(operator.log_path) - resyncs_start
    resync_cpu = (cpu_seconds(pid) - cpu_start) / done if done else math.nan
    stop.set()
    latencies = sorted((seen[name] - created[name]) * 1000 for name in created)
    result = Result(
        models=n,
        p50_ms=statistics.median(latencies),
        p99_ms=latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)],
        all_scheduled_s=all_scheduled,
        all_ready_s=all_ready,
        writes_per_model=(writes_after - writes_before) / n,
        idle_writes=idle_writes,
        peak_rss_mb=peak_rss_mb(operator.process.pid) if operator.process else math.nan,
        resync_cpu_s=resync_cpu,
    )
    # Delete the models, then the namespace (their children go with them).
    custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)

    def models_gone() -> bool:
        return not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]

    wait_for(models_gone, 120 + n * 0.2, "models to be deleted")
    core.delete_namespace(namespace)

    def namespace_gone() -> bool:
        return not [ns for ns in core.list_namespace().items if ns.metadata.name == namespace]

    wait_for(namespace_gone, 120 + n * 0.2, f"namespace {namespace} to be deleted")
    return result


def write_report(results: list[Result], out_dir: Path, idle_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {_cpus()} cores, Linux {platform.release()}"
    lines = [
        "# Operator scale",
        "",
        f"`make bench-operator`, {time.strftime('%Y-%m-%d')}, on {machine}; local control plane",
        "(kube-apiserver, scheduler, controller-manager of Kubernetes v1.36.5) with kwok GPU",
        "nodes, all on the same machine. Each model: TP=1, one replica. Writes: the operator's",
        "APPLY, PATCH and DELETE requests to models and their children; the idle window has 5",
        "refused models beside the converged ones, the kwok nodes keep heartbeating, and the",
        f"operator resyncs every model every {idle_s:g} s (CPU per resync: the window's CPU",
        "time over its resyncs).",
        "",
        "| models | create->Deployment p50 (ms) | p99 (ms) | all Scheduled (s) | all Ready (s) "
        f"| operator writes / model | writes in {idle_s:g} s idle | operator peak RSS (MB) "
        "| CPU s / resync |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.models} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | {r.all_scheduled_s:.1f} | "
            f"{r.all_ready_s:.1f} | {r.writes_per_model:.1f} | {r.idle_writes} | "
            f"{r.peak_rss_mb:.0f} | {r.resync_cpu_s:.2f} |"
        )
    (out_dir / "operator.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = [r.models for r in results]
    left.plot(sizes, [r.p50_ms for r in results], "o-", label="p50")
    left.plot(sizes, [r.p99_ms for r in results], "o-", label="p99")
    left.set(xscale="log", xlabel="models", ylabel="create -> Deployment (ms)", title="Latency")
    left.legend()
    right.plot(sizes, [r.all_scheduled_s for r in results], "o-", label="all Scheduled")
    right.plot(sizes, [r.all_ready_s for r in results], "o-", label="all Ready")
    right.set(xscale="log", xlabel="models", ylabel="seconds", title="Convergence")
    right.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "operator.png", dpi=100)


def _cpus() -> int:
    return os.cpu_count() or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated model counts")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    cluster = ensure_cluster()
    api = cluster.api_client()
    nodes = add_bench_nodes(cluster, math.ceil(max(sizes) / 8) + 1)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/tritonvllmmodels.tritonvllm.io")
    args.out.mkdir(parents=True, exist_ok=True)
    operator = OperatorProcess(
        cluster.kubeconfig,
        args.out / "operator-bench.log",
        {"TRITON_VLLM_RESYNC_SECONDS": str(args.idle_seconds)},
    )
    operator.start()
    try:
        results = [run_size(cluster, api, operator, n, args.idle_seconds) for n in sizes]
    finally:
        operator.stop()
        cluster.kubectl("delete", "node", *nodes, "--wait=false", check=False, timeout=600)
        (args.out / "operator-bench.log").unlink(missing_ok=True)
    write_report(results, args.out, args.idle_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
