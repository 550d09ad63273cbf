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


ONE_MODEL_INSTANCE: dict[str, Any] = {"count": 1, "kind": "KIND_MODEL"}


@dataclass
class AutoCompletePlan:
    """What auto_complete_config must do to a model configuration."""

    add_inputs: list[dict[str, Any]] = field(default_factory=list)
    add_outputs: list[dict[str, Any]] = field(default_factory=list)
    enforce: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)


def plan_auto_complete(config: dict[str, Any]) -> AutoCompletePlan:
    """Plan the additions and enforced settings for ``config`` (``ModelConfig.as_dict()``).

    ``enforce`` maps top-level config keys to the value they must have (``None``: remove the
    key); ``changes`` says, for the log, each value that differed from what the user wrote.
    """
    plan = AutoCompletePlan()
    declared_inputs = {tensor["name"] for tensor in config.get("input", [])}
    declared_outputs = {tensor["name"] for tensor in config.get("output", [])}
    plan.add_inputs = [dict(spec) for spec in INPUTS if spec["name"] not in declared_inputs]
    plan.add_outputs = [dict(spec) for spec in OUTPUTS if spec["name"] not in declared_outputs]

    policy = config.get("model_transaction_policy") or {}
    if not policy.get("decoupled", False):
        plan.enforce["model_transaction_policy"] = {**policy, "decoupled": True}
        if "decoupled" in policy:
            plan.changes.append(
                "model_transaction_policy.decoupled: false -> true (vLLM streams responses)"
            )
    max_batch_size = int(config.get("max_batch_size", 0))
    if max_batch_size != 0:
        plan.enforce["max_batch_size"] = 0
        plan.changes.append(f"max_batch_size: {max_batch_size} -> 0 (vLLM batches requests itself)")
    if config.get("dynamic_batching"):
        plan.enforce["dynamic_batching"] = None
        plan.changes.append("dynamic_batching: removed (vLLM batches requests itself)")
    groups = config.get("instance_group") or []
    if [_normalized(group) for group in groups] != [ONE_MODEL_INSTANCE]:
        plan.enforce["instance_group"] = [dict(ONE_MODEL_INSTANCE)]
        if groups:
            plan.changes.append(
                f"instance_group: {groups} -> [{ONE_MODEL_INSTANCE}] "
                "(one vLLM engine per model, placed on its devices by vLLM)"
            )
    return plan


def _normalized(group: dict[str, Any]) -> dict[str, Any]:
    return {"count": int(group.get("count", 1)), "kind": group.get("kind", "KIND_AUTO")}
