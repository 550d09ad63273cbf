"""The informers' cache, with client-go's store semantics: objects keyed by namespace/name, a
delete applied only to the object it names (by uid), and a re-list that replaces a collection
whole, so an object deleted while no watch was open is removed too.

What is kept is slim: models and children without managedFields, nodes as placement reads them,
pods as the GPUs they hold. Every change says which models it concerns, so heartbeats and status
noise wake nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..observed import Key, Observed, OwnPod
from ..placement import COUNT_LABEL, MEMORY_LABEL, PRODUCT_LABEL
from ..render.groups import GROUP_LABEL
from ..render.manifests import CONFIG_HASH_ANNOTATION, MANAGED_BY, MODEL_LABEL, POD_INDEX_LABEL

ModelKey = tuple[str, str]  # (namespace, name)
JOB_LABEL = "batch.kubernetes.io/job-name"
# Labels that change without anything placement reads changing: GPU Feature Discovery rewrites
# its timestamp every minute on every GPU node.
VOLATILE_NODE_LABELS = frozenset({"nvidia.com/gfd.timestamp"})
GPU_LABELS = frozenset({PRODUCT_LABEL, MEMORY_LABEL, COUNT_LABEL})
# What a node change touched besides labels: allocatable, taints, cordon or readiness.
CAPACITY = "capacity"


def object_key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace") or ""
    return f"{namespace}/{metadata.get('name', '')}" if namespace else metadata.get("name", "")


def _uid(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("uid")


def _newer(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether `new` is at least as recent as `old`: an apply's answer and the watch's event
    can arrive in either order (resourceVersions are etcd revisions)."""
    if old is None or _uid(old) != _uid(new):
        return True
    try:
        return int(new["metadata"]["resourceVersion"]) >= int(old["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return True


def without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": metadata}


def slim_node(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The node fields placement reads; heartbeats and GFD's timestamp change none of them."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = {k: v for k, v in (metadata.get("labels") or {}).items()}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "uid": metadata.get("uid"),
            "labels": {k: v for k, v in labels.items() if k not in VOLATILE_NODE_LABELS},
        },
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


def _has_accelerators(node: Mapping[str, Any] | None) -> bool:
    """Whether a slim node offers an extended resource (a GPU) at all."""
    allocatable = ((node or {}).get("status") or {}).get("allocatable") or {}
    return any("/" in name and str(amount) not in ("0", "") for name, amount in allocatable.items())


def node_change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> set[str]:
    """What changed between two slim nodes that placement could use: CAPACITY and/or the label
    keys that changed. A node without GPUs, before and after, changes nothing placement reads."""
    if not _has_accelerators(before) and not _has_accelerators(after):
        return set()
    if before is None or after is None:
        return set() if before is after else {CAPACITY}
    changed = set()
    if before["spec"] != after["spec"] or before["status"] != after["status"]:
        changed.add(CAPACITY)
    old, new = before["metadata"]["labels"], after["metadata"]["labels"]
    changed.update(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return changed


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
    metadata = obj.get("metadata") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "labels": {k: v for k, v in (metadata.get("labels") or {}).items() if k in _OWNER},
        },
        "spec": {"nodeName": spec["nodeName"], "containers": containers},
        "status": {"phase": (obj.get("status") or {}).get("phase")},
    }


_OWNER = ("app.kubernetes.io/managed-by", MODEL_LABEL)


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
    labels = metadata.get("labels") or {}
    index = labels.get(POD_INDEX_LABEL)
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )
    restarts = sum(
        int(c.get("restartCount") or 0)
        for c in (obj.get("status") or {}).get("containerStatuses") or []
    )
    return OwnPod(
        uid=metadata.get("uid"),
        restarts=restarts,
        node=spec.get("nodeName"),
        ready=ready,
        group=labels.get(GROUP_LABEL),
        rank=int(index) if index and index.isdigit() else None,
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


Change = tuple[dict[str, Any] | None, dict[str, Any] | None]  # (before, after)


class Store:
    """One collection's objects by namespace/name, slimmed on the way in; not thread-safe alone
    (World holds the lock)."""

    def __init__(self, slim: Callable[[Mapping[str, Any]], dict[str, Any] | None]) -> None:
        self._slim = slim
        self.objects: dict[str, dict[str, Any]] = {}

    def upsert(self, obj: Mapping[str, Any]) -> Change:
        key = object_key(obj)
        before = self.objects.get(key)
        if not _newer(obj, before):
            return before, before
        after = self._slim(obj)
        if after is None:
            self.objects.pop(key, None)
        else:
            self.objects[key] = after
        return before, after

    def delete(self, obj: Mapping[str, Any]) -> Change:
        """Remove the object the event names; a newer object of the same name (another uid,
        created since) stays."""
        key = object_key(obj)
        before = self.objects.get(key)
        if before is None or (_uid(obj) and _uid(before) and _uid(obj) != _uid(before)):
            return before, before
        del self.objects[key]
        return before, None

    def slim(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._slim(obj)

    def replace(self, slims: Iterable[dict[str, Any]], namespace: str | None) -> list[Change]:
        """A fresh list of slimmed objects (of one namespace, or all when None): that part of
        the store becomes exactly it. Returns every change, removals too."""
        if namespace is None:
            old, self.objects = self.objects, {}
        else:
            prefix = f"{namespace}/"
            old = {k: v for k, v in self.objects.items() if k.startswith(prefix)}
            for key in old:
                del self.objects[key]
        changes: list[Change] = []
        for slim in slims:
            key = object_key(slim)
            self.objects[key] = slim
            before = old.pop(key, None)
            if before != slim:
                changes.append((before, slim))
        changes.extend((gone, None) for gone in old.values())
        return changes


def _owners(changes: Iterable[Change]) -> set[ModelKey]:
    owners = set()
    for before, after in changes:
        if before == after:
            continue
        for obj in (before, after):
            owner = owner_of(obj) if obj else None
            if owner:
                owners.add(owner)
    return owners


def _slim_model(obj: Mapping[str, Any]) -> dict[str, Any]:
    return without_managed_fields(obj)


def _slim_child(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    return without_managed_fields(obj) if owner_of(obj) else None


def _slim_own_pod(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Own pods keep their labels (the owner) and what OwnPod and the GPU count read."""
    if owner_of(obj) is None:
        return None
    metadata = obj.get("metadata") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": metadata.get("labels") or {},
            "annotations": {
                k: v
                for k, v in (metadata.get("annotations") or {}).items()
                if k == CONFIG_HASH_ANNOTATION
            },
            **({"deletionTimestamp": True} if metadata.get("deletionTimestamp") else {}),
        },
        "pod": own_pod(obj),
        "gpu": slim_gpu_pod(obj),
    }


def _crd_established(crd: Mapping[str, Any]) -> dict[str, Any]:
    metadata = crd.get("metadata") or {}
    conditions = (crd.get("status") or {}).get("conditions") or []
    established = any(
        c.get("type") == "Established" and c.get("status") == "True" for c in conditions
    )
    return {"metadata": {"name": metadata.get("name"), "uid": metadata.get("uid")},
            "established": established}  # fmt: skip


class World:
    """The observed state, one Store per watched collection; updated from the informers' threads
    and read by the workers. Each update returns the models to reconcile because of it."""

    def __init__(self, child_kinds: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._models = Store(_slim_model)
        self._children = {kind: Store(_slim_child) for kind in child_kinds}
        self._own_pods = Store(_slim_own_pod)
        self._bound_pods = Store(slim_gpu_pod)
        self._nodes = Store(slim_node)
        self._crds = Store(_crd_established)
        self._pool_crds = Store(_crd_established)
        # Indexes by model: its children by (kind, name), its pods by name.
        self._by_owner: dict[ModelKey, dict[Key, dict[str, Any]]] = {}
        self._pods_by_owner: dict[ModelKey, dict[str, dict[str, Any]]] = {}

    # --- what the informers deliver -------------------------------------------------------

    def apply_event(self, source: str, event: str, obj: Mapping[str, Any]) -> set[ModelKey]:
        """One watch event (ADDED, MODIFIED or DELETED) of `source`'s collection."""
        with self._lock:
            store = self._store(source)
            change = store.delete(obj) if event == "DELETED" else store.upsert(obj)
            return self._woken(source, [change])

    def slimmer(self, source: str) -> Callable[[Mapping[str, Any]], dict[str, Any] | None]:
        """How `source`'s objects are kept: a reflector slims a list's pages as they come."""
        return self._store(source).slim

    def replace(
        self, source: str, slims: Iterable[dict[str, Any]], namespace: str | None = None
    ) -> set[ModelKey]:
        """A re-list of `source`'s collection (in one namespace, or all): what it lacks is
        gone."""
        with self._lock:
            return self._woken(source, self._store(source).replace(slims, namespace))

    def _store(self, source: str) -> Store:
        stores = {
            "models": self._models,
            "own-pods": self._own_pods,
            "bound-pods": self._bound_pods,
            "nodes": self._nodes,
            "crds": self._crds,
            "pool-crds": self._pool_crds,
        }
        return stores.get(source) or self._children[source]

    def _woken(self, source: str, changes: list[Change]) -> set[ModelKey]:
        changes = [c for c in changes if c[0] != c[1]]
        if not changes:
            return set()
        if source == "models":
            keys = set()
            for before, after in changes:
                obj = after or before
                assert obj is not None
                keys.add((obj["metadata"]["namespace"], obj["metadata"]["name"]))
            return keys
        if source in self._children:
            self._reindex(self._by_owner, source, changes)
            return _owners(changes)
        if source == "own-pods":
            self._reindex(self._pods_by_owner, None, changes)
            return _owners(changes)
        if source == "nodes":
            touched: set[str] = set()
            for before, after in changes:
                touched |= node_change(before, after)
            return self._placing(touched)
        if source == "crds":
            return {k for k in self._model_keys() if self._spec(k).get("autoscaling")}
        if source == "pool-crds":
            return {k for k in self._model_keys() if self._spec(k).get("gateway")}
        return set()  # bound pods: capacity is read on the next pass, not a reason for one

    @staticmethod
    def _reindex(index: dict[ModelKey, Any], kind: str | None, changes: list[Change]) -> None:
        """Keep a by-model index in step with a store: keyed (kind, name), or name for pods."""
        for before, after in changes:
            if before is not None and (owner := owner_of(before)):
                entries = index.get(owner, {})
                name = before["metadata"]["name"]
                entries.pop((kind, name) if kind else name, None)
                if not entries:
                    index.pop(owner, None)
            if after is not None and (owner := owner_of(after)):
                name = after["metadata"]["name"]
                entry = {"kind": kind, **after} if kind else after
                index.setdefault(owner, {})[(kind, name) if kind else name] = entry

    def _model_keys(self) -> list[ModelKey]:
        return [_model_key(k) for k in self._models.objects]

    def _spec(self, key: ModelKey) -> Mapping[str, Any]:
        return (self._models.objects.get(f"{key[0]}/{key[1]}") or {}).get("spec") or {}

    def _placing(self, touched: set[str]) -> set[ModelKey]:
        """Models whose placement is not settled and reads what changed on the nodes."""
        if not touched:
            return set()
        woken = set()
        for key, body in self._models.objects.items():
            if _scheduled(body):
                continue
            spec = body.get("spec") or {}
            reads = GPU_LABELS | set(spec.get("nodeSelector") or {})
            if CAPACITY in touched or touched & reads:
                woken.add(_model_key(key))
        return woken

    # --- what one reconcile reads ---------------------------------------------------------

    def model(self, key: ModelKey) -> dict[str, Any] | None:
        with self._lock:
            return self._models.objects.get(f"{key[0]}/{key[1]}")

    def model_keys(self) -> list[ModelKey]:
        with self._lock:
            return self._model_keys()

    def set_model(self, obj: Mapping[str, Any]) -> None:
        """Our own status write's answer: newer than what the watch has shown, maybe."""
        with self._lock:
            self._models.upsert(obj)

    def set_child(self, obj: Mapping[str, Any]) -> None:
        """Our own apply's answer, so the next pass does not apply it again."""
        with self._lock:
            kind = obj["kind"]
            if kind in self._children:
                change = self._children[kind].upsert(obj)
                self._reindex(self._by_owner, kind, [change])

    @property
    def keda_served(self) -> bool:
        with self._lock:
            return any(crd["established"] for crd in self._crds.objects.values())

    def observe(self, key: ModelKey) -> Observed:
        with self._lock:
            own: list[OwnPod] = []
            own_gpu: list[dict[str, Any]] = []
            for pod in self._pods_by_owner.get(key, {}).values():
                own.append(pod["pod"])
                if pod["gpu"]:
                    own_gpu.append(pod["gpu"])
            others = [p for p in self._bound_pods.objects.values() if owner_of(p) != key]
            return Observed(
                nodes=list(self._nodes.objects.values()),
                pods=others,
                own_pods=own,
                own_gpu_pods=own_gpu,
                children=dict(self._by_owner.get(key, {})),
                keda_served=any(crd["established"] for crd in self._crds.objects.values()),
                pool_served=any(crd["established"] for crd in self._pool_crds.objects.values()),
            )


def _model_key(store_key: str) -> ModelKey:
    namespace, _, name = store_key.partition("/")
    return (namespace, name)


def _scheduled(body: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Scheduled" and c.get("status") == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )
