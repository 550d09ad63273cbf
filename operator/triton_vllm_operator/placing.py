"""Where a model goes this pass, pure: from its facts (or spec.modelSizeGiB without them) and the
nodes, or the placement its live Deployment was rendered with while the spec is unchanged; and
the ModelFacts condition that says what was read, or why nothing was and what was used instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .api import TritonVLLMModel
from .conditions import MODEL_FACTS, Verdict
from .model_facts import ModelFacts, ModelFactsError, with_size_hint
from .placement import (
    NodeGPUs,
    Placement,
    Unplaceable,
    place,
    place_unseen,
    size_unknown,
)
from .render.manifests import PLACEMENT_ANNOTATION, placement_digest
from .settings import Settings
from .sized_placement import check_facts, place_by_facts, place_unseen_by_facts
from .sizing import EngineArgError, pipeline_parallel_size
from .validation import SpecError


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def sticky(model: TritonVLLMModel, live: Mapping[str, Any] | None) -> Placement | None:
    """The placement the live Deployment was rendered with, while the spec stays the same."""
    try:
        recorded = json.loads(_annotations(live).get(PLACEMENT_ANNOTATION, ""))
    except ValueError:
        return None
    if not isinstance(recorded, dict) or recorded.get("spec") != placement_digest(model):
        return None
    tp = recorded.get("tensorParallelSize")
    floor = recorded.get("minMemoryMiB")
    if not isinstance(tp, int) or tp < 1 or not (floor is None or isinstance(floor, int)):
        return None
    return Placement(tp, (), 0, floor, f"tensorParallelSize={tp}, kept while the spec is unchanged")


@dataclass(frozen=True)
class Placed:
    """The placement to render (None: render nothing), and what the nodes say now."""

    placement: Placement | None
    fresh: Placement | Unplaceable  # what the nodes say now (for messages)
    sticky: bool


def _no_facts_why(
    model: TritonVLLMModel, found: ModelFacts | ModelFactsError | None, settings: Settings
) -> str:
    """Why the model has no facts to size it by, for the message that asks for a size."""
    if isinstance(found, ModelFactsError):
        return found.message
    if model.spec.model.startswith("/"):
        return (
            f"spec.model {model.spec.model} is a path in the cache volume: the operator does not "
            "read its config."
        )
    if not settings.model_facts:
        return "The operator does not read model facts (TRITON_VLLM_MODEL_FACTS is false)."
    return "The size of the model is unknown."


def place_model(
    model: TritonVLLMModel,
    found: ModelFacts | ModelFactsError | None,
    live: Mapping[str, Any] | None,
    gpus: list[NodeGPUs],
    settings: Settings,
) -> Placed:
    """Placed from the model's facts when there are some, else from spec.modelSizeGiB; SpecError
    for a spec the facts show vLLM cannot run on any node."""
    spec = model.spec
    try:
        pipeline_parallel_size(spec.engine_args)  # a pod's GPUs are TP x PP
    except EngineArgError as err:
        raise SpecError("InvalidEngineArgs", f"{model.metadata.name}: {err}") from err
    fresh: Placement | Unplaceable | None = None
    unseen: Placement | None = None
    why = _no_facts_why(model, found, settings)
    if isinstance(found, ModelFacts):
        facts = with_size_hint(found, spec.model_size_gi_b)
        limits = check_facts(spec, facts, model.metadata.name)
        if facts.weights_bytes is not None:
            fresh = place_by_facts(spec, facts, limits, gpus)
            if isinstance(fresh, Unplaceable):
                unseen = place_unseen_by_facts(spec, facts, limits, fresh)
        else:
            why = f"{facts.name} has no safetensors index or header to size its weights by."
    if fresh is None:  # no facts to size by: spec.modelSizeGiB
        fresh = place(spec, gpus)
        if isinstance(fresh, Unplaceable) and fresh.reason == "ModelSizeUnknown":
            fresh = size_unknown(spec, why)
            if isinstance(found, ModelFactsError):
                fresh = Unplaceable(found.reason, fresh.message)
        if isinstance(fresh, Unplaceable):
            unseen = place_unseen(spec, fresh)
    kept = sticky(model, live)
    if kept:
        return Placed(kept, fresh, True)
    if isinstance(fresh, Placement):
        return Placed(fresh, fresh, False)
    return Placed(unseen, fresh, False)


def facts_verdict(model: TritonVLLMModel, found: ModelFacts | ModelFactsError) -> Verdict:
    """ModelFacts: what was read, or why nothing was and what the placement used instead."""
    if isinstance(found, ModelFacts):
        at = f" at commit {found.commit[:12]}" if found.commit else ""
        gib = found.weights_gib
        weights = f"{gib:.2f} GiB of weights" if gib else "weights of unknown size"
        return Verdict(
            MODEL_FACTS,
            "True",
            "Read",
            f"Read {found.source}{at}: {found.attention_heads} attention heads, "
            f"{found.kv_heads} KV heads, {found.dtype or 'unknown dtype'}, {weights}, "
            f"context {found.max_context or 'unknown'}.",
        )
    spec = model.spec
    if spec.model_size_gi_b is not None:
        then = f"Placed by spec.modelSizeGiB ({spec.model_size_gi_b:g} GiB) instead."
    elif spec.tensor_parallel_size != "auto":
        then = (
            f"Placed as tensorParallelSize={spec.tensor_parallel_size} without checking it "
            "against the model's shape."
        )
    else:
        then = "Not placed: set spec.modelSizeGiB or an integer spec.tensorParallelSize."
    # Until the model is placed, the lookup is retried with backoff; once its Deployment runs,
    # the placement is kept, and the model is looked up again when its spec changes.
    placed = spec.model_size_gi_b is not None or spec.tensor_parallel_size != "auto"
    retry = " Looked up again when the spec changes." if placed else " Retried with backoff."
    return Verdict(MODEL_FACTS, "False", found.reason, f"{found.message} {then}{retry}")
