"""The operator against the real control plane and kwok GPU nodes: from a TritonVLLMModel to
Ready pods, with TP sized to the nodes and status a user can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.models import (
    GROUP,
    H100,
    PLURAL,
    VERSION,
    Models,
    models,
    operator,
    wait_for,
)
from tests.kube import ClusterHandle, add_gpu_node, remove_node
from tests.operator_process import OperatorProcess

__all__ = ["models", "operator"]  # fixtures


def test_auto_tp_on_the_h100_pool_becomes_ready(models: Models, cluster: ClusterHandle) -> None:
    models.create("llama-70b", modelSizeGiB=140, gpu={"product": H100})
    ready = models.wait_condition("llama-70b", "Ready", "True", "ModelServing")
    status = models.get("llama-70b")["status"]
    assert status["tensorParallelSize"] == 4
    assert status["readyReplicas"] == 1
    assert status["observedGeneration"] == 1
    assert status["endpoint"] == f"http://llama-70b.{models.namespace}.svc:8000/v2/models/llama-70b"
    assert "All 1 replicas serve the model" in ready["message"]
    (pod,) = models.pods("llama-70b")
    assert pod.spec.node_name.startswith("gpu-h100-")
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "4"
    # What a user types: kubectl wait, and the printer columns of kubectl get.
    cluster.kubectl(
        "-n", models.namespace, "wait", "--for=condition=Ready", "tvm/llama-70b", "--timeout=30s"
    )
    table = cluster.kubectl("-n", models.namespace, "get", "tvm").stdout
    assert table.split("\n")[0].split() == [
        "NAME",
        "MODEL",
        "TP",
        "REPLICAS",
        "READY",
        "STATUS",
        "AGE",
    ]
    row = table.split("\n")[1].split()
    assert row[:6] == [
        "llama-70b",
        "meta-llama/Llama-3.1-8B-Instruct",
        "4",
        "1",
        "1",
        "ModelServing",
    ]


def test_explicit_tp4_lands_on_the_4_gpu_node(models: Models) -> None:
    models.create("a10g", tensorParallelSize=4, gpu={"product": "NVIDIA-A10G"})
    models.wait_condition("a10g", "Ready", "True")
    (pod,) = models.pods("a10g")
    assert pod.spec.node_name == "gpu-a10g-0"
    assert models.get("a10g")["status"]["tensorParallelSize"] == 4


def test_tp16_waits_in_pending_pods_that_say_why_until_a_16_gpu_node_joins(
    models: Models, cluster: ClusterHandle
) -> None:
    models.create("big", tensorParallelSize=16)
    # The pods exist (a node autoscaler acts on Pending pods) and the scheduler says why.
    cond = models.wait_condition("big", "Scheduled", "False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in cond["message"], cond
    assert "On gpu-h100-" in cond["message"]
    assert "8 GPUs < the 16 GPUs a pod needs" in cond["message"]
    assert models.condition("big", "Ready")["status"] == "False"
    deployment = models.apps.read_namespaced_deployment("big", models.namespace)
    limits = deployment.spec.template.spec.containers[0].resources.limits
    assert limits["nvidia.com/gpu"] == "16"
    warnings = wait_for(
        lambda: [e for e in models.events("big") if e.type == "Warning"], 30, "warnings"
    )
    assert {e.reason for e in warnings} & {"NotEnoughGPUs", "Unschedulable"}
    add_gpu_node("gpu-h100x16-0", gpus=16, product=H100, memory_mib=81559)
    try:
        models.wait_condition("big", "Scheduled", "True", timeout=60)
        models.wait_condition("big", "Ready", "True", timeout=60)
        (pod,) = models.pods("big")
        assert pod.spec.node_name == "gpu-h100x16-0"
    finally:
        models.custom.delete_namespaced_custom_object(
            GROUP, VERSION, models.namespace, PLURAL, "big"
        )
        wait_for(lambda: not models.pods("big"), 60, "the 16-GPU pod to go")
        remove_node("gpu-h100x16-0")


def _configmap(models: Models, name: str) -> client.V1ConfigMap:
    """The ConfigMap the model's status names as its current config."""
    current = models.get(name)["status"]["configMap"]
    return models.core.read_namespaced_config_map(current, models.namespace)


def _configmap_version(models: Models, name: str) -> str:
    return str(_configmap(models, name).metadata.resource_version)


def test_config_change_rolls_pods_and_replicas_change_does_not_rerender(models: Models) -> None:
    models.create(
        "roll", tensorParallelSize=1, gpu={"product": H100}, engineArgs={"max_model_len": 4096}
    )
    models.wait_condition("roll", "Ready", "True")
    first_hash = models.get("roll")["status"]["configHash"]
    cm_version = _configmap_version(models, "roll")
    (first_pod,) = models.pods("roll")

    models.patch_spec("roll", replicas=2)
    wait_for(lambda: models.get("roll")["status"].get("readyReplicas") == 2, 60, "2 ready replicas")
    models.wait_condition("roll", "Ready", "True")
    assert models.get("roll")["status"]["configHash"] == first_hash
    assert _configmap_version(models, "roll") == cm_version
    assert first_pod.metadata.name in {p.metadata.name for p in models.pods("roll")}

    models.patch_spec("roll", engineArgs={"max_model_len": 8192})
    wait_for(lambda: models.get("roll")["status"]["configHash"] != first_hash, 30, "a new hash")
    models.wait_condition("roll", "Ready", "True", timeout=90)

    def rolled() -> bool:
        pods = models.pods("roll")
        hashes = {p.metadata.annotations["tritonvllm.io/config-hash"] for p in pods}
        return len(pods) == 2 and hashes == {models.get("roll")["status"]["configHash"]}

    wait_for(rolled, 90, "both pods to run the new config")
    assert first_pod.metadata.name not in {p.metadata.name for p in models.pods("roll")}
    assert '"max_model_len": 8192' in _configmap(models, "roll").data["model.json"]


def test_deleting_the_model_removes_its_children(models: Models) -> None:
    models.create("gone", tensorParallelSize=1)
    models.wait_condition("gone", "Ready", "True")
    models.custom.delete_namespaced_custom_object(GROUP, VERSION, models.namespace, PLURAL, "gone")

    def children_left() -> list[str]:
        ns = models.namespace
        left = [d.metadata.name for d in models.apps.list_namespaced_deployment(ns).items]
        left += [s.metadata.name for s in models.core.list_namespaced_service(ns).items]
        left += [
            c.metadata.name
            for c in models.core.list_namespaced_config_map(ns).items
            if c.metadata.name.startswith("gone")
        ]
        left += [p.metadata.name for p in models.pods("gone")]
        return left

    wait_for(lambda: not children_left(), 60, "children to be garbage-collected")


def test_bad_specs_get_a_false_condition_and_a_warning_event(models: Models) -> None:
    models.create("typo", engineArgs={"max_modle_len": 4096})
    cond = models.wait_condition("typo", "Accepted", "False", "InvalidEngineArgs")
    assert "did you mean 'max_model_len'" in cond["message"]
    assert models.wait_condition("typo", "Ready", "False", "NotAccepted")
    warnings = wait_for(
        lambda: [e for e in models.events("typo") if e.type == "Warning"], 30, "event"
    )
    assert "max_modle_len" in warnings[0].message
    with pytest.raises(client.ApiException):
        models.apps.read_namespaced_deployment("typo", models.namespace)

    models.create("no-product", gpu={"product": "NVIDIA-B200"})
    cond = models.wait_condition("no-product", "Scheduled", "False", "NoNodeFits")
    assert "No node has nvidia.com/gpu.product=NVIDIA-B200 (nodes have: " in cond["message"]
    assert "NVIDIA-H100-80GB-HBM3" in cond["message"]

    # Fixing the spec recovers without any other action.
    models.patch_spec(
        "typo", engineArgs={"max_modle_len": None, "max_model_len": 4096}, tensorParallelSize=1
    )
    models.wait_condition("typo", "Ready", "True")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"tensorParallelSize": "many"}, "tensorParallelSize must be 'auto' or an integer >= 1"),
        ({"tensorParallelSize": 0}, "tensorParallelSize must be 'auto' or an integer >= 1"),
        ({"replicas": -1}, "spec.replicas"),
        ({"storage": {"existingClaim": "a", "size": "1Gi"}}, "not both"),
        ({"model": ""}, "spec.model"),
        ({"resources": {"limits": {"cpu": "lots"}}}, "spec.resources.limits.cpu"),
    ],
)
def test_the_api_server_rejects_what_the_schema_can(
    models: Models, spec: dict[str, Any], error: str
) -> None:
    with pytest.raises(client.ApiException) as rejected:
        models.create("rejected", **spec)
    assert rejected.value.status == 422
    assert error in json.loads(rejected.value.body)["message"]


def test_operator_killed_midway_converges_without_duplicates(
    models: Models, operator: OperatorProcess, tmp_path: Path
) -> None:
    names = [f"m{i}" for i in range(6)]
    for name in names[:3]:
        models.create(name, tensorParallelSize=1, replicas=0)
    operator.kill()
    for name in names[3:]:
        models.create(name, tensorParallelSize=1, replicas=0)
    models.patch_spec("m0", engineArgs={"max_model_len": 1024})
    operator.start()
    for name in names:
        models.wait_condition(name, "Ready", "False", "ScaledToZero", timeout=60)
    deployments = models.apps.list_namespaced_deployment(models.namespace).items
    assert sorted(d.metadata.name for d in deployments) == names
    services = models.core.list_namespaced_service(models.namespace).items
    assert sorted(s.metadata.name for s in services) == names
    assert '"max_model_len": 1024' in _configmap(models, "m0").data["model.json"]
