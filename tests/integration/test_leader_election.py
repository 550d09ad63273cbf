"""Two operator replicas: one leads and reconciles, the other stands by; killing the leader hands
the models to the standby within the lease's duration."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client

from tests.integration.models import Models, wait_for
from tests.kube import ClusterHandle
from tests.operator_process import CRD, OperatorProcess

LEASE_SECONDS = 6


def _replica(cluster: ClusterHandle, log: Path, identity: str, namespace: str) -> OperatorProcess:
    return OperatorProcess(
        cluster.kubeconfig,
        log,
        extra_env={
            "TRITON_VLLM_NAMESPACES": namespace,
            "TRITON_VLLM_LEADER_ELECTION": "true",
            "TRITON_VLLM_LEASE_NAMESPACE": namespace,
            "TRITON_VLLM_IDENTITY": identity,
            "TRITON_VLLM_LEASE_DURATION_SECONDS": str(LEASE_SECONDS),
            "TRITON_VLLM_LEASE_RETRY_SECONDS": "1",
            "TRITON_VLLM_LEASE_RENEW_DEADLINE_SECONDS": "4",
        },
    )


def test_the_standby_takes_over_when_the_leader_dies(
    cluster: ClusterHandle, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/tritonvllmmodels.tritonvllm.io")
    leases = client.CoordinationV1Api(api_client)
    models = Models(api_client, namespace)
    replicas = {
        name: _replica(cluster, tmp_path / f"{name}.log", name, namespace)
        for name in ("replica-a", "replica-b")
    }
    try:
        for replica in replicas.values():
            replica.start()
        lease = wait_for(lambda: _holder(leases, namespace), 30, "a replica to take the lease")
        models.create("first", tensorParallelSize=1)
        models.wait_condition("first", "Ready", "True", timeout=30)
        # Only the leader writes: the standby's log has no reconcile of its own.
        standby = next(name for name in replicas if name != lease)
        assert "leading as" not in (tmp_path / f"{standby}.log").read_text()

        replicas[lease].kill()
        killed_at = time.monotonic()
        models.create("second", tensorParallelSize=1)
        models.wait_condition("second", "Ready", "True", timeout=LEASE_SECONDS * 5)
        failover = time.monotonic() - killed_at
        assert wait_for(lambda: _holder(leases, namespace) == standby, 10, "the new holder")
        print(f"\nfailover: the standby served a new model {failover:.1f} s after the leader died")
        # The model created before the failover is still Ready and untouched.
        assert models.condition("first", "Ready")["status"] == "True"
    finally:
        for replica in replicas.values():
            replica.stop()
        models.custom.delete_collection_namespaced_custom_object(
            "tritonvllm.io", "v1alpha1", namespace, "tritonvllmmodels"
        )


def _holder(leases: client.CoordinationV1Api, namespace: str) -> str | None:
    try:
        lease = leases.read_namespaced_lease("triton-vllm-operator", namespace)
    except client.ApiException:
        return None
    return str(lease.spec.holder_identity) if lease.spec and lease.spec.holder_identity else None
