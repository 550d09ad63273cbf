"""What a model's own files say about its size: config.json and the safetensors weights.

Pure: parses the JSON that a snapshot (a local directory, or files fetched by `hub`) holds,
and reads only the headers of safetensors files, never their tensors.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .api import ModelStatus

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
GIB = 1024**3

# Bytes per element of torch dtype names (config.json) and safetensors dtype codes.
DTYPE_BYTES: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "int8": 1,
    "uint8": 1,
}
SAFETENSORS_DTYPE_BYTES: dict[str, float] = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F4": 0.5,
}
# Configs of multimodal models nest the language model's own config under one of these keys.
TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config")
# The length a safetensors header may have: the format caps it at 100 MB.
MAX_HEADER_BYTES = 100_000_000


class ModelFactsError(Exception):
    """The model's facts cannot be known; `reason` is a condition reason, `message` says why."""

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class ModelFacts:
    """The numbers that decide how many GPUs of which size a model needs."""

    source: str  # repo id (with @revision) or the directory the facts came from
    architecture: str | None
    model_type: str | None
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    dtype: str | None  # torch dtype name from config.json, e.g. bfloat16
    parameters: int | None
    weights_bytes: int | None  # bytes of the tensors (not the files), None when unknown
    max_context: int | None  # the longest sequence the model's config allows
    intermediate_size: int | None = None
    experts: int | None = None  # routed experts of a mixture-of-experts model
    experts_per_token: int | None = None
    quantization: str | None = None  # quantization_config.quant_method
    commit: str | None = None  # the commit the facts were read at, when fetched from a Hub
    # Multi-head latent attention (DeepSeek): each layer caches one latent vector of this size
    # per token (kv_lora_rank + qk_rope_head_dim) instead of K and V per KV head.
    kv_latent_dim: int | None = None
    # Layers that do not cache every token: sliding-window attention layers keep the last
    # `sliding_window` tokens; state layers (Mamba, linear attention) keep a fixed state of
    # `state_elements` per sequence, split over the tensor-parallel GPUs.
    sliding_window: int | None = None
    sliding_layers: int = 0
    state_layers: int = 0
    state_elements: int = 0

    @property
    def name(self) -> str:
        """The model's short name for messages: the last part of the repo id or path."""
        base = self.source.split("@", 1)[0].rstrip("/")
        return base.rsplit("/", 1)[-1] or base

    @property
    def bytes_per_parameter(self) -> float | None:
        """Bytes per weight, from the weights when both are known, else from the dtype."""
        if self.weights_bytes and self.parameters:
            return self.weights_bytes / self.parameters
        return float(DTYPE_BYTES[self.dtype]) if self.dtype in DTYPE_BYTES else None

    @property
    def weights_gib(self) -> float | None:
        return self.weights_bytes / GIB if self.weights_bytes is not None else None

    @property
    def full_attention_layers(self) -> int:
        """The layers whose KV cache grows with every token of a sequence."""
        return self.layers - self.sliding_layers - self.state_layers

    def kv_bytes_per_token(self, dtype_bytes: int | None = None) -> int:
        """KV cache bytes per token of a long sequence, whole model, full-attention layers:
        2 x layers x kv_heads x head_dim x bytes (layers x latent size x bytes with latent
        attention)."""
        size = dtype_bytes if dtype_bytes is not None else DTYPE_BYTES.get(self.dtype or "", 2)
        if self.kv_latent_dim:
            return self.full_attention_layers * self.kv_latent_dim * size
        return 2 * self.full_attention_layers * self.kv_heads * self.head_dim * size


def status_of(facts: ModelFacts) -> ModelStatus:
    """What `status.model` reports about the facts."""
    weights = facts.weights_gib
    return ModelStatus.model_validate(
        {
            "source": facts.source,
            "commit": facts.commit,
            "architecture": facts.architecture,
            "parameters": facts.parameters,
            "dtype": facts.dtype,
            "weightsGiB": round(weights, 2) if weights is not None else None,
            "kvBytesPerToken": facts.kv_bytes_per_token(),
            "maxContext": facts.max_context,
            "attentionHeads": facts.attention_heads,
            "kvHeads": facts.kv_heads,
        }
    )


# --- config.json --------------------------------------------------------------------------------


def _first_int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's config: nested in multimodal configs, else the whole file."""
    for key in TEXT_CONFIG_KEYS:
        nested = config.get(key)
        if isinstance(nested, Mapping):
            return {**{k: v for k, v in config.items() if k not in TEXT_CONFIG_KEYS}, **nested}
    return config


def _max_context(text: Mapping[str, Any]) -> int | None:
    """The context the config allows, as vLLM derives it (YaRN scaling stretches it)."""
    length = _first_int(
        text,
        "max_position_embeddings",
        "n_positions",
        "max_seq_len",
        "seq_length",
        "max_sequence_length",
    )
    rope = text.get("rope_scaling") or text.get("rope_parameters")
    if isinstance(rope, Mapping) and (rope.get("rope_type") or rope.get("type")) == "yarn":
        factor = rope.get("factor")
        original = rope.get("original_max_position_embeddings") or length
        if isinstance(factor, int | float) and isinstance(original, int):
            return int(original * factor)
    return length


def _dtype(config: Mapping[str, Any], text: Mapping[str, Any]) -> str | None:
    for source in (text, config):
        for key in ("torch_dtype", "dtype"):
            value = source.get(key)
            if isinstance(value, str):
                return value.removeprefix("torch.")
    return None


# Per layer, what a config's layer type caches: every token, a window, or a fixed state.
FULL, SLIDING, STATE = "full", "sliding", "state"
LAYER_TYPES = {
    "full_attention": FULL,
    "attention": FULL,
    "sliding_attention": SLIDING,
    "linear_attention": STATE,
    "mamba": STATE,
    "mamba2": STATE,
    "hybrid": STATE,
}
# Models whose configs leave their sliding-window pattern to the library's default: every n-th
# layer is full attention, the others slide.
SLIDING_PATTERNS = {"gemma2": 2, "gemma3_text": 6, "gemma3": 6}


def _layer_kinds(text: Mapping[str, Any], layers: int) -> tuple[str, ...]:
    """FULL, SLIDING or STATE for each layer, from the config's own words for them."""
    listed = text.get("layer_types") or text.get("layers_block_type")
    if isinstance(listed, list) and len(listed) == layers:
        return tuple(LAYER_TYPES.get(str(kind), FULL) for kind in listed)
    period = _first_int(text, "attn_layer_period")  # Jamba: one attention layer per period
    if period:
        offset = text.get("attn_layer_offset") or 0
        return tuple(FULL if i % period == offset else STATE for i in range(layers))
    interval = _first_int(text, "full_attention_interval")  # Qwen3-Next: linear attention between
    if interval:
        return tuple(FULL if (i + 1) % interval == 0 else STATE for i in range(layers))
    window = _first_int(text, "sliding_window")
    if window is None or text.get("use_sliding_window") is False:
        return (FULL,) * layers
    pattern = _first_int(text, "sliding_window_pattern") or SLIDING_PATTERNS.get(
        str(text.get("model_type"))
    )
    if pattern:
        return tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(layers))
    return (SLIDING,) * layers  # Mistral 7B v0.1: every layer slides


def _state_elements(text: Mapping[str, Any]) -> int:
    """Elements of one state layer's fixed state per sequence (convolution + recurrent state),
    as vLLM shapes it, before the split over tensor-parallel GPUs; 0 when the config lacks them."""
    linear_k = _first_int(text, "linear_num_key_heads")
    linear_v = _first_int(text, "linear_num_value_heads")
    if linear_k and linear_v:  # gated delta net (Qwen3-Next)
        key_dim = _first_int(text, "linear_key_head_dim") or 0
        value_dim = _first_int(text, "linear_value_head_dim") or 0
        kernel = _first_int(text, "linear_conv_kernel_dim") or 4
        conv = (2 * linear_k * key_dim + linear_v * value_dim) * (kernel - 1)
        return conv + linear_v * value_dim * key_dim
    state = _first_int(text, "mamba_d_state", "ssm_state_size", "state_size") or 0
    kernel = _first_int(text, "mamba_d_conv", "conv_kernel", "mamba_conv_kernel") or 4
    heads = _first_int(text, "mamba_n_heads")
    if heads:  # Mamba2: heads x head_dim x state, groups of B and C in the convolution
        head_dim = _first_int(text, "mamba_head_dim") or 0
        groups = _first_int(text, "mamba_n_groups", "n_groups") or 1
        inner = heads * head_dim
        return (inner + 2 * groups * state) * (kernel - 1) + heads * head_dim * state
    hidden = _first_int(text, "hidden_size") or 0
    inner = _first_int(text, "mamba_intermediate_size") or (
        (_first_int(text, "mamba_expand", "expand") or 2) * hidden
    )
    return inner * (kernel - 1) + inner * state  # Mamba1 (Jamba)


def parse_config(config: Mapping[str, Any], source: str) -> ModelFacts:
    """The architecture facts of a config.json; weights are added from the index or headers."""
    text = _text_config(config)
    layers = _first_int(text, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    heads = _first_int(text, "num_attention_heads", "n_head", "num_heads", "n_heads")
    if layers is None or heads is None:
        missing = "num_hidden_layers" if layers is None else "num_attention_heads"
        raise ModelFactsError(
            "ModelConfigUnsupported",
            f"{source}: config.json has no {missing}, so its KV cache cannot be sized. "
            "Set spec.tensorParallelSize and spec.modelSizeGiB to place it by hand.",
        )
    kv_heads = (
        _first_int(text, "num_key_value_heads", "n_head_kv", "multi_query_group_num") or heads
    )
    hidden = _first_int(text, "hidden_size", "n_embd", "d_model")
    head_dim = _first_int(text, "head_dim")
    if head_dim is None and hidden is not None:
        head_dim = hidden // heads
    if head_dim is None:
        raise ModelFactsError(
            "ModelConfigUnsupported",
            f"{source}: config.json has neither head_dim nor hidden_size.",
        )
    architectures = config.get("architectures")
    kinds = _layer_kinds(text, layers)
    latent = _first_int(text, "kv_lora_rank")
    quantization = config.get("quantization_config") or text.get("quantization_config")
    return ModelFacts(
        source=source,
        architecture=architectures[0]
        if isinstance(architectures, list) and architectures
        else None,
        model_type=text.get("model_type") if isinstance(text.get("model_type"), str) else None,
        layers=layers,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        dtype=_dtype(config, text),
        parameters=None,
        weights_bytes=None,
        max_context=_max_context(text),
        intermediate_size=_first_int(text, "intermediate_size", "ffn_hidden_size", "n_inner"),
        experts=_first_int(text, "num_local_experts", "num_experts", "n_routed_experts"),
        experts_per_token=_first_int(text, "num_experts_per_tok", "moe_topk"),
        kv_latent_dim=latent + (_first_int(text, "qk_rope_head_dim") or 0) if latent else None,
        quantization=str(quantization.get("quant_method"))
        if isinstance(quantization, Mapping) and quantization.get("quant_method")
        else None,
        sliding_window=_first_int(text, "sliding_window") if SLIDING in kinds else None,
        sliding_layers=kinds.count(SLIDING),
        state_layers=kinds.count(STATE),
        state_elements=_state_elements(text) if STATE in kinds else 0,
    )


# --- weights ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """The size of a model's tensors, from an index or from safetensors headers."""

    bytes: int
    parameters: int | None


def weights_from_index(index: Mapping[str, Any], dtype: str | None) -> Weights | None:
    """metadata.total_size of a safetensors index; parameters from the dtype when not listed."""
    metadata = index.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    total = metadata.get("total_size")
    if not isinstance(total, int | float) or total <= 0:
        return None
    listed = metadata.get("total_parameters")
    if isinstance(listed, int) and listed > 0:
        parameters: int | None = listed
    elif dtype in DTYPE_BYTES:
        parameters = int(total) // DTYPE_BYTES[dtype]
    else:
        parameters = None
    return Weights(int(total), parameters)


def weights_from_header(header: Mapping[str, Any]) -> Weights:
    """Tensor bytes and parameters of one safetensors header (its JSON, without the length)."""
    total = 0
    parameters = 0
    for name, tensor in header.items():
        if name == "__metadata__" or not isinstance(tensor, Mapping):
            continue
        shape = tensor.get("shape") or []
        count = math.prod(int(d) for d in shape)
        parameters += count
        offsets = tensor.get("data_offsets")
        if isinstance(offsets, list) and len(offsets) == 2:
            total += int(offsets[1]) - int(offsets[0])
        else:
            total += math.ceil(count * SAFETENSORS_DTYPE_BYTES.get(str(tensor.get("dtype")), 2))
    return Weights(total, parameters)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, reading only its first bytes."""
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) != 8:
            raise ModelFactsError("WeightsUnreadable", f"{path.name} is not a safetensors file.")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise ModelFactsError(
                "WeightsUnreadable", f"{path.name}: header of {length} bytes is not safetensors."
            )
        raw = stream.read(length)
    try:
        header = json.loads(raw)
    except ValueError as err:
        raise ModelFactsError("WeightsUnreadable", f"{path.name}: bad header ({err}).") from err
    if not isinstance(header, dict):
        raise ModelFactsError("WeightsUnreadable", f"{path.name}: header is not a JSON object.")
    return header


def with_weights(facts: ModelFacts, weights: Weights | None) -> ModelFacts:
    """The facts with the weights' size filled in (unchanged when unknown)."""
    if weights is None:
        return facts
    return replace(facts, weights_bytes=weights.bytes, parameters=weights.parameters)


def with_size_hint(facts: ModelFacts, size_gib: float | None) -> ModelFacts:
    """The facts with spec.modelSizeGiB as the weights' size where the files did not give it."""
    if facts.weights_bytes is not None or size_gib is None:
        return facts
    return replace(facts, weights_bytes=int(size_gib * GIB))


def _load_json(path: Path, source: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ModelFactsError(
            "ModelConfigInvalid", f"{source}: {path.name} is not JSON ({err})."
        ) from err


def facts_from_dir(path: str | Path) -> ModelFacts:
    """Facts of a local snapshot: config.json plus the safetensors index or file headers."""
    directory = Path(path)
    source = str(path)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ModelFactsError(
            "ModelConfigMissing", f"{source} has no {CONFIG_FILE}: pass a model snapshot directory."
        )
    config = _load_json(config_path, source)
    if not isinstance(config, dict):
        raise ModelFactsError("ModelConfigInvalid", f"{source}: {CONFIG_FILE} is not an object.")
    facts = parse_config(config, source)
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        index = _load_json(index_path, source)
        return with_weights(
            facts, weights_from_index(index, facts.dtype) if isinstance(index, dict) else None
        )
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return facts
    parts = [weights_from_header(read_safetensors_header(f)) for f in files]
    return with_weights(
        facts, Weights(sum(p.bytes for p in parts), sum(p.parameters or 0 for p in parts))
    )
