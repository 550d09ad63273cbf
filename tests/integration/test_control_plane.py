"""The local control plane is real: scheduling on simulated GPUs, validation, garbage collection."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.kube import add_gpu_node, remove_node, wait_until

pytestmark = pytest.mark.cluster

GPU_TOLERATION = client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


def gpu_deployment(
    name: str,
    gpus: int,
    node_selector: dict[str, str] | None = None,
    tolerations: list[client.V1Toleration] | None = None,
) -> client.V1Deployment:
    labels = {"app": name}
    container = client.V1Container(
        name="main",
        image="registry.k8s.io/pause:3.10",  # never pulled: kwok plays the kubelet
        resources=client.V1ResourceRequirements(
            requests={"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": str(gpus)},
            limits={"nvidia.com/gpu": str(gpus)},
        ),
    )
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[container],
                    tolerations=[GPU_TOLERATION, *(tolerations or [])],
                    node_selector=node_selector,
                ),
            ),
        ),
    )


def deployment_available(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    dep = apps.read_namespaced_deployment_status(name, namespace)
    conditions = dep.status.conditions or []
    available = any(c.type == "Available" and c.status == "True" for c in conditions)
    return available and dep.status.ready_replicas == 1


def only_pod(core: client.CoreV1Api, namespace: str, app: str) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return pods[0] if len(pods) == 1 else None


def test_gpu_deployment_lands_on_a_gpu_node_and_becomes_available(
    api_client: Any, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, gpu_deployment("gpu4", 4))

    wait_until(
        lambda: deployment_available(apps, namespace, "gpu4"), 60, "Deployment gpu4 Available"
    )
    pod = only_pod(core, namespace, "gpu4")
    assert pod is not None and pod.status.phase == "Running"
    node = core.read_node(pod.spec.node_name)
    assert int(node.status.allocatable["nvidia.com/gpu"]) >= 4
    assert node.metadata.labels["nvidia.com/gpu.product"] in {
        "NVIDIA-H100-80GB-HBM3",
        "NVIDIA-A10G",
    }


def test_too_many_gpus_stays_pending_with_the_schedulers_reason(
    api_client: Any, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, gpu_deployment("gpu16", 16))

    pod = wait_until(lambda: only_pod(core, namespace, "gpu16"), 30, "the gpu16 pod")

    def failed_scheduling() -> list[str]:
        events = core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.name={pod.metadata.name},reason=FailedScheduling",
        ).items
        return [e.message for e in events]

    messages = wait_until(failed_scheduling, 30, "a FailedScheduling event")
    assert any("Insufficient nvidia.com/gpu" in m for m in messages), messages
    pod = core.read_namespaced_pod(pod.metadata.name, namespace)
    assert pod.status.phase == "Pending"
    assert not pod.spec.node_name


def test_api_server_rejects_invalid_objects(api_client: Any, namespace: str) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)

    bad_selector = gpu_deployment("mismatch", 1)
    bad_selector.spec.selector = client.V1LabelSelector(match_labels={"app": "other"})
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(namespace, bad_selector)
    assert err.value.status == 422
    assert "selector` does not match template `labels`" in err.value.body

    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Not_A_DNS_Name"))
        )
    assert err.value.status == 422

    negative = gpu_deployment("negative", 1)
    negative.spec.replicas = -1
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(namespace, negative)
    assert err.value.status == 422


def test_deleting_an_owner_garbage_collects_its_children(api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    for i in range(3):
        core.create_namespaced_config_map(
            namespace,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"child-{i}", owner_references=[ref]),
                data={"i": str(i)},
            ),
        )
    bystander = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bystander"))
    )

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def remaining() -> list[str]:
        return sorted(cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items)

    wait_until(
        lambda: not any(n.startswith("child-") for n in remaining()), 30, "children collected"
    )
    names = remaining()
    assert "owner" not in names
    assert bystander.metadata.name in names


def test_an_added_gpu_node_takes_a_pod_that_fits_nowhere_else(
    api_client: Any, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    node = f"gpu-big-{uuid.uuid4().hex[:6]}"
    # Its own taint keeps other tests' pending 16-GPU pods (maybe still terminating) off it.
    taint = {"key": "tritonvllm.io/test-node", "value": node, "effect": "NoSchedule"}
    add_gpu_node(node, 16, "NVIDIA-H100-80GB-HBM3", 81559, taints=[taint])
    try:
        toleration = client.V1Toleration(**taint, operator="Equal")
        apps.create_namespaced_deployment(
            namespace,
            gpu_deployment("gpu16", 16, {"kubernetes.io/hostname": node}, [toleration]),
        )
        wait_until(lambda: deployment_available(apps, namespace, "gpu16"), 60, "gpu16 Available")
        pod = only_pod(core, namespace, "gpu16")
        assert pod is not None and pod.spec.node_name == node
    finally:
        remove_node(node)
    assert not core.list_node(field_selector=f"metadata.name={node}").items
