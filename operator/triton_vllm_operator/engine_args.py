"""Validate spec.engineArgs against a snapshot of vLLM's AsyncEngineArgs (make engine-args)."""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

# Set by the operator itself: from spec.model and the resolved tensor parallelism.
OPERATOR_OWNED = {"model"}
# Secrets must not travel in model.json (a ConfigMap): they have a secretKeyRef of their own.
SECRET_ARGS = {"hf_token": "spec.storage.hfTokenSecret"}

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "list": (list,),
    "dict": (dict,),
}


class EngineArgsError(ValueError):
    """spec.engineArgs cannot be used; the message says what to change."""


@cache
def snapshot() -> dict[str, Any]:
    """The committed snapshot: {"vllm_version": ..., "fields": {name: type}}."""
    text = resources.files(__package__).joinpath("data/engine_args.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def validate_engine_args(engine_args: dict[str, Any], tensor_parallel_size: int | str) -> None:
    """Raise EngineArgsError for unknown names, wrong types or a conflicting TP size."""
    fields: dict[str, str] = snapshot()["fields"]
    version = snapshot()["vllm_version"]
    for key in sorted(engine_args):
        value = engine_args[key]
        if key in SECRET_ARGS:
            raise EngineArgsError(
                f"engineArgs.{key} would put a secret into the model's ConfigMap; remove it and "
                f"set {SECRET_ARGS[key]} to a Secret key instead"
            )
        if key in OPERATOR_OWNED:
            raise EngineArgsError(
                f"engineArgs.{key} is set by the operator from spec.{key}; remove it"
            )
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise EngineArgsError(f"engineArgs.{key} is not a vLLM {version} engine argument{hint}")
        expected = fields[key]
        allowed = _PYTHON_TYPES.get(expected)
        wrong_type = allowed is not None and (
            not isinstance(value, allowed) or (expected != "bool" and isinstance(value, bool))
        )
        if value is not None and wrong_type:
            raise EngineArgsError(
                f"engineArgs.{key} must be of type {expected}, got {type(value).__name__} {value!r}"
            )
    in_args = engine_args.get("tensor_parallel_size")
    if in_args is not None and in_args != tensor_parallel_size:
        raise EngineArgsError(
            f"engineArgs.tensor_parallel_size={in_args} conflicts with "
            f"spec.tensorParallelSize={tensor_parallel_size}; set only spec.tensorParallelSize"
        )
