"""`render` prints what the operator applies: the same spec and nodes give the same objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.builders import A10G, H100, gpu_node, model_dict
from triton_vllm_operator.__main__ import render_documents
from triton_vllm_operator.reconcile import Observed, plan_reconcile
from triton_vllm_operator.settings import Settings

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
NODES = [gpu_node("h0", 8, H100), gpu_node("h1", 8, H100), gpu_node("a0", 4, A10G)]
SETTINGS = Settings(prometheus_address="http://prometheus.monitoring:9090")


def _stored(doc: dict) -> dict:  # type: ignore[type-arg]
    """The model as the API server keeps it (the owner references name its uid)."""
    return {**doc, "metadata": {**doc["metadata"], "generation": 1, "uid": "u-1"}}


def _operator_applies(doc: dict) -> list[dict]:  # type: ignore[type-arg]
    observed = Observed(nodes=NODES, pods=[], keda_served=True)
    return plan_reconcile(_stored(doc), observed, SETTINGS, "2026-12-07T00:00:00Z").apply


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_render_prints_what_the_operator_applies(example: Path) -> None:
    doc = yaml.safe_load(example.read_text())
    rendered = render_documents([_stored(doc)], NODES, SETTINGS)
    applied = _operator_applies(doc)
    if (doc["spec"].get("storage") or {}).get("prefetch"):
        # The serving objects wait for the weights: first the downloads, the rest once cached.
        assert applied == [m for m in rendered if m["kind"] in ("Job", "ConfigMap", "Service")]
    else:
        assert applied == rendered


@pytest.mark.parametrize(
    "spec",
    [
        {"tensorParallelSize": "auto", "modelSizeGiB": 40, "replicas": 3},
        {"tensorParallelSize": 16},  # fits no node: pods rendered for a node autoscaler
        {"tensorParallelSize": 2, "engineArgs": {"pipeline_parallel_size": 2}},
        {"tensorParallelSize": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 4}},
    ],
)
def test_render_and_operator_agree_on_placement_edge_cases(spec: dict) -> None:  # type: ignore[type-arg]
    doc = model_dict(**spec)
    assert _operator_applies(doc) == render_documents([_stored(doc)], NODES, SETTINGS)
