"""Shared by the reliability tests: what a converged namespace looks like, and the kwok GPU nodes
the tests bring along (their own GPU product, so the shared pool of tests/gpu-nodes.yaml stays
free for other tests)."""

from __future__ import annotations

import contextlib
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from tests.kube import add_gpu_node, remove_node
from triton_vllm_operator.render import config_data, config_hash
from triton_vllm_operator.render.manifests import CONFIG_HASH_ANNOTATION
from triton_vllm_operator.settings import Settings
from triton_vllm_operator.validation import parse_model

GROUP, VERSION, PLURAL = "tritonvllm.io", "v1alpha1", "tritonvllmmodels"
MANAGED = "app.kubernetes.io/managed-by=triton-vllm-operator"


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; bounded. The last value is in the error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last}")
        time.sleep(interval)


def wait_empty(problems: Callable[[], list[str]], timeout: float, what: str) -> None:
    """Poll `problems` until it returns no problems; on timeout, fail listing the last ones."""
    deadline = time.monotonic() + timeout
    while found := problems():
        if time.monotonic() > deadline:
            listing = "\n  ".join(found[:40])
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}:\n  {listing}")
        time.sleep(1)


def body(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TritonVLLMModel",
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def expected_config_hash(namespace: str, name: str, spec: Mapping[str, Any], tp: int) -> str:
    """The configHash the spec implies, computed by the renderer the operator uses."""
    obj = body(name, spec)
    obj["metadata"]["namespace"] = namespace
    model = parse_model(obj)
    return config_hash(config_data(model, tp, Settings().backend_name))


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def conditions(model: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (model.get("status") or {}).get("conditions") or []}


@dataclass
class Namespace:
    """Read access to one namespace's models and their children."""

    api: client.ApiClient
    name: str

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)

    def models(self) -> dict[str, dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL)
        return {m["metadata"]["name"]: m for m in items["items"]}

    def children(self) -> dict[str, list[Any]]:
        """Every ConfigMap, Deployment and Service the operator manages here."""
        return {
            "ConfigMap": self.core.list_namespaced_config_map(
                self.name, label_selector=MANAGED
            ).items,
            "Deployment": self.apps.list_namespaced_deployment(
                self.name, label_selector=MANAGED
            ).items,
            "Service": self.core.list_namespaced_service(self.name, label_selector=MANAGED).items,
        }

    def problems(
        self, expected: Mapping[str, Mapping[str, Any]], tp: int = 1, ready: bool = False
    ) -> list[str]:
        """Everything that differs from a converged namespace holding exactly `expected`
        (name -> spec): models, their status, and one child of each kind per model. With
        `ready`, also Ready: True, or False with ScaledToZero at replicas 0."""
        found: list[str] = []
        models = self.models()
        if set(models) != set(expected):
            found.append(
                f"models: missing {sorted(set(expected) - set(models))}, "
                f"unexpected {sorted(set(models) - set(expected))}"
            )
        hashes = {}
        for name, spec in expected.items():
            model = models.get(name)
            if model is None:
                continue
            want = hashes[name] = expected_config_hash(self.name, name, spec, tp)
            generation = model["metadata"]["generation"]
            status = model.get("status") or {}
            conds = conditions(model)
            for type_ in ("Accepted", "Scheduled"):
                cond = conds.get(type_, {})
                if cond.get("status") != "True" or cond.get("observedGeneration") != generation:
                    found.append(f"{name}: {type_} {cond} at generation {generation}")
            if ready:
                want_ready = (
                    ("True", "ModelServing")
                    if spec.get("replicas", 1)
                    else (
                        "False",
                        "ScaledToZero",
                    )
                )
                cond = conds.get("Ready", {})
                if (cond.get("status"), cond.get("reason")) != want_ready:
                    found.append(f"{name}: Ready {cond}")
            if status.get("observedGeneration") != generation:
                found.append(f"{name}: observedGeneration {status.get('observedGeneration')}")
            if status.get("configHash") != want:
                found.append(f"{name}: configHash {status.get('configHash')} != {want}")
            if status.get("replicas") != spec.get("replicas", 1):
                found.append(f"{name}: status.replicas {status.get('replicas')}")
        uids = {name: m["metadata"]["uid"] for name, m in models.items()}
        config_maps = {n: models[n].get("status", {}).get("configMap") for n in expected}
        for kind, items in self.children().items():
            names = [i.metadata.name for i in items]
            if kind == "ConfigMap":  # one per config, named by its content; the status names it
                want_names = sorted(str(config_maps[n]) for n in expected)
            else:
                want_names = sorted(expected)
            if sorted(names) != want_names:
                extra = sorted(set(names) - set(want_names))
                missing = sorted(set(want_names) - set(names))
                found.append(f"{kind}s: missing {missing}, orphaned {extra}")
            for item in items:
                model_name = (item.metadata.labels or {}).get("tritonvllm.io/model", "")
                owners = [o.uid for o in item.metadata.owner_references or []]
                if model_name in uids and owners != [uids[model_name]]:
                    found.append(f"{kind} {item.metadata.name}: owners {owners}")
                if kind == "Deployment" and model_name in expected:
                    spec = expected[model_name]
                    if item.spec.replicas != spec.get("replicas", 1):
                        found.append(f"Deployment {model_name}: replicas {item.spec.replicas}")
                    pod_hash = (item.spec.template.metadata.annotations or {}).get(
                        CONFIG_HASH_ANNOTATION
                    )
                    if pod_hash != hashes.get(model_name):
                        found.append(f"Deployment {model_name}: pod config hash {pod_hash}")
                if kind == "ConfigMap" and model_name in expected:
                    data = item.data or {}
                    if config_hash(data) != hashes.get(model_name):
                        found.append(f"ConfigMap {item.metadata.name}: content hash differs")
        return found


@contextlib.contextmanager
def gpu_nodes(count: int, gpus: int) -> Iterator[str]:
    """`count` kwok nodes with `gpus` GPUs each and a GPU product of their own; yields the
    product (spec.gpu.product). Drained and deleted afterwards."""
    tag = uuid.uuid4().hex[:6]
    product = f"TEST-GPU-{tag}"
    names = [f"rel-{tag}-{i}" for i in range(count)]
    try:
        for name in names:
            add_gpu_node(name, gpus=gpus, product=product, memory_mib=81559)
        yield product
    finally:
        for name in names:
            remove_node(name)
