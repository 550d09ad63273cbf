"""The thin layer that writes to the Kubernetes API: server-side apply of rendered children."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
PATHS = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps/{name}",
    "Service": "/api/v1/namespaces/{namespace}/services/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
}


class ApplyRejected(Exception):
    """The API server refused a child as invalid: retrying will not help, the spec must change."""


def apply(api: client.ApiClient, manifest: dict[str, Any], field_manager: str) -> None:
    """Server-side apply one child; re-applying the same manifest changes nothing."""
    metadata = manifest["metadata"]
    # Apply bodies are parsed as YAML, which refuses JSON's surrogate-pair escapes: send the
    # characters themselves (an emoji in an annotation is fine).
    body = json.dumps(manifest, ensure_ascii=False)
    request = api.param_serialize(
        method="PATCH",
        resource_path=PATHS[manifest["kind"]],
        path_params={"namespace": metadata["namespace"], "name": metadata["name"]},
        query_params=[("fieldManager", field_manager), ("force", "true")],
        header_params={"Content-Type": APPLY_CONTENT_TYPE, "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    # The applied object comes back; the operator never reads it, so it is not decoded.
    response = api.call_api(*request)
    text = response.read().decode("utf-8", "replace")
    if 200 <= response.status <= 299:
        return
    # An object the API server cannot decode (e.g. a bad quantity) comes back as a 500.
    undecodable = response.status == 500 and "unable to convert" in text
    if response.status in (400, 422) or undecodable:
        raise ApplyRejected(f"{manifest['kind']} {metadata['name']}: {_message(text)}")
    raise client.ApiException(status=response.status, reason=response.reason)


def read(api: client.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """One child as the API server has it now, or None when it does not exist."""
    request = api.param_serialize(
        method="GET",
        resource_path=PATHS[kind],
        path_params={"namespace": namespace, "name": name},
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request)
    text = response.read().decode("utf-8", "replace")
    if response.status == 404:
        return None
    if not 200 <= response.status <= 299:
        raise client.ApiException(status=response.status, reason=response.reason)
    result: dict[str, Any] = json.loads(text)
    return result


def _message(text: str) -> str:
    try:
        message = json.loads(text).get("message")
    except ValueError:
        message = None
    return str(message or text[:500])
