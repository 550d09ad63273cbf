"""Checks the API server's schema cannot make: engine args, Triton config, object shape."""

from __future__ import annotations

import re
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
    try:
        render_config_pbtxt(model, backend_name)
    except TritonConfigError as err:
        raise SpecError("InvalidTritonConfig", str(err)) from err
