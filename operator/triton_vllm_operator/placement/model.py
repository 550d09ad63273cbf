"""A model placed this pass: its facts (or spec.modelSizeGiB) as a memory plan, the nodes, and
the placement its live Deployment records; the Hub lookup a spec asks for; the ModelFacts
condition; and the offline `render --model DIR` placement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..api import TritonVLLMModel, TritonVLLMModelSpec, replica_nodes
from ..model_facts import ModelFacts, ModelFactsError, facts_from_dir, with_size_hint
from ..settings import Settings
from ..validation import SpecError
from .budget import MEMORY_REASONS
from .by_facts import FactsPlan
from .engine import EngineArgError, EngineLimits, pipeline_parallel_size
from .inventory import NodeGPUs, inventory
from .memory import memory_plan
from .place import BELOW_ESTIMATE, Placed, Placement, Unplaceable, place
from .split import check_split, split_problem, valid_tensor_parallel_sizes
from .sticky import sticky

if TYPE_CHECKING:
    from ..conditions import Verdict


@dataclass(frozen=True)
class FactsQuery:
    """Where the control loop looks a model's facts up."""

    repo: str
    revision: str | None
    endpoint: str | None
    token_secret: tuple[str, str] | None = None  # (name, key) of spec.storage.hfTokenSecret


def facts_query(spec: TritonVLLMModelSpec, settings: Settings) -> FactsQuery | None:
    """The Hub lookup a spec asks for; None for a path in the cache volume or with lookups off."""
    if not settings.model_facts or spec.model.startswith("/"):
        return None
    secret = spec.storage.hf_token_secret
    return FactsQuery(
        spec.model,
        spec.storage.revision,
        spec.storage.endpoint or settings.hf_endpoint,
        (secret.name, secret.key) if secret else None,
    )


def check_facts(spec: TritonVLLMModelSpec, facts: ModelFacts, name: str) -> None:
    """SpecError for what no node could change: a tensorParallelSize vLLM cannot split the model
    over, more pipeline stages than the model has layers, a max_model_len above the model's own
    context."""
    try:
        limits = EngineLimits.from_engine_args(spec.engine_args)
    except EngineArgError as err:
        raise SpecError("InvalidEngineArgs", f"{name}: {err}") from err
    stages = replica_nodes(spec) * limits.pipeline_parallel_size
    if stages > facts.layers:
        raise SpecError(
            "TooManyPipelineStages",
            f"{name}: {stages} pipeline stages (nodesPerReplica x pipeline_parallel_size) for "
            f"{facts.layers} layers: each stage needs at least one layer of {facts.name}. Use at "
            f"most {facts.layers}.",
        )
    tp = spec.tensor_parallel_size
    refusal = check_split(facts, tp) if tp != "auto" else None
    if refusal is None:
        length = FactsPlan(facts, limits).max_model_len()
        if not isinstance(length, int) and length.largest_max_model_len:
            refusal = length
    if refusal:
        raise SpecError(refusal.reason, refusal.message)


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
    facts = found if isinstance(found, ModelFacts) else None
    if facts is not None:
        check_facts(spec, facts, model.metadata.name)
    reason = found.reason if isinstance(found, ModelFactsError) else "ModelSizeUnknown"
    why = _no_facts_why(model, found, settings)
    return place_spec(spec, facts, gpus, sticky(model, live), why, reason)


def place_spec(
    spec: TritonVLLMModelSpec,
    facts: ModelFacts | None,
    gpus: list[NodeGPUs],
    kept: Placement | None = None,
    why: str = "",
    reason: str = "ModelSizeUnknown",
) -> Placed:
    """place() with the spec's memory plan; `nodesPerReplica: auto` on one node when a replica
    fits one (or its placement is kept), else on the fewest nodes that hold it."""
    if spec.nodes_per_replica != "auto":
        return place(spec, memory_plan(spec, facts, why, reason), gpus, kept)
    one = spec.model_copy(update={"nodes_per_replica": 1})
    placed = place(one, memory_plan(one, facts, why, reason), gpus, kept)
    if kept is not None or not _too_big_for_a_node(placed.fresh):
        return placed
    across = _across_nodes(spec, facts, gpus)
    if across is None or across.placement is None:
        return placed
    alone = placed.fresh.reason if isinstance(placed.fresh, Unplaceable) else BELOW_ESTIMATE
    said = f"nodesPerReplica auto: no node holds a replica alone ({alone}); "
    spread = replace(across.placement, message=said + across.placement.message)
    return Placed(spread, spread, False)


# `nodesPerReplica: auto` tries at most this many nodes a replica.
MAX_AUTO_NODES = 16


def _across_nodes(
    spec: TritonVLLMModelSpec, facts: ModelFacts | None, gpus: list[NodeGPUs]
) -> Placed | None:
    """`nodesPerReplica: auto` when no node holds a replica: the fewest nodes that do, each
    running tensorParallelSize GPUs (the spec's, else as many as a node has that vLLM can split
    the model over). None where a replica cannot span nodes (autoscaling, the spec's own
    pipeline stages) or no group of nodes fits either."""
    if spec.autoscaling is not None or "pipeline_parallel_size" in spec.engine_args:
        return None
    # Only GPUs whose memory is known: an estimate that cannot tell is no reason to span nodes.
    gpus = [node for node in gpus if node.memory_mib]
    if spec.tensor_parallel_size != "auto":
        sizes = [spec.tensor_parallel_size]
    else:
        counts = sorted({node.allocatable for node in gpus}, reverse=True)
        sizes = sorted({_largest_split(facts, count) for count in counts} - {0}, reverse=True)
    most = min(MAX_AUTO_NODES, len(gpus), facts.layers if facts else MAX_AUTO_NODES)
    for nodes in range(2, most + 1):
        for tp in sizes:
            spanning = spec.model_copy(
                update={"nodes_per_replica": nodes, "tensor_parallel_size": tp}
            )
            placed = place(spanning, memory_plan(spanning, facts), gpus)
            if isinstance(placed.fresh, Placement) and placed.fresh.warning is None:
                return placed
    return None


def _too_big_for_a_node(fresh: Placement | Unplaceable) -> bool:
    """Whether one node's GPUs are too little memory for a replica (by the estimate)."""
    if isinstance(fresh, Placement):
        return fresh.warning is not None and fresh.warning.reason == BELOW_ESTIMATE
    return fresh.reason in MEMORY_REASONS


def _largest_split(facts: ModelFacts | None, gpus: int) -> int:
    """The most of `gpus` one pod can use: the largest size vLLM can split the model over, or
    (the model's shape unknown) the largest power of two."""
    if facts is not None:
        sizes = valid_tensor_parallel_sizes(facts, gpus)
        return sizes[-1] if sizes else 0
    return 1 << (gpus.bit_length() - 1) if gpus > 0 else 0


def place_by_size(spec: TritonVLLMModelSpec, gpus: list[NodeGPUs]) -> Placement | Unplaceable:
    """Placement without the model's facts, by spec.modelSizeGiB (or GPU counts alone for an
    explicit size): what the nodes say, for `render` without a snapshot."""
    return place_spec(spec, None, gpus).fresh


def place_from_snapshot(
    model: TritonVLLMModel, snapshot_dir: str, nodes: Sequence[Mapping[str, Any]] | None
) -> Placement:
    """`render --model DIR`: the placement from a local snapshot's facts; SpecError if none."""
    name = model.metadata.name
    spec = model.spec
    try:
        facts = with_size_hint(facts_from_dir(snapshot_dir), spec.model_size_gi_b)
        EngineLimits.from_engine_args(spec.engine_args)
    except EngineArgError as err:
        raise SpecError("InvalidEngineArgs", f"{name}: {err}") from err
    tp = spec.tensor_parallel_size
    if nodes is None:
        if tp == "auto":
            raise SpecError(
                "NeedsNodes",
                f"{name}: tensorParallelSize is auto; pass --nodes FILE to size it on them",
            )
        problem = split_problem(facts, tp)
        if problem:
            sizes = ", ".join(map(str, valid_tensor_parallel_sizes(facts)))
            raise SpecError(
                "TensorParallelSizeInvalid",
                f"{name}: {facts.name} cannot be split over {tp} GPUs ({problem}); use {sizes}",
            )
        spans = replica_nodes(spec)
        return Placement(tp, (), 0, None, "rendered offline without nodes", nodes_per_replica=spans)
    placed = place_spec(spec, facts, inventory(spec, nodes, []))
    if isinstance(placed.fresh, Unplaceable):
        raise SpecError(placed.fresh.reason, f"{name}: {placed.fresh.message}")
    return placed.fresh


def facts_verdict(model: TritonVLLMModel, found: ModelFacts | ModelFactsError) -> Verdict:
    """ModelFacts: what was read, or why nothing was and what the placement used instead."""
    # Imported here: conditions reads the rendered manifests, which read this package.
    from ..conditions import MODEL_FACTS, Verdict

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
