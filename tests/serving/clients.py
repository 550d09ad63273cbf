"""Test clients: Triton's HTTP generate endpoints, and gRPC streaming with tritonclient."""

from __future__ import annotations

import collections
import json
import queue
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MODEL = "tiny"
TIMEOUT_S = 120


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
Samples = dict[str, list[tuple[dict[str, str], float]]]


class GenerateError(Exception):
    """The server answered the request with an error."""


def _error_message(response: requests.Response) -> str:
    """The ``error`` of a JSON error answer, else its status and body."""
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text}"


def http_generate(http: str, body: dict[str, Any], model: str = MODEL) -> dict[str, Any]:
    """POST /v2/models/<model>/generate; raise GenerateError with the server's message."""
    response = requests.post(
        f"http://{http}/v2/models/{model}/generate", json=body, timeout=TIMEOUT_S
    )
    payload: dict[str, Any] = response.json()
    if response.status_code != 200 or "error" in payload:
        raise GenerateError(payload.get("error", response.text))
    return payload


def prometheus_samples(url: str) -> Samples:
    """name -> [(labels, value)] of a Prometheus text endpoint (vLLM's /metrics)."""
    text = requests.get(url, timeout=10).text
    samples: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        samples.setdefault(match["name"], []).append((labels, float(match["value"])))
    return samples


def http_generate_stream(
    http: str, body: dict[str, Any], model: str = MODEL
) -> list[dict[str, Any]]:
    """POST /v2/models/<model>/generate_stream and return every server-sent event's data."""
    return list(http_generate_events(http, body, model))


def http_generate_events(
    http: str, body: dict[str, Any], model: str = MODEL
) -> Iterator[dict[str, Any]]:
    """POST /v2/models/<model>/generate_stream; each server-sent event's data as it arrives."""
    with requests.post(
        f"http://{http}/v2/models/{model}/generate_stream",
        json=body,
        stream=True,
        timeout=TIMEOUT_S,
    ) as response:
        if response.status_code != 200:  # an error answer is JSON, not server-sent events
            raise GenerateError(_error_message(response))
        for line in response.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[len("data:") :])
                if "error" in event:
                    raise GenerateError(event["error"])
                yield event


def request_inputs(
    prompt: str, sampling: dict[str, Any] | str | None = None, **flags: bool
) -> list[grpcclient.InferInput]:
    """Build the contract's inputs: text_input, optional sampling_parameters and BOOL flags."""
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    inputs = [text]
    if sampling is not None:
        raw = sampling if isinstance(sampling, str) else json.dumps(sampling)
        tensor = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([raw.encode()], dtype=np.object_))
        inputs.append(tensor)
    for name, value in flags.items():
        tensor = grpcclient.InferInput(name, [1], "BOOL")
        tensor.set_data_from_numpy(np.array([value], dtype=bool))
        inputs.append(tensor)
    return inputs


@dataclass
class StreamResult:
    """The responses of one request over a gRPC stream."""

    responses: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(r["text_output"][0] for r in self.responses if "text_output" in r)


# tritonclient's own channel arguments, and a connection of its own for each session: gRPC
# otherwise shares one TCP connection among channels to the same address, so closing or
# cancelling one session could touch another's streams, which separate clients never share.
SESSION_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.use_local_subchannel_pool", 1),
]


class GrpcSession:
    """One gRPC client with an open bidirectional stream; requests are told apart by id."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url, channel_args=SESSION_CHANNEL_ARGS)
        self._events: queue.Queue[tuple[Any, Any]] = queue.Queue()
        # Events that wait_for_response took, still first in line for collect.
        self._seen: collections.deque[tuple[Any, Any]] = collections.deque()
        self.client.start_stream(callback=lambda result, error: self._events.put((result, error)))

    def send(self, inputs: list[grpcclient.InferInput], model: str = MODEL) -> str:
        request_id = uuid.uuid4().hex
        self.client.async_stream_infer(
            model, inputs, request_id=request_id, enable_empty_final_response=True
        )
        return request_id

    def collect(
        self, request_ids: list[str], timeout: float = TIMEOUT_S
    ) -> dict[str, StreamResult]:
        """Wait until every request got its final response (or an error)."""
        results = {request_id: StreamResult() for request_id in request_ids}
        pending = set(request_ids)
        while pending:
            result, error = self._next_event(timeout)
            if error is not None:
                request_id = _error_request_id(error, pending)
                results[request_id].error = str(
                    error.message() if hasattr(error, "message") else error
                )
                pending.discard(request_id)
                continue
            response = result.get_response()
            outputs = {out.name: result.as_numpy(out.name) for out in response.outputs}
            decoded = {name: _plain(value) for name, value in outputs.items() if value is not None}
            if decoded:
                results[response.id].responses.append(decoded)
            if response.parameters["triton_final_response"].bool_param:
                pending.discard(response.id)
        return results

    def wait_for_response(self, timeout: float = TIMEOUT_S) -> None:
        """Block until the stream delivers something (a response or an error). It stays first
        in line for collect: put back at the queue's end, it fell behind the final response of
        a stream that ended meanwhile, and collect never read it."""
        if not self._seen:
            self._seen.append(self._events.get(timeout=timeout))

    def _next_event(self, timeout: float) -> tuple[Any, Any]:
        if self._seen:
            return self._seen.popleft()
        return self._events.get(timeout=timeout)

    def generate(self, inputs: list[grpcclient.InferInput], model: str = MODEL) -> StreamResult:
        request_id = self.send(inputs, model)
        return self.collect([request_id])[request_id]

    def close(self, cancel_requests: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel_requests)
        self.client.close()


def _plain(value: np.ndarray) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v.item() for v in value.ravel()]


def _error_request_id(error: InferenceServerException, pending: set[str]) -> str:
    """Errors on a stream name no request id; the tests send one failing request at a time."""
    if len(pending) != 1:
        raise AssertionError(f"error with several requests pending: {error}")
    return next(iter(pending))


@contextmanager
def grpc_session(url: str) -> Iterator[GrpcSession]:
    session = GrpcSession(url)
    try:
        yield session
    finally:
        session.close()
