"""Sampling parameters a client sends reach the engine: vLLM's ``stream_interval`` (also as a
request parameter of /generate_stream), ``logit_bias`` keyed by token ids written as JSON strings,
and a prompt of whitespace only, which vLLM completes like any other."""

from __future__ import annotations

import json
import math

from .clients import GrpcSession, http_generate, http_generate_stream, request_inputs
from .conftest import Server

PROMPT = "The capital of France is"
GREEDY = {"temperature": 0, "max_tokens": 12}


def test_stream_interval_as_a_request_parameter_batches_the_streamed_tokens(
    server: Server,
) -> None:
    interval = 4
    body = {
        "text_input": PROMPT,
        "stream": True,
        "parameters": {**GREEDY, "stream_interval": interval},
    }
    events = http_generate_stream(server.http, body)
    whole = http_generate(
        server.http, {"text_input": PROMPT, "parameters": GREEDY, "exclude_input_in_output": True}
    )["text_output"]
    assert "".join(event["text_output"] for event in events) == whole
    # vLLM sends the first token alone, then every `interval` tokens, and the rest at the end.
    texts = [event["text_output"] for event in events if event["text_output"]]
    assert len(texts) <= 1 + math.ceil((GREEDY["max_tokens"] - 1) / interval)
    assert len(texts[1].split()) == interval


def first_token(server: Server, sampling: dict[str, object]) -> tuple[int, str]:
    """The id and text of the first generated token (from its logprobs)."""
    session = GrpcSession(server.grpc)
    try:
        result = session.generate(
            request_inputs(
                PROMPT,
                {**sampling, "logprobs": 0},
                return_logprobs=True,
                exclude_input_in_output=True,
            )
        )
    finally:
        session.close()
    assert result.error is None, result.error
    (response,) = result.responses
    token_id, entry = next(iter(json.loads(response["logprobs"][0])[0].items()))
    return int(token_id), entry["decoded_token"]


def test_logit_bias_with_string_token_ids_steers_the_output(server: Server) -> None:
    greedy_id, greedy_text = first_token(server, GREEDY)
    banned_id, banned_text = first_token(server, {**GREEDY, "logit_bias": {str(greedy_id): -100}})
    assert banned_id != greedy_id and banned_text != greedy_text


def test_a_whitespace_prompt_is_completed(server: Server) -> None:
    body = {"text_input": "   ", "parameters": {"max_tokens": 3}, "exclude_input_in_output": True}
    assert len(http_generate(server.http, body)["text_output"].split()) == 3
