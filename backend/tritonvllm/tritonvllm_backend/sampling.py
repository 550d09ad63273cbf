"""Parse a request's sampling parameters and coerce their values to SamplingParams' types.

Clients send ``sampling_parameters`` as a JSON object whose values may be strings
(``{"temperature": "0", "max_tokens": "16"}``); each value is converted to the kind of the
SamplingParams field it names. Anything that cannot be converted is a ``RequestError`` whose
message says which key and why, for an INVALID_ARG response.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .engine_config import unknown_key_message
from .typekinds import Kind

# Set by the backend itself, never by a request.
RESERVED = frozenset({"output_kind"})
# Request parameters that Triton's frontends and clients add on their own.
_TRANSPORT_PARAMETERS = ("triton_", "stream")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class RequestError(ValueError):
    """A request is malformed; the message is meant for the client."""


def parse_sampling_parameters(
    sampling_json: str | None,
    request_parameters_json: str | None,
    kinds: Mapping[str, Kind],
) -> dict[str, Any]:
    """Return SamplingParams keyword arguments from a request.

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
            if not key.startswith(_TRANSPORT_PARAMETERS)
        }
    else:
        raw = {}
    return {key: coerce(key, value, kinds) for key, value in raw.items()}


def coerce(key: str, value: Any, kinds: Mapping[str, Kind]) -> Any:
    """Convert one value to the kind of the SamplingParams field ``key``."""
    if key in RESERVED:
        raise RequestError(f"sampling parameter {key!r} is set by the backend and cannot be sent")
    if key not in kinds:
        raise RequestError(f"sampling_parameters: {unknown_key_message(key, kinds)}")
    if value is None:
        return None
    kind = kinds[key]
    try:
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


def _as_is(value: Any) -> Any:
    return value


_CONVERTERS = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_float,
    "str": _to_str,
    "list": _to_list,
    "dict": _to_dict,
    "any": _as_is,
}
_ARTICLE = {
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "list": "a list",
    "dict": "an object",
    "any": "a value",
}
