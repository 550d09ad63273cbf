"""The official backend's ``embedding_request`` input, parsed (pure).

A JSON object as the OpenAI-compatible frontend sends it: ``input`` (a string, or a list of
token ids) and optional ``pooling_params`` (``{"dimensions": [d]}``). A request carrying it asks
the engine for an embedding (task ``embed``) instead of a completion; the response's
``text_output`` is the embedding as a JSON list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeGuard

from .sampling import RequestError


@dataclass(frozen=True)
class EmbeddingAsk:
    """What an embedding request asks for."""

    input: str | list[int]
    dimensions: int | None = None


def parse_embedding_request(text: str) -> EmbeddingAsk:
    """Parse ``embedding_request``; RequestError names what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(f"embedding_request is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise RequestError("embedding_request must be a JSON object with an 'input'")
    given: object = value.get("input")
    asked: str | list[int]
    if (isinstance(given, str) and given) or _token_ids(given):
        asked = given
    else:
        raise RequestError(
            "embedding_request 'input' must be a non-empty string or list of token ids"
        )
    pooling = value.get("pooling_params") or {}
    if not isinstance(pooling, dict):
        raise RequestError("embedding_request 'pooling_params' must be an object")
    dimensions = pooling.get("dimensions")
    if isinstance(dimensions, list) and len(dimensions) == 1:  # the frontend sends [d]
        dimensions = dimensions[0]
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise RequestError("embedding_request 'pooling_params.dimensions' must be [a positive int]")
    return EmbeddingAsk(asked, dimensions)


def _token_ids(value: object) -> TypeGuard[list[int]]:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(token, int) and not isinstance(token, bool) for token in value)
    )
