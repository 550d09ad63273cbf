"""The KV cache one sequence needs on each GPU, by the model's layer types.

As vLLM allocates it (vllm/v1/kv_cache_interface.py): a full-attention layer caches every token;
a sliding-window layer only its window plus the tokens of a batch in flight; a Mamba or
linear-attention layer one fixed state per sequence, whatever its length.
"""

from __future__ import annotations

from ..model_facts import ModelFacts
from .engine import EngineLimits


def kv_heads_per_gpu(facts: ModelFacts, tp: int) -> int:
    """KV heads each GPU caches: split when there are at least TP of them, else one replica."""
    return max(facts.kv_heads // tp, 1)


def layer_bytes_per_token(facts: ModelFacts, limits: EngineLimits, tp: int) -> int:
    """One attention layer's cache per token on each GPU; a latent cache is whole on each."""
    elements = facts.kv_latent_dim or 2 * kv_heads_per_gpu(facts, tp) * facts.head_dim
    return elements * limits.kv_dtype_bytes(facts)


def _per_stage(total: int, limits: EngineLimits) -> int:
    """Pipeline stages (on a node or one per node) split the layers, and with them the cache."""
    return -(-total // limits.stages)


def kv_bytes_per_token(facts: ModelFacts, limits: EngineLimits, tp: int) -> int:
    """Per GPU, the cache each further token of a long sequence adds (full-attention layers)."""
    per_layer = layer_bytes_per_token(facts, limits, tp)
    return _per_stage(facts.full_attention_layers * per_layer, limits)


def fixed_bytes(facts: ModelFacts, limits: EngineLimits, tp: int, length: int) -> int:
    """Per GPU, the cache of one sequence that does not grow with it past a window: the
    sliding-window layers' window and the state layers' state."""
    window = 0
    if facts.sliding_layers and facts.sliding_window:
        tokens = min(facts.sliding_window + limits.in_flight_tokens, length)
        window = facts.sliding_layers * layer_bytes_per_token(facts, limits, tp) * tokens
    state = facts.state_layers * -(-facts.state_elements // tp) * limits.compute_dtype_bytes(facts)
    return _per_stage(window + state, limits)


def sequence_bytes(facts: ModelFacts, limits: EngineLimits, tp: int, length: int) -> int:
    """Per GPU, the whole cache of one `length`-token sequence."""
    return kv_bytes_per_token(facts, limits, tp) * length + fixed_bytes(facts, limits, tp, length)
