"""Checks the API server's schema cannot make: engine args, Triton config, object shape."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .api import OBJECT_NAME_MAX, OBJECT_NAME_PATTERN, OBJECT_NAME_RULE, TritonVLLMModel
from .engine_args import EngineArgsError, validate_engine_args
from .render import TritonConfigError, render_config_pbtxt


class SpecError(ValueError):
    """A TritonVLLMModel that retrying will not fix; `reason` is the condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem: `spec.replicas: Input should be greater than or equal to 0`."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"])
        lines.append(f"{where}: {problem['msg']}")
    return "; ".join(lines)


def parse_model(obj: dict[str, Any]) -> TritonVLLMModel:
    """A TritonVLLMModel from a dict, or SpecError(InvalidSpec) naming each bad field."""
    try:
        return TritonVLLMModel.model_validate(obj)
    except ValidationError as err:
        raise SpecError("InvalidSpec", describe_validation_error(err)) from err


def check_model(model: TritonVLLMModel, backend_name: str) -> None:
    """Raise SpecError when vLLM or Triton would refuse what the spec asks for."""
    name = model.metadata.name
    if len(name) > OBJECT_NAME_MAX or not re.match(OBJECT_NAME_PATTERN, name):
        # Objects made before the CRD had this rule still reach the operator.
        raise SpecError("InvalidName", f"{OBJECT_NAME_RULE}; {name!r} is not")
    try:
        validate_engine_args(model.spec.engine_args, model.spec.tensor_parallel_size)
    except EngineArgsError as err:
        raise SpecError("InvalidEngineArgs", str(err)) from err
    check_lora_engine_args(model)
    check_nodes_per_replica(model)
    try:
        render_config_pbtxt(model, backend_name)
    except TritonConfigError as err:
        raise SpecError("InvalidTritonConfig", str(err)) from err


LORA_ENGINE_ARGS = ("enable_lora", "max_loras", "max_lora_rank")


def check_lora_engine_args(model: TritonVLLMModel) -> None:
    """LoRA is spec.lora's: the adapter list the pods follow comes with it."""
    engine_args = model.spec.engine_args
    if model.spec.lora is not None:
        owned = [key for key in LORA_ENGINE_ARGS if key in engine_args]
        if owned:
            raise SpecError(
                "InvalidEngineArgs",
                f"engineArgs.{owned[0]} is set from spec.lora: remove it (spec.lora.maxLoras "
                "and spec.lora.maxLoraRank set the limits)",
            )
    elif engine_args.get("enable_lora"):
        raise SpecError(
            "InvalidEngineArgs",
            "engineArgs.enable_lora needs the adapter list the pods follow: declare LoRA in "
            "spec.lora (adapters, maxLoras, maxLoraRank) instead",
        )


PUBLIC_HUB = "https://huggingface.co"


def check_token_endpoint(
    model: TritonVLLMModel, allowed: Sequence[str], operator_endpoint: str | None
) -> None:
    """A model's Hub token goes only to an endpoint the operator's admin allows: `allowed` (the
    chart's hub.tokenEndpoints) and the operator's own endpoint. SpecError before any lookup,
    download or pod could send it elsewhere."""
    storage = model.spec.storage
    if storage.hf_token_secret is None:
        return
    endpoint = (storage.endpoint or operator_endpoint or PUBLIC_HUB).rstrip("/")
    permitted = {e.rstrip("/") for e in allowed}
    if operator_endpoint:
        permitted.add(operator_endpoint.rstrip("/"))
    if endpoint not in permitted:
        raise SpecError(
            "HubEndpointNotAllowed",
            f"{model.metadata.name}: spec.storage.endpoint {endpoint} is not a Hub endpoint this "
            f"operator sends tokens to ({', '.join(sorted(permitted))}), and "
            "spec.storage.hfTokenSecret would send the token there. Use an allowed endpoint, "
            "remove hfTokenSecret, or have the operator's admin allow it (chart value "
            "hub.tokenEndpoints).",
        )


def check_nodes_per_replica(model: TritonVLLMModel) -> None:
    """A replica over several nodes: TP is each node's GPUs, PP the node count, one place."""
    spec = model.spec
    nodes = spec.nodes_per_replica
    if nodes == "auto" or nodes == 1:
        return  # auto spans nodes only where none of the below is set (placement/model.py)
    name = model.metadata.name
    if spec.tensor_parallel_size == "auto":
        raise SpecError(
            "InvalidSpec",
            f"{name}: spec.nodesPerReplica={nodes} needs an integer spec.tensorParallelSize (the "
            "GPUs each node of a replica runs, e.g. 8).",
        )
    if "pipeline_parallel_size" in spec.engine_args:
        raise SpecError(
            "InvalidSpec",
            f"{name}: with spec.nodesPerReplica={nodes} the pipeline stages are the nodes "
            "(pipeline_parallel_size = nodesPerReplica): remove "
            "engineArgs.pipeline_parallel_size.",
        )
