"""A big, noisy cluster: thousands of pods of other workloads and GPU nodes whose GPU Feature
Discovery timestamp label changes all the time. The operator's memory stays within the chart's
limit (every list is paginated and pods are kept only as the GPUs they hold), and no node event
wakes a model because of heartbeats, GFD timestamps or labels no model reads (the
operator's debug log counts its passes and says what woke each model).

`make test` runs 2,000 pods and 30 nodes; `make chaos` (RELIABILITY_LONG=1) 10,000 and 200.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.kube import ROOT, gpu_node_manifest, kubectl
from tests.operator_process import OperatorProcess
from tests.reliability.conftest import LONG
from tests.reliability.helpers import GROUP, PLURAL, VERSION, Namespace, body, wait_for

PODS, NODES = (10_000, 200) if LONG else (2_000, 30)
CHURN_SECONDS = 30
# The chart's memory limit of the operator container.
VALUES = yaml.safe_load((ROOT / "charts" / "triton-vllm-operator" / "values.yaml").read_text())
LIMIT = VALUES["resources"]["limits"]["memory"]


def _mib(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def _pod(name: str, node: str) -> dict[str, Any]:
    """A pod as a real workload's looks (labels, env, probes): about 2 KB of JSON."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "web", "tier": "frontend", "pod-template-hash": "5d8f7c9b"},
            "annotations": {"example.com/commit": "0" * 40, "example.com/owner": "team-web"},
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/web:1.2.3",
                    "env": [{"name": f"SETTING_{i}", "value": f"value-{i}" * 4} for i in range(12)],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                }
            ],
        },
    }


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    return kib / 1024


def _node_wakes(log: Path) -> int:
    return len(re.findall(r"nodes (?:ADDED|MODIFIED|DELETED) \S+ woke", log.read_text()))


def _passes(log: Path, namespace: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in re.findall(rf"pass {re.escape(namespace)}/(\S+)", log.read_text()):
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_thousands_of_pods_and_gfd_label_churn_cost_no_passes_and_little_memory(
    api_client: client.ApiClient, namespace: str, crd: None, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = Namespace(api_client, namespace)
    core = client.CoreV1Api(api_client)
    tag = namespace[-6:]
    gpu_nodes = [f"churn-{tag}-{i}" for i in range(NODES)]
    # Nodes without a kubelet (no kwok): the pods bound to them are objects only.
    plain_nodes = [f"plain-{tag}-{i}" for i in range(10)]
    log = tmp_path / "operator.log"
    operator = OperatorProcess(
        kubeconfig, log, {"TRITON_VLLM_NAMESPACES": namespace, "TRITON_VLLM_LOG_LEVEL": "debug"}
    )
    pool = concurrent.futures.ThreadPoolExecutor(8)
    try:
        manifests = [
            gpu_node_manifest(name, 8, f"CHURN-{tag}", labels={"churn": tag}) for name in gpu_nodes
        ]
        kubectl("apply", "-f", "-", input=yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                                          "items": manifests}))  # fmt: skip
        kubectl("wait", "--for=condition=Ready", "node", "-l", f"churn={tag}", "--timeout=180s")
        for name in plain_nodes:
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
        list(
            pool.map(
                lambda i: core.create_namespaced_pod(
                    namespace, _pod(f"web-{i}", plain_nodes[i % len(plain_nodes)])
                ),
                range(PODS),
            )
        )
        product = f"CHURN-{tag}"
        placed = {"model": "m/placed", "tensorParallelSize": 1, "gpu": {"product": product}}
        # A model that waits for nodes (nothing to size it by, a GPU no node has): node changes
        # are what could help it, and it has no pods whose scheduling reason could change.
        waiting = {"model": "m/waiting", "gpu": {"product": "NONE"}}
        for name, spec in (("placed", placed), ("waiting", waiting)):
            ns.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body(name, spec)
            )
        operator.start()
        assert operator.process is not None
        wait_for(
            lambda: (
                (ns.models()["placed"].get("status") or {}).get("observedGeneration") == 1
                and (ns.models()["waiting"].get("status") or {}).get("observedGeneration") == 1
            ),
            60,
            "both models' first passes",
        )
        time.sleep(5)  # the passes their own writes cause
        before, woken_before = _passes(log, namespace), _node_wakes(log)
        assert before.get("waiting") and before.get("placed"), f"passes not logged: {before}"

        # GFD rewrites its timestamp on every node; a label no model reads changes too.
        deadline = time.monotonic() + CHURN_SECONDS
        rounds = 0
        while time.monotonic() < deadline:
            rounds += 1
            patch = {
                "metadata": {
                    "labels": {"nvidia.com/gfd.timestamp": str(time.time_ns()), "rack": str(rounds)}
                }
            }
            list(pool.map(core.patch_node, gpu_nodes, [patch] * len(gpu_nodes)))
        time.sleep(3)
        after, woken_after = _passes(log, namespace), _node_wakes(log)
        peak = _peak_rss_mib(operator.process.pid)
        assert operator.alive
    finally:
        operator.stop()
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        ns.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        kubectl("delete", "node", "-l", f"churn={tag}", "--wait=false", timeout=300)
        for name in plain_nodes:
            core.delete_node(name)
        pool.shutdown()
    print(
        f"\n{PODS} pods, {NODES} GPU nodes x {rounds} label rounds: peak RSS {peak:.0f} MiB "
        f"(limit {LIMIT}); passes before {before}, after {after}"
    )
    assert woken_after == woken_before, "a node event woke a model during the label churn"
    assert after == before, "a model was reconciled during the label churn"
    assert peak < _mib(LIMIT)
