"""A dead engine is not a ready model: when vLLM's EngineCore dies, requests get UNAVAILABLE in the
official backend's words, and the model stops being ready. In the pods (model control mode none)
the server stops, so its readiness and liveness probes fail and Kubernetes restarts it; with
explicit model control the model is unloaded, as the official backend does. The OpenAI port's
/health (vLLM's, the pods' readiness probe) fails in both.

This kills engines, so each runs on a server of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.operator_process import free_ports

from .clients import GenerateError, GrpcSession, http_generate, request_inputs
from .conftest import (
    MODEL,
    START_TIMEOUT_S,
    Server,
    rendered_files,
    start_tritonserver,
    stop_tritonserver,
    write_repository,
)

UNHEALTHY = "Model is unavailable due to unhealthy vLLM engine"
WITHIN_S = 15.0


def group_processes(process_group: int) -> dict[int, tuple[str, bytes]]:
    """pid -> (state, command line) of every process in the server's process group."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == process_group:
            found[int(entry.name)] = (fields[0], cmdline)
    return found


def engine_core_pids(process_group: int) -> list[int]:
    """vLLM's engine processes in the server's process group."""
    return [
        pid
        for pid, (_, cmdline) in group_processes(process_group).items()
        if cmdline.startswith(b"VLLM::EngineCore")
    ]


def answers(url: str) -> bool:
    """Whether a probe endpoint says OK (a refused connection is a failed probe)."""
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_until(condition: object, timeout: float = WITHIN_S) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture(params=["none", "explicit"])
def doomed_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: Path,
    log_dir: Path,
    server: Server,
) -> Iterator[tuple[Server, subprocess.Popen[bytes], str]]:
    mode = request.param
    args = [f"--model-control-mode={mode}"]
    if mode == "explicit":
        args.append(f"--load-model={MODEL}")
    (port,) = free_ports(1)
    repository = write_repository(
        tmp_path_factory.mktemp(f"doomed-{mode}"), rendered_files(MODEL, tiny_model, port)
    )
    process, handle = start_tritonserver(
        repository, log_dir / f"health-{mode}.log", *args, openai_port=port
    )
    started = time.monotonic()
    try:
        while not (handle.ready() and handle.model_ready()):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"tritonserver did not become ready:\n{handle.log.read_text()[-6000:]}")
            time.sleep(0.5)
        yield handle, process, mode
    finally:
        stop_tritonserver(process)


def test_a_dead_engine_is_not_a_ready_model(
    doomed_server: tuple[Server, subprocess.Popen[bytes], str],
) -> None:
    server, process, mode = doomed_server
    assert http_generate(server.http, {"text_input": "The quick brown fox"}, MODEL)
    health = f"http://{server.openai}/health"
    assert answers(health)
    (engine,) = engine_core_pids(process.pid)
    session = GrpcSession(server.grpc)
    try:
        streaming = session.send(
            # ignore_eos: the stream must still be open when the engine dies
            request_inputs(
                "Once upon a time", {"max_tokens": 5000, "ignore_eos": True}, stream=True
            )
        )
        session.wait_for_response()
        os.kill(engine, signal.SIGKILL)
        # The request in flight ends with an answer too, not a stream left open.
        cut = session.collect([streaming], timeout=WITHIN_S)[streaming]
    finally:
        session.close()
    assert cut.error == UNHEALTHY

    try:
        http_generate(server.http, {"text_input": "The quick brown fox"}, MODEL)
    except GenerateError as err:
        assert UNHEALTHY in str(err)
    except requests.ConnectionError:
        # In mode none the server stops UNLOAD_WAIT_S after the engine died; a loaded machine
        # may get there first. Either way the request is not left hanging.
        assert mode == "none"
    else:
        raise AssertionError("a request was served by a dead engine")
    model_ready = server.url(f"/v2/models/{MODEL}/ready")
    wait_until(lambda: not answers(model_ready))
    wait_until(lambda: not answers(health))
    if mode == "none":  # the pods: the server stops, both probes fail, the container restarts
        wait_until(lambda: not answers(server.url("/v2/health/ready")))
        wait_until(lambda: not answers(server.url("/v2/health/live")))
        assert process.wait(timeout=60) is not None
        # The engine's helpers (its workers, multiprocessing's resource tracker) follow their
        # parent out within seconds: none is left behind, zombies included.
        deadline = time.monotonic() + WITHIN_S
        while group_processes(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: cmd[:80] for pid, (_, cmd) in group_processes(process.pid).items()}
        assert left == {}, f"processes left behind: {left}"
    else:  # explicit model control: unloaded, as the official backend does
        with pytest.raises(GenerateError, match="unknown model"):
            http_generate(server.http, {"text_input": "The quick brown fox"}, MODEL)
        assert answers(server.url("/v2/health/live"))
        assert engine_core_pids(process.pid) == []
        zombies = [pid for pid, (state, _) in group_processes(process.pid).items() if state == "Z"]
        assert zombies == []
