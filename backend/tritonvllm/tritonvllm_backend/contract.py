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


@dataclass
class AutoCompletePlan:
    """What auto_complete_config must do to a model configuration."""

    add_inputs: list[dict[str, Any]] = field(default_factory=list)
    add_outputs: list[dict[str, Any]] = field(default_factory=list)
    set_decoupled: bool = False
    set_max_batch_size: bool = False
    changes: list[str] = field(default_factory=list)


def plan_auto_complete(config: dict[str, Any]) -> AutoCompletePlan:
    """Plan the additions and enforced settings for ``config`` (``ModelConfig.as_dict()``)."""
    plan = AutoCompletePlan()
    declared_inputs = {tensor["name"] for tensor in config.get("input", [])}
    declared_outputs = {tensor["name"] for tensor in config.get("output", [])}
    plan.add_inputs = [dict(spec) for spec in INPUTS if spec["name"] not in declared_inputs]
    plan.add_outputs = [dict(spec) for spec in OUTPUTS if spec["name"] not in declared_outputs]

    decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    if not decoupled:
        plan.set_decoupled = True
        plan.changes.append(
            "model_transaction_policy.decoupled: false -> true (responses stream from vLLM)"
        )
    max_batch_size = int(config.get("max_batch_size", 0))
    if max_batch_size != 0:
        plan.set_max_batch_size = True
        plan.changes.append(f"max_batch_size: {max_batch_size} -> 0 (vLLM batches requests itself)")
    return plan


def instance_group_problem(config: dict[str, Any], world_size: int) -> str | None:
    """Why the instance groups do not suit a model spread over ``world_size`` devices, if so."""
    groups = config.get("instance_group", [])
    count = sum(int(group.get("count", 1)) for group in groups) or 1
    if count != 1:
        return f"instance_group must give exactly one instance (the vLLM engine), not {count}"
    kinds = {group.get("kind", "KIND_AUTO") for group in groups}
    if world_size > 1 and kinds - {"KIND_MODEL"}:
        return (
            f"a model on {world_size} devices needs instance_group kind KIND_MODEL, "
            f"not {', '.join(sorted(kinds))}"
        )
    return None
