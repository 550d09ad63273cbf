"""The API server restarted (stopped, down a few seconds, started with the same flags and etcd)
while models reconcile: the operator, still the same process, reconnects its watches and
converges the models created and changed before, during (retried) and after the restart.

It restarts the shared local control plane's kube-apiserver (hack/cluster.sh restart-apiserver):
other sessions on the same control plane see up to a minute of refused connections, and kcm's node
lifecycle controller may mark every node NotReady for a while. So it runs only in the long run,
`make chaos` (RELIABILITY_LONG=1 and RELIABILITY_RESTART_APISERVER=1); `make test` runs the short
partition test (test_partitions.py) instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest
from kubernetes import client

from tests.kube import CLUSTER_SH, ClusterHandle
from tests.operator_process import OperatorProcess
from tests.reliability.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Namespace,
    body,
    gpu_nodes,
    healthz,
    wait_empty,
    wait_for,
)

BEFORE, AFTER, DOWN_S = 10, 10, 5

pytestmark = pytest.mark.skipif(
    os.environ.get("RELIABILITY_RESTART_APISERVER") != "1"
    or os.environ.get("RELIABILITY_LONG") != "1",
    reason="restarts the shared kube-apiserver, long: RELIABILITY_LONG=1 and "
    "RELIABILITY_RESTART_APISERVER=1 (make chaos)",
)


def _spec(product: str, max_model_len: int, replicas: int) -> dict[str, Any]:
    return {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "tensorParallelSize": 1,
        "gpu": {"product": product},
        "replicas": replicas,
        "engineArgs": {"max_model_len": max_model_len},
    }


def test_operator_reconnects_after_an_apiserver_restart(
    cluster: ClusterHandle, api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    ns = Namespace(api_client, namespace)
    expected: dict[str, dict[str, Any]] = {}

    def create(name: str, spec: dict[str, Any]) -> None:
        ns.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body(name, spec)
        )
        expected[name] = spec

    # 11 one-GPU replicas in the end: two 8-GPU nodes hold them all (Scheduled means bound).
    with gpu_nodes(2, gpus=8) as product:
        operator.start()
        pid = operator.process.pid if operator.process else None
        for i in range(BEFORE):
            create(f"before-{i}", _spec(product, 2048, i % 2))
        wait_empty(lambda: ns.problems(expected, ready=True), 90, "the first models")
        # More work in flight as it goes down: new models and changed ones.
        for i in range(BEFORE // 2):
            create(f"racing-{i}", _spec(product, 1024, 0))
            change = {"engineArgs": {"max_model_len": 4096}, "replicas": 1 - i % 2}
            ns.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, f"before-{i}", {"spec": change}
            )
            expected[f"before-{i}"].update(change)
        t0 = time.monotonic()
        subprocess.run(
            [str(CLUSTER_SH), "restart-apiserver", str(DOWN_S)],
            check=True,
            timeout=180,
            capture_output=True,
        )
        restart_s = time.monotonic() - t0
        # The client's pooled connections died with the server: the first call may fail.
        wait_for(lambda: cluster.answers(), 60, "the API server")
        for i in range(AFTER):
            create(f"after-{i}", _spec(product, 8192, i % 2))
        t1 = time.monotonic()
        # What the operator owns: conditions, configHash and children of every model. Ready also
        # needs kcm, the scheduler and kwok to have recovered, which can take minutes here.
        wait_empty(lambda: ns.problems(expected), 120, "every model to converge after the restart")
        converge_s = time.monotonic() - t1
        assert operator.alive and healthz(operator.port)
        assert operator.process is not None and operator.process.pid == pid
        not_ready = [p for p in ns.problems(expected, ready=True) if ": Ready " in p]
    print(
        f"\napiserver down {DOWN_S} s (restart took {restart_s:.0f} s); "
        f"{len(expected)} models converged {converge_s:.0f} s after the last create; "
        f"Ready not yet settled on {len(not_ready)}: {not_ready}"
    )
