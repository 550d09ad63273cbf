"""The thin layer that writes to the Kubernetes API: server-side apply of rendered children."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


class ApplyRejected(Exception):
    """The API server refused a child as invalid (4xx other than a conflict): not retryable."""


def apply(api: client.ApiClient, manifest: dict[str, Any], field_manager: str) -> None:
    """Server-side apply one child; re-applying the same manifest changes nothing."""
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"]["namespace"]
    kwargs: dict[str, Any] = {
        "field_manager": field_manager,
        "force": True,
        "_content_type": APPLY_CONTENT_TYPE,
    }
    try:
        if manifest["kind"] == "ConfigMap":
            client.CoreV1Api(api).patch_namespaced_config_map(name, namespace, manifest, **kwargs)
        elif manifest["kind"] == "Service":
            client.CoreV1Api(api).patch_namespaced_service(name, namespace, manifest, **kwargs)
        elif manifest["kind"] == "Deployment":
            client.AppsV1Api(api).patch_namespaced_deployment(name, namespace, manifest, **kwargs)
        else:
            raise ValueError(f"no apply for kind {manifest['kind']}")
    except client.ApiException as err:
        if err.status in (400, 422):
            raise ApplyRejected(f"{manifest['kind']} {name}: {_api_message(err)}") from err
        raise


def _api_message(err: client.ApiException) -> str:
    try:
        message: str = json.loads(err.body or "{}").get("message") or str(err.reason)
    except ValueError:
        message = str(err.reason)
    return message
