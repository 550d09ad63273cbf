"""The thin layer that writes to the Kubernetes API: server-side apply of rendered children."""

from __future__ import annotations

import json
from collections.abc import Callable
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
        # The applied object comes back; decoding it into client models costs CPU and memory
        # that the operator never uses.
        "_preload_content": False,
    }
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    patchers: dict[str, Callable[..., Any]] = {
        "ConfigMap": core.patch_namespaced_config_map,
        "Service": core.patch_namespaced_service,
        "Deployment": apps.patch_namespaced_deployment,
    }
    try:
        patch = patchers[manifest["kind"]]
        response = patch(name, namespace, manifest, **kwargs)
        response.drain_conn()  # read and drop the body, so the connection can be reused
        response.release_conn()
    except client.ApiException as err:
        # An object the API server cannot decode (e.g. a bad quantity) comes back as a 500.
        undecodable = err.status == 500 and "unable to convert" in (err.body or "")
        if err.status in (400, 422) or undecodable:
            raise ApplyRejected(f"{manifest['kind']} {name}: {_api_message(err)}") from err
        raise


def _api_message(err: client.ApiException) -> str:
    try:
        message: str = json.loads(err.body or "{}").get("message") or str(err.reason)
    except ValueError:
        message = str(err.reason)
    return message
