"""The request contract (the official Triton vLLM backend's) and what auto-complete changes.

``plan_auto_complete`` looks at the model configuration Triton parsed from config.pbtxt and
returns what to add and what to enforce; it never changes a tensor the user declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_BOOL_FLAG = {"data_type": "TYPE_BOOL", "dims": [1], "optional": True}

INPUTS: tuple[dict[str, Any], ...] = (
    {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
    {"name": "image", "data_type": "TYPE_STRING", "dims": [-1], "optional": True},
    {"name": "stream", **_BOOL_FLAG},
    {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "exclude_input_in_output", **_BOOL_FLAG},
    {"name": "return_finish_reason", **_BOOL_FLAG},
    {"name": "return_cumulative_logprob", **_BOOL_FLAG},
    {"name": "return_logprobs", **_BOOL_FLAG},
    {"name": "return_num_input_tokens", **_BOOL_FLAG},
    {"name": "return_num_output_tokens", **_BOOL_FLAG},
    # The official backend's input for embeddings (its OpenAI frontend's): a JSON object.
    {"name": "embedding_request", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
)

OUTPUTS: tuple[dict[str, Any], ...] = (
    {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "finish_reason", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "cumulative_logprob", "data_type": "TYPE_FP32", "dims": [-1]},
    {"name": "logprobs", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "num_input_tokens", "data_type": "TYPE_UINT32", "dims": [1]},
    {"name": "num_output_tokens", "data_type": "TYPE_UINT32", "dims": [-1]},
)

BOOL_FLAGS = tuple(spec["name"] for spec in INPUTS if spec["data_type"] == "TYPE_BOOL")


# Triton schedules each request itself; vLLM must get every request at once and batch them.
_SCHEDULERS = ("dynamic_batching", "sequence_batching", "ensemble_scheduling")
_ONE_ENGINE_KINDS = ("KIND_MODEL", "KIND_CPU", "KIND_AUTO")


@dataclass
class AutoCompletePlan:
    """What auto_complete_config must do to a model configuration, or why it cannot load."""

    add_inputs: list[dict[str, Any]] = field(default_factory=list)
    add_outputs: list[dict[str, Any]] = field(default_factory=list)
    set_decoupled: bool = False
    set_max_batch_size: bool = False
    errors: list[str] = field(default_factory=list)


def plan_auto_complete(config: dict[str, Any]) -> AutoCompletePlan:
    """Plan the additions for ``config`` (``ModelConfig.as_dict()``), and refuse what cannot work.

    A backend may fill in what config.pbtxt leaves unset, but Triton does not let it change a
    value the user wrote (the scheduler, the instance groups, a declared batch size or policy):
    such a value is an error for the load, which says what to write instead.
    """
    plan = AutoCompletePlan()
    declared_inputs = {tensor["name"] for tensor in config.get("input", [])}
    declared_outputs = {tensor["name"] for tensor in config.get("output", [])}
    plan.add_inputs = [dict(spec) for spec in INPUTS if spec["name"] not in declared_inputs]
    plan.add_outputs = [dict(spec) for spec in OUTPUTS if spec["name"] not in declared_outputs]

    policy = config.get("model_transaction_policy") or {}
    if "decoupled" not in policy:
        plan.set_decoupled = True
    elif not policy["decoupled"]:
        plan.errors.append(
            "model_transaction_policy.decoupled is false: vLLM streams responses, "
            "set it to true (or leave it out)"
        )
    max_batch_size = int(config.get("max_batch_size", 0))
    if max_batch_size != 0:
        plan.errors.append(
            f"max_batch_size is {max_batch_size}: vLLM batches requests itself, "
            "set max_batch_size: 0 (or leave it out)"
        )
    else:
        plan.set_max_batch_size = True
    for scheduler in _SCHEDULERS:
        if config.get(scheduler):
            plan.errors.append(
                f"{scheduler} is set: vLLM schedules and batches requests itself, remove it"
            )
    plan.errors.extend(instance_group_errors(config.get("instance_group") or []))
    return plan


def instance_group_errors(groups: list[dict[str, Any]]) -> list[str]:
    """Instance groups that would start more than one engine on the same devices.

    Each instance runs its own vLLM engine. KIND_GPU instances each get their own GPU (any count,
    checked against the engine's parallel size at load); otherwise one instance in all.
    """
    shared = [group for group in groups if group.get("kind", "KIND_AUTO") in _ONE_ENGINE_KINDS]
    instances = sum(int(group.get("count", 1)) for group in shared)
    if instances > 1 or (shared and len(shared) != len(groups)):
        return [
            f"instance_group {groups} starts {instances} vLLM engines on the same devices: "
            "use one instance ({count: 1, kind: KIND_MODEL}), or KIND_GPU instances for "
            "single-GPU engines"
        ]
    return []


def instance_kind_error(kind: str, parallel_size: int) -> str | None:
    """A KIND_GPU instance owns one GPU, so its engine cannot span several (TP x PP > 1)."""
    if kind == "GPU" and parallel_size > 1:
        return (
            f"KIND_GPU instances are for single-GPU engines, and tensor_parallel_size x "
            f"pipeline_parallel_size is {parallel_size}: use instance_group "
            "[{count: 1, kind: KIND_MODEL}] for a multi-GPU engine"
        )
    return None
