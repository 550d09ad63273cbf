"""Malformed requests and models get clear errors, and the server stays ready."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient

from .clients import (
    GenerateError,
    GrpcSession,
    http_generate,
    http_generate_stream,
    request_inputs,
)
from .conftest import START_TIMEOUT_S, Server, start_tritonserver, stop_tritonserver

PROMPT = "The quick brown fox"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sampling_parameters": "{not json"}, "sampling_parameters is not valid JSON"),
        ({"sampling_parameters": "[1, 2]"}, "must be a JSON object"),
        ({"sampling_parameters": '{"max_tokens": "many"}'}, "'max_tokens' must be an integer"),
        ({"sampling_parameters": '{"temperature": "hot"}'}, "'temperature' must be a number"),
        ({"sampling_parameters": '{"temprature": 0}'}, "did you mean 'temperature'"),
        ({"sampling_parameters": '{"temperature": -1}'}, "temperature"),
        ({"sampling_parameters": '{"max_tokens": 0}'}, "max_tokens"),
        ({"sampling_parameters": '{"stop": {"a": 1}}'}, "'stop' must be a string or a list"),
        ({"sampling_parameters": '{"skip_clone": true}'}, "'skip_clone' is internal to vLLM"),
        ({"sampling_parameters": '{"output_text_buffer_length": 4}'}, "internal to vLLM"),
        ({"sampling_parameters": '{"lora_name": "pirate"}'}, "LoRA feature is not enabled."),
        ({"sampling_parameters": '{"priority": "urgent"}'}, "'priority' must be an integer"),
        ({"text_input": ""}, "text_input is empty"),
    ],
)
def test_bad_request_gets_an_error_and_the_server_stays_ready(
    server: Server, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(GenerateError) as err:
        http_generate(server.http, {"text_input": PROMPT, **body})
    assert message in str(err.value)
    assert server.ready() and server.model_ready()
    assert http_generate(server.http, {"text_input": PROMPT})["text_output"].startswith(PROMPT)


@pytest.mark.parametrize(
    "sampling",
    [
        {"stop": {"a": 1}},  # vLLM asserts on it: once a request that never got an answer
        {"skip_clone": True},
        {"bad_words": [1, 2]},
        {"max_tokens": 1e30},
        {"allowed_token_ids": [10**9]},
        {"logit_bias": {"not a token": 1.0}},
        {"structured_outputs": {"json": "{not json"}},
        {"structured_outputs": {"json": {"type": "object", "properties": 5}}},
        {"structured_outputs": {"regex": "(unclosed"}},
        {"structured_outputs": {"regex": "a", "choice": ["b"]}},  # two constraints at once
        {"guided_choice": []},
        {"structured_outputs": {"no_such_constraint": 1}},
    ],
)
def test_values_vllm_rejects_are_invalid_arg_answered_at_once(
    server: Server, sampling: dict[str, Any]
) -> None:
    """The error names the problem (an INVALID_ARG, not "generation failed" with a traceback in
    the server's log); over gRPC streaming and HTTP alike the code itself does not reach clients."""
    failures = server.log.read_text().count("[tritonvllm] request ")
    session = GrpcSession(server.grpc)
    try:
        result = session.send(request_inputs(PROMPT, sampling))
        answer = session.collect([result], timeout=30)[result]
    finally:
        session.close()
    assert answer.error and not answer.error.startswith("generation failed"), answer
    assert server.log.read_text().count("[tritonvllm] request ") == failures
    assert server.ready() and server.model_ready()


def test_a_stream_refused_before_its_first_event_raises_the_servers_message(
    server: Server,
) -> None:
    """Triton refuses a stream to an unknown model with a JSON error (no events): the test client
    raises it rather than returning no events, which a caller would read as an empty answer."""
    body = {"text_input": PROMPT, "stream": True}
    with pytest.raises(GenerateError, match="no-such-model"):
        http_generate_stream(server.http, body, model="no-such-model")


def test_prompt_longer_than_the_model_gets_an_error(server: Server) -> None:
    with pytest.raises(GenerateError, match=r"longer than|maximum|max_model_len"):
        http_generate(server.http, {"text_input": " ".join(["the"] * 8300)})
    assert server.model_ready()


def test_bad_types_over_grpc_get_an_error_response(server: Server) -> None:
    session = GrpcSession(server.grpc)
    try:
        bad = session.generate(request_inputs(PROMPT, '{"seed": "x"}', stream=True))
        good = session.generate(request_inputs(PROMPT, {"max_tokens": 2}, stream=True))
    finally:
        session.close()
    assert bad.error is not None and "'seed' must be an integer" in bad.error
    assert good.error is None and len(good.text.split()) == 2


def test_unknown_model_json_key_fails_the_load_with_a_suggestion(
    broken_model_repository: Path, log_dir: Path, server: Server
) -> None:
    """A pod whose model.json names an unknown engine argument exits with a clear message."""
    process, broken = start_tritonserver(broken_model_repository, log_dir / "broken.log")
    try:
        returncode = process.wait(timeout=180)
    finally:
        stop_tritonserver(process)
    log = broken.log.read_text()
    assert returncode != 0
    assert "unknown key 'max_model_length'" in log
    assert "did you mean 'max_model_len'" in log
    assert server.ready() and server.model_ready()


PNG_1X1 = (  # a 1x1 PNG, base64
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
    "rkJggg=="
)


@pytest.mark.parametrize(
    ("image", "message"),
    [(PNG_1X1, "text-only"), ("not base64 image data", "base64-encoded image")],
)
def test_an_image_for_a_text_only_model_gets_an_error(
    server: Server, image: str, message: str
) -> None:
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image.encode()], dtype=np.object_))
    session = GrpcSession(server.grpc)
    try:
        result = session.generate([*request_inputs(PROMPT, {"max_tokens": 2}), tensor])
    finally:
        session.close()
    assert result.error is not None and message in result.error
    assert result.responses == []
    assert server.ready() and server.model_ready()


REFUSED_CONFIGS = {
    "dynamic_batching { }": "dynamic_batching is set: vLLM schedules and batches",
    "instance_group [{ count: 2, kind: KIND_CPU }]": "starts 2 vLLM engines",
    "max_batch_size: 8": "max_batch_size is 8",
    "model_transaction_policy { decoupled: false }": "decoupled is false",
}


@pytest.fixture(scope="module")
def refusing_server(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path, log_dir: Path, server: Server
) -> Iterator[Server]:
    """A server of its own (a model that failed to load leaves a server not ready), loading
    nothing at start: each model's config.pbtxt has one setting vLLM cannot serve."""
    repository = tmp_path_factory.mktemp("refused-repository")
    engine_args = (model_repository / "tiny" / "1" / "model.json").read_text()
    for index, config in enumerate(REFUSED_CONFIGS):
        (repository / f"refused{index}" / "1").mkdir(parents=True)
        (repository / f"refused{index}" / "1" / "model.json").write_text(engine_args)
        (repository / f"refused{index}" / "config.pbtxt").write_text(
            f'backend: "tritonvllm"\n{config}\n'
        )
    process, handle = start_tritonserver(
        repository, log_dir / "refused.log", "--model-control-mode=explicit"
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not handle.ready():
            assert process.poll() is None and time.monotonic() < deadline, handle.log.read_text()
            time.sleep(0.5)
        yield handle
    finally:
        stop_tritonserver(process)


@pytest.mark.parametrize(("index", "config"), list(enumerate(REFUSED_CONFIGS)))
def test_a_config_vllm_cannot_serve_fails_the_load_saying_why(
    refusing_server: Server, index: int, config: str
) -> None:
    """Triton does not let a backend change what config.pbtxt says: the load fails instead."""
    name = f"refused{index}"
    response = requests.post(refusing_server.url(f"/v2/repository/models/{name}/load"), timeout=120)
    assert response.status_code == 400
    assert REFUSED_CONFIGS[config] in response.json()["error"]
    assert not refusing_server.model_ready(name)
