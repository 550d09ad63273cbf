"""How vLLM splits a model over tensor-parallel GPUs: the sizes it can load, from the shape."""

from __future__ import annotations

from ..model_facts import ModelFacts
from .budget import Refusal


def split_problem(facts: ModelFacts, tp: int) -> str | None:
    """Why vLLM cannot split the model over `tp` GPUs, or None when it can."""
    if facts.attention_heads % tp:
        return f"{facts.attention_heads} attention heads do not divide by {tp}"
    kv = facts.kv_heads
    if not facts.kv_latent_dim and ((kv >= tp and kv % tp) or (kv < tp and tp % kv)):
        return (
            f"{kv} KV heads can neither be divided by {tp} nor each replicated on a whole "
            f"number of the {tp} GPUs"
        )
    if facts.experts is None and facts.intermediate_size and facts.intermediate_size % tp:
        return f"its MLP of {facts.intermediate_size} does not divide by {tp}"
    return None


def valid_tensor_parallel_sizes(facts: ModelFacts, up_to: int | None = None) -> tuple[int, ...]:
    """Every TP vLLM can split the model over, smallest first, at most `up_to`."""
    limit = facts.attention_heads if up_to is None else min(up_to, facts.attention_heads)
    return tuple(tp for tp in range(1, limit + 1) if split_problem(facts, tp) is None)


def or_list(values: tuple[int, ...]) -> str:
    """1, 2 or 4."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _shape(facts: ModelFacts) -> str:
    parts = [f"{facts.attention_heads} attention heads", f"{facts.kv_heads} KV heads"]
    if facts.experts is None and facts.intermediate_size:
        parts.append(f"an MLP of {facts.intermediate_size}")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def check_split(facts: ModelFacts, tp: int) -> Refusal | None:
    """Whether vLLM can split the model over `tp` GPUs at all, on any node; else the sizes that
    it can."""
    problem = split_problem(facts, tp)
    if problem is None:
        return None
    sizes = valid_tensor_parallel_sizes(facts)
    return Refusal(
        "TensorParallelSizeInvalid",
        f"{facts.name} has {_shape(facts)}: vLLM cannot split it over {tp} GPUs ({problem}). "
        f"Use tensorParallelSize {or_list(sizes)}.",
        valid_sizes=sizes,
    )
