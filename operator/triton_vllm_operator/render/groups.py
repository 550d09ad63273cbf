"""A replica bigger than a node: a group of pods, one per node, on vLLM's native multi-node
runtime. Rank 0 runs tritonserver with the backend (the engine's first pipeline stage, and the
only pod that serves); ranks 1..N-1 run the backend's headless worker of the same image.

Each group is a StatefulSet (stable names, ordinal ranks, created in parallel) behind one headless
Service for the rendezvous; the pods of a group never share a node. The pod template is the
single-node one, with the rank, the leader's address and a command that picks the role.
"""

from __future__ import annotations

import copy
from typing import Any

from ..api import TritonVLLMModel, group_count, replica_nodes
from .manifests import MODEL_REPOSITORY, POD_INDEX_LABEL, ports, selector_labels, serving_labels
from .model_files import ENGINE_FILE, MODEL_VERSION, MULTINODE_MASTER_PORT

GROUP_LABEL = "tritonvllm.io/group"
RANK_ENV = "TRITONVLLM_NODE_RANK"
# Runs tritonserver on rank 0 (with the container's args) and the worker elsewhere.
ROLE_SCRIPT = (
    f'if [ "${RANK_ENV}" = 0 ]; then exec tritonserver "$@"; fi; '
    "exec python3 -m tritonvllm_backend.worker {model_json}"
)


def ranks_service_name(model: TritonVLLMModel) -> str:
    return f"{model.metadata.name}-ranks"


def group_names(model: TritonVLLMModel) -> list[str]:
    """The groups of the replicas (the spec's, or the autoscaler's choice), g0..g{R-1}."""
    return [f"{model.metadata.name}-g{i}" for i in range(group_count(model.spec))]


def render_ranks_service(model: TritonVLLMModel, metadata: dict[str, Any]) -> dict[str, Any]:
    """The headless Service every rank resolves the leader by (also before it is Ready)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **{k: copy.deepcopy(v) for k, v in metadata.items() if k != "annotations"},
            "name": ranks_service_name(model),
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(model),
            "ports": [
                {"name": "rendezvous", "port": MULTINODE_MASTER_PORT, "protocol": "TCP"},
                {"name": "join", "port": MULTINODE_MASTER_PORT + 1, "protocol": "TCP"},
            ],
        },
    }


def _rank_probe(probe: dict[str, Any]) -> dict[str, Any]:
    """An HTTP probe of rank 0 as a command that passes on the workers (they serve no HTTP;
    a worker's health is its process: it exits when its group breaks)."""
    get = probe.pop("httpGet")
    url = f"http://127.0.0.1:{{port}}{get['path']}"
    check = (
        f'test "${RANK_ENV}" != 0 || python3 -c "import urllib.request as u; '
        f"u.urlopen('{url}', timeout=3)\""
    )
    return {**probe, "exec": {"command": ["/bin/sh", "-c", check]}}


def _group_template(
    model: TritonVLLMModel, template: dict[str, Any], group: str, ports: dict[str, int]
) -> dict[str, Any]:
    template = copy.deepcopy(template)
    template["metadata"]["labels"][GROUP_LABEL] = group
    spec = template["spec"]
    container = spec["containers"][0]
    namespace = model.metadata.namespace
    leader = f"{group}-0.{ranks_service_name(model)}.{namespace}.svc"
    container["env"] = [
        *container.get("env", []),
        {
            "name": RANK_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}},
        },
        {"name": "TRITONVLLM_MASTER_ADDR", "value": leader},
        {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    model_json = f"{MODEL_REPOSITORY}/{model.served_name}/{MODEL_VERSION}/{ENGINE_FILE}"
    container["command"] = ["/bin/sh", "-c", ROLE_SCRIPT.format(model_json=model_json), "rank"]
    container["ports"] = [
        *container["ports"],
        {"name": "rendezvous", "containerPort": MULTINODE_MASTER_PORT, "protocol": "TCP"},
        {"name": "join", "containerPort": MULTINODE_MASTER_PORT + 1, "protocol": "TCP"},
    ]
    for key in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[key]
        port = ports[probe["httpGet"]["port"]]
        container[key] = _rank_probe(probe)
        command = container[key]["exec"]["command"]
        command[-1] = command[-1].replace("{port}", str(port))
    # One pod of a group per node: each rank holds a whole node's share of the model.
    anti = {
        "labelSelector": {"matchLabels": {GROUP_LABEL: group}},
        "topologyKey": "kubernetes.io/hostname",
    }
    affinity = spec.setdefault("affinity", {})
    pod_anti = affinity.setdefault("podAntiAffinity", {})
    key = "requiredDuringSchedulingIgnoredDuringExecution"
    pod_anti[key] = [*pod_anti.get(key, []), anti]
    return template


def as_groups(model: TritonVLLMModel, children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The children of a multi-node model: the Deployment becomes the groups (and their headless
    Service), and the Service selects rank 0 only. The PodDisruptionBudget (one pod of the model
    at a time) stays: it lets a drain break one group at a time, never two."""
    deployment = next(m for m in children if m["kind"] == "Deployment")
    out = []
    for child in children:
        if child["kind"] == "Deployment":
            out.extend(render_groups(model, deployment))
        elif child["kind"] == "Service":
            child["spec"]["selector"] = serving_labels(model)
            out.append(child)
        else:
            out.append(child)
    return out


def render_groups(model: TritonVLLMModel, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The headless Service and one StatefulSet per replica, from the single-node Deployment:
    the same pod template (config, GPUs, volumes), `nodesPerReplica` pods each."""
    metadata = deployment["metadata"]
    groups = []
    for group in group_names(model):
        template = _group_template(model, deployment["spec"]["template"], group, ports(model))
        group_metadata = copy.deepcopy(metadata)
        group_metadata["name"] = group
        group_metadata["labels"] = {**group_metadata.get("labels", {}), GROUP_LABEL: group}
        groups.append(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": group_metadata,
                "spec": {
                    "serviceName": ranks_service_name(model),
                    "replicas": replica_nodes(model.spec),
                    # All ranks at once: rank 0 waits for the others to join.
                    "podManagementPolicy": "Parallel",
                    "updateStrategy": {"type": "RollingUpdate"},
                    "selector": {"matchLabels": {**selector_labels(model), GROUP_LABEL: group}},
                    "template": template,
                },
            }
        )
    return [render_ranks_service(model, metadata), *groups]
