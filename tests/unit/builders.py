"""Builders of the plain Node, Pod and TritonVLLMModel dicts the API would return."""

from __future__ import annotations

from typing import Any

from triton_vllm_operator.api import TritonVLLMModel

H100 = ("NVIDIA-H100-80GB-HBM3", 81559)
A10G = ("NVIDIA-A10G", 23028)
L4 = ("NVIDIA-L4", 23034)


def gpu_node(
    name: str,
    gpus: int,
    product: tuple[str, int] | None = H100,
    *,
    ready: bool = True,
    cordoned: bool = False,
    taints: list[dict[str, str]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    node_labels = dict(labels or {})
    if product:
        node_labels |= {
            "nvidia.com/gpu.product": product[0],
            "nvidia.com/gpu.memory": str(product[1]),
            "nvidia.com/gpu.count": str(gpus),
        }
    return {
        "metadata": {"name": name, "labels": node_labels},
        "spec": {
            "unschedulable": cordoned,
            "taints": taints
            if taints is not None
            else (
                [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
                if gpus
                else []
            ),
        },
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def gpu_pod(node: str, gpus: int, phase: str = "Running") -> dict[str, Any]:
    return {
        "spec": {
            "nodeName": node,
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def model_dict(name: str = "llama", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tritonvllm.io/v1alpha1",
        "kind": "TritonVLLMModel",
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", **spec},
    }


def model(name: str = "llama", **spec: Any) -> TritonVLLMModel:
    return TritonVLLMModel.model_validate(model_dict(name, **spec))
