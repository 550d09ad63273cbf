"""kopf registrations: watch streams that feed the controller, and its start and stop.

Every watch filters on the server: our children and pods by label, pods by phase. kopf's
change-detecting handlers (and with them finalizers and per-object annotations) are not used:
the controller compares the world with what it would render on every pass.
"""

from __future__ import annotations

from typing import Any

import kopf

from .api import GROUP, PLURAL, VERSION
from .controller import ACTIVE_PODS, OURS_SELECTOR, Controller
from .settings import Settings

MODEL = (GROUP, VERSION, PLURAL)
CHILDREN = (
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("batch", "v1", "jobs"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    # Watched once KEDA's CRD is established (kopf's discovery follows CRDs).
    ("keda.sh", "v1alpha1", "scaledobjects"),
)
KINDS = {
    "configmaps": "ConfigMap",
    "services": "Service",
    "deployments": "Deployment",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "jobs": "Job",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "scaledobjects": "ScaledObject",
}


def configure_watches(settings: kopf.OperatorSettings) -> None:
    """Server-side selectors: the API server sends only what the controller keeps."""
    for group, version, plural in CHILDREN:
        settings.watching.label_selectors[group, version, plural] = OURS_SELECTOR
    settings.watching.field_selectors["", "v1", "pods"] = ACTIVE_PODS


def register(registry: kopf.OperatorRegistry, settings: Settings, controller: Controller) -> None:
    """Register every handler on `registry`, feeding `controller`."""

    @kopf.on.event(*MODEL, registry=registry)
    async def model_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_model(event["type"], event["object"])

    for group, version, plural in CHILDREN:
        kind = KINDS[plural]

        def child_event(event: kopf.RawEvent, kind: str = kind, **_: Any) -> None:
            controller.on_child(event["type"], {"kind": kind, **event["object"]})

        kopf.on.event(group, version, plural, id=f"{plural}_event", registry=registry)(
            _async(child_event)
        )

    @kopf.on.event("", "v1", "pods", registry=registry)
    async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_pod(event["type"], event["object"])

    @kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", registry=registry)
    async def crd_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_crd(event["type"], event["object"])

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_node(event["type"], event["object"])


def _async(handler: Any) -> Any:
    async def wrapper(**kwargs: Any) -> None:
        handler(**kwargs)

    return wrapper
