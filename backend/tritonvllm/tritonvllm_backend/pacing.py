"""How long a stream waits between responses under load (pure; see generate.py)."""

from __future__ import annotations

# The stub sends a few thousand responses a second at most (one thread, one shared-memory message
# and Triton's response path each), while an engine batching hundreds of streams produces tens of
# thousands of tokens a second. So under load the streams share a budget: with N requests in
# flight each stream sends at most one response per N / STREAM_RESPONSES_PER_SECOND seconds, and
# vLLM merges the tokens produced meanwhile into its next (DELTA) output. The first response is
# never delayed, nor one that is due to be the last; with few requests in flight every token goes
# out at once.
STREAM_RESPONSES_PER_SECOND = 2000
PACE_ABOVE_INFLIGHT = 4


def stream_pause(inflight: int, max_tokens: int | None, produced: int, delta: int) -> float:
    """Seconds a stream waits between responses: 0 with few requests in flight, else its share.

    No pause when the tokens still allowed (``max_tokens`` less those ``produced``) fit in one
    more response of the size of the last (``delta``): that response is the final one, and
    holding it back would only hold back the client's next request.
    """
    if inflight <= PACE_ABOVE_INFLIGHT:
        return 0.0
    if max_tokens is not None and max_tokens - produced <= max(delta, 1):
        return 0.0
    return inflight / STREAM_RESPONSES_PER_SECOND
