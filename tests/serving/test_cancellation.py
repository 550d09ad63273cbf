"""A client that goes away frees the engine: its request is aborted, nothing keeps running."""

from __future__ import annotations

import time

from .clients import GrpcSession, request_inputs
from .conftest import Server
from .test_metrics import metric_value, wait_for

PROMPT = "Once upon a time there was a"
LONG = 2000  # tokens: seconds of work for the tiny model on a CPU


def test_cancelled_stream_aborts_the_engine_request(server: Server) -> None:
    before = metric_value(server, "vllm:generation_tokens_total")
    session = GrpcSession(server.grpc)
    session.send(request_inputs(PROMPT, {"max_tokens": LONG}, stream=True))
    session.wait_for_response()
    assert wait_for(lambda: metric_value(server, "vllm:num_requests_running") == 1)

    session.close(cancel_requests=True)

    assert wait_for(lambda: metric_value(server, "vllm:num_requests_running") == 0)
    generated = metric_value(server, "vllm:generation_tokens_total") - before
    time.sleep(1.0)
    assert metric_value(server, "vllm:generation_tokens_total") - before == generated
    assert 0 < generated < LONG
    assert server.ready() and server.model_ready()


def test_server_serves_normally_after_a_cancellation(server: Server) -> None:
    session = GrpcSession(server.grpc)
    try:
        result = session.generate(request_inputs(PROMPT, {"max_tokens": 4}, stream=True))
    finally:
        session.close()
    assert result.error is None and len(result.text.split()) == 4
