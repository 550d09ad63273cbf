"""Shape engine outputs into the contract's output tensors (as plain values, no Triton types).

The backend converts each ``(name, values, dtype)`` into a Triton tensor. Streamed responses carry
the text and tokens produced since the previous response; the final non-streamed response carries
everything, with the prompt in front unless ``exclude_input_in_output`` is set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Tensor = tuple[str, list[Any], str]


class LogprobLike(Protocol):
    """vLLM's Logprob: a token's log probability, its rank and its text."""

    logprob: float
    rank: int | None
    decoded_token: str | None


@dataclass(frozen=True)
class Wanted:
    """What one request asked for with its optional boolean inputs."""

    stream: bool = False
    exclude_input_in_output: bool = False
    return_finish_reason: bool = False
    return_cumulative_logprob: bool = False
    return_logprobs: bool = False
    return_num_input_tokens: bool = False
    return_num_output_tokens: bool = False

    @classmethod
    def from_flags(cls, flags: Mapping[str, bool]) -> Wanted:
        """Build from a mapping of input name to value; missing inputs are False."""
        return cls(**{name: bool(flags.get(name, False)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SequenceDelta:
    """One generated sequence, or the part of it produced since the last response."""

    text: str
    num_tokens: int
    finish_reason: str | None
    cumulative_logprob: float | None
    logprobs: Sequence[Mapping[int, LogprobLike]] | None


def shape_response(
    wanted: Wanted,
    sequences: Sequence[SequenceDelta],
    prompt: str,
    num_input_tokens: int,
    final: bool,
) -> list[Tensor]:
    """The output tensors of one response."""
    prepend = final and not wanted.stream and not wanted.exclude_input_in_output
    texts = [prompt + seq.text if prepend else seq.text for seq in sequences]
    tensors: list[Tensor] = [("text_output", texts, "object")]
    if wanted.return_finish_reason:
        tensors.append(("finish_reason", [str(seq.finish_reason) for seq in sequences], "object"))
    if wanted.return_cumulative_logprob:
        # NaN when vLLM was not asked for logprobs (it has none), as the official backend sends.
        values = [_or_nan(seq.cumulative_logprob) for seq in sequences]
        tensors.append(("cumulative_logprob", values, "float32"))
    if wanted.return_logprobs:
        tensors.append(("logprobs", [logprobs_json(seq.logprobs) for seq in sequences], "object"))
    if wanted.return_num_input_tokens:
        tensors.append(("num_input_tokens", [num_input_tokens], "uint32"))
    if wanted.return_num_output_tokens:
        tensors.append(("num_output_tokens", [seq.num_tokens for seq in sequences], "uint32"))
    return tensors


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def logprobs_json(logprobs: Iterable[Mapping[int, LogprobLike]] | None) -> str:
    """JSON list, one object per token: ``{token_id: {logprob, rank, decoded_token}}``.

    ``null`` when the request did not ask vLLM for logprobs (sampling parameter ``logprobs``).
    """
    if logprobs is None:
        return "null"
    return json.dumps(
        [
            {
                str(token_id): {
                    "logprob": entry.logprob,
                    "rank": entry.rank,
                    "decoded_token": entry.decoded_token,
                }
                for token_id, entry in position.items()
            }
            for position in logprobs
        ]
    )
