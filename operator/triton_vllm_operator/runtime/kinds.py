"""Every API collection the operator watches or writes, in one registry: the informers, the first
list, the API client's object paths and the chart's RBAC test all read it."""

from __future__ import annotations

from dataclasses import dataclass

from ..api import GROUP, KIND, PLURAL, VERSION
from ..render.manifests import MANAGED_BY

OURS_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# Pods that hold resources: the field selector is applied by the API server.
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
# Pods bound to a node and holding resources: what the GPU capacity of nodes is reduced by.
BOUND_ACTIVE_PODS = f"spec.nodeName!=,{ACTIVE_PODS}"
KEDA_CRD = "scaledobjects.keda.sh"
INFERENCE_POOL_CRD = "inferencepools.inference.networking.k8s.io"


@dataclass(frozen=True)
class Collection:
    """One kind as the API serves it, and how the operator selects and uses it."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool = True
    label_selector: str = ""
    field_selector: str = ""
    # The verbs the operator calls on it (the chart's RBAC must grant them).
    verbs: tuple[str, ...] = ("list", "watch")

    @property
    def api_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def object_path(self) -> str:
        """Path of one object, with {namespace} and {name} to fill in."""
        where = "/namespaces/{namespace}" if self.namespaced else ""
        return f"{self.api_path}{where}/{self.plural}/{{name}}"

    def collection_paths(self, namespaces: tuple[str, ...]) -> list[str]:
        """Where to list and watch: the whole cluster, or each watched namespace."""
        if not self.namespaced or not namespaces:
            return [f"{self.api_path}/{self.plural}"]
        return [f"{self.api_path}/namespaces/{ns}/{self.plural}" for ns in namespaces]


_CHILD_VERBS = ("list", "watch", "get", "create", "patch")

MODELS = Collection(KIND, GROUP, VERSION, PLURAL, verbs=("list", "watch", "patch"))
# The children of a model, each selected by our managed-by label on the server.
CHILDREN = (
    Collection("ConfigMap", "", "v1", "configmaps", label_selector=OURS_SELECTOR,
               verbs=(*_CHILD_VERBS, "delete")),
    Collection("Service", "", "v1", "services", label_selector=OURS_SELECTOR, verbs=_CHILD_VERBS),
    Collection("Deployment", "apps", "v1", "deployments", label_selector=OURS_SELECTOR,
               verbs=_CHILD_VERBS),
    # A multi-node model's groups, one per replica; delete: the groups of replicas scaled away.
    Collection("StatefulSet", "apps", "v1", "statefulsets", label_selector=OURS_SELECTOR,
               verbs=(*_CHILD_VERBS, "delete")),
    # Read only: a ConfigMap stays while a ReplicaSet that may scale up again mounts it.
    Collection("ReplicaSet", "apps", "v1", "replicasets", label_selector=OURS_SELECTOR),
    Collection("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets",
               label_selector=OURS_SELECTOR, verbs=(*_CHILD_VERBS, "delete")),
    Collection("Job", "batch", "v1", "jobs", label_selector=OURS_SELECTOR, verbs=_CHILD_VERBS),
    Collection("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers",
               label_selector=OURS_SELECTOR, verbs=(*_CHILD_VERBS, "delete")),
)  # fmt: skip
# Watched only while KEDA's CRD is established.
SCALED_OBJECTS = Collection(
    "ScaledObject", "keda.sh", "v1alpha1", "scaledobjects", label_selector=OURS_SELECTOR,
    verbs=(*_CHILD_VERBS, "delete"),
)  # fmt: skip
# Watched only while the Gateway API Inference Extension's InferencePool CRD is established.
INFERENCE_POOLS = Collection(
    "InferencePool", "inference.networking.k8s.io", "v1", "inferencepools",
    label_selector=OURS_SELECTOR, verbs=(*_CHILD_VERBS, "delete"),
)  # fmt: skip
# The model's own pods (status: PodScheduled, config in use, prefetch pods), by label.
OWN_PODS = Collection(
    "Pod", "", "v1", "pods", label_selector=OURS_SELECTOR, field_selector=ACTIVE_PODS
)
# Every bound, active pod: kept only as the GPUs it holds on its node (store.slim_gpu_pod), so
# the cache holds a few fields of the few pods with GPUs, whatever the cluster's size.
BOUND_PODS = Collection("Pod", "", "v1", "pods", field_selector=BOUND_ACTIVE_PODS)
NODES = Collection("Node", "", "v1", "nodes", namespaced=False)
CRDS = Collection(
    "CustomResourceDefinition", "apiextensions.k8s.io", "v1", "customresourcedefinitions",
    namespaced=False, field_selector=f"metadata.name={KEDA_CRD}",
)  # fmt: skip

# The InferencePool CRD, watched as KEDA's is (a field selector takes one name).
POOL_CRDS = Collection(
    "CustomResourceDefinition", "apiextensions.k8s.io", "v1", "customresourcedefinitions",
    namespaced=False, field_selector=f"metadata.name={INFERENCE_POOL_CRD}",
)  # fmt: skip

BY_KIND = {c.kind: c for c in (MODELS, *CHILDREN, SCALED_OBJECTS, INFERENCE_POOLS, NODES, CRDS)}
CHILD_KINDS = tuple(c.kind for c in (*CHILDREN, SCALED_OBJECTS, INFERENCE_POOLS))


def object_path(kind: str) -> str:
    return BY_KIND[kind].object_path
