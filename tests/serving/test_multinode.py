"""A multi-node engine on real processes: two processes on 127.0.0.1 stand for two nodes.

Rank 0 is tritonserver with the backend (the engine's rank 0 and both front doors, Triton's and
the OpenAI port); rank 1 is the worker entry point (``python -m tritonvllm_backend.worker``) with
the same model.json and TRITONVLLM_NODE_RANK=1, as the operator's worker pods run it. The tiny
model is split in two pipeline stages (pipeline_parallel_size 2, vLLM's gloo path on CPU), one a
process. A second model of the same repository has no worker: its load fails naming the rank.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.operator_process import free_ports

from .clients import GenerateError, http_generate
from .conftest import (
    ROOT,
    Server,
    rendered_files,
    start_tritonserver,
    stop_tritonserver,
    with_parameters,
    write_repository,
)

GROUP_MODEL = "tiny_two_nodes"
ALONE_MODEL = "tiny_rank_1_missing"
ALONE_JOIN_TIMEOUT_S = 15
START_TIMEOUT_S = 420
UNHEALTHY_MESSAGE = "Model is unavailable due to unhealthy vLLM engine"


@dataclass
class Group:
    """The leader (tritonserver) and the rank-1 worker process."""

    server: Server
    worker: subprocess.Popen[bytes]
    worker_log: Path


def master_port() -> int:
    """A free port whose next one is free too (vLLM's rendezvous and the membership port)."""
    for _ in range(50):
        (port,) = free_ports(1)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def multinode_files(
    name: str, model_dir: Path, port: int, openai_port: int | None
) -> dict[str, str]:
    """The operator's files for ``name``, as a two-node engine (PP 2) led from 127.0.0.1."""
    files = rendered_files(name, model_dir, openai_port)
    engine_file = f"{name}/1/model.json"
    engine = json.loads(files[engine_file])
    engine.update(nnodes=2, pipeline_parallel_size=2, master_port=port)
    files[engine_file] = json.dumps(engine)
    return files


@pytest.fixture(scope="module")
def group(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: Path,
    serving_python: Path,
    log_dir: Path,
) -> Iterator[Group]:
    (openai_port,) = free_ports(1)
    group_port, alone_port = master_port(), master_port()
    files = multinode_files(GROUP_MODEL, tiny_model, group_port, openai_port)
    alone = multinode_files(ALONE_MODEL, tiny_model, alone_port, None)
    alone[f"{ALONE_MODEL}/config.pbtxt"] = with_parameters(
        alone[f"{ALONE_MODEL}/config.pbtxt"],
        {"MULTINODE_JOIN_TIMEOUT_S": str(ALONE_JOIN_TIMEOUT_S)},
    )
    for model, content in ((GROUP_MODEL, files), (ALONE_MODEL, alone)):
        config = f"{model}/config.pbtxt"
        content[config] = with_parameters(content[config], {"MULTINODE_JOIN_HOST": "127.0.0.1"})
    repository = write_repository(
        tmp_path_factory.mktemp("multinode-repository"), {**files, **alone}
    )

    # The worker starts first, as a pod may: it waits for the leader's membership port.
    worker_log = log_dir / "multinode-worker.log"
    worker_log.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "backend" / "tritonvllm"),
        "TRITONVLLM_NODE_RANK": "1",
        "TRITONVLLM_MASTER_ADDR": "127.0.0.1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [
                str(serving_python),
                "-m",
                "tritonvllm_backend.worker",
                str(repository / GROUP_MODEL / "1" / "model.json"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process, server = start_tritonserver(
        repository,
        log_dir / "tritonserver-multinode.log",
        "--model-control-mode=explicit",
        f"--load-model={GROUP_MODEL}",
        openai_port=openai_port,
    )
    started = time.monotonic()
    try:
        while not (server.ready() and server.model_ready(GROUP_MODEL)):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(
                    f"the two-node model did not become ready:\n{server.log.read_text()[-6000:]}"
                    f"\n--- worker ---\n{worker_log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        sys.stderr.write(f"\ntwo-node model ready in {time.monotonic() - started:.1f} s\n")
        yield Group(server, worker, worker_log)
    finally:
        stop_tritonserver(process)
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def test_two_node_engine_generates_what_the_one_process_engine_does(
    group: Group, raw_engine_reference: dict[str, str]
) -> None:
    for prompt, expected in raw_engine_reference.items():
        body = {
            "text_input": prompt,
            "exclude_input_in_output": True,
            "sampling_parameters": json.dumps({"temperature": 0, "max_tokens": 24}),
        }
        result = http_generate(group.server.http, body, model=GROUP_MODEL)
        assert result["text_output"] == expected


def test_two_node_engine_answers_openai_chat(group: Group) -> None:
    response = requests.post(
        f"{group.server.openai_base}/chat/completions",
        json={
            "model": GROUP_MODEL,
            "messages": [{"role": "user", "content": "The capital of France is"}],
            "max_tokens": 6,
            "temperature": 0,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    result = response.json()
    (choice,) = result["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert result["usage"]["completion_tokens"] == 6


def test_a_rank_that_never_joins_fails_the_load_naming_it(group: Group) -> None:
    response = requests.post(
        group.server.url(f"/v2/repository/models/{ALONE_MODEL}/load"), timeout=300
    )
    assert response.status_code != 200
    message = response.json()["error"]
    assert f"rank 1 of the 2-node group did not join within {ALONE_JOIN_TIMEOUT_S} s" in message, (
        message
    )
    assert not group.server.model_ready(ALONE_MODEL)
    assert group.server.model_ready(GROUP_MODEL)  # the other model keeps serving


def test_a_killed_worker_makes_the_model_unavailable(group: Group) -> None:
    os.killpg(group.worker.pid, signal.SIGKILL)
    group.worker.wait(timeout=30)
    body = {"text_input": "The quick brown fox", "parameters": {"max_tokens": 4}}
    errors: list[str] = []
    deadline = time.monotonic() + 120  # a bound, not a timing claim: never hang the suite
    while group.server.model_ready(GROUP_MODEL) and time.monotonic() < deadline:
        try:
            http_generate(group.server.http, body, model=GROUP_MODEL)
        except GenerateError as err:
            errors.append(str(err))
        time.sleep(0.5)
    assert not group.server.model_ready(GROUP_MODEL)
    assert any(UNHEALTHY_MESSAGE in error for error in errors), errors
    log = group.server.log.read_text()
    assert "rank 1 of the 2-node group" in log and "left" in log
    assert group.server.live()  # explicit mode: only this model went
