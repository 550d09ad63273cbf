"""Placement as a user sees it through the reconcile pass: what is kept across edits, which GPUs
the pods prefer, and an explicit size the estimate disagrees with."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.unit.builders import A10G, H100, L4, gpu_node, model, model_dict
from tests.unit.model_dirs import snapshot
from tests.unit.test_reconcile import NOW, conditions, empty, message, world
from triton_vllm_operator.model_facts import ModelFacts, facts_from_dir, parse_config
from triton_vllm_operator.placement import (
    BELOW_ESTIMATE,
    PLACEMENT_ANNOTATION,
    Placement,
    Unplaceable,
    inventory,
    memory_plan,
    place,
    place_spec,
)
from triton_vllm_operator.reconcile import Observed, Plan, plan_reconcile
from triton_vllm_operator.settings import Settings

A100 = ("NVIDIA-A100-SXM4-40GB", 40960)
H200 = ("NVIDIA-H200", 143771)
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
PRODUCT = "nvidia.com/gpu.product"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    return facts_from_dir(snapshot("Qwen2.5-0.5B-Instruct", tmp_path_factory.mktemp("models")))


def converge(body: dict[str, Any], observed: Observed) -> Plan:
    plan = plan_reconcile(body, observed, Settings(), NOW)
    body["status"] = plan.status
    return plan


def deployment(plan: Plan) -> dict[str, Any]:
    return next(m for m in plan.apply if m["kind"] == "Deployment")


def gpus(plan: Plan) -> Any:
    container = deployment(plan)["spec"]["template"]["spec"]["containers"][0]
    return container["resources"]["limits"]["nvidia.com/gpu"]


def preferred(plan: Plan) -> list[tuple[int, str]]:
    """(weight, product) of the pods' preferred node affinity on the GPU product label."""
    affinity = deployment(plan)["spec"]["template"]["spec"].get("affinity") or {}
    terms = affinity.get("nodeAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution")
    return [
        (t["weight"], e["values"][0])
        for t in terms or []
        for e in t["preference"]["matchExpressions"]
        if e["key"] == PRODUCT
    ]


def edited(body: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body["spec"].update(spec)
    body["metadata"]["generation"] += 1
    return body


@pytest.mark.parametrize(
    "edit",
    [
        {"env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]},
        {"podAnnotations": {"team": "search"}},
        {"resources": {"requests": {"memory": "64Gi"}}},
        {"replicas": 2},
    ],
    ids=["env", "annotations", "resources", "replicas"],
)
def test_an_edit_placement_does_not_read_keeps_tp_even_when_the_nodes_changed(
    edit: dict[str, Any],
) -> None:
    body = model_dict(modelSizeGiB=16)
    first = converge(body, empty(nodes=[gpu_node("gpu-a10g-0", 4, A10G)]))
    assert first.status["tensorParallelSize"] == 2  # 16 GiB do not fit one 22 GiB A10G
    # The A10G node is gone, an H100 node (one GPU would do) came; the user edits the spec.
    h100_only = [gpu_node("gpu-h100-0", 8, H100)]
    again = converge(edited(body, **edit), world(first, nodes=h100_only))
    assert again.status["tensorParallelSize"] == 2
    assert gpus(again) == 2


@pytest.mark.parametrize(
    "edit",
    [
        {"engineArgs": {"max_model_len": 8192}},
        {"gpu": {"product": "NVIDIA-H100-80GB-HBM3"}},
        {"tolerations": [{"key": "team", "operator": "Exists"}]},
        {"nodeSelector": {"pool": "llm"}},
        {"modelSizeGiB": 20},
        {"storage": {"revision": "v2"}},
    ],
    ids=["max_model_len", "gpu", "tolerations", "nodeSelector", "modelSizeGiB", "revision"],
)
def test_a_field_placement_reads_places_the_model_again(edit: dict[str, Any]) -> None:
    body = model_dict(modelSizeGiB=16)
    first = converge(body, empty(nodes=[gpu_node("gpu-a10g-0", 4, A10G)]))
    h100_only = [gpu_node("gpu-h100-0", 8, H100, labels={"pool": "llm"})]
    again = converge(edited(body, **edit), world(first, nodes=h100_only))
    assert again.status["tensorParallelSize"] == 1
    assert gpus(again) == 1


def test_a_deployment_of_an_earlier_operator_keeps_its_placement() -> None:
    """Its placement annotation digests the whole spec but replicas, autoscaling and adapters."""
    body = model_dict(modelSizeGiB=16)
    first = converge(body, empty(nodes=[gpu_node("gpu-a10g-0", 4, A10G)]))
    observed = world(first, nodes=[gpu_node("gpu-h100-0", 8, H100)])
    live = observed.children[("Deployment", "llama")]
    spec = model(**body["spec"]).spec.model_dump(
        by_alias=True, exclude={"replicas", "autoscaling"}, mode="json"
    )
    spec.pop("lora")
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    recorded = json.loads(live["metadata"]["annotations"][PLACEMENT_ANNOTATION])
    recorded["spec"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    live["metadata"]["annotations"][PLACEMENT_ANNOTATION] = json.dumps(recorded)
    again = converge(edited(body), observed)
    assert again.status["tensorParallelSize"] == 2


def test_an_env_edit_keeps_the_gpu_class_the_pods_prefer(qwen: ModelFacts) -> None:
    body = model_dict(model=QWEN)
    nodes = [gpu_node("gpu-l4-0", 1, L4), gpu_node("gpu-h100-0", 8, H100)]
    first = converge(body, empty(nodes=nodes, facts=qwen))
    assert [p for _, p in preferred(first)] == ["NVIDIA-L4", "NVIDIA-H100-80GB-HBM3"]
    # The H100 node is replaced by an H200 node: a fresh placement would prefer L4, then H200.
    changed = [gpu_node("gpu-l4-0", 1, L4), gpu_node("gpu-h200-0", 8, H200)]
    env = [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]
    again = converge(edited(body, env=env), world(first, nodes=changed))
    template = deployment(again)["spec"]["template"]
    assert template["spec"]["containers"][0]["env"][-1] == env[0]
    assert preferred(again) == preferred(first)
    assert (
        template["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        == (
            deployment(first)["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
        )
    )


def test_a_small_model_prefers_the_smallest_gpu_class_that_fits(qwen: ModelFacts) -> None:
    nodes = [
        gpu_node("gpu-a100-0", 4, A100),
        gpu_node("gpu-l4-0", 1, L4),
        gpu_node("gpu-h200-0", 8, H200),
    ]
    plan = converge(model_dict(model=QWEN), empty(nodes=nodes, facts=qwen))
    assert plan.status["tensorParallelSize"] == 1
    assert preferred(plan) == [
        (100, "NVIDIA-L4"),
        (50, "NVIDIA-A100-SXM4-40GB"),
        (33, "NVIDIA-H200"),
    ]
    assert "preferring NVIDIA-L4, NVIDIA-A100-SXM4-40GB, NVIDIA-H200" in message(
        plan.status, "Scheduled"
    )


def test_a_big_model_prefers_only_the_classes_it_fits() -> None:
    nodes = [
        gpu_node("gpu-a100-0", 4, A100),
        gpu_node("gpu-l4-0", 1, L4),
        gpu_node("gpu-h200-0", 8, H200),
        gpu_node("gpu-h100-0", 8, H100),
    ]
    m = model(modelSizeGiB=50)  # one 80 GB or larger GPU
    placed = place(m.spec, memory_plan(m.spec, None), inventory(m.spec, nodes, [])).fresh
    assert isinstance(placed, Placement)
    assert placed.tensor_parallel_size == 1
    assert placed.preferred_products == ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H200")


# Gemma 3 27B's text config as published (google/gemma-3-27b-it), with its weights' size.
GEMMA_3_27B = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "text_config": {
        "head_dim": 128,
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "model_type": "gemma3_text",
        "num_attention_heads": 32,
        "num_hidden_layers": 62,
        "num_key_value_heads": 16,
        "sliding_window": 1024,
        "max_position_embeddings": 131072,
    },
    "torch_dtype": "bfloat16",
}


def test_gemma_3_27b_at_tp1_with_128k_on_h100s_is_rendered_without_a_memory_floor() -> None:
    # Counted over every layer, the 128k KV cache (62 GiB) set a 128 GiB floor no GPU has; by
    # layer type (10 full layers, 52 with a 1024-token window) it is 16.9 GiB, and one H100 fits.
    facts = parse_config(GEMMA_3_27B, "google/gemma-3-27b-it")
    body = model_dict(
        model="google/gemma-3-27b-it",
        tensorParallelSize=1,
        modelSizeGiB=51.2,
        engineArgs={"max_model_len": 131072},
    )
    h100s = [gpu_node("gpu-h100-0", 8, H100), gpu_node("gpu-h100-1", 8, H100)]
    plan = converge(body, empty(nodes=h100s, facts=facts))
    assert gpus(plan) == 1
    spec = deployment(plan)["spec"]["template"]["spec"]
    assert "nvidia.com/gpu.memory" not in str(spec.get("affinity"))
    assert conditions(plan.status)["Scheduled"] == ("True", "Placed")
    assert "Warning" not in message(plan.status, "Scheduled")


def test_an_explicit_size_the_estimate_rejects_is_rendered_as_asked_and_warned() -> None:
    facts = parse_config(GEMMA_3_27B, "google/gemma-3-27b-it")
    spec = {
        "model": "google/gemma-3-27b-it",
        "tensorParallelSize": 1,
        "modelSizeGiB": 51.2,
        "engineArgs": {"max_model_len": 131072, "gpu_memory_utilization": 0.85},
    }
    h100s = [gpu_node("gpu-h100-0", 8, H100), gpu_node("gpu-h100-1", 8, H100)]
    plan = converge(model_dict(**spec), empty(nodes=h100s, facts=facts))
    assert gpus(plan) == 1
    pod = deployment(plan)["spec"]["template"]["spec"]
    assert "nvidia.com/gpu.memory" not in str(pod.get("affinity"))  # no floor
    assert conditions(plan.status)["Scheduled"] == ("True", "Placed")
    text = message(plan.status, "Scheduled")
    assert "tensorParallelSize=1 is used as set, though the memory estimate says" in text
    assert "set spec.engineArgs.max_model_len to at most" in text
    # The reason an Event can carry.
    m = model(**spec)
    placed = place(m.spec, memory_plan(m.spec, facts), inventory(m.spec, h100s, [])).fresh
    assert isinstance(placed, Placement) and placed.warning is not None
    assert placed.warning.reason == BELOW_ESTIMATE
    assert placed.min_memory_mib is None


def test_the_estimate_agreeing_with_an_explicit_size_gives_no_warning() -> None:
    facts = parse_config(GEMMA_3_27B, "google/gemma-3-27b-it")
    m = model(
        model="google/gemma-3-27b-it",
        tensorParallelSize=1,
        modelSizeGiB=51.2,
        engineArgs={"max_model_len": 32768},
    )
    h100s = [gpu_node("gpu-h100-0", 8, H100)]
    placed = place(m.spec, memory_plan(m.spec, facts), inventory(m.spec, h100s, [])).fresh
    assert isinstance(placed, Placement)
    assert placed.warning is None and "Warning" not in placed.message


# Llama 3.1 405B's published shape; its bf16 weights are 756 GiB.
LLAMA_405B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 16384,
    "intermediate_size": 53248,
    "num_attention_heads": 128,
    "num_hidden_layers": 126,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}


def test_a_replica_over_two_nodes_splits_the_model_over_both_nodes_gpus() -> None:
    facts = parse_config(LLAMA_405B, "meta-llama/Llama-3.1-405B-Instruct")
    h100s = [gpu_node(f"gpu-h100-{i}", 8, H100) for i in range(3)]
    spec: dict[str, Any] = {
        "model": "meta-llama/Llama-3.1-405B-Instruct",
        "tensorParallelSize": 8,
        "modelSizeGiB": 756,
        "engineArgs": {"max_model_len": 16384},
    }
    two = model(**spec, nodesPerReplica=2).spec
    placed = place(two, memory_plan(two, facts), inventory(two, h100s, [])).fresh
    assert isinstance(placed, Placement)
    assert (placed.tensor_parallel_size, placed.nodes_per_replica) == (8, 2)
    assert placed.warning is None  # 47 GiB of weights on each of 16 GPUs
    assert placed.replicas_that_fit_now == 1  # three free nodes: one group of two
    one = model(**spec).spec
    alone = place(one, memory_plan(one, facts), inventory(one, h100s, [])).fresh
    assert isinstance(alone, Placement) and alone.warning is not None  # 756 GiB on 8 GPUs
    short = place(two, memory_plan(two, facts), inventory(two, h100s[:1], [])).fresh
    assert isinstance(short, Unplaceable) and short.reason == "NotEnoughGPUs"
    assert "spans spec.nodesPerReplica=2 nodes of 8 GPUs each; 1 node(s) qualify" in short.message


def test_nodes_per_replica_auto_spans_nodes_only_when_the_facts_say_one_is_too_small() -> None:
    facts = parse_config(LLAMA_405B, "meta-llama/Llama-3.1-405B-Instruct")
    h100s = [gpu_node(f"gpu-h100-{i}", 8, H100) for i in range(3)]
    spec: dict[str, Any] = {
        "model": "meta-llama/Llama-3.1-405B-Instruct",
        "nodesPerReplica": "auto",
        "modelSizeGiB": 756,
        "engineArgs": {"max_model_len": 16384},
    }
    auto = model(**spec).spec
    placed = place_spec(auto, facts, inventory(auto, h100s, [])).fresh
    assert isinstance(placed, Placement) and placed.warning is None
    # 126 layers in bf16 (~756 GiB) over 16 GPUs: TP 8 (what a node has), PP 2.
    assert (placed.tensor_parallel_size, placed.nodes_per_replica) == (8, 2)
    # An explicit TP is each node's share; the node count is still chosen.
    four = model(**spec, tensorParallelSize=4).spec
    placed = place_spec(four, facts, inventory(four, h100s, [])).fresh
    assert isinstance(placed, Placement) and placed.warning is None
    assert (placed.tensor_parallel_size, placed.nodes_per_replica) == (4, 3)
    # On H200s (141 GB) one node holds it: auto stays on one node.
    h200s = [gpu_node(f"gpu-h200-{i}", 8, H200) for i in range(2)]
    alone = place_spec(auto, facts, inventory(auto, h200s, [])).fresh
    assert isinstance(alone, Placement) and alone.nodes_per_replica == 1
