"""Helpers for tests that drive the operator on the real control plane: models and waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kube import ClusterHandle
from tests.operator_process import CRD, OperatorProcess

GROUP, VERSION, PLURAL = "tritonvllm.io", "v1alpha1", "tritonvllmmodels"
H100 = "NVIDIA-H100-80GB-HBM3"


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")


@contextmanager
def running_operator(
    cluster: ClusterHandle, log: Path, extra_env: dict[str, str] | None = None
) -> Iterator[OperatorProcess]:
    """The committed CRD installed and an operator process running, stopped on exit."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/tritonvllmmodels.tritonvllm.io")
    process = OperatorProcess(cluster.kubeconfig, log, extra_env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    with running_operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log") as op:
        yield op


class Models:
    """CRUD and waits on TritonVLLMModels in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TritonVLLMModel",
            "metadata": {"name": name},
            "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", **spec},
        }
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return result

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return result

    def patch_spec(self, name: str, **spec: Any) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for cond in self.get(name).get("status", {}).get("conditions", []):
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            cond = self.condition(name, type_)
            ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
            return cond if ok else None

        result: dict[str, Any] = wait_for(
            matches, timeout, f"{name} {type_}={status} {reason or ''}"
        )
        return result

    def pods(self, name: str) -> list[client.V1Pod]:
        selector = f"app.kubernetes.io/instance={name}"
        items: list[client.V1Pod] = self.core.list_namespaced_pod(
            self.namespace, label_selector=selector
        ).items
        return items

    def events(self, name: str) -> list[client.CoreV1Event]:
        items: list[client.CoreV1Event] = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return items


@pytest.fixture
def models(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> Iterator[Models]:
    models = Models(api_client, namespace)
    yield models
    # Models carry the operator's finalizer: delete them while it runs, before the namespace.
    if operator.alive:
        models.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        wait_for(
            lambda: (
                not models.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
                    "items"
                ]
            ),
            60,
            "models to be deleted",
        )
