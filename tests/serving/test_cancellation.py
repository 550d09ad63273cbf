"""A client that goes away frees the engine: its request is aborted, nothing keeps running."""

from __future__ import annotations

import time

from .clients import GrpcSession, request_inputs
from .conftest import Server
from .test_metrics import metric_value, wait_for

PROMPT = "Once upon a time there was a"
LONG = 8000  # tokens: many seconds of work for the tiny model on a CPU


def settled_value(server: Server, name: str, quiet: float = 1.0, timeout: float = 20.0) -> float:
    """A metric's value once it stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    value = metric_value(server, name)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        latest = metric_value(server, name)
        if latest == value:
            return value
        value = latest
    raise AssertionError(f"{name} still changing after {timeout} s")


def _tokens_of_a_cancelled_grpc_stream(server: Server) -> float:
    # The server is shared: requests of an earlier test (a load client's last ones) may still run.
    # Count from an idle engine, so that "running == 1" is this request.
    assert wait_for(lambda: metric_value(server, "vllm:num_requests_running") == 0, timeout=300)
    before = metric_value(server, "vllm:generation_tokens_total")
    session = GrpcSession(server.grpc)
    # ignore_eos: a sampled end of sequence would end the request before it can be cancelled
    # (or before the running gauge shows it), and would pass for a cancellation.
    session.send(request_inputs(PROMPT, {"max_tokens": LONG, "ignore_eos": True}, stream=True))
    session.wait_for_response()
    assert wait_for(lambda: metric_value(server, "vllm:num_requests_running") == 1, timeout=60)
    session.close(cancel_requests=True)
    assert wait_for(lambda: metric_value(server, "vllm:num_requests_running") == 0)
    return settled_value(server, "vllm:generation_tokens_total") - before


def test_cancelled_grpc_stream_aborts_the_engine_request(server: Server) -> None:
    # tritonserver 2.51 does not always flag a cancelled gRPC stream as cancelled when the
    # machine is saturated (seen on 2 cores under the full suite): the request then runs to
    # max_tokens. The backend aborts as soon as Triton says so; one of three tries must show it.
    generated = [_tokens_of_a_cancelled_grpc_stream(server)]
    while generated[-1] >= LONG and len(generated) < 3:
        generated.append(_tokens_of_a_cancelled_grpc_stream(server))
    assert 0 < generated[-1] < LONG, generated
    assert server.ready() and server.model_ready()
    log = server.log.read_text()  # the official backend's log lines, which its tests look for
    assert "[vllm] Cancelling the request" in log
    assert "[vllm] Successfully cancelled the request" in log


def test_server_serves_normally_after_a_cancellation(server: Server) -> None:
    session = GrpcSession(server.grpc)
    try:
        result = session.generate(request_inputs(PROMPT, {"max_tokens": 4}, stream=True))
    finally:
        session.close()
    assert result.error is None and len(result.text.split()) == 4


def test_one_cancelled_request_of_a_thousand_in_flight_is_aborted_at_once(server: Server) -> None:
    """Each request in flight is asked about cancellation at least every 0.4 s, whatever their
    number (a fixed number per poll took seconds to reach one of a thousand)."""
    inflight = 1000
    sampling = {"max_tokens": LONG, "ignore_eos": True}
    busy = GrpcSession(server.grpc)
    one = GrpcSession(server.grpc)
    try:
        for _ in range(inflight - 1):
            busy.send(request_inputs(PROMPT, sampling))
        cancelled = one.send(request_inputs(PROMPT, sampling))
        # (The engine's gauges come with its scheduler stats: wait for nearly all, not the
        # exact count, which a CI run on a loaded machine did not see within 120 s.)
        assert wait_for(lambda: engine_requests(server) >= inflight * 0.9, timeout=300)
        started = time.monotonic()
        one.close(cancel_requests=True)
        line = f"[vllm] Cancelling the request {cancelled}-"
        # "Never" is a minute: with a thousand streams on 2 loaded cores, a CI run saw the abort
        # come more than 10 s after the cancel (each is_cancelled() is a round trip to the server).
        while line not in server.log.read_text(errors="replace"):
            assert time.monotonic() - started < 60, "the cancelled request was never aborted"
            time.sleep(0.02)
        took = time.monotonic() - started
    finally:
        busy.close(cancel_requests=True)
    assert wait_for(lambda: engine_requests(server) == 0, timeout=120)
    # The backend's bound (every request asked at least every 0.4 s) is asserted without a clock
    # in tests/unit/test_backend_cancel_polls.py; here the time depends on Triton flagging the
    # cancel and on the machine's load, so it is reported, not asserted.
    print(f"\naborted {took:.2f} s after the client cancelled, {inflight} in flight")


def engine_requests(server: Server) -> float:
    """Requests the engine holds, running or waiting."""
    return metric_value(server, "vllm:num_requests_running") + metric_value(
        server, "vllm:num_requests_waiting"
    )
