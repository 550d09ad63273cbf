"""Network faults between the operator and the real kube-apiserver, provoked with a TCP proxy (the
fault injector, tests/fault_proxy.py) and a real restart of the API server:

- a partition during which the API server restarts and etcd's history is compacted (so every
  watch that resumes from its resourceVersion gets 410 Gone), a child is deleted, a model edited
  and another deleted: after the partition the operator re-creates the child, converges the
  edit, forgets the deleted model, and no status says Ready for a Deployment that does not exist;
- a leader whose packets are dropped stops (exits non-zero) before the standby takes the lease;
- a leader sent SIGTERM hands the lease over: the standby leads within 5 s.

The partition test restarts the shared local control plane's kube-apiserver: it runs when
RELIABILITY_RESTART_APISERVER=1 (`make test` and `make chaos` set it).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.fault_proxy import FaultProxy, kubeconfig_through, upstream_of
from tests.kube import CLUSTER_SH, ClusterHandle
from tests.operator_process import OperatorProcess
from tests.reliability.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Namespace,
    body,
    conditions,
    expected_config_hash,
    gpu_nodes,
    wait_empty,
    wait_for,
)
from triton_vllm_operator.render.manifests import CONFIG_HASH_ANNOTATION

RESTART = os.environ.get("RELIABILITY_RESTART_APISERVER") == "1"
RESTART_REASON = (
    "restarts the shared kube-apiserver: set RELIABILITY_RESTART_APISERVER=1 (make test does)"
)
# The chart's defaults (values.yaml operator.leaderElection).
LEASE, RENEW_DEADLINE, RETRY = 15, 10, 2


def _spec(product: str, replicas: int = 1, max_model_len: int = 2048) -> dict[str, Any]:
    return {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "tensorParallelSize": 1,
        "gpu": {"product": product},
        "replicas": replicas,
        "engineArgs": {"max_model_len": max_model_len},
    }


@pytest.fixture
def proxy(cluster: ClusterHandle) -> Iterator[FaultProxy]:
    fault = FaultProxy(upstream_of(cluster.kubeconfig))
    yield fault
    fault.close()


@pytest.mark.skipif(not RESTART, reason=RESTART_REASON)
def test_after_a_partition_with_an_apiserver_restart_every_model_is_true_within_30s(
    cluster: ClusterHandle,
    api_client: client.ApiClient,
    namespace: str,
    crd: None,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    ns = Namespace(api_client, namespace)
    kubeconfig = kubeconfig_through(cluster.kubeconfig, proxy, tmp_path / "kubeconfig")
    operator = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", {"TRITON_VLLM_NAMESPACES": namespace}
    )
    with gpu_nodes(1, gpus=8) as product:
        expected = {name: _spec(product) for name in ("kept", "edited", "removed")}
        for name, spec in expected.items():
            ns.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body(name, spec)
            )
        operator.start()
        try:
            wait_empty(lambda: ns.problems(expected, ready=True), 90, "the models to be Ready")

            proxy.cut()
            ns.apps.delete_namespaced_deployment("kept", namespace)
            edit = {"replicas": 2, "engineArgs": {"max_model_len": 4096}}
            ns.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "edited", {"spec": edit}
            )
            expected["edited"].update(edit)
            ns.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "removed")
            del expected["removed"]
            subprocess.run(
                [str(CLUSTER_SH), "restart-apiserver", "3"],
                check=True,
                timeout=180,
                capture_output=True,
            )
            wait_for(cluster.answers, 60, "the API server after its restart")
            # The history the operator's watches would resume from is gone: they get 410.
            subprocess.run([str(CLUSTER_SH), "compact-etcd"], check=True, timeout=60)
            proxy.restore()
            healed = time.monotonic()

            # The operator's part: children and status of every model, within 30 s.
            wait_empty(lambda: _not_converged(ns, expected), 30, "the models to converge")
            converged = time.monotonic() - healed
            # Ready never claims a Deployment that is not there.
            kept = ns.models()["kept"]
            ready = conditions(kept)["Ready"]
            if ready["status"] == "True":
                deployment = ns.apps.read_namespaced_deployment("kept", namespace)
                assert deployment.status.ready_replicas == 1, (ready, deployment.status)
            # And Ready follows once kcm, the scheduler and kwok have reconnected too.
            wait_empty(lambda: ns.problems(expected, ready=True), 120, "Ready after the restart")
            assert operator.alive
        finally:
            operator.stop()
    print(f"\nconverged {converged:.1f} s after the partition ended")


def _not_converged(ns: Namespace, expected: dict[str, dict[str, Any]]) -> list[str]:
    """What the operator itself has not yet done for `expected` (name -> spec): each model's
    status for its generation and its Deployment as rendered. (Pods, and the old ConfigMap an
    old pod still mounts, wait for kcm, the scheduler and kwok, which reconnect on their own.)"""
    found = []
    models = ns.models()
    deployments = {d.metadata.name: d for d in ns.children()["Deployment"]}
    for name, spec in expected.items():
        model = models[name]
        status = model.get("status") or {}
        want = expected_config_hash(ns.name, name, spec, 1)
        if status.get("observedGeneration") != model["metadata"]["generation"]:
            found.append(f"{name}: observedGeneration {status.get('observedGeneration')}")
        if status.get("configHash") != want:
            found.append(f"{name}: configHash {status.get('configHash')}")
        deployment = deployments.get(name)
        if deployment is None:
            found.append(f"{name}: no Deployment")
            continue
        annotations = deployment.spec.template.metadata.annotations or {}
        if annotations.get(CONFIG_HASH_ANNOTATION) != want:
            found.append(f"{name}: Deployment's pods have config {annotations}")
        if deployment.spec.replicas != spec["replicas"]:
            found.append(f"{name}: Deployment replicas {deployment.spec.replicas}")
    return found


def _replica(kubeconfig: Path, log: Path, identity: str, namespace: str) -> OperatorProcess:
    return OperatorProcess(
        kubeconfig,
        log,
        extra_env={
            "TRITON_VLLM_NAMESPACES": namespace,
            "TRITON_VLLM_LEADER_ELECTION": "true",
            "TRITON_VLLM_LEASE_NAMESPACE": namespace,
            "TRITON_VLLM_IDENTITY": identity,
            "TRITON_VLLM_LEASE_DURATION_SECONDS": str(LEASE),
            "TRITON_VLLM_LEASE_RENEW_DEADLINE_SECONDS": str(RENEW_DEADLINE),
            "TRITON_VLLM_LEASE_RETRY_SECONDS": str(RETRY),
        },
    )


def _lease(api: client.ApiClient, namespace: str) -> Any:
    try:
        return client.CoordinationV1Api(api).read_namespaced_lease(
            "triton-vllm-operator", namespace
        )
    except client.ApiException:
        return None


def _holder(api: client.ApiClient, namespace: str) -> str | None:
    lease = _lease(api, namespace)
    return lease.spec.holder_identity if lease and lease.spec else None


def test_a_leader_whose_packets_are_dropped_stops_before_the_standby_leads(
    cluster: ClusterHandle,
    api_client: client.ApiClient,
    namespace: str,
    crd: None,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    ns = Namespace(api_client, namespace)
    leader = _replica(
        kubeconfig_through(cluster.kubeconfig, proxy, tmp_path / "kubeconfig"),
        tmp_path / "leader.log",
        "leader",
        namespace,
    )
    standby = _replica(cluster.kubeconfig, tmp_path / "standby.log", "standby", namespace)
    try:
        leader.start()
        wait_for(lambda: _holder(api_client, namespace) == "leader", 30, "the first lease")
        standby.start()
        with gpu_nodes(1, gpus=8) as product:
            ns.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body("before", _spec(product))
            )
            wait_empty(lambda: ns.problems({"before": _spec(product)}, ready=True), 60, "Ready")

            proxy.blackhole()
            dropped = time.time()
            assert leader.process is not None
            # The leader ends itself (non-zero: its pod restarts as a standby) ...
            wait_for(lambda: leader.process.poll() is not None, LEASE + 10, "the leader to exit")
            exited = time.time()
            assert leader.process.returncode not in (0, None)
            # ... before the standby takes the lease, and so before its first write.
            wait_for(lambda: _holder(api_client, namespace) == "standby", LEASE + 10, "takeover")
            acquired = _lease(api_client, namespace).spec.acquire_time
            assert exited < acquired.timestamp(), (exited - dropped, acquired)
            # The standby reconciles: a new model converges.
            ns.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body("after", _spec(product))
            )
            both = {"before": _spec(product), "after": _spec(product)}
            wait_empty(lambda: ns.problems(both, ready=True), 60, "the standby's reconcile")
            ns.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            wait_for(lambda: not ns.models(), 60, "the models to go")
    finally:
        for replica in (leader, standby):
            replica.stop()
    print(
        f"\nblack-holed leader exited {exited - dropped:.1f} s after its packets were dropped; "
        f"the standby took the lease {acquired.timestamp() - dropped:.1f} s after"
    )


def test_a_leader_sent_sigterm_hands_the_lease_to_the_standby_within_5s(
    cluster: ClusterHandle, api_client: client.ApiClient, namespace: str, crd: None, tmp_path: Path
) -> None:
    leader = _replica(cluster.kubeconfig, tmp_path / "leader.log", "leader", namespace)
    standby = _replica(cluster.kubeconfig, tmp_path / "standby.log", "standby", namespace)
    try:
        leader.start()
        wait_for(lambda: _holder(api_client, namespace) == "leader", 30, "the first lease")
        standby.start()
        time.sleep(RETRY * 2)  # the standby has seen the lease held
        assert leader.process is not None
        sent = time.monotonic()
        leader.process.terminate()
        wait_for(lambda: _holder(api_client, namespace) == "standby", 5, "the standby to lead")
        handover = time.monotonic() - sent
        assert leader.process.wait(timeout=30) == 0
    finally:
        for replica in (leader, standby):
            replica.stop()
    print(f"\nSIGTERM to the standby leading: {handover:.1f} s")
