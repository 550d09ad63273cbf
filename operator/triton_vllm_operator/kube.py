"""The thin layer that talks to the Kubernetes API: apply, read and delete children, write a
model's status, post Events, list what the watches will keep up to date."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client

from .api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .token_secret import SecretUnreadable

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATHS = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps/{name}",
    "Service": "/api/v1/namespaces/{namespace}/services/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}",
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
    "ScaledObject": "/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/{name}",
    "HorizontalPodAutoscaler": (
        "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
    ),
}
MODEL_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}/{{name}}"


class Conflict(Exception):
    """An object of a child's name exists and belongs to something else."""


class ApplyRejected(Exception):
    """The API server refused a child as invalid: retrying will not help, the spec must change."""


def apply(api: client.ApiClient, manifest: dict[str, Any], field_manager: str) -> dict[str, Any]:
    """Server-side apply one child; returns the object as stored. Re-applying changes nothing."""
    metadata = manifest["metadata"]
    # Apply bodies are parsed as YAML, which refuses JSON's surrogate-pair escapes: send the
    # characters themselves (an emoji in an annotation is fine).
    body = json.dumps(manifest, ensure_ascii=False)
    status, text = _call(
        api,
        "PATCH",
        PATHS[manifest["kind"]],
        {"namespace": metadata["namespace"], "name": metadata["name"]},
        body=body,
        content_type=APPLY_CONTENT_TYPE,
        query=[("fieldManager", field_manager), ("force", "true")],
    )
    if 200 <= status <= 299:
        stored: dict[str, Any] = json.loads(text)
        return stored
    # An object the API server cannot decode (e.g. a bad quantity) comes back as a 500.
    undecodable = status == 500 and "unable to convert" in text
    if status in (400, 422) or undecodable:
        raise ApplyRejected(f"{manifest['kind']} {metadata['name']}: {_message(text)}")
    raise client.ApiException(status=status, reason=_message(text))


def _call(
    api: client.ApiClient,
    method: str,
    path: str,
    path_params: dict[str, str],
    body: Any = None,
    content_type: str | None = None,
    query: list[tuple[str, str]] | None = None,
    accept: str = "application/json",
) -> tuple[int, str]:
    headers = {"Accept": accept}
    if content_type:
        headers["Content-Type"] = content_type
    request = api.param_serialize(
        method=method,
        resource_path=path,
        path_params=path_params,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request)
    return response.status, response.read().decode("utf-8", "replace")


def _raise_for(status: int, text: str, allowed: tuple[int, ...] = ()) -> None:
    if 200 <= status <= 299 or status in allowed:
        return
    raise client.ApiException(status=status, reason=_message(text))


def check_not_foreign(api: client.ApiClient, manifest: dict[str, Any], owner_uid: str) -> None:
    """Before the first apply of a child: refuse to adopt an object of its name we do not own."""
    metadata = manifest["metadata"]
    status, text = _call(
        api,
        "GET",
        PATHS[manifest["kind"]],
        {"namespace": metadata["namespace"], "name": metadata["name"]},
    )
    if status == 404:
        return
    _raise_for(status, text)
    owners = json.loads(text).get("metadata", {}).get("ownerReferences") or []
    if not any(o.get("uid") == owner_uid and o.get("controller") for o in owners):
        raise Conflict(
            f"{manifest['kind']} {metadata['name']} already exists and is not owned by this "
            "model; delete or rename it, or rename the model"
        )


def delete(api: client.ApiClient, kind: str, namespace: str, name: str) -> None:
    """Delete one child; one that is gone already is fine."""
    status, text = _call(api, "DELETE", PATHS[kind], {"namespace": namespace, "name": name})
    _raise_for(status, text, allowed=(404,))


def patch_status(
    api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch the model's status subresource (None fields are removed); the stored model,
    or None when it is gone."""
    code, text = _call(
        api,
        "PATCH",
        MODEL_PATH + "/status",
        {"namespace": namespace, "name": name},
        body={"status": status},
        content_type=MERGE_PATCH,
    )
    if code == 404:
        return None  # deleted meanwhile: nothing to report on
    _raise_for(code, text)
    stored: dict[str, Any] = json.loads(text)
    return stored


def remove_finalizer(
    api: client.ApiClient, namespace: str, name: str, finalizers: list[str], drop: str
) -> None:
    """Remove one finalizer (guarded by a test of the list, so a concurrent change fails)."""
    kept = [f for f in finalizers if f != drop]
    patch = [
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
    ]
    code, text = _call(
        api,
        "PATCH",
        MODEL_PATH,
        {"namespace": namespace, "name": name},
        body=patch,
        content_type=JSON_PATCH,
    )
    _raise_for(code, text, allowed=(404, 409, 422))


def post_event(
    api: client.ApiClient,
    model: dict[str, Any],
    type_: str,
    reason: str,
    message: str,
    component: str,
) -> None:
    """A core/v1 Event about the model."""
    metadata = model["metadata"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    code, text = _call(
        api,
        "POST",
        "/api/v1/namespaces/{namespace}/events",
        {"namespace": metadata["namespace"]},
        body=event,
        content_type="application/json",
    )
    _raise_for(code, text, allowed=(403, 404))  # an Event is best effort: status has it too


def list_objects(
    api: client.ApiClient,
    path: str,
    label_selector: str = "",
    field_selector: str = "",
) -> Iterator[dict[str, Any]]:
    """Every object of a collection path (e.g. /apis/apps/v1/deployments), page by page."""
    token = ""
    while True:
        query = [("limit", "500")]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if token:
            query.append(("continue", token))
        code, text = _call(api, "GET", path, {}, query=query)
        _raise_for(code, text)
        page = json.loads(text)
        kind = page.get("kind", "List").removesuffix("List")
        version = page.get("apiVersion", "v1")
        for item in page.get("items") or []:
            yield {"kind": kind, "apiVersion": version, **item}
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return


def read_secret_data(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    """One Secret's `data` (base64 values), by a GET: the only Secret call the operator makes."""
    try:
        status, text = _call(
            api,
            "GET",
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            {"namespace": namespace, "name": name},
        )
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise SecretUnreadable(None, type(err).__name__) from err
    if status != 200:
        raise SecretUnreadable(status, f"the API server answered {status}: {_message(text)}")
    data: dict[str, str] = json.loads(text).get("data") or {}
    return data


def read_log_tail(
    api: client.ApiClient, namespace: str, pod: str, container: str, lines: int = 20
) -> str | None:
    """The last `lines` lines (16 KiB at most) of a container's log; None when the API gives
    none (no right to pods/log, the pod gone, the kubelet unreachable)."""
    status, text = _call(
        api,
        "GET",
        "/api/v1/namespaces/{namespace}/pods/{name}/log",
        {"namespace": namespace, "name": pod},
        query=[("container", container), ("tailLines", str(lines)), ("limitBytes", "16384")],
        accept="text/plain, */*",
    )
    return text if status == 200 else None


def _message(text: str) -> str:
    try:
        message = json.loads(text).get("message")
    except ValueError:
        message = None
    return str(message or text[:500])
