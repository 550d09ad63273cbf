"""Three models on one tritonserver in explicit model control mode, their OpenAI ports off: one
paced hard, a bystander, and an embedding model.

What a user sees here: a stream that ends on its own (a stop string, as on EOS) gets its final
response at once however the streams are paced; the stats vLLM's own server logs happen without
the OpenAI port; embedding requests are answered as the official backend answers them; a token
in model.json is never logged; and when one model's engine dies, that model is unloaded while
the server and the other models keep serving.

The last test kills an engine: the server is this module's own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from .clients import (
    GenerateError,
    GrpcSession,
    StreamResult,
    grpc_session,
    http_generate,
    request_inputs,
)
from .conftest import (
    START_TIMEOUT_S,
    Server,
    rendered_files,
    start_tritonserver,
    stop_tritonserver,
    with_parameters,
    write_repository,
)
from .test_health import UNHEALTHY, answers, engine_core_pids, group_processes, wait_until

PACED = "paced"
BYSTANDER = "bystander"
EMBEDDER = "embedder"  # the tiny Llama served as an embedding model (vLLM's convert="embed")
MODELS = (PACED, BYSTANDER, EMBEDDER)
PROMPT = "The capital of France is"
HF_TOKEN = "hf_tritonvllmTestSecret0123456789"
OPENAI_LEFT_OVER = {"response_role": "bot"}
BYSTANDER_ARGS = {"hf_token": HF_TOKEN}
# Pacing made extreme: one response a second for all streams together. Under the old pacing a
# stream then waited (requests in flight) / 0.1 s, here 90 s, between responses, its final too.
RESPONSES_PER_SECOND = "0.1"
LONG_STREAMS = 8
HIDDEN_SIZE = 128  # the tiny Llama's (hack/tiny_model.py)
ANSWERED_WITHIN_S = 30.0
# vLLM logs the engine's throughput every VLLM_LOG_STATS_INTERVAL (10 s by default).
STATS_LOGGED_WITHIN_S = 40.0


@pytest.fixture(scope="module")
def two_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, log_dir: Path, server: Server
) -> Iterator[tuple[Server, subprocess.Popen[bytes]]]:
    """tritonserver --model-control-mode=explicit with PACED and BYSTANDER loaded.

    Depends on the session server only so that the two never load engines at the same time.
    """
    files = {
        **rendered_files(PACED, tiny_model),
        **rendered_files(BYSTANDER, tiny_model),
        **rendered_files(EMBEDDER, tiny_model),
    }
    config = f"{PACED}/config.pbtxt"
    files[config] = with_parameters(
        files[config], {"STREAM_RESPONSES_PER_SECOND": RESPONSES_PER_SECOND}
    )
    engine_file = f"{BYSTANDER}/1/model.json"
    files[engine_file] = json.dumps({**json.loads(files[engine_file]), **BYSTANDER_ARGS})
    # OpenAI server settings left behind with the port off: not checked, not imported for.
    embedder_file = f"{EMBEDDER}/1/model.json"
    files[embedder_file] = json.dumps({**json.loads(files[embedder_file]), "convert": "embed"})
    paced_file = f"{PACED}/1/model.json"
    files[paced_file] = json.dumps({**json.loads(files[paced_file]), "openai": OPENAI_LEFT_OVER})
    repository = write_repository(tmp_path_factory.mktemp("two-models"), files)
    process, handle = start_tritonserver(
        repository,
        log_dir / "explicit-two-models.log",
        "--model-control-mode=explicit",
        f"--load-model={PACED}",
        f"--load-model={BYSTANDER}",
        f"--load-model={EMBEDDER}",
    )
    started = time.monotonic()
    try:
        while not (handle.ready() and all(handle.model_ready(m) for m in MODELS)):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"tritonserver did not become ready:\n{handle.log.read_text()[-6000:]}")
            time.sleep(0.5)
        yield handle, process
    finally:
        stop_tritonserver(process)


def generate(server: Server, model: str, sampling: dict[str, object]) -> str:
    """The generated text (without the prompt)."""
    with grpc_session(server.grpc) as session:
        result = session.generate(
            request_inputs(PROMPT, sampling, exclude_input_in_output=True), model
        )
    assert result.error is None, result.error
    return result.text


def test_a_stream_ending_on_a_stop_string_is_answered_at_once_under_load(
    two_models: tuple[Server, subprocess.Popen[bytes]],
) -> None:
    server, _ = two_models
    greedy = generate(server, PACED, {"temperature": 0, "max_tokens": 12})
    stop = greedy.split()[4]
    expected = greedy[: greedy.index(stop)]  # vLLM ends the text before the stop string
    busy = GrpcSession(server.grpc)
    try:
        long_streams = [
            busy.send(
                # ignore_eos: these must still be streaming while the test stream runs
                request_inputs(PROMPT, {"max_tokens": 3000, "ignore_eos": True}, stream=True),
                PACED,
            )
            for _ in range(LONG_STREAMS)
        ]
        for _ in long_streams:
            busy.wait_for_response()
        with grpc_session(server.grpc) as session:
            sampling = {"temperature": 0, "max_tokens": 2000, "stop": [stop]}
            request = session.send(
                request_inputs(PROMPT, sampling, stream=True, return_finish_reason=True), PACED
            )
            # A final response held for the pace (90 s) would miss this.
            result = session.collect([request], timeout=ANSWERED_WITHIN_S)[request]
    finally:
        busy.close(cancel_requests=True)
    assert result.error is None, result.error
    assert result.responses[-1]["finish_reason"] == ["stop"]
    assert result.text == expected


def test_the_engine_stats_are_logged_with_the_openai_port_off(
    two_models: tuple[Server, subprocess.Popen[bytes]],
) -> None:
    server, _ = two_models
    assert generate(server, BYSTANDER, {"max_tokens": 8})
    # vLLM's LoggingStatLogger line, which only its server's periodic do_log_stats() writes.
    wait_until(
        lambda: "Avg prompt throughput" in server.log.read_text(errors="replace"),
        timeout=STATS_LOGGED_WITHIN_S,
    )


def test_the_loaded_heap_is_frozen_with_the_openai_port_off(
    two_models: tuple[Server, subprocess.Popen[bytes]],
) -> None:
    """As vLLM's app does after start-up: full GC passes while serving skip the loaded heap."""
    server, _ = two_models
    log = server.log.read_text(errors="replace")
    frozen = re.search(rf"{BYSTANDER}: (\d+) objects of the loaded heap frozen", log)
    assert frozen is not None and int(frozen[1]) > 0


def test_openai_settings_are_left_aside_with_the_port_off(
    two_models: tuple[Server, subprocess.Popen[bytes]],
) -> None:
    server, _ = two_models
    log = server.log.read_text(errors="replace")
    assert f"{PACED}: OpenAI port off: model.json's 'openai' settings are not used" in log
    assert generate(server, PACED, {"max_tokens": 4})


def embed(server: Server, model: str, request: dict[str, object]) -> StreamResult:
    inputs = request_inputs(PROMPT, return_num_input_tokens=True)
    tensor = grpcclient.InferInput("embedding_request", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([json.dumps(request).encode()], dtype=np.object_))
    with grpc_session(server.grpc) as session:
        return session.generate([*inputs, tensor], model)


def test_an_embedding_model_answers_embedding_requests_as_the_official_backend(
    two_models: tuple[Server, subprocess.Popen[bytes]],
) -> None:
    server, _ = two_models
    text = embed(server, EMBEDDER, {"input": "The quick brown fox"})
    assert text.error is None, text.error
    (response,) = text.responses
    vector = json.loads(response["text_output"][0])
    assert len(vector) == HIDDEN_SIZE and all(isinstance(x, float) for x in vector)
    assert response["num_input_tokens"] == [5]  # four words + BOS
    tokens = embed(server, EMBEDDER, {"input": [1, 2, 3]})
    assert tokens.error is None
    assert len(json.loads(tokens.responses[0]["text_output"][0])) == HIDDEN_SIZE
    other = embed(server, EMBEDDER, {"input": "A lazy dog"})
    assert json.loads(other.responses[0]["text_output"][0]) != vector


def test_each_model_refuses_the_task_it_does_not_serve(
    two_models: tuple[Server, subprocess.Popen[bytes]],
) -> None:
    server, _ = two_models
    refused = embed(server, BYSTANDER, {"input": "The quick brown fox"})
    assert refused.error is not None
    assert f"Model {BYSTANDER} does not support 'embed' request" in refused.error
    with pytest.raises(GenerateError, match=f"Model {EMBEDDER} does not support 'generate'"):
        http_generate(server.http, {"text_input": PROMPT}, EMBEDDER)


def test_the_hf_token_in_model_json_is_never_logged(
    two_models: tuple[Server, subprocess.Popen[bytes]],
) -> None:
    server, _ = two_models
    assert generate(server, BYSTANDER, {"max_tokens": 4})
    log = server.log.read_text(errors="replace")
    assert "vLLM engine args" in log  # the line that used to carry it
    assert HF_TOKEN not in log


def engine_of(process_group: int, model: str) -> int:
    """The EngineCore process of ``model``: the child of the stub that serves it."""
    processes = group_processes(process_group)
    stubs = {pid for pid, (_, cmd) in processes.items() if f"/{model}/".encode() in cmd}
    found = [pid for pid in engine_core_pids(process_group) if _parent(pid) in stubs]
    assert len(found) == 1, f"engines of {model}: {found}"
    return found[0]


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_a_dead_engine_unloads_only_its_model(
    two_models: tuple[Server, subprocess.Popen[bytes]],
) -> None:
    server, process = two_models
    os.kill(engine_of(process.pid, PACED), signal.SIGKILL)
    # Past the moment (3 s) at which a dead engine used to stop the whole server.
    until = time.monotonic() + 8.0
    while time.monotonic() < until:
        assert generate(server, BYSTANDER, {"max_tokens": 4})
        time.sleep(0.5)
    with pytest.raises(GenerateError, match=re.escape(UNHEALTHY)):
        http_generate(server.http, {"text_input": PROMPT}, PACED)
    wait_until(lambda: not answers(server.url(f"/v2/models/{PACED}/ready")))
    with pytest.raises(GenerateError, match="unknown model"):
        http_generate(server.http, {"text_input": PROMPT}, PACED)
    assert answers(server.url("/v2/health/live"))
    assert server.model_ready(BYSTANDER)
    assert generate(server, BYSTANDER, {"max_tokens": 4})
    assert process.poll() is None
