"""Render the children of a TritonVLLMModel: ConfigMap, Deployment, Service and PDB."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..api import (
    API_VERSION,
    KIND,
    TritonVLLMModel,
    fixed_replicas,
    most_replicas,
    replica_nodes,
)
from ..placement import (
    MEMORY_LABEL,
    PLACEMENT_ANNOTATION,
    PRODUCT_LABEL,
    Placement,
    gpus_per_pod,
    placement_digest,
    pod_tolerations,
    preferred_terms,
)
from ..settings import Settings
from .model_files import (
    CONFIG_FILE,
    ENGINE_FILE,
    LORA_FILE,
    MODEL_VERSION,
    LoraLimits,
    config_data,
    config_hash,
    render_multi_lora,
)

MANAGED_BY = "triton-vllm-operator"
MODEL_LABEL = "tritonvllm.io/model"
CONFIG_HASH_ANNOTATION = "tritonvllm.io/config-hash"
# On the Deployment (beside the placement it was rendered for, PLACEMENT_ANNOTATION): a digest of
# its pod template (the rollout strategy is chosen only when the template changes).
TEMPLATE_HASH_ANNOTATION = "tritonvllm.io/template-hash"
# On a Deployment: the spec.replicas the operator last applied (absent when it leaves them out).
REPLICAS_ANNOTATION = "tritonvllm.io/applied-replicas"
MODEL_REPOSITORY = "/models"
CACHE_MOUNT = "/cache"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# Model loads can take long (downloads, weight loading): allow 30 minutes before restarting.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURE_THRESHOLD = 180
# A rollout is declared stuck only after a pod has had its whole startup allowance, and more.
PROGRESS_DEADLINE_SECONDS = STARTUP_PERIOD_SECONDS * STARTUP_FAILURE_THRESHOLD + 600
# The non-root user of NVIDIA's Triton images (triton-server) and of our serving image.
SERVING_UID = 1000


def selector_labels(model: TritonVLLMModel) -> dict[str, str]:
    """Labels that select the model's pods; never change for a given model."""
    return {
        "app.kubernetes.io/name": "triton-vllm",
        "app.kubernetes.io/instance": model.metadata.name,
    }


# Set on every pod by the StatefulSet controller (Kubernetes 1.28+): the pod's ordinal, its rank.
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def serving_labels(model: TritonVLLMModel) -> dict[str, str]:
    """Labels that select the pods that serve: all of them, or rank 0 of each group of nodes
    (the other ranks run the engine's workers and answer no request)."""
    if replica_nodes(model.spec) > 1:
        return {**selector_labels(model), POD_INDEX_LABEL: "0"}
    return selector_labels(model)


# Endpoint pickers (llm-d's router, the Gateway API Inference Extension) read the engine type.
ENGINE_LABELS = {
    "llm-d.ai/engine-type": "vllm",
    "inference.networking.k8s.io/engine-type": "vllm",  # deprecated, still read
}


def labels(model: TritonVLLMModel) -> dict[str, str]:
    """Labels on every child."""
    return {
        **selector_labels(model),
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        MODEL_LABEL: model.metadata.name,
    }


def owner_reference(model: TritonVLLMModel) -> dict[str, Any]:
    """Makes the model own a child, so deleting the model deletes it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": model.metadata.name,
        "uid": model.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(model: TritonVLLMModel, name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": model.metadata.namespace,
        "labels": labels(model),
    }
    if model.metadata.uid:  # absent when rendering offline, before the model exists
        metadata["ownerReferences"] = [owner_reference(model)]
    return metadata


def configmap_name(model_name: str, data: dict[str, str]) -> str:
    """The ConfigMap holding one rendered config: named by its content, never changed."""
    return f"{model_name}-config-{config_hash(data)}"


def digest(value: Any) -> str:
    """A short, stable digest of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def endpoint(model: TritonVLLMModel) -> str:
    """The in-cluster URL of the model on the Service."""
    host = f"{model.metadata.name}.{model.metadata.namespace}.svc"
    return f"http://{host}:{PORTS['http']}/v2/models/{model.served_name}"


def ports(model: TritonVLLMModel) -> dict[str, int]:
    """The pod's and Service's named ports."""
    if not model.spec.openai.enabled:
        return dict(PORTS)
    return {**PORTS, "openai": model.spec.openai.port}


def endpoints(model: TritonVLLMModel) -> dict[str, str]:
    """Every API's in-cluster URL, for status."""
    host = f"{model.metadata.name}.{model.metadata.namespace}.svc"
    urls = {
        "tritonHttp": endpoint(model),
        "tritonGrpc": f"{host}:{PORTS['grpc']}",
        "metrics": f"http://{host}:{PORTS['metrics']}/metrics",
    }
    if model.spec.openai.enabled:
        urls["openai"] = f"http://{host}:{model.spec.openai.port}/v1"
    return urls


def render_configmap(
    model: TritonVLLMModel,
    tensor_parallel_size: int,
    settings: Settings,
    lora: LoraLimits | None = None,
    data: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The immutable ConfigMap holding config.pbtxt and model.json (`data`, when rendered
    already), named by their digest: old and new pods of a rollout each mount their own, and
    rolling back finds the old one again."""
    if data is None:
        data = config_data(model, tensor_parallel_size, settings.backend_name, lora)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(model, configmap_name(model.metadata.name, data)),
        "immutable": True,
        "data": data,
    }


def lora_configmap_name(model: TritonVLLMModel) -> str:
    """The adapter list's ConfigMap: one per model, changed in place (the pods follow it)."""
    return f"{model.metadata.name}-lora"


def render_lora_configmap(model: TritonVLLMModel, listed: Mapping[str, str]) -> dict[str, Any]:
    """The ConfigMap holding multi_lora.json (adapter name -> directory), which the backend
    reads again every second: updated in place, so an adapter change rolls no pod."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(model, lora_configmap_name(model)),
        "data": {LORA_FILE: render_multi_lora(listed)},
    }


def render_service(model: TritonVLLMModel) -> dict[str, Any]:
    """A ClusterIP Service with Triton's http, grpc and metrics ports."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(model, model.metadata.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [
                {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                for name, port in ports(model).items()
            ],
        },
    }


def _node_affinity_terms(model: TritonVLLMModel, placement: Placement) -> list[dict[str, Any]]:
    """The GPU requirements every node must meet, ANDed into each of the user's terms."""
    ours: list[dict[str, Any]] = []
    if model.spec.gpu.product:
        ours.append({"key": PRODUCT_LABEL, "operator": "In", "values": [model.spec.gpu.product]})
    floors = [placement.min_memory_mib or 0, (model.spec.gpu.min_memory_gi_b or 0) * 1024]
    if max(floors) > 0:
        ours.append({"key": MEMORY_LABEL, "operator": "Gt", "values": [str(max(floors) - 1)]})
    affinity = model.spec.affinity
    node_affinity = affinity.node_affinity if affinity else None
    required = (
        node_affinity.required_during_scheduling_ignored_during_execution if node_affinity else None
    )
    user_terms = [
        term.model_dump(by_alias=True, exclude_defaults=True)
        for term in (required.node_selector_terms if required else [])
    ] or [{}]
    if not ours:
        return [] if user_terms == [{}] else user_terms
    return [
        {**term, "matchExpressions": [*term.get("matchExpressions", []), *ours]}
        for term in user_terms
    ]


def _affinity(model: TritonVLLMModel, placement: Placement) -> dict[str, Any]:
    affinity: dict[str, Any] = (
        model.spec.affinity.model_dump(by_alias=True, exclude_defaults=True)
        if model.spec.affinity
        else {}
    )
    terms = _node_affinity_terms(model, placement)
    if terms:
        node_affinity = affinity.setdefault("nodeAffinity", {})
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": terms
        }
    # Bin-packing: the smallest GPU class that fits first, after the user's own preferences.
    preferred = preferred_terms(placement.preferred_products)
    if preferred:
        node_affinity = affinity.setdefault("nodeAffinity", {})
        key = "preferredDuringSchedulingIgnoredDuringExecution"
        node_affinity[key] = [*node_affinity.get(key, []), *preferred]
    return affinity


def _env(model: TritonVLLMModel) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": f"{CACHE_MOUNT}/huggingface"}]
    token = model.spec.storage.hf_token_secret
    if token:
        ref = {"secretKeyRef": {"name": token.name, "key": token.key}}
        env += [{"name": "HF_TOKEN", "valueFrom": ref}]
    env += [e.model_dump(by_alias=True, exclude_none=True) for e in model.spec.env]
    return env


def _resources(model: TritonVLLMModel, tensor_parallel_size: int) -> dict[str, Any]:
    gpus = {model.spec.gpu.resource_name: gpus_per_pod(model.spec, tensor_parallel_size)}
    user = model.spec.resources
    return {
        "requests": {**user.requests, **gpus},
        "limits": {**user.limits, **gpus},
    }


def _cache_volume(model: TritonVLLMModel) -> dict[str, Any]:
    storage = model.spec.storage
    if storage.existing_claim:
        return {"name": "cache", "persistentVolumeClaim": {"claimName": storage.existing_claim}}
    empty_dir: dict[str, Any] = {}
    if storage.size is not None:
        empty_dir["sizeLimit"] = storage.size
    return {"name": "cache", "emptyDir": empty_dir}


def _probe(path: str, port: str = "http", **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, **timing}


def _ready_path(model: TritonVLLMModel) -> tuple[str, str]:
    """What readiness probes: with the OpenAI server on, its /health, which answers only while
    the engine is healthy and the backend (hence tritonserver, its parent) runs; else Triton's."""
    if model.spec.openai.enabled:
        return "/health", "openai"
    return "/v2/health/ready", "http"


def _container(model: TritonVLLMModel, placement: Placement, settings: Settings) -> dict[str, Any]:
    served = model.served_name
    return {
        "name": "tritonserver",
        "image": model.spec.triton.image or settings.triton_image,
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={MODEL_REPOSITORY}",
            "--model-control-mode=none",
            "--exit-on-error=true",
            *model.spec.triton.args,
        ],
        "ports": [
            {"name": name, "containerPort": port, "protocol": "TCP"}
            for name, port in ports(model).items()
        ],
        "env": _env(model),
        "resources": _resources(model, placement.tensor_parallel_size),
        "volumeMounts": [
            {
                "name": "model-repository",
                "mountPath": f"{MODEL_REPOSITORY}/{served}",
                "readOnly": True,
            },
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": CACHE_MOUNT},
        ],
        "startupProbe": _probe(
            "/v2/health/ready",
            periodSeconds=STARTUP_PERIOD_SECONDS,
            failureThreshold=STARTUP_FAILURE_THRESHOLD,
        ),
        "readinessProbe": _probe(*_ready_path(model), periodSeconds=5, failureThreshold=3),
        "livenessProbe": _probe("/v2/health/live", periodSeconds=10, failureThreshold=6),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def pod_security_context() -> dict[str, Any]:
    """The pod security context of every pod the operator makes: the serving image's non-root
    user, RuntimeDefault seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": SERVING_UID,
        "runAsGroup": SERVING_UID,
        "fsGroup": SERVING_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _recorded_placement(model: TritonVLLMModel, placement: Placement) -> dict[str, Any]:
    """What the live workload keeps (placement/sticky.py): the size, the memory floor and, for
    a replica over several nodes, their number (which nodesPerReplica: auto chose)."""
    recorded: dict[str, Any] = {
        "tensorParallelSize": placement.tensor_parallel_size,
        "minMemoryMiB": placement.min_memory_mib,
        "spec": placement.spec_digest or placement_digest(model),
    }
    if placement.nodes_per_replica > 1:
        recorded["nodesPerReplica"] = placement.nodes_per_replica
    return recorded


def rollout_strategy(surge: bool) -> dict[str, Any]:
    """Surge one pod when the GPUs for it are free (serving never dips), else replace in place."""
    if surge:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def _model_repository(model: TritonVLLMModel, data: dict[str, str]) -> dict[str, Any]:
    """The volume at /models/<served>: the immutable config, and with spec.lora the adapter list
    beside model.json (a projected volume: the kubelet updates the list in place)."""
    config = {
        "name": configmap_name(model.metadata.name, data),
        "items": [
            {"key": CONFIG_FILE, "path": CONFIG_FILE},
            {"key": ENGINE_FILE, "path": f"{MODEL_VERSION}/{ENGINE_FILE}"},
        ],
    }
    if model.spec.lora is None:
        return {"name": "model-repository", "configMap": config}
    adapters = {
        "name": lora_configmap_name(model),
        "items": [{"key": LORA_FILE, "path": f"{MODEL_VERSION}/{LORA_FILE}"}],
    }
    sources = [{"configMap": config}, {"configMap": adapters}]
    return {"name": "model-repository", "projected": {"sources": sources}}


def render_deployment(
    model: TritonVLLMModel,
    placement: Placement,
    settings: Settings,
    surge: bool = False,
    lora: LoraLimits | None = None,
    data: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Deployment of tritonserver pods, `TP` GPUs each, rolled when the config (`data`, when
    rendered already) changes."""
    if data is None:
        data = config_data(model, placement.tensor_parallel_size, settings.backend_name, lora)
    pod_annotations = {**model.spec.pod_annotations, CONFIG_HASH_ANNOTATION: config_hash(data)}
    pod_spec: dict[str, Any] = {
        "containers": [_container(model, placement, settings)],
        # tritonserver never talks to the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "tolerations": [
            t.model_dump(by_alias=True, exclude_none=True) for t in pod_tolerations(model.spec)
        ],
        "volumes": [
            _model_repository(model, data),
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            _cache_volume(model),
        ],
        "terminationGracePeriodSeconds": 60,
    }
    if model.spec.node_selector:
        pod_spec["nodeSelector"] = dict(model.spec.node_selector)
    affinity = _affinity(model, placement)
    if affinity:
        pod_spec["affinity"] = affinity
    template = {
        "metadata": {"labels": {**labels(model), **ENGINE_LABELS}, "annotations": pod_annotations},
        "spec": pod_spec,
    }
    metadata = _metadata(model, model.metadata.name)
    metadata["annotations"] = {
        PLACEMENT_ANNOTATION: json.dumps(_recorded_placement(model, placement), sort_keys=True),
        TEMPLATE_HASH_ANNOTATION: digest(template),
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(model)},
        "strategy": rollout_strategy(surge),
        "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
        "template": template,
    }
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}
    replicas = fixed_replicas(model.spec)
    if replicas is not None:
        # With an autoscaler the field is left to it: applying it would take it back.
        with_replicas(deployment, replicas)
    return deployment


def with_replicas(deployment: dict[str, Any], replicas: int) -> dict[str, Any]:
    """The Deployment applying `replicas`, and saying so in an annotation (to know, once an
    autoscaler takes over, whether the operator still owns the field)."""
    deployment["spec"] = {"replicas": replicas, **deployment["spec"]}
    deployment["metadata"]["annotations"][REPLICAS_ANNOTATION] = str(replicas)
    return deployment


def render_pod_disruption_budget(model: TritonVLLMModel) -> dict[str, Any]:
    """At most one replica down at a time through voluntary disruptions (drains, upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(model, model.metadata.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(model)}},
    }


def render_all(
    model: TritonVLLMModel,
    placement: Placement,
    settings: Settings,
    surge: bool = False,
    lora: LoraLimits | None = None,
    adapters: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every child, in the order they should be applied (the ConfigMaps before their pods).

    With spec.lora: `lora` are the resolved limits (default: the spec's) and `adapters` the
    adapters listed to the pods, name -> directory (default: those given as paths), in a
    ConfigMap of their own that the pods mount beside the config."""
    tp = placement.tensor_parallel_size
    data = config_data(model, tp, settings.backend_name, lora)  # rendered once for both
    children = [
        render_configmap(model, tp, settings, lora, data),
        render_deployment(model, placement, settings, surge, lora, data),
        render_service(model),
    ]
    if model.spec.lora is not None:
        if adapters is None:
            adapters = {a.name: a.path for a in model.spec.lora.adapters if a.path is not None}
        children.insert(1, render_lora_configmap(model, adapters))
    if most_replicas(model.spec) > 1:
        children.append(render_pod_disruption_budget(model))
    return children
