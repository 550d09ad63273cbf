"""What the watches have observed, kept slim: models, their children and pods, GPU nodes, and
the pods of others that hold GPUs. Every update says whether anything a reconcile reads changed,
so that heartbeats and status noise trigger nothing."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .reconcile import Key, Observed, OwnPod
from .render.manifests import CONFIG_HASH_ANNOTATION, MANAGED_BY, MODEL_LABEL

ModelKey = tuple[str, str]  # (namespace, name)
JOB_LABEL = "batch.kubernetes.io/job-name"
CHILD_KINDS = ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job")


def _newer(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether `new` is at least as recent as `old` (resourceVersions are etcd revisions)."""
    if old is None:
        return True
    try:
        return int(new["metadata"]["resourceVersion"]) >= int(old["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return True


def _without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": metadata}


def slim_node(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The node fields placement reads; heartbeats change none of them."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return {
        "metadata": {"name": metadata.get("name"), "labels": dict(metadata.get("labels") or {})},
        "spec": {
            "unschedulable": bool(spec.get("unschedulable")),
            "taints": [
                {k: t.get(k) for k in ("key", "value", "effect")} for t in spec.get("taints") or []
            ],
        },
        "status": {
            "allocatable": dict(status.get("allocatable") or {}),
            "conditions": [
                {"type": c.get("type"), "status": c.get("status")}
                for c in status.get("conditions") or []
                if c.get("type") == "Ready"
            ],
        },
    }


def _gpu_resources(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Containers' resources, if any container asks for an extended resource (a GPU)."""
    containers = [{"resources": c.get("resources") or {}} for c in spec.get("containers") or []]
    extended = any(
        "/" in resource
        for c in containers
        for amounts in c["resources"].values()
        for resource in amounts or {}
    )
    return containers if extended else []


def slim_gpu_pod(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """A pod bound to a node and holding extended resources, as placement reads it; or None."""
    spec = obj.get("spec") or {}
    containers = _gpu_resources(spec)
    if not spec.get("nodeName") or not containers:
        return None
    return {
        "spec": {"nodeName": spec["nodeName"], "containers": containers},
        "status": {"phase": (obj.get("status") or {}).get("phase")},
    }


def own_pod(obj: Mapping[str, Any]) -> OwnPod:
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    scheduled = next(
        (
            (c.get("status", ""), c.get("reason", ""), c.get("message", ""))
            for c in (obj.get("status") or {}).get("conditions") or []
            if c.get("type") == "PodScheduled"
        ),
        None,
    )
    config_map = next(
        (
            (v.get("configMap") or {}).get("name")
            for v in spec.get("volumes") or []
            if v.get("configMap")
        ),
        None,
    )
    return OwnPod(
        name=metadata.get("name", ""),
        config_hash=(metadata.get("annotations") or {}).get(CONFIG_HASH_ANNOTATION),
        config_map=config_map,
        scheduled=scheduled,
        terminating=bool(metadata.get("deletionTimestamp")),
        job=(metadata.get("labels") or {}).get(JOB_LABEL),
        phase=(obj.get("status") or {}).get("phase"),
    )


def owner_of(obj: Mapping[str, Any]) -> ModelKey | None:
    """The model a child or pod of ours belongs to, from its labels."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY or MODEL_LABEL not in labels:
        return None
    return (metadata.get("namespace", ""), labels[MODEL_LABEL])


class World:
    """The observed state; safe to update from the event loop and read from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.models: dict[ModelKey, dict[str, Any]] = {}
        self._children: dict[ModelKey, dict[Key, dict[str, Any]]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._other_pods: dict[str, dict[str, Any]] = {}  # by uid
        self._own_pods: dict[ModelKey, dict[str, tuple[OwnPod, dict[str, Any] | None]]] = {}
        # Whether KEDA's ScaledObject CRD is established (the autoscaler kind to render).
        self.keda_served = False

    # --- models ---------------------------------------------------------------------------

    def set_model(self, obj: Mapping[str, Any]) -> ModelKey:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._lock:
            if _newer(obj, self.models.get(key)):
                self.models[key] = _without_managed_fields(obj)
        return key

    def drop_model(self, key: ModelKey) -> None:
        with self._lock:
            self.models.pop(key, None)

    def model(self, key: ModelKey) -> dict[str, Any] | None:
        with self._lock:
            return self.models.get(key)

    def waiting_for_nodes(self) -> list[ModelKey]:
        """Models whose placement is not settled: nodes changing may help them."""
        with self._lock:
            return [
                key
                for key, body in self.models.items()
                if not any(
                    c.get("type") == "Scheduled" and c.get("status") == "True"
                    for c in (body.get("status") or {}).get("conditions") or []
                )
            ]

    def autoscaled(self) -> list[ModelKey]:
        """Models with spec.autoscaling: which autoscaler they get depends on KEDA."""
        with self._lock:
            return [k for k, b in self.models.items() if (b.get("spec") or {}).get("autoscaling")]

    # --- children -------------------------------------------------------------------------

    def set_child(self, obj: Mapping[str, Any]) -> ModelKey | None:
        """Store a child of ours; returns its model, or None for an object that is not ours."""
        owner = owner_of(obj)
        if owner is None:
            return None
        key = (obj["kind"], obj["metadata"]["name"])
        with self._lock:
            children = self._children.setdefault(owner, {})
            if _newer(obj, children.get(key)):
                children[key] = _without_managed_fields(obj)
        return owner

    def drop_child(self, obj: Mapping[str, Any]) -> ModelKey | None:
        owner = owner_of(obj)
        if owner is None:
            return None
        with self._lock:
            children = self._children.get(owner, {})
            children.pop((obj["kind"], obj["metadata"]["name"]), None)
            if not children:
                self._children.pop(owner, None)
        return owner

    # --- nodes and pods -------------------------------------------------------------------

    def set_node(self, obj: Mapping[str, Any], deleted: bool = False) -> bool:
        """Store or drop a node; True when what placement reads of it changed."""
        name = obj["metadata"]["name"]
        slim = None if deleted else slim_node(obj)
        with self._lock:
            before = self._nodes.get(name)
            if slim is None:
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = slim
        return before != slim

    def set_pod(self, obj: Mapping[str, Any], deleted: bool = False) -> ModelKey | None:
        """Store or drop a pod; returns the model whose pods changed, if one of ours did."""
        metadata = obj.get("metadata") or {}
        owner = owner_of(obj)
        gpu = None if deleted else slim_gpu_pod(obj)
        with self._lock:
            if owner is None:
                uid = metadata.get("uid", metadata.get("name", ""))
                if gpu is None:
                    self._other_pods.pop(uid, None)
                else:
                    self._other_pods[uid] = gpu
                return None
            pods = self._own_pods.setdefault(owner, {})
            name = metadata.get("name", "")
            before = pods.get(name)
            if deleted:
                pods.pop(name, None)
                if not pods:
                    self._own_pods.pop(owner, None)
                return owner
            now = (own_pod(obj), gpu)
            pods[name] = now
        return owner if before != now else None

    # --- what one reconcile reads ---------------------------------------------------------

    def observe(self, key: ModelKey) -> Observed:
        with self._lock:
            own = list(self._own_pods.get(key, {}).values())
            others = list(self._other_pods.values())
            for model, pods in self._own_pods.items():
                if model != key:
                    others.extend(gpu for _, gpu in pods.values() if gpu)
            return Observed(
                nodes=list(self._nodes.values()),
                pods=others,
                own_pods=[pod for pod, _ in own],
                own_gpu_pods=[gpu for _, gpu in own if gpu],
                children=dict(self._children.get(key, {})),
                keda_served=self.keda_served,
            )
