"""Parse a request's sampling parameters and coerce their values to SamplingParams' types.

Clients send ``sampling_parameters`` as a JSON object whose values may be strings
(``{"temperature": "0", "max_tokens": "16"}``); each value is converted to the kind of the
SamplingParams field it names. Every field of the installed vLLM's SamplingParams is accepted but
its internals (``INTERNAL`` and the private ``_*``), so a field that a newer vLLM adds works as it
is. A few keys are the backend's own and go to the engine beside
SamplingParams: ``lora_name``, ``priority`` and the structured-output constraints
(``structured_outputs``, or the older ``guided_json`` / ``guided_regex`` / ``guided_choice`` /
``guided_grammar`` / ``guided_decoding``). Anything that cannot be converted is a
``RequestError`` whose message says which key and why, for an INVALID_ARG response.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .engine_config import unknown_key_message
from .typekinds import Kind

# Set by the backend itself, never by a request.
RESERVED = frozenset({"output_kind"})
# SamplingParams fields that vLLM or its server set for themselves (besides the private ``_*``
# ones): a request setting them can break the engine or its bookkeeping.
INTERNAL = frozenset(
    {
        "skip_clone", "output_text_buffer_length", "skip_reading_prefix_cache",
        "routed_experts_prompt_start", "trace_decode_token_ids",
    }
)  # fmt: skip
# Older names of the structured-output constraints (vLLM's guided decoding, OpenAI extras).
GUIDED_ALIASES = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}
STRUCTURED_KEYS = ("structured_outputs", "guided_decoding")
# Fields whose annotation reduces to "any" but whose accepted values are known.
_NARROWER: dict[str, Any] = {"stop": "strs", "bad_words": "strlist"}  # str | list[str], list[str]
# vLLM serializes integers as 64-bit.
_INT_LIMIT = 2**63
BACKEND_KEYS = frozenset({"lora_name", "priority", *STRUCTURED_KEYS, *GUIDED_ALIASES})
# Request parameters that Triton's frontends and clients add on their own.
_TRANSPORT_PREFIX = "triton_"
_TRANSPORT_KEYS = frozenset({"stream"})

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class RequestError(ValueError):
    """A request is malformed; the message is meant for the client."""


@dataclass(frozen=True)
class SamplingRequest:
    """What a request's sampling parameters ask for, split by where each part goes."""

    params: dict[str, Any] = field(default_factory=dict)
    """SamplingParams keyword arguments."""
    structured_outputs: dict[str, Any] | None = None
    """StructuredOutputsParams keyword arguments (json, regex, choice, grammar, ...)."""
    lora_name: str | None = None
    priority: int = 0


def parse_sampling_parameters(
    sampling_json: str | None,
    request_parameters_json: str | None,
    kinds: Mapping[str, Kind],
) -> SamplingRequest:
    """Return what a request's sampling parameters ask for.

    ``sampling_json`` is the ``sampling_parameters`` input; when it is absent, the request's own
    parameters (``{"parameters": {...}}`` of the /generate endpoint) are used instead, without
    the keys Triton's transports add (``triton_*``, ``stream``).
    """
    if sampling_json is not None and sampling_json.strip():
        raw = _object(sampling_json, "sampling_parameters")
    elif request_parameters_json:
        raw = {
            key: value
            for key, value in _object(request_parameters_json, "request parameters").items()
            if not (key.startswith(_TRANSPORT_PREFIX) or key in _TRANSPORT_KEYS)
        }
    else:
        raw = {}
    backend = {key: raw.pop(key) for key in list(raw) if key in BACKEND_KEYS}
    params = {key: coerce(key, value, kinds) for key, value in raw.items()}
    lora_name = backend.get("lora_name")
    if lora_name is not None and not (isinstance(lora_name, str) and lora_name):
        raise RequestError(f"sampling parameter 'lora_name' must be a string, got {lora_name!r}")
    priority = backend.get("priority")
    try:
        priority = 0 if priority is None else _to_int(priority)
    except ValueError as err:
        raise RequestError(
            f"sampling parameter 'priority' must be an integer, got {priority!r} ({err})"
        ) from None
    return SamplingRequest(params, _structured(backend), lora_name, priority)


def _structured(backend: dict[str, Any]) -> dict[str, Any] | None:
    """The structured-output constraints, from whichever of their spellings the request used."""
    found: dict[str, Any] = {}
    for key in STRUCTURED_KEYS:
        if backend.get(key) is not None:
            try:
                found.update(_to_dict(backend[key]))
            except (ValueError, json.JSONDecodeError) as err:
                raise RequestError(
                    f"sampling parameter {key!r} must be an object (or a JSON string of one), "
                    f"got {backend[key]!r} ({err})"
                ) from None
    for alias, name in GUIDED_ALIASES.items():
        if backend.get(alias) is not None:
            found[name] = backend[alias]
    return found or None


def coerce(key: str, value: Any, kinds: Mapping[str, Kind]) -> Any:
    """Convert one value to the kind of the SamplingParams field ``key``."""
    if key in RESERVED:
        raise RequestError(f"sampling parameter {key!r} is set by the backend and cannot be sent")
    if key in INTERNAL or key.startswith("_"):
        raise RequestError(
            f"sampling parameter {key!r} is internal to vLLM and cannot be set by a request"
        )
    if key not in kinds:
        accepted = [name for name in kinds if name not in INTERNAL] + sorted(BACKEND_KEYS)
        raise RequestError(f"sampling_parameters: {unknown_key_message(key, accepted)}")
    if value is None:
        return None
    kind = _NARROWER.get(key, kinds[key])
    try:
        if key == "logit_bias":  # JSON object keys are strings; vLLM wants token ids
            return _to_logit_bias(value)
        return _CONVERTERS[kind](value)
    except (TypeError, ValueError, json.JSONDecodeError) as err:
        raise RequestError(
            f"sampling parameter {key!r} must be {_ARTICLE[kind]}, got {value!r} ({err})"
        ) from None


def _object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("not a boolean")


def _to_int(value: Any) -> int:
    number = _whole_number(value)
    if not -_INT_LIMIT <= number < _INT_LIMIT:
        raise ValueError("out of the 64-bit range")
    return number


def _whole_number(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError("not a whole number")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            number = float(text)
            if number.is_integer():
                return int(number)
            raise ValueError("not a whole number") from None
    raise ValueError("not a number")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise ValueError("not a number")
    if math.isnan(number):
        raise ValueError("NaN is not allowed")
    return number


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("not a string")


def _to_str_or_strs(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ValueError("not a string or a list of strings")


def _to_str_list(value: Any) -> list[str]:
    value = _to_list(value)
    if all(isinstance(item, str) for item in value):
        return value
    raise ValueError("not a list of strings")


def _to_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, list):
        return value
    raise ValueError("not a list")


def _to_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict):
        return value
    raise ValueError("not an object")


def _to_logit_bias(value: Any) -> dict[int, float]:
    return {_to_int(token): _to_float(bias) for token, bias in _to_dict(value).items()}


def _as_is(value: Any) -> Any:
    return value


_CONVERTERS = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_float,
    "str": _to_str,
    "strs": _to_str_or_strs,
    "strlist": _to_str_list,
    "list": _to_list,
    "dict": _to_dict,
    "any": _as_is,
}
_ARTICLE = {
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "strs": "a string or a list of strings",
    "strlist": "a list of strings",
    "list": "a list",
    "dict": "an object",
    "any": "a value",
}
