"""Read and validate ``model.json``: the vLLM engine arguments of one model version."""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

MODEL_JSON = "model.json"
MULTI_LORA_JSON = "multi_lora.json"


class EngineConfigError(ValueError):
    """model.json is missing, unreadable or names arguments vLLM does not have."""


def load_engine_config(version_dir: str | Path, accepted: Collection[str]) -> dict[str, Any]:
    """Load ``<version_dir>/model.json`` and check every key is an accepted engine argument."""
    path = Path(version_dir) / MODEL_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EngineConfigError(
            f"{path} is missing: it must hold the vLLM engine arguments"
        ) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise EngineConfigError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise EngineConfigError(f"{path} must hold a JSON object, not {type(config).__name__}")
    check_engine_keys(config, accepted, source=str(path))
    if "model" not in config:
        raise EngineConfigError(f"{path} must name the model to serve in its 'model' key")
    return config


def check_engine_keys(config: dict[str, Any], accepted: Collection[str], source: str) -> None:
    """Raise naming each key that is not an engine argument, with the closest accepted names."""
    unknown = sorted(key for key in config if key not in accepted)
    if not unknown:
        return
    problems = [unknown_key_message(key, accepted) for key in unknown]
    raise EngineConfigError(
        f"{source}: " + "; ".join(problems) + " (accepted keys are vLLM's AsyncEngineArgs fields)"
    )


def unknown_key_message(key: str, accepted: Collection[str]) -> str:
    """'unknown key X' plus a suggestion when a close accepted name exists."""
    close = difflib.get_close_matches(key, list(accepted), n=3, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {' or '.join(repr(c) for c in close)}?)"
    return f"unknown key {key!r}"


def load_lora_repository(version_dir: str | Path, enable_lora: bool) -> dict[str, str] | None:
    """The LoRA adapters of ``<version_dir>/multi_lora.json``: name -> path; None without LoRA.

    The file (required when model.json sets ``enable_lora``) maps each adapter name a request may
    give as ``lora_name`` to the adapter's directory; a relative path is relative to the file.
    """
    if not enable_lora:
        return None
    path = Path(version_dir) / MULTI_LORA_JSON
    try:
        adapters = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineConfigError(
            f"{path} is missing: with enable_lora it must map each LoRA name to its directory"
        ) from None
    except json.JSONDecodeError as err:
        raise EngineConfigError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(adapters, dict) or not all(
        isinstance(name, str) and name and isinstance(where, str) and where
        for name, where in adapters.items()
    ):
        raise EngineConfigError(f"{path} must map LoRA names to directory paths (strings)")
    return {name: str(path.parent / where) for name, where in adapters.items()}


def parallel_size(engine_args: Any) -> int:
    """How many GPUs one engine spans: tensor x pipeline parallel size."""
    tensor = int(getattr(engine_args, "tensor_parallel_size", 1) or 1)
    pipeline = int(getattr(engine_args, "pipeline_parallel_size", 1) or 1)
    return tensor * pipeline
