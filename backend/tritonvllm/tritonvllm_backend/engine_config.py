"""Read and validate ``model.json``: the vLLM engine arguments of one model version.

Besides AsyncEngineArgs fields, model.json may hold the settings of vLLM's OpenAI-compatible
server (its frontend arguments, such as ``chat_template`` or ``tool_call_parser``): under the
``"openai"`` key as an object, or at the top level under their own names.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_JSON = "model.json"
OPENAI_SECTION = "openai"
# Arguments whose values are credentials: never written to a log.
SECRET_ARGS = frozenset({"hf_token", "api_key"})


class EngineConfigError(ValueError):
    """model.json is missing, unreadable or names arguments vLLM does not have."""


@dataclass(frozen=True)
class ModelJson:
    """model.json split in two: the engine's arguments and the OpenAI server's."""

    engine: dict[str, Any]
    openai: dict[str, Any] = field(default_factory=dict)


def load_engine_config(version_dir: str | Path, accepted: Collection[str]) -> dict[str, Any]:
    """Load ``<version_dir>/model.json`` and check every key is an accepted engine argument."""
    return load_model_json(version_dir, accepted).engine


def load_model_json(
    version_dir: str | Path, accepted: Collection[str], frontend: Collection[str] | None = ()
) -> ModelJson:
    """Load ``<version_dir>/model.json``: engine arguments, and the OpenAI server's arguments.

    ``frontend`` names the OpenAI server's accepted arguments; when it is empty, the
    ``"openai"`` key is refused like any other unknown key. None means the OpenAI port is off:
    the ``"openai"`` object is set aside unchecked (nothing of vLLM's server need be imported
    to name its arguments), and every top-level key must be an engine argument.
    """
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
    if frontend is None:
        engine = {key: value for key, value in config.items() if key != OPENAI_SECTION}
        openai = config.get(OPENAI_SECTION, {})
        frontend = ()
    else:
        engine, openai = split_frontend_args(config, accepted, frontend, source=str(path))
    check_engine_keys(engine, accepted, source=str(path), frontend=frontend)
    if "model" not in engine:
        raise EngineConfigError(f"{path} must name the model to serve in its 'model' key")
    return ModelJson(engine, openai)


def split_frontend_args(
    config: dict[str, Any], accepted: Collection[str], frontend: Collection[str], source: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine arguments, OpenAI server arguments); the ``"openai"`` object's keys are checked.

    A top-level key that is a frontend argument and not an engine argument goes to the OpenAI
    server; a name given both there and in the ``"openai"`` object is an error.
    """
    if not frontend:
        return dict(config), {}
    engine = {key: value for key, value in config.items() if key != OPENAI_SECTION}
    section = config.get(OPENAI_SECTION, {})
    if not isinstance(section, dict):
        raise EngineConfigError(
            f"{source}: {OPENAI_SECTION!r} must be a JSON object of vLLM's OpenAI server "
            f"arguments, not {type(section).__name__}"
        )
    unknown = sorted(key for key in section if key not in frontend)
    if unknown:
        problems = [unknown_key_message(key, frontend) for key in unknown]
        raise EngineConfigError(
            f"{source}: {OPENAI_SECTION!r}: "
            + "; ".join(problems)
            + " (accepted keys are the arguments of vLLM's OpenAI-compatible server)"
        )
    openai = dict(section)
    for key in [key for key in engine if key in frontend and key not in accepted]:
        if key in openai:
            raise EngineConfigError(
                f"{source}: {key!r} is set both at the top level and under {OPENAI_SECTION!r}"
            )
        openai[key] = engine.pop(key)
    return engine, openai


def check_engine_keys(
    config: dict[str, Any], accepted: Collection[str], source: str, frontend: Collection[str] = ()
) -> None:
    """Raise naming each key that is not an engine argument, with the closest accepted names."""
    unknown = sorted(key for key in config if key not in accepted)
    if not unknown:
        return
    known = [*accepted, *frontend]
    problems = [unknown_key_message(key, known) for key in unknown]
    accepts = "vLLM's AsyncEngineArgs fields"
    if frontend:
        accepts += f", and the OpenAI server's arguments (also under {OPENAI_SECTION!r})"
    raise EngineConfigError(f"{source}: " + "; ".join(problems) + f" (accepted keys are {accepts})")


def unknown_key_message(key: str, accepted: Collection[str]) -> str:
    """'unknown key X' plus a suggestion when a close accepted name exists."""
    close = difflib.get_close_matches(key, list(accepted), n=3, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {' or '.join(repr(c) for c in close)}?)"
    return f"unknown key {key!r}"


def parallel_size(engine_args: Any) -> int:
    """How many GPUs one engine spans: tensor x pipeline parallel size."""
    tensor = int(getattr(engine_args, "tensor_parallel_size", 1) or 1)
    pipeline = int(getattr(engine_args, "pipeline_parallel_size", 1) or 1)
    return tensor * pipeline


def redacted(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` for a log line: the values of credentials (SECRET_ARGS) replaced."""
    return {
        key: "<redacted>" if key in SECRET_ARGS and isinstance(value, str) else value
        for key, value in args.items()
    }
