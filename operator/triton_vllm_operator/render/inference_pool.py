"""The model's InferencePool (Gateway API Inference Extension, `inference.networking.k8s.io/v1`):
its serving pods as one pool behind an endpoint picker, for an inference gateway's HTTPRoute to
name as its backend. Pure: the caller says whether the InferencePool CRD is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api import TritonVLLMModel
from ..conditions import Verdict
from .manifests import ENGINE_LABELS, PORTS, _metadata, serving_labels

POOL_GROUP = "inference.networking.k8s.io"
POOL_VERSION = "v1"
POOL_KIND = "InferencePool"
POOL_CRD = f"inferencepools.{POOL_GROUP}"
# The condition that says whether the model has its pool.
GATEWAY = "Gateway"
# Only the serving pods, never the model's prefetch pods: they carry the engine type.
ENGINE_TYPE_LABEL = "llm-d.ai/engine-type"


@dataclass(frozen=True)
class PoolPlan:
    """The InferencePool to apply (None: none, and any live one deleted), and the condition."""

    manifest: dict[str, Any] | None
    verdict: Verdict | None


def pool_selector(model: TritonVLLMModel) -> dict[str, str]:
    """The labels of the model's serving pods."""
    return {**serving_labels(model), ENGINE_TYPE_LABEL: ENGINE_LABELS[ENGINE_TYPE_LABEL]}


def target_port(model: TritonVLLMModel) -> int:
    """The pods' port the gateway sends requests to."""
    gateway = model.spec.gateway
    if gateway is not None and gateway.port == "http":
        return PORTS["http"]
    return model.spec.openai.port


def render_inference_pool(model: TritonVLLMModel) -> dict[str, Any]:
    """The InferencePool of a model with spec.gateway, named as the model."""
    gateway = model.spec.gateway
    if gateway is None:
        raise ValueError("render_inference_pool needs spec.gateway")
    picker = gateway.endpoint_picker
    return {
        "apiVersion": f"{POOL_GROUP}/{POOL_VERSION}",
        "kind": POOL_KIND,
        "metadata": _metadata(model, model.metadata.name),
        "spec": {
            "selector": {"matchLabels": pool_selector(model)},
            "targetPorts": [{"number": target_port(model)}],
            "endpointPickerRef": {
                "group": "",
                "kind": "Service",
                "name": picker.name,
                "port": {"number": picker.port},
                "failureMode": picker.failure_mode,
            },
        },
    }


def _parents(live: Mapping[str, Any] | None) -> str:
    """What the gateways that use the pool say of it (its status.parents), in a few words."""
    parents = ((live or {}).get("status") or {}).get("parents") or []
    said = []
    for parent in parents:
        name = (parent.get("parentRef") or {}).get("name", "?")
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        accepted = conditions.get("Accepted") or {}
        said.append(f"{name}: Accepted={accepted.get('status', 'Unknown')}")
    return "; used by " + ", ".join(said) if said else "; no gateway reports using it yet"


def plan_inference_pool(
    model: TritonVLLMModel, crd_served: bool, live: Mapping[str, Any] | None = None
) -> PoolPlan:
    """The pool and the Gateway condition; no condition when spec.gateway is unset.

    `live`: the model's InferencePool as the API shows it, if any (its parents' status).
    """
    gateway = model.spec.gateway
    if gateway is None:
        return PoolPlan(None, None)
    if not crd_served:
        message = (
            f"spec.gateway is set but the InferencePool CRD ({POOL_CRD}, {POOL_VERSION}) is not "
            "installed: install the Gateway API Inference Extension's CRDs; the pool is made "
            "when they are"
        )
        return PoolPlan(None, Verdict(GATEWAY, "False", "InferencePoolCRDMissing", message))
    manifest = render_inference_pool(model)
    picker = gateway.endpoint_picker
    message = (
        f"InferencePool {model.metadata.name}: the serving pods on port {target_port(model)} "
        f"({gateway.port}), endpoint picker Service {picker.name}:{picker.port}" + _parents(live)
    )
    return PoolPlan(manifest, Verdict(GATEWAY, "True", "InferencePool", message))
