"""The thin layer that talks to the Kubernetes API, as client-go's rest client does: every request
has connect and read timeouts, all of them share a QPS/burst limit, and every write first asks
whether this replica may write (leads, with a lease renewed within the renew deadline)."""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes import client

from ..api import API_VERSION, KIND
from ..token_secret import SecretUnreadable
from . import metrics
from .kinds import object_path

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
MODEL_PATH = object_path(KIND)
# Errors that mean the API server was not reached or did not answer in time.
UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)


class Conflict(Exception):
    """An object of a child's name exists and belongs to something else."""


class ApplyRejected(Exception):
    """The API server refused a child as invalid: retrying will not help, the spec must change."""


class AdmissionDenied(Exception):
    """An admission webhook or policy denied a write: the cluster's rule, which its owner may
    change at any time, so the write is retried with backoff (not cached as the spec's fault)."""


class NotLeading(Exception):
    """A write was asked of a replica that does not hold a fresh lease: it must not write."""


class RateLimiter:
    """A token bucket: `qps` requests a second on average, bursts of up to `burst`."""

    def __init__(self, qps: float, burst: int) -> None:
        self._qps, self._burst = qps, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._qps)
            self._at = now
            self._tokens -= 1
            delay = -self._tokens / self._qps if self._tokens < 0 else 0.0
        if delay:
            time.sleep(delay)


def _always() -> bool:
    return True


class Client:
    """Every API call the operator makes, over one kubernetes ApiClient."""

    def __init__(
        self,
        api: client.ApiClient,
        timeout: tuple[float, float] = (5.0, 30.0),
        limiter: RateLimiter | None = None,
        may_write: Callable[[], bool] = _always,
    ) -> None:
        self.api = api
        self.timeout = timeout
        self.limiter = limiter
        self.may_write = may_write

    def call(
        self,
        method: str,
        path: str,
        path_params: dict[str, str],
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
        accept: str = "application/json",
        timeout: tuple[float, float] | None = None,
    ) -> tuple[int, str]:
        """One request; returns (status code, body). Raises UNREACHABLE errors and NotLeading."""
        response = self._send(method, path, path_params, body, content_type, query, accept,
                              timeout or self.timeout)  # fmt: skip
        return response.status, response.read().decode("utf-8", "replace")

    def _send(
        self,
        method: str,
        path: str,
        path_params: dict[str, str],
        body: Any,
        content_type: str | None,
        query: list[tuple[str, str]] | None,
        accept: str,
        timeout: tuple[float, float],
    ) -> Any:
        if method != "GET" and not self.may_write():
            raise NotLeading(f"{method} {path}: this replica does not hold the lease")
        if self.limiter:
            self.limiter.wait()
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        verb = metrics.verb(method, query, collection="name" not in path_params)
        try:
            response = self.api.call_api(*request, _request_timeout=timeout)
        except UNREACHABLE:
            metrics.count_request(verb, None)
            raise
        metrics.count_request(verb, response.status)
        return response

    def stream(
        self, path: str, query: list[tuple[str, str]], read_timeout: float
    ) -> Iterator[dict[str, Any]]:
        """A watch: the events of `path` as they come, one JSON object a line. Ends when the
        server ends the stream; a read that waits longer than `read_timeout` raises."""
        response = self._send("GET", path, {}, None, None, query, "application/json",
                              (self.timeout[0], read_timeout))  # fmt: skip
        raw = response.response
        try:
            if response.status != 200:
                text = raw.read().decode("utf-8", "replace")
                raise client.ApiException(status=response.status, reason=_message(text))
            pending = b""
            for chunk in raw.stream(64 * 1024, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()

    # --- children -------------------------------------------------------------------------

    def apply(
        self, manifest: dict[str, Any], field_manager: str, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply one child; returns the object as stored (with `dry_run`: as it would
        be, admission webhooks' changes included, storing nothing). Re-applying changes
        nothing."""
        metadata = manifest["metadata"]
        # Apply bodies are parsed as YAML, which refuses JSON's surrogate-pair escapes: send the
        # characters themselves (an emoji in an annotation is fine).
        body = json.dumps(manifest, ensure_ascii=False)
        status, text = self.call(
            "PATCH",
            object_path(manifest["kind"]),
            {"namespace": metadata["namespace"], "name": metadata["name"]},
            body=body,
            content_type=APPLY_CONTENT_TYPE,
            query=[
                ("fieldManager", field_manager),
                ("force", "true"),
                *([("dryRun", "All")] if dry_run else []),
            ],
        )
        if 200 <= status <= 299:
            stored: dict[str, Any] = json.loads(text)
            return stored
        if "denied the request" in text or "denied request" in text:
            raise AdmissionDenied(f"{manifest['kind']} {metadata['name']}: {_message(text)}")
        # An object the API server cannot decode (e.g. a bad quantity) comes back as a 500.
        undecodable = status == 500 and "unable to convert" in text
        if status in (400, 422) or undecodable:
            raise ApplyRejected(f"{manifest['kind']} {metadata['name']}: {_message(text)}")
        raise client.ApiException(status=status, reason=_message(text))

    def check_not_foreign(self, manifest: dict[str, Any], owner_uid: str) -> None:
        """Before the first apply of a child: refuse to adopt an object of its name we do not
        own."""
        metadata = manifest["metadata"]
        status, text = self.call(
            "GET",
            object_path(manifest["kind"]),
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

    def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete one child, only the object of `uid` when given (a newer one of the same name
        stays); one that is gone already is fine."""
        body = {"preconditions": {"uid": uid}} if uid else None
        status, text = self.call(
            "DELETE",
            object_path(kind),
            {"namespace": namespace, "name": name},
            body=body,
            content_type="application/json" if body else None,
        )
        _raise_for(status, text, allowed=(404, 409))

    # --- models ---------------------------------------------------------------------------

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the model's status subresource (None fields are removed); the stored
        model, or None when it is gone."""
        code, text = self.call(
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

    def set_replicas(self, namespace: str, name: str, replicas: int, field_manager: str) -> None:
        """Set the model's spec.replicas through its scale subresource (as an autoscaler does)."""
        code, text = self.call(
            "PATCH",
            MODEL_PATH + "/scale",
            {"namespace": namespace, "name": name},
            body={"spec": {"replicas": replicas}},
            content_type=MERGE_PATCH,
            query=[("fieldManager", field_manager)],
        )
        _raise_for(code, text, allowed=(404,))

    def remove_finalizer(self, namespace: str, name: str, finalizers: list[str], drop: str) -> None:
        """Remove one finalizer (guarded by a test of the list, so a concurrent change fails)."""
        kept = [f for f in finalizers if f != drop]
        patch = [
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "replace", "path": "/metadata/finalizers", "value": kept},
        ]
        code, text = self.call(
            "PATCH",
            MODEL_PATH,
            {"namespace": namespace, "name": name},
            body=patch,
            content_type=JSON_PATCH,
        )
        _raise_for(code, text, allowed=(404, 409, 422))

    def post_event(
        self, model: dict[str, Any], type_: str, reason: str, message: str, component: str
    ) -> None:
        """A core/v1 Event about the model."""
        metadata = model["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
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
        code, text = self.call(
            "POST",
            "/api/v1/namespaces/{namespace}/events",
            {"namespace": metadata["namespace"]},
            body=event,
            content_type="application/json",
        )
        _raise_for(code, text, allowed=(403, 404))  # an Event is best effort: status has it too

    # --- reads ----------------------------------------------------------------------------

    def list_pages(
        self, path: str, label_selector: str = "", field_selector: str = "", limit: int = 500
    ) -> Iterator[dict[str, Any]]:
        """A collection page by page (`limit` objects each): each page as the API returns it,
        so a caller keeps only what it needs of each."""
        token = ""
        while True:
            query = [("limit", str(limit))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            code, text = self.call("GET", path, {}, query=query)
            _raise_for(code, text)
            page: dict[str, Any] = json.loads(text)
            yield page
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def list_objects(
        self, path: str, label_selector: str = "", field_selector: str = ""
    ) -> Iterator[dict[str, Any]]:
        """Every object of a collection path (e.g. /apis/apps/v1/deployments), with its kind."""
        for page in self.list_pages(path, label_selector, field_selector):
            kind = page.get("kind", "List").removesuffix("List")
            version = page.get("apiVersion", "v1")
            for item in page.get("items") or []:
                yield {"kind": kind, "apiVersion": version, **item}

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """One Secret's `data` (base64 values), by a GET: the only Secret call the operator
        makes."""
        try:
            status, text = self.call(
                "GET",
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                {"namespace": namespace, "name": name},
            )
        except UNREACHABLE as err:
            raise SecretUnreadable(None, type(err).__name__) from err
        if status != 200:
            raise SecretUnreadable(status, f"the API server answered {status}: {_message(text)}")
        data: dict[str, str] = json.loads(text).get("data") or {}
        return data

    def read_log_tail(
        self, namespace: str, pod: str, container: str, lines: int = 20
    ) -> str | None:
        """The last `lines` lines (16 KiB at most) of a container's log; None when the API gives
        none (no right to pods/log, the pod gone, the kubelet unreachable)."""
        status, text = self.call(
            "GET",
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            {"namespace": namespace, "name": pod},
            query=[("container", container), ("tailLines", str(lines)), ("limitBytes", "16384")],
            accept="text/plain, */*",
        )
        return text if status == 200 else None


def _raise_for(status: int, text: str, allowed: tuple[int, ...] = ()) -> None:
    if 200 <= status <= 299 or status in allowed:
        return
    raise client.ApiException(status=status, reason=_message(text))


def _message(text: str) -> str:
    try:
        message = json.loads(text).get("message")
    except ValueError:
        message = None
    return str(message or text[:500])
