"""1,000 malformed or hostile requests and streams cancelled half-way: every request gets an
answer, the server stays ready, and the engine ends with nothing running."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from .clients import MODEL, TIMEOUT_S, GrpcSession, request_inputs
from .conftest import Server
from .test_metrics import metric_value, wait_for

REQUESTS = 1000
SEED = 7
HOSTILE_SAMPLING: list[Any] = [
    "{not json",
    "[1, 2, 3]",
    '{"temperature": "hot"}',
    '{"max_tokens": -5}',
    '{"max_tokens": 1e30}',
    '{"top_p": 7}',
    '{"no_such_parameter": 1}',
    '{"max_tokens": "3", "temperature": "0"}',  # strings are converted: a valid request
    '{"stop": 12}',
    '{"n": 0}',
    "\u0000\ufffd",
    json.dumps({"max_tokens": 2, "logprobs": 3}),  # valid
    # Once requests that never got an answer (vLLM asserted, or an internal field broke it):
    '{"stop": {"a": 1}}',
    '{"stop": [1, 2]}',
    '{"skip_clone": true}',
    '{"output_text_buffer_length": 3}',
    '{"_eos_token_id": 5}',
    '{"bad_words": [1]}',
    '{"allowed_token_ids": [1000000000]}',
    '{"logit_bias": {"x": 1}}',
    '{"structured_outputs": {"json": "{oops"}}',
    '{"structured_outputs": {"regex": "(("}}',
    '{"structured_outputs": 7}',
    '{"guided_choice": []}',
    '{"lora_name": "missing"}',
    '{"priority": "high"}',
    json.dumps({"max_tokens": 2, "n": 2, "priority": 1}),  # valid
]


def hostile_body(rng: random.Random) -> dict[str, Any]:
    """A request body that is malformed in one of many ways (a few are valid)."""
    kind = rng.randrange(7)
    prompt = "The capital of France is"
    if kind == 0:
        return {"text_input": ""}
    if kind == 1:
        return {"text_input": "word " * rng.choice([600, 5000])}  # longer than max_model_len
    if kind == 2:
        return {"text_input": rng.choice([12, None, ["a", "b"], {"x": 1}])}
    if kind == 3:
        return {"text_input": prompt, "sampling_parameters": rng.choice(HOSTILE_SAMPLING)}
    if kind == 4:
        return {
            "text_input": prompt,
            "stream": rng.choice(["yes", 3, None]),
            "exclude_input_in_output": rng.choice([False, True]),
        }
    if kind == 5:
        return {"text_input": prompt, "return_logprobs": "please", "unknown_input": 1}
    return {"prompt": prompt}  # the wrong input name


def answer(server: Server, body: dict[str, Any]) -> int:
    """POST one request; the HTTP status of its answer (a dropped connection fails the test)."""
    response = requests.post(
        f"http://{server.http}/v2/models/{MODEL}/generate", json=body, timeout=TIMEOUT_S
    )
    payload = response.json()
    assert response.status_code == 200 or "error" in payload, payload
    return response.status_code


def test_a_thousand_malformed_requests_all_get_answers(server: Server) -> None:
    rng = random.Random(SEED)
    bodies = [hostile_body(rng) for _ in range(REQUESTS)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda body: answer(server, body), bodies))
    assert len(statuses) == REQUESTS
    assert any(status >= 400 for status in statuses)
    assert server.ready() and server.model_ready()
    assert wait_for(lambda: metric_value(server, "vllm:num_requests_running") == 0)


def test_streams_cancelled_half_way_leave_nothing_running(server: Server) -> None:
    sessions = [GrpcSession(server.grpc) for _ in range(8)]
    ids = [
        session.send(request_inputs("Once upon a time", {"max_tokens": 400}, stream=True))
        for session in sessions
    ]
    for session in sessions:
        session.wait_for_response()
    for session in sessions[::2]:
        session.close(cancel_requests=True)
    for session, request_id in list(zip(sessions, ids, strict=True))[1::2]:
        result = session.collect([request_id])[request_id]
        session.close()
        assert result.error is None and result.text  # the streams left alone complete
    assert wait_for(lambda: metric_value(server, "vllm:num_requests_running") == 0, 120)
    assert wait_for(lambda: metric_value(server, "vllm:num_requests_waiting") == 0)
    assert server.ready() and server.model_ready()
