"""Read one Triton request's inputs into plain values (the prompt, flags, sampling parameters)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import triton_python_backend_utils as pb_utils

from .contract import BOOL_FLAGS
from .embedding import EmbeddingAsk, parse_embedding_request
from .outputs import Wanted
from .sampling import RequestError, SamplingRequest, parse_sampling_parameters
from .typekinds import Kind

# The official backend's words for a request it refuses, kept so that clients matching on them work.
STREAM_WITH_INPUT = (
    "Error generating stream: When streaming, `exclude_input_in_output` = False is not allowed."
)


@dataclass(frozen=True)
class ParsedRequest:
    """What a request asks the engine for."""

    prompt: str
    wanted: Wanted
    sampling: SamplingRequest
    images: list[bytes]
    embedding: EmbeddingAsk | None = None
    """Set when the request asks for an embedding (``embedding_request``), not a completion."""


def parse_request(request: Any, sampling_kinds: Mapping[str, Kind]) -> ParsedRequest:
    """Parse a pb_utils.InferenceRequest; raise RequestError with a message for the client."""
    prompt = _string(request, "text_input")
    if prompt is None:
        raise RequestError("text_input is required")
    if not prompt:  # whitespace is a prompt (vLLM completes it)
        raise RequestError("text_input is empty: send the prompt to complete")
    flags = {name: _bool(request, name) for name in BOOL_FLAGS}
    exclude = pb_utils.get_input_tensor_by_name(request, "exclude_input_in_output")
    if flags["stream"] and exclude is not None and not flags["exclude_input_in_output"]:
        # A stream never repeats the prompt; asking for it explicitly is refused (as the official
        # backend does) rather than silently ignored.
        raise RequestError(STREAM_WITH_INPUT)
    sampling_json = _string(request, "sampling_parameters")
    sampling = parse_sampling_parameters(sampling_json, request.parameters(), sampling_kinds)
    image_tensor = pb_utils.get_input_tensor_by_name(request, "image")
    images = [] if image_tensor is None else [bytes(x) for x in image_tensor.as_numpy().ravel()]
    embedding_json = _string(request, "embedding_request")
    embedding = None if embedding_json is None else parse_embedding_request(embedding_json)
    return ParsedRequest(prompt, Wanted.from_flags(flags), sampling, images, embedding)


def _string(request: Any, name: str) -> str | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().ravel()
    if values.size != 1:
        raise RequestError(f"{name} must hold exactly one string, got {values.size}")
    value = values[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"{name} is not valid UTF-8") from None
    return str(value)


def _bool(request: Any, name: str) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return False
    values = tensor.as_numpy().ravel()
    if values.size != 1:
        raise RequestError(f"{name} must hold exactly one boolean, got {values.size}")
    return bool(values[0])
