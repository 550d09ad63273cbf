"""When the engine dies, requests get UNAVAILABLE instead of hanging, and /health says so.

ENABLE_VLLM_HEALTH_CHECK covers Triton's path; the OpenAI port's /health (vLLM's) fails too.

This kills an engine, so it runs on a server of its own, started after the shared one is idle.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.operator_process import free_ports

from .clients import GenerateError, http_generate
from .conftest import (
    MODEL,
    START_TIMEOUT_S,
    Server,
    rendered_files,
    start_tritonserver,
    stop_tritonserver,
    write_repository,
)


def engine_core_pids(process_group: int) -> list[int]:
    """vLLM's engine processes in the server's process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pgrp = int(stat.rsplit(")", 1)[1].split()[2])
        if pgrp == process_group and cmdline.startswith(b"VLLM::EngineCore"):
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def doomed_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, log_dir: Path, server: Server
) -> Iterator[tuple[Server, int]]:
    (port,) = free_ports(1)
    repository = write_repository(
        tmp_path_factory.mktemp("doomed-repository"), rendered_files(MODEL, tiny_model, port)
    )
    process, handle = start_tritonserver(repository, log_dir / "health.log", openai_port=port)
    started = time.monotonic()
    try:
        while not (handle.ready() and handle.model_ready()):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"tritonserver did not become ready:\n{handle.log.read_text()[-6000:]}")
            time.sleep(0.5)
        yield handle, process.pid
    finally:
        stop_tritonserver(process)


def test_requests_get_unavailable_once_the_engine_died(doomed_server: tuple[Server, int]) -> None:
    server, group = doomed_server
    assert http_generate(server.http, {"text_input": "The quick brown fox"}, MODEL)
    health = f"http://{server.openai}/health"
    assert requests.get(health, timeout=10).status_code == 200
    (engine,) = engine_core_pids(group)
    os.kill(engine, signal.SIGKILL)

    deadline = time.monotonic() + 60
    message = ""
    while time.monotonic() < deadline and "not healthy" not in message:
        try:
            http_generate(server.http, {"text_input": "The quick brown fox"}, MODEL)
        except GenerateError as err:
            message = str(err)
        time.sleep(0.5)
    assert "not healthy" in message
    assert server.live()
    assert requests.get(health, timeout=10).status_code == 503
