"""kopf handlers: thin adapters from watch events to reconcile.plan_reconcile and the API."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import kopf
import urllib3
from kubernetes import client

from .api import GROUP, PLURAL, VERSION
from .kube import ApplyRejected, apply, read
from .reconcile import (
    APPLIED_HASH_ANNOTATION,
    Observed,
    Plan,
    plan_reconcile,
    rejected_by_api_server,
    status_changed,
)
from .render.manifests import MANAGED_BY, configmap_name
from .settings import Settings

MODEL = (GROUP, VERSION, PLURAL)
OURS = {"app.kubernetes.io/managed-by": MANAGED_BY}
ALL = "all"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _slim_node(body: kopf.Body) -> dict[str, Any]:
    """The node fields placement reads; the index keeps nothing else in memory."""
    return {
        "metadata": {"name": body.meta.name, "labels": dict(body.meta.labels)},
        "spec": {
            "unschedulable": body.spec.get("unschedulable", False),
            "taints": list(body.spec.get("taints") or []),
        },
        "status": {
            "allocatable": dict(body.status.get("allocatable") or {}),
            "conditions": [
                {"type": c.get("type"), "status": c.get("status")}
                for c in body.status.get("conditions") or []
            ],
        },
    }


def _slim_pod(body: kopf.Body) -> dict[str, Any] | None:
    """A pod bound to a node and holding extended resources (GPUs), or None."""
    node = body.spec.get("nodeName")
    containers = [
        {"resources": c.get("resources") or {}} for c in body.spec.get("containers") or []
    ]
    extended = any(
        "/" in resource
        for c in containers
        for amounts in c["resources"].values()
        for resource in amounts or {}
    )
    if not node or not extended:
        return None
    return {
        "metadata": {"namespace": body.meta.namespace, "labels": dict(body.meta.labels)},
        "spec": {"nodeName": node, "containers": containers},
        "status": {"phase": body.status.get("phase")},
    }


def _slim_child(obj: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """A child's applied hash, and what readiness reads of it (a Deployment's status)."""
    metadata = obj.get("metadata") or {}
    applied = (metadata.get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    slim = {
        "metadata": {"generation": metadata.get("generation")},
        "status": dict(obj.get("status") or {}),
    }
    return applied, slim


def _carry_out(
    plan: Plan, body: kopf.Body, patch: kopf.Patch, api: client.ApiClient, settings: Settings
) -> None:
    for manifest in plan.apply:
        apply(api, manifest, settings.field_manager)
    _write_status_and_events(plan, body, patch)


def _write_status_and_events(plan: Plan, body: kopf.Body, patch: kopf.Patch) -> None:
    if status_changed(body.get("status"), plan.status):
        for key, value in plan.status.items():
            patch.status[key] = value
    for kind, reason, message in plan.events:
        kopf.event(body, type=kind, reason=reason, message=message)


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Register every handler on `registry`, configured by `settings`."""

    @kopf.index("", "v1", "nodes", id="gpu_nodes", registry=registry)
    def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, Any]:
        return {ALL: _slim_node(body)}

    @kopf.index("", "v1", "pods", id="gpu_pods", registry=registry)
    def gpu_pods(body: kopf.Body, **_: Any) -> dict[str, Any] | None:
        pod = _slim_pod(body)
        return {ALL: pod} if pod else None

    @kopf.index("apps", "v1", "deployments", id="model_deployments", labels=OURS, registry=registry)
    def model_deployments(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        slim = {
            "metadata": {"generation": body.meta.get("generation")},
            "status": dict(body.status),
        }
        applied = body.meta.annotations.get(APPLIED_HASH_ANNOTATION)
        return {(body.meta.namespace, body.meta.name): (applied, slim)}

    @kopf.index("", "v1", "configmaps", id="model_configmaps", labels=OURS, registry=registry)
    def model_configmaps(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(body.meta.namespace, body.meta.name): _slim_child(body)}

    @kopf.index("", "v1", "services", id="model_services", labels=OURS, registry=registry)
    def model_services(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(body.meta.namespace, body.meta.name): _slim_child(body)}

    def reconcile(
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        **indexes: Any,
    ) -> None:
        gpu_nodes: kopf.Index[str, dict[str, Any]] = indexes["gpu_nodes"]
        gpu_pods: kopf.Index[str, dict[str, Any]] = indexes["gpu_pods"]
        model_deployments: kopf.Index[Any, Any] = indexes["model_deployments"]
        model_configmaps: kopf.Index[Any, Any] = indexes["model_configmaps"]
        model_services: kopf.Index[Any, Any] = indexes["model_services"]
        if body.meta.deletion_timestamp:
            return  # going away with its children; nothing to converge
        namespace, name = body.meta.namespace, body.meta.name
        hashes: dict[tuple[str, str], str | None] = {}
        deployment = None
        children = (
            ("ConfigMap", model_configmaps, configmap_name(name)),
            ("Service", model_services, name),
            ("Deployment", model_deployments, name),
        )
        for kind, index, child in children:
            for applied, slim in index.get((namespace, child), []):
                hashes[(kind, child)] = applied
                deployment = slim if kind == "Deployment" else deployment
        applied_before = bool(body.status.get("configHash"))
        for kind, _, child in children:
            if applied_before and (kind, child) not in hashes:
                # The informer may have missed it (e.g. across an apiserver restart): ask.
                found = read(memo.api, kind, str(namespace), child)
                if found:
                    hashes[(kind, child)], slim = _slim_child(found)
                    deployment = slim if kind == "Deployment" else deployment
        observed = Observed(
            nodes=list(gpu_nodes.get(ALL, [])),
            pods=list(gpu_pods.get(ALL, [])),
            child_hashes=hashes,
            deployment=deployment,
        )
        plan = plan_reconcile(body, observed, settings, _now())
        try:
            _carry_out(plan, body, patch, memo.api, settings)
        except ApplyRejected as err:
            rejected = rejected_by_api_server(body, plan, str(err), _now())
            _write_status_and_events(rejected, body, patch)
        except client.ApiException as err:
            raise kopf.TemporaryError(f"API error {err.status}: {err.reason}", delay=5) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise kopf.TemporaryError(f"API server unreachable: {err}", delay=5) from err

    for decorate in (
        kopf.on.resume(*MODEL, id="reconcile", registry=registry, backoff=5),
        kopf.on.create(*MODEL, id="reconcile", registry=registry, backoff=5),
        kopf.on.update(*MODEL, id="reconcile", registry=registry, backoff=5),
        # The first recheck waits one interval: create/resume handle a new object already.
        kopf.timer(
            *MODEL,
            id="recheck",
            registry=registry,
            interval=settings.recheck_seconds,
            initial_delay=settings.recheck_seconds,
            backoff=5,
        ),
    ):
        decorate(reconcile)

    @kopf.on.delete(*MODEL, registry=registry, optional=True)
    def deleted(logger: kopf.Logger, **_: Any) -> None:
        # Children carry ownerReferences: the garbage collector removes them.
        logger.info("Model deleted; its ConfigMap, Deployment and Service go with it.")
