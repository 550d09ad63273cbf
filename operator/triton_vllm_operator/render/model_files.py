"""Render the files each replica's Triton model repository holds: config.pbtxt and model.json."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from ..api import LORA_RANKS, LoraSpec, TritonVLLMModel, replica_nodes

# Fields of the Triton model config the operator owns; user config may not set them.
OPERATOR_OWNED_CONFIG = {"name", "backend", "platform"}
CONFIG_FILE = "config.pbtxt"
ENGINE_FILE = "model.json"
MODEL_VERSION = "1"
# The adapter list the backend follows while it serves, beside model.json.
LORA_FILE = "multi_lora.json"
DEFAULT_LORA_RANK = 16  # vLLM's own default max_lora_rank


@dataclass(frozen=True)
class LoraLimits:
    """vLLM's LoRA limits in model.json: raising one restarts the engine (the pods roll)."""

    max_loras: int
    max_lora_rank: int


def smallest_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of `rank`."""
    return next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1])


def lora_limits(
    lora: LoraSpec, ranks: tuple[int, ...] = (), live: LoraLimits | None = None
) -> LoraLimits:
    """The spec's limits, else those the live pods run with, else ones from the adapters (as
    many as are declared when LoRA is turned on). The adapter list never moves max_loras (vLLM
    serves more adapters than it batches at once); max_lora_rank rises for an adapter of a larger
    rank (known from its adapter_config.json), which vLLM could not load otherwise."""
    max_loras = lora.max_loras or (live.max_loras if live else max(len(lora.adapters), 1))
    needed = smallest_rank(max(ranks, default=DEFAULT_LORA_RANK))
    floor = live.max_lora_rank if live else DEFAULT_LORA_RANK
    max_lora_rank = lora.max_lora_rank or max(needed, floor, DEFAULT_LORA_RANK)
    return LoraLimits(max_loras, max_lora_rank)


def render_multi_lora(listed: Mapping[str, str]) -> str:
    """multi_lora.json: adapter name -> its directory in the pods."""
    return json.dumps(dict(sorted(listed.items())), indent=2) + "\n"


class TritonConfigError(ValueError):
    """spec.triton.config cannot be merged into config.pbtxt; the message says why."""


def _user_config(config: dict[str, Any]) -> mc.ModelConfig:
    owned = sorted(OPERATOR_OWNED_CONFIG & set(config))
    if owned:
        raise TritonConfigError(
            f"spec.triton.config sets {', '.join(owned)}, which the operator owns; remove it"
        )
    try:
        return json_format.ParseDict(config, mc.ModelConfig())
    except json_format.ParseError as err:
        raise TritonConfigError(f"spec.triton.config is not a Triton ModelConfig: {err}") from err


def render_model_config(model: TritonVLLMModel, backend_name: str) -> mc.ModelConfig:
    """The Triton model config: the operator's defaults, then the user's fields over them.

    Inputs and outputs are left to the backend's auto_complete_config, which adds the
    contract's tensors and keeps any the user declared.
    """
    config = mc.ModelConfig(name=model.served_name, backend=backend_name, max_batch_size=0)
    config.model_transaction_policy.decoupled = True
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_MODEL)
    for key in ("REPORT_CUSTOM_METRICS", "ENABLE_VLLM_HEALTH_CHECK"):
        config.parameters[key].string_value = "true"
    if model.spec.openai.enabled:
        config.parameters["OPENAI_API_PORT"].string_value = str(model.spec.openai.port)
    user = _user_config(model.spec.triton.config)
    for descriptor, value in user.ListFields():
        target = getattr(config, descriptor.name)
        if descriptor.message_type and descriptor.message_type.GetOptions().map_entry:
            for key in value:
                target[key].CopyFrom(value[key])
        elif descriptor.is_repeated:
            del target[:]
            target.extend(value)
        elif descriptor.message_type:
            target.MergeFrom(value)
        else:
            setattr(config, descriptor.name, value)
    return config


def render_config_pbtxt(model: TritonVLLMModel, backend_name: str) -> str:
    """config.pbtxt in protobuf text format, as tritonserver reads it."""
    return text_format.MessageToString(render_model_config(model, backend_name))


# vLLM's rendezvous port on a group's rank 0; the backend's join port is the next one.
MULTINODE_MASTER_PORT = 29500


def render_model_json(
    model: TritonVLLMModel, tensor_parallel_size: int, lora: LoraLimits | None = None
) -> str:
    """model.json: vLLM engine arguments, plus the model, the resolved TP size and, with
    spec.lora, the LoRA switch and limits (`lora`: resolved ones, else the spec's defaults)."""
    engine_args: dict[str, Any] = {
        **model.spec.engine_args,
        "model": model.spec.model,
        "tensor_parallel_size": tensor_parallel_size,
    }
    if replica_nodes(model.spec) > 1:
        # vLLM's native multi-node: the nodes are the pipeline's stages; the backend reads each
        # pod's rank and the leader's address from the environment (one file for the group).
        engine_args |= {
            "nnodes": replica_nodes(model.spec),
            "pipeline_parallel_size": replica_nodes(model.spec),
            "master_port": MULTINODE_MASTER_PORT,
        }
    if model.spec.lora is not None:
        limits = lora or lora_limits(model.spec.lora)
        engine_args |= {
            "enable_lora": True,
            "max_loras": limits.max_loras,
            "max_lora_rank": limits.max_lora_rank,
        }
    if model.spec.openai.enabled and model.spec.openai.args:
        engine_args["openai"] = dict(model.spec.openai.args)
    return json.dumps(engine_args, indent=2, sort_keys=True) + "\n"


def config_data(
    model: TritonVLLMModel,
    tensor_parallel_size: int,
    backend_name: str,
    lora: LoraLimits | None = None,
) -> dict[str, str]:
    """The ConfigMap's data: the two files, by their keys."""
    return {
        CONFIG_FILE: render_config_pbtxt(model, backend_name),
        ENGINE_FILE: render_model_json(model, tensor_parallel_size, lora),
    }


def config_hash(data: dict[str, str]) -> str:
    """A short, stable digest of the config files; pods roll when it changes."""
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode() + b"\0" + data[key].encode() + b"\0")
    return digest.hexdigest()[:16]


def model_repository_files(
    model: TritonVLLMModel,
    tensor_parallel_size: int,
    backend_name: str = "tritonvllm",
    adapters: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The model repository as a pod sees it: {relative path: content}; with spec.lora,
    `adapters` (name -> directory) are those listed in multi_lora.json."""
    data = config_data(model, tensor_parallel_size, backend_name)
    files = {
        f"{model.served_name}/{CONFIG_FILE}": data[CONFIG_FILE],
        f"{model.served_name}/{MODEL_VERSION}/{ENGINE_FILE}": data[ENGINE_FILE],
    }
    if model.spec.lora is not None:
        files[f"{model.served_name}/{MODEL_VERSION}/{LORA_FILE}"] = render_multi_lora(
            adapters or {}
        )
    return files
