"""The control loop under change, on the real control plane: rollouts, node churn, nodes that are
not there yet, immutable configs, hand edits, names and objects that are not ours."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from tests.integration.models import Models, models, operator, wait_for
from tests.kube import ClusterHandle, add_gpu_node, remove_node

__all__ = ["models", "operator"]  # fixtures


def _condition(model: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in model.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def _configmap_of(models: Models, name: str) -> str:
    """The ConfigMap the model's Deployment mounts now."""
    deployment = models.apps.read_namespaced_deployment(name, models.namespace)
    (volume,) = [v for v in deployment.spec.template.spec.volumes if v.config_map]
    return str(volume.config_map.name)


def _wait_ready_for_this_generation(models: Models, name: str, what: str) -> None:
    generation = models.get(name)["metadata"]["generation"]
    wait_for(
        lambda: (
            _condition(models.get(name), "Ready").get("observedGeneration") == generation
            and models.condition(name, "Ready")["status"] == "True"
        ),
        90,
        what,
    )


def _live_pods(models: Models, name: str) -> list[client.V1Pod]:
    return [p for p in models.pods(name) if not p.metadata.deletion_timestamp]


def test_ready_never_turns_true_for_a_new_generation_before_its_pods_roll(models: Models) -> None:
    models.create("roll", tensorParallelSize=1, replicas=2, engineArgs={"max_model_len": 4096})
    models.wait_condition("roll", "Ready", "True", timeout=60)
    models.patch_spec("roll", engineArgs={"max_model_len": 8192})
    generation = models.get("roll")["metadata"]["generation"]
    seen_rolling_out = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        model = models.get("roll")
        ready = _condition(model, "Ready")
        if ready.get("observedGeneration") == generation and ready["status"] == "False":
            seen_rolling_out |= ready["reason"] == "RollingOut"
        if ready.get("observedGeneration") == generation and ready["status"] == "True":
            # Read after the status: the rollout can only have moved further since.
            deployment = models.apps.read_namespaced_deployment("roll", models.namespace)
            status = deployment.status
            annotations = deployment.spec.template.metadata.annotations
            assert annotations["tritonvllm.io/config-hash"] == model["status"]["configHash"]
            assert status.observed_generation == deployment.metadata.generation
            assert (status.updated_replicas, status.ready_replicas) == (2, 2), status
            hashes = {
                p.metadata.annotations["tritonvllm.io/config-hash"]
                for p in _live_pods(models, "roll")
            }
            assert hashes == {model["status"]["configHash"]}
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the new generation never became Ready")
    assert seen_rolling_out, "no RollingOut condition was seen during the rollout"
    assert "2 of 2" in ready["message"] or "All 2 replicas" in ready["message"]


def test_a_bigger_node_joining_does_not_resize_or_roll_a_serving_model(models: Models) -> None:
    # 90 GiB of weights: two 80 GiB H100s, or one 141 GiB H200 once such a node joins.
    models.create("sticky", modelSizeGiB=90)
    models.wait_condition("sticky", "Ready", "True", timeout=60)
    assert models.get("sticky")["status"]["tensorParallelSize"] == 2
    generation = models.apps.read_namespaced_deployment("sticky", models.namespace).metadata
    add_gpu_node("gpu-h200-0", gpus=8, product="NVIDIA-H200", memory_mib=143771)
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            status = models.get("sticky")["status"]
            assert status["tensorParallelSize"] == 2
            deployment = models.apps.read_namespaced_deployment("sticky", models.namespace)
            assert deployment.metadata.generation == generation.generation
            time.sleep(0.5)
        ready = models.condition("sticky", "Ready")
        assert ready["status"] == "True", ready
    finally:
        models.custom.delete_namespaced_custom_object(
            "tritonvllm.io", "v1alpha1", models.namespace, "tritonvllmmodels", "sticky"
        )
        remove_node("gpu-h200-0")


def test_cordoning_the_node_of_a_serving_model_keeps_it_scheduled_and_ready(
    models: Models, cluster: ClusterHandle
) -> None:
    add_gpu_node("gpu-l40s-0", gpus=2, product="NVIDIA-L40S", memory_mib=46068)
    try:
        models.create("cordon", tensorParallelSize=1, gpu={"product": "NVIDIA-L40S"})
        models.wait_condition("cordon", "Ready", "True", timeout=60)
        cluster.kubectl("cordon", "gpu-l40s-0")
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            model = models.get("cordon")
            for type_ in ("Scheduled", "Ready"):
                cond = _condition(model, type_)
                assert cond["status"] == "True", cond
            time.sleep(0.3)
    finally:
        models.custom.delete_namespaced_custom_object(
            "tritonvllm.io", "v1alpha1", models.namespace, "tritonvllmmodels", "cordon"
        )
        remove_node("gpu-l40s-0")


def test_each_config_is_an_immutable_configmap_and_a_rollback_restores_it(
    models: Models,
) -> None:
    models.create("cfg", tensorParallelSize=1, engineArgs={"max_model_len": 4096})
    models.wait_condition("cfg", "Ready", "True", timeout=60)
    first = _configmap_of(models, "cfg")
    first_cm = models.core.read_namespaced_config_map(first, models.namespace)
    assert first_cm.immutable is True
    (first_pod,) = _live_pods(models, "cfg")
    first_template = first_pod.metadata.labels["pod-template-hash"]

    models.patch_spec("cfg", engineArgs={"max_model_len": 8192})
    _wait_ready_for_this_generation(models, "cfg", "the new config to be Ready")
    second = _configmap_of(models, "cfg")
    assert second != first
    assert (
        '"max_model_len": 8192'
        in (models.core.read_namespaced_config_map(second, models.namespace).data["model.json"])
    )

    def first_is_gone() -> bool:
        try:
            models.core.read_namespaced_config_map(first, models.namespace)
        except client.ApiException as err:
            return err.status == 404
        return False

    wait_for(first_is_gone, 60, "the unused ConfigMap to be removed")

    models.patch_spec("cfg", engineArgs={"max_model_len": 4096})
    _wait_ready_for_this_generation(models, "cfg", "the rolled-back config to be Ready")
    assert _configmap_of(models, "cfg") == first
    restored = models.core.read_namespaced_config_map(first, models.namespace)
    assert restored.data == first_cm.data
    (pod,) = wait_for(
        lambda: (lambda pods: pods if len(pods) == 1 else None)(_live_pods(models, "cfg")),
        60,
        "one pod",
    )
    assert pod.metadata.labels["pod-template-hash"] == first_template


def test_deleted_and_hand_edited_children_are_restored(models: Models) -> None:
    models.create("edit", tensorParallelSize=1)
    models.wait_condition("edit", "Ready", "True", timeout=60)
    ns = models.namespace
    image = (
        models.apps.read_namespaced_deployment("edit", ns).spec.template.spec.containers[0].image
    )

    models.core.delete_namespaced_service("edit", ns)
    wait_for(
        lambda: models.core.list_namespaced_service(ns, field_selector="metadata.name=edit").items,
        20,
        "the Service to be restored",
    )
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "tritonserver"}]}}}}
    patch["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/hand-edited:1"
    models.apps.patch_namespaced_deployment("edit", ns, patch)
    wait_for(
        lambda: (
            models.apps.read_namespaced_deployment("edit", ns)
            .spec.template.spec.containers[0]
            .image
            == image
        ),
        20,
        "the Deployment's image to be restored",
    )
    models.core.patch_namespaced_service(
        "edit", ns, {"spec": {"selector": {"app.kubernetes.io/instance": "other"}}}
    )
    wait_for(
        lambda: (
            models.core.read_namespaced_service("edit", ns).spec.selector.get(
                "app.kubernetes.io/instance"
            )
            == "edit"
        ),
        20,
        "the Service's selector to be restored",
    )
    models.wait_condition("edit", "Ready", "True", timeout=60)


def test_a_model_name_with_a_dot_is_refused_with_the_reason(models: Models) -> None:
    with pytest.raises(client.ApiException) as refused:
        models.create("llama.v1", tensorParallelSize=1)
    assert refused.value.status == 422
    assert "names the model's Service" in refused.value.body


def test_an_object_of_the_same_name_that_is_not_ours_is_left_alone(models: Models) -> None:
    ns = models.namespace
    models.core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "taken", "labels": {"team": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80}]},
        },
    )
    models.create("taken", tensorParallelSize=1)
    cond = models.wait_condition("taken", "Ready", "False", "NameConflict", timeout=30)
    assert "Service taken already exists and is not owned by this model" in cond["message"]
    service = models.core.read_namespaced_service("taken", ns)
    assert not service.metadata.owner_references
    assert [p.port for p in service.spec.ports] == [80]
    assert service.spec.selector == {"app": "web"}


def test_a_refused_child_is_reported_once_and_the_status_stays_still(models: Models) -> None:
    # The API server refuses this Deployment: a toleration without key must use Exists.
    models.create(
        "refused", tensorParallelSize=1, tolerations=[{"operator": "Equal", "value": "x"}]
    )
    models.wait_condition("refused", "Accepted", "False", "RejectedByAPIServer", timeout=30)
    time.sleep(1)  # let the last write of the pass land
    version = models.get("refused")["metadata"]["resourceVersion"]
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert models.get("refused")["metadata"]["resourceVersion"] == version
        time.sleep(0.5)
    warnings = [e for e in models.events("refused") if e.reason == "RejectedByAPIServer"]
    assert len(warnings) == 1 and (warnings[0].count or 1) == 1, warnings
