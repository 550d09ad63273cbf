"""Writes safetensors files in their own layout: an 8-byte length, a JSON header, the data."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ELEMENT_BYTES = {"BF16": 2, "F16": 2, "F32": 4}


def header_bytes(tensors: Mapping[str, tuple[str, tuple[int, ...]]]) -> tuple[bytes, int]:
    """The length-prefixed header of `tensors` (name -> (dtype, shape)) and the data's size."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * ELEMENT_BYTES[dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw, offset


def write_safetensors(
    path: Path, tensors: Mapping[str, tuple[str, tuple[int, ...]]], *, data: bool = True
) -> int:
    """Write a safetensors file (zeros as data, or the header alone); returns its size."""
    header, size = header_bytes(tensors)
    with path.open("wb") as stream:
        stream.write(header)
        if data:
            stream.write(bytes(size))
    return len(header) + (size if data else 0)


def qwen2_tensors(config: Mapping[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors of a Qwen2ForCausalLM checkpoint, from its config (tied embeddings)."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    kv = config["num_key_value_heads"] * head_dim
    mlp = config["intermediate_size"]
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {
        "model.embed_tokens.weight": ("BF16", (config["vocab_size"], hidden))
    }
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": ("BF16", (hidden,)),
            p + "post_attention_layernorm.weight": ("BF16", (hidden,)),
            p + "self_attn.q_proj.weight": ("BF16", (hidden, hidden)),
            p + "self_attn.q_proj.bias": ("BF16", (hidden,)),
            p + "self_attn.k_proj.weight": ("BF16", (kv, hidden)),
            p + "self_attn.k_proj.bias": ("BF16", (kv,)),
            p + "self_attn.v_proj.weight": ("BF16", (kv, hidden)),
            p + "self_attn.v_proj.bias": ("BF16", (kv,)),
            p + "self_attn.o_proj.weight": ("BF16", (hidden, hidden)),
            p + "mlp.gate_proj.weight": ("BF16", (mlp, hidden)),
            p + "mlp.up_proj.weight": ("BF16", (mlp, hidden)),
            p + "mlp.down_proj.weight": ("BF16", (hidden, mlp)),
        }
    tensors["model.norm.weight"] = ("BF16", (hidden,))
    return tensors
