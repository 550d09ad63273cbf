"""A TritonVLLMModel's spec.lora served by a real tritonserver and vLLM: the operator's reconcile
pass renders the pod's files (config.pbtxt and model.json from the immutable config, and
multi_lora.json from the adapter ConfigMap, laid out as the Deployment's projected volume says),
and an adapter added and another removed through the spec reach the served set within seconds,
with no new engine config (the pod would not roll).

The adapter ConfigMap's update is written as the kubelet writes one into a volume (a new
``..data`` directory swapped in atomically).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.operator_process import free_ports
from tests.unit.builders import H100, gpu_node
from triton_vllm_operator.reconcile import Observed, plan_reconcile
from triton_vllm_operator.settings import Settings

from .clients import GenerateError
from .conftest import (
    ENGINE_ARGS,
    MODEL,
    START_TIMEOUT_S,
    Server,
    start_tritonserver,
    stop_tritonserver,
    with_parameters,
)
from .test_lora import (
    PICKUP_TIMEOUT_S,
    completion,
    listed_adapters,
    make_adapter,
    openai_completion,
    write_configmap_file,
)

NODES = [gpu_node("gpu-0", 1, H100)]


@dataclass
class Pod:
    """One serving pod as the operator's children describe it: its files and its server."""

    body: dict[str, Any]
    children: dict[tuple[str, str], dict[str, Any]]
    repository: Path
    server: Server
    adapters: dict[str, Path]


def reconcile(body: dict[str, Any], children: dict[tuple[str, str], dict[str, Any]]) -> Any:
    """One pass of the operator's pure reconcile, its writes kept as the API server would."""
    plan = plan_reconcile(body, Observed(NODES, [], children=children), Settings(), "now")
    body["status"] = plan.status
    for manifest in plan.apply:
        children[(manifest["kind"], manifest["metadata"]["name"])] = copy.deepcopy(manifest)
    return plan


def mount(
    children: dict[tuple[str, str], dict[str, Any]],
    name: str,
    repository: Path,
    adapters_only: bool = False,
) -> None:
    """Lay out /models/<served> as the Deployment's model-repository volume does; the adapter
    list as the kubelet keeps a ConfigMap file it updates (`adapters_only`: that file alone)."""
    deployment = children[("Deployment", name)]
    (volume,) = [
        v
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "model-repository"
    ]
    root = repository / MODEL
    for source in volume["projected"]["sources"]:
        data = children[("ConfigMap", source["configMap"]["name"])]["data"]
        for item in source["configMap"]["items"]:
            path = root / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if item["path"].endswith("multi_lora.json"):
                write_configmap_file(path.parent, data[item["key"]])
            elif not adapters_only:
                path.write_text(data[item["key"]])


def spec_adapters(adapters: dict[str, Path], names: list[str]) -> dict[str, Any]:
    return {"adapters": [{"name": n, "path": str(adapters[n])} for n in names], "maxLoras": 2}


@pytest.fixture(scope="module")
def pod(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: Path,
    serving_python: Path,
    log_dir: Path,
) -> Iterator[Pod]:
    made = tmp_path_factory.mktemp("lora-cr")
    adapters = {
        name: make_adapter(serving_python, tiny_model, made / name, seed)
        for name, seed in (("pirate", 1), ("parrot", 2))
    }
    (port,) = free_ports(1)
    body = {
        "apiVersion": "tritonvllm.io/v1alpha1",
        "kind": "TritonVLLMModel",
        "metadata": {"name": MODEL, "namespace": "ml", "uid": "u1", "generation": 1},
        "spec": {
            "model": str(tiny_model),
            "tensorParallelSize": 1,
            "engineArgs": ENGINE_ARGS,
            "openai": {"port": port},
            "lora": spec_adapters(adapters, ["pirate"]),
        },
    }
    children: dict[tuple[str, str], dict[str, Any]] = {}
    reconcile(body, children)
    repository = tmp_path_factory.mktemp("lora-cr-repository")
    mount(children, MODEL, repository)
    # The pod's OpenAI server listens on all addresses; here on 127.0.0.1 only.
    config = repository / MODEL / "config.pbtxt"
    config.write_text(with_parameters(config.read_text(), {"OPENAI_API_HOST": "127.0.0.1"}))
    process, server = start_tritonserver(
        repository,
        log_dir / "lora-cr.log",
        "--model-control-mode=explicit",
        f"--load-model={MODEL}",
        openai_port=port,
    )
    started = time.monotonic()
    try:
        while not (server.ready() and server.model_ready()):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"tritonserver did not become ready:\n{server.log.read_text()[-6000:]}")
            time.sleep(0.5)
        yield Pod(body, children, repository, server, adapters)
    finally:
        stop_tritonserver(process)


def follow(pod: Pod, names: list[str]) -> float:
    """Change spec.lora to these adapters, reconcile, write what it applied into the pod's
    volume; the seconds until the server lists exactly them."""
    pod.body["spec"]["lora"] = spec_adapters(pod.adapters, names)
    pod.body["metadata"]["generation"] += 1
    plan = reconcile(pod.body, pod.children)
    # Only the adapter list changes: no new engine config, no new pod template.
    assert [m["metadata"]["name"] for m in plan.apply] == [f"{MODEL}-lora"]
    mount(pod.children, MODEL, pod.repository, adapters_only=True)
    started = time.monotonic()
    while listed_adapters(pod.server) != set(names):
        if time.monotonic() - started > PICKUP_TIMEOUT_S:
            pytest.fail(f"served {listed_adapters(pod.server)}, not {names}")
        time.sleep(0.1)
    return time.monotonic() - started


def test_the_adapters_of_the_spec_are_served_from_the_operators_files(pod: Pod) -> None:
    engine = json.loads((pod.repository / MODEL / "1" / "model.json").read_text())
    assert (engine["enable_lora"], engine["max_loras"], engine["max_lora_rank"]) == (True, 2, 16)
    assert listed_adapters(pod.server) == {"pirate"}
    base = completion(pod.server)
    assert completion(pod.server, lora_name="pirate") != base
    states = {a["name"]: a["state"] for a in pod.body["status"]["lora"]}
    assert states == {"pirate": "Listed"}


def test_an_adapter_added_and_one_removed_in_the_spec_are_followed_without_a_restart(
    pod: Pod,
) -> None:
    pirate = completion(pod.server, lora_name="pirate")
    took = follow(pod, ["pirate", "parrot"])
    print(f"parrot added: served {took:.2f} s after the adapter list changed")
    parrot = completion(pod.server, lora_name="parrot")
    assert parrot != pirate
    response = openai_completion(pod.server, "parrot")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == parrot

    took = follow(pod, ["parrot"])
    print(f"pirate removed: gone {took:.2f} s after the adapter list changed")
    with pytest.raises(GenerateError) as refused:
        completion(pod.server, lora_name="pirate")
    assert str(refused.value) == "LoRA pirate is not supported, we currently support ['parrot']"
    assert completion(pod.server, lora_name="parrot") == parrot
    assert pod.server.model_ready()
