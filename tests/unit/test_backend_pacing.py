"""Stream pacing: every token goes out at once under light load; under load streams share a
budget of responses per second, and neither the first nor the last response is held back."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
import pytest
from tritonvllm_backend.pacing import (
    PACE_ABOVE_INFLIGHT,
    STREAM_RESPONSES_PER_SECOND,
    response_budget,
    stream_pause,
)


def test_few_streams_send_every_token_at_once() -> None:
    for inflight in range(1, PACE_ABOVE_INFLIGHT + 1):
        assert stream_pause(inflight, max_tokens=128, produced=1, delta=1) == 0.0


def test_under_load_streams_share_the_response_budget() -> None:
    pauses = {n: stream_pause(n, max_tokens=128, produced=10, delta=2) for n in (16, 64, 256)}
    for inflight, pause in pauses.items():
        # N streams, each one response per pause: N / pause responses a second in all.
        assert inflight / pause == STREAM_RESPONSES_PER_SECOND
    assert pauses[16] < pauses[64] < pauses[256]


def test_the_response_due_to_be_last_is_not_held_back() -> None:
    # 4 tokens left and the last response carried 4: the next one ends the request.
    assert stream_pause(256, max_tokens=128, produced=124, delta=4) == 0.0
    assert stream_pause(256, max_tokens=128, produced=127, delta=0) == 0.0
    # 20 left at 4 a response: several more responses, keep pacing.
    assert stream_pause(256, max_tokens=128, produced=108, delta=4) > 0.0


def test_without_max_tokens_streams_are_paced_until_the_end() -> None:
    assert stream_pause(64, max_tokens=None, produced=5000, delta=3) > 0.0


def test_the_budget_is_a_config_parameter() -> None:
    assert response_budget(None) == response_budget("") == STREAM_RESPONSES_PER_SECOND
    assert response_budget("500") == 500.0
    assert stream_pause(100, 128, 10, 2, responses_per_second=500.0) == 0.2


def test_a_bad_budget_says_what_to_set() -> None:
    for bad in ("0", "-5", "fast", "inf", "nan"):
        with pytest.raises(ValueError, match="STREAM_RESPONSES_PER_SECOND must be a positive"):
            response_budget(bad)
