"""Model facts read from the real config.json and safetensors index of several model families."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.model_dirs import snapshot
from tests.unit.safetensors_files import write_safetensors
from triton_vllm_operator.model_facts import ModelFactsError, facts_from_dir, status_of

# name, architecture, parameters, weights bytes, layers, heads, KV heads, head_dim, max context
TABLE = [
    ("Llama-3.1-8B", "LlamaForCausalLM", 8_030_261_248, 16_060_522_496, 32, 32, 8, 128, 131072),
    (
        "Llama-3.1-70B-Instruct",
        "LlamaForCausalLM",
        70_553_706_496,
        141_107_412_992,
        80,
        64,
        8,
        128,
        131072,
    ),
    ("Qwen2.5-0.5B-Instruct", "Qwen2ForCausalLM", 494_032_768, 988_065_536, 24, 14, 2, 64, 32768),
    ("Mistral-7B-v0.3", "MistralForCausalLM", 7_248_023_552, 14_496_047_104, 32, 32, 8, 128, 32768),
    (
        "Mixtral-8x7B-Instruct-v0.1",
        "MixtralForCausalLM",
        46_702_792_704,
        93_405_585_408,
        32,
        32,
        8,
        128,
        32768,
    ),
    ("gemma-3-27b-it", "Gemma3ForConditionalGeneration", None, None, 62, 32, 16, 128, None),
]


@pytest.mark.parametrize(
    ("name", "arch", "params", "weights", "layers", "heads", "kv", "head_dim", "context"),
    TABLE,
    ids=[row[0] for row in TABLE],
)
def test_facts_of_real_models(
    tmp_path: Path,
    name: str,
    arch: str,
    params: int | None,
    weights: int | None,
    layers: int,
    heads: int,
    kv: int,
    head_dim: int,
    context: int | None,
) -> None:
    facts = facts_from_dir(snapshot(name, tmp_path))
    assert facts.name == name
    assert facts.architecture == arch
    assert facts.dtype == "bfloat16"
    assert (facts.parameters, facts.weights_bytes) == (params, weights)
    assert (facts.layers, facts.attention_heads, facts.kv_heads, facts.head_dim) == (
        layers,
        heads,
        kv,
        head_dim,
    )
    assert facts.max_context == context


def test_kv_bytes_per_token_is_two_x_layers_x_kv_heads_x_head_dim_x_dtype(tmp_path: Path) -> None:
    llama8b = facts_from_dir(snapshot("Llama-3.1-8B", tmp_path))
    assert llama8b.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert llama8b.kv_bytes_per_token(dtype_bytes=1) == 64 * 1024  # an fp8 KV cache
    qwen = facts_from_dir(snapshot("Qwen2.5-0.5B-Instruct", tmp_path))
    assert qwen.kv_bytes_per_token() == 12 * 1024


def test_mixture_of_experts_counts_every_expert_in_its_weights(tmp_path: Path) -> None:
    mixtral = facts_from_dir(snapshot("Mixtral-8x7B-Instruct-v0.1", tmp_path))
    assert (mixtral.experts, mixtral.experts_per_token) == (8, 2)
    assert mixtral.weights_gib == pytest.approx(86.99, abs=0.01)


def test_multimodal_config_is_read_from_its_text_config(tmp_path: Path) -> None:
    gemma = facts_from_dir(snapshot("gemma-3-27b-it", tmp_path))
    assert gemma.model_type == "gemma3_text"
    assert gemma.head_dim == 128  # stated, not hidden_size / heads (168)
    assert gemma.intermediate_size == 21504


def test_single_file_weights_are_sized_from_the_safetensors_header(tmp_path: Path) -> None:
    qwen = facts_from_dir(snapshot("Qwen2.5-0.5B-Instruct", tmp_path))
    # The Hub's model.safetensors is 988,097,824 bytes: these tensors plus a 32,288-byte header.
    assert qwen.weights_bytes == 2 * qwen.parameters == 988_097_824 - 32_288  # type: ignore[operator]


def test_yarn_rope_scaling_stretches_the_context(tmp_path: Path) -> None:
    model = snapshot("Qwen2.5-0.5B-Instruct", tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["rope_scaling"] = {
        "factor": 4.0,
        "original_max_position_embeddings": 32768,
        "type": "yarn",
    }
    (model / "config.json").write_text(json.dumps(config))
    assert facts_from_dir(model).max_context == 131072


def test_status_reports_what_was_found(tmp_path: Path) -> None:
    status = status_of(facts_from_dir(snapshot("Llama-3.1-8B", tmp_path)))
    assert status.model_dump(by_alias=True, exclude_none=True) == {
        "source": str(tmp_path / "Llama-3.1-8B"),
        "architecture": "LlamaForCausalLM",
        "parameters": 8_030_261_248,
        "dtype": "bfloat16",
        "weightsGiB": 14.96,
        "kvBytesPerToken": 131072,
        "maxContext": 131072,
        "attentionHeads": 32,
        "kvHeads": 8,
    }


def test_sharded_safetensors_without_an_index_add_up(tmp_path: Path) -> None:
    model = tmp_path / "two-shards"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64})
    )
    write_safetensors(model / "model-00001-of-00002.safetensors", {"a": ("F32", (64, 64))})
    write_safetensors(model / "model-00002-of-00002.safetensors", {"b": ("F32", (64, 32))})
    facts = facts_from_dir(model)
    assert (facts.parameters, facts.weights_bytes) == (64 * 96, 64 * 96 * 4)
    assert facts.kv_heads == 4  # no num_key_value_heads: multi-head attention


@pytest.mark.parametrize(
    ("files", "reason", "words"),
    [
        ({}, "ModelConfigMissing", "has no config.json"),
        ({"config.json": "{not json"}, "ModelConfigInvalid", "config.json is not JSON"),
        ({"config.json": '{"hidden_size": 64}'}, "ModelConfigUnsupported", "no num_hidden_layers"),
        (
            {"config.json": '{"num_hidden_layers": 2, "num_attention_heads": 2}'},
            "ModelConfigUnsupported",
            "neither head_dim nor hidden_size",
        ),
        (
            {
                "config.json": '{"num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 8}',
                "model.safetensors": "short",
            },
            "WeightsUnreadable",
            "model.safetensors is not a safetensors file",
        ),
    ],
    ids=["no-config", "bad-json", "no-layers", "no-head-size", "not-safetensors"],
)
def test_unusable_snapshots_say_why(
    tmp_path: Path, files: dict[str, str], reason: str, words: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ModelFactsError) as err:
        facts_from_dir(tmp_path)
    assert err.value.reason == reason
    assert words in err.value.message
