"""How long a stream waits between responses under load (pure; see generate.py)."""

from __future__ import annotations

# The stub sends a few thousand responses a second at most (one thread, one shared-memory message
# and Triton's response path each), while an engine batching hundreds of streams produces tens of
# thousands of tokens a second. So under load the streams share a budget: with N requests in
# flight each stream sends at most one response per N / STREAM_RESPONSES_PER_SECOND seconds, and
# vLLM merges the tokens produced meanwhile into its next (DELTA) output. The first response is
# never delayed, nor one that is due to be the last; with few requests in flight every token goes
# out at once. The budget is the config.pbtxt parameter STREAM_RESPONSES_PER_SECOND.
STREAM_RESPONSES_PER_SECOND = 1000.0
PACE_ABOVE_INFLIGHT = 4


def response_budget(value: str | None) -> float:
    """The STREAM_RESPONSES_PER_SECOND parameter: a positive number; unset means the default."""
    if value is None or not value.strip():
        return STREAM_RESPONSES_PER_SECOND
    try:
        budget = float(value)
    except ValueError:
        budget = 0.0
    if not budget > 0 or budget == float("inf"):
        raise ValueError(
            f"parameter STREAM_RESPONSES_PER_SECOND must be a positive number, not {value!r}"
        )
    return budget


def stream_pause(
    inflight: int,
    max_tokens: int | None,
    produced: int,
    delta: int,
    responses_per_second: float = STREAM_RESPONSES_PER_SECOND,
) -> float:
    """Seconds a stream waits between responses: 0 with few requests in flight, else its share.

    No pause when the tokens still allowed (``max_tokens`` less those ``produced``) fit in one
    more response of the size of the last (``delta``): that response is the final one, and
    holding it back would only hold back the client's next request.
    """
    if inflight <= PACE_ABOVE_INFLIGHT:
        return 0.0
    if max_tokens is not None and max_tokens - produced <= max(delta, 1):
        return 0.0
    return inflight / responses_per_second
