"""One real tritonserver with the tritonvllm backend and a real vLLM engine, per test session.

The model repository is rendered by the operator's own ``model_repository_files`` (the files a
pod mounts), for a tiny random Llama generated into a temporary directory, with the backend's
OpenAI-compatible server turned on. The server listens on 127.0.0.1 on free ports, in explicit
model-control mode so tests can also load broken models.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.operator_process import free_ports
from triton_vllm_operator.api import TritonVLLMModel
from triton_vllm_operator.render import model_repository_files

from .clients import MODEL

ROOT = Path(__file__).resolve().parents[2]
BROKEN_MODEL = "tiny_unknown_key"
ENGINE_ARGS = {"dtype": "float32", "max_model_len": 8192, "seed": 0}
SESSION_OPENAI_ARGS = {"enable_prompt_tokens_details": True}
START_TIMEOUT_S = 300
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.serving)


@dataclass(frozen=True)
class Server:
    """A running tritonserver: its addresses and its log."""

    http: str
    grpc: str
    metrics: str
    log: Path
    openai: str | None = None
    hop_log: Path | None = None  # the backend's per-request hop times (TRITONVLLM_HOP_LOG)

    @property
    def openai_base(self) -> str:
        """The OpenAI API's base URL (``.../v1``)."""
        if self.openai is None:
            raise RuntimeError("this server's model has no OpenAI port")
        return f"http://{self.openai}/v1"

    def url(self, path: str) -> str:
        return f"http://{self.http}{path}"

    def ready(self) -> bool:
        try:
            return requests.get(self.url("/v2/health/ready"), timeout=5).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False  # still starting, or too busy loading to answer in time

    def live(self) -> bool:
        return requests.get(self.url("/v2/health/live"), timeout=5).status_code == 200

    def model_ready(self, name: str = MODEL) -> bool:
        response = requests.get(self.url(f"/v2/models/{name}/ready"), timeout=5)
        return response.status_code == 200

    def metric_lines(self) -> list[str]:
        text = requests.get(f"http://{self.metrics}/metrics", timeout=5).text
        return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="session")
def serving_env() -> Path:
    """The serving environment (built by `make serving-env`; built here if missing)."""
    result = subprocess.run(
        [str(ROOT / "hack" / "serving-env.sh"), "--print"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"serving environment unavailable:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def serving_python(serving_env: Path) -> Path:
    return serving_env / "venv" / "bin" / "python"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, serving_python: Path) -> Path:
    """A tiny random Llama with a word-level tokenizer, generated once per session."""
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run(
        [str(serving_python), str(ROOT / "hack" / "tiny_model.py"), str(out)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return out


def rendered_files(name: str, model_dir: Path, openai_port: int | None = None) -> dict[str, str]:
    """The operator's files for ``name``; with ``openai_port``, its OpenAI server on 127.0.0.1."""
    model = TritonVLLMModel.model_validate(
        {
            "apiVersion": "tritonvllm.io/v1alpha1",
            "kind": "TritonVLLMModel",
            "metadata": {"name": name},
            "spec": {
                "model": str(model_dir),
                "engineArgs": ENGINE_ARGS,
                # The operator turns the OpenAI server on (all addresses, port 9000) by default;
                # here it listens on 127.0.0.1 on a free port, or not at all.
                "openai": {"enabled": openai_port is not None},
            },
        }
    )
    files = model_repository_files(model, tensor_parallel_size=1)
    if openai_port is not None:
        files[f"{name}/config.pbtxt"] = with_parameters(
            files[f"{name}/config.pbtxt"],
            {"OPENAI_API_PORT": str(openai_port), "OPENAI_API_HOST": "127.0.0.1"},
        )
    return files


def with_parameters(config_pbtxt: str, parameters: dict[str, str]) -> str:
    """config.pbtxt with these string parameters set."""
    config = text_format.Parse(config_pbtxt, mc.ModelConfig())
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return text_format.MessageToString(config)


def write_repository(root: Path, files: dict[str, str]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


@pytest.fixture(scope="session")
def openai_port() -> int:
    """The session server's OpenAI port."""
    return free_ports(1)[0]


@pytest.fixture(scope="session")
def model_repository(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, openai_port: int
) -> Path:
    """The model repository as the operator renders it for a pod, its OpenAI port on 127.0.0.1.

    model.json also holds an OpenAI server setting (SESSION_OPENAI_ARGS), as a user may add.
    """
    files = rendered_files(MODEL, tiny_model, openai_port)
    engine_file = f"{MODEL}/1/model.json"
    files[engine_file] = json.dumps(
        {**json.loads(files[engine_file]), "openai": SESSION_OPENAI_ARGS}
    )
    return write_repository(tmp_path_factory.mktemp("model-repository"), files)


@pytest.fixture(scope="session")
def broken_model_repository(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A rendered repository whose model.json has a key vLLM does not know (a version skew)."""
    files = rendered_files(BROKEN_MODEL, tiny_model)
    engine_file = f"{BROKEN_MODEL}/1/model.json"
    files[engine_file] = json.dumps({**json.loads(files[engine_file]), "max_model_length": 64})
    return write_repository(tmp_path_factory.mktemp("broken-repository"), files)


def start_tritonserver(
    repository: Path, log: Path, *args: str, openai_port: int | None = None
) -> tuple[subprocess.Popen[bytes], Server]:
    """Start hack/run-tritonserver.sh on free 127.0.0.1 ports, logging to ``log``.

    ``openai_port`` is the OpenAI port the repository's model names, if any.
    """
    http, grpc, metrics = free_ports(3)
    while openai_port in (http, grpc, metrics):  # chosen earlier, not bound yet
        http, grpc, metrics = free_ports(3)
    env = {
        **os.environ,
        "TRITON_HTTP_PORT": str(http),
        "TRITON_GRPC_PORT": str(grpc),
        "TRITON_METRICS_PORT": str(metrics),
        "TRITONVLLM_HOP_LOG": str(log.with_suffix(".hops.jsonl")),
    }
    command = [str(ROOT / "hack" / "run-tritonserver.sh"), str(repository), *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    openai = None if openai_port is None else f"127.0.0.1:{openai_port}"
    return process, Server(
        f"127.0.0.1:{http}",
        f"127.0.0.1:{grpc}",
        f"127.0.0.1:{metrics}",
        log,
        openai,
        Path(env["TRITONVLLM_HOP_LOG"]),
    )


@pytest.fixture(scope="session")
def log_dir() -> Path:
    """Server logs, kept under WORK_DIR (gitignored) for reading after a failure."""
    return Path(os.environ.get("WORK_DIR", ROOT / ".work")) / "serving-tests"


@pytest.fixture(scope="session")
def server(
    model_repository: Path,
    openai_port: int,
    serving_env: Path,
    log_dir: Path,
    raw_engine_reference: dict[str, str],
) -> Iterator[Server]:
    """tritonserver with the tiny model loaded (started after the raw-engine reference run)."""
    started = time.monotonic()
    process, handle = start_tritonserver(
        model_repository,
        log_dir / "tritonserver.log",
        "--model-control-mode=explicit",
        f"--load-model={MODEL}",
        openai_port=openai_port,
    )
    try:
        while not (handle.ready() and handle.model_ready()):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"tritonserver did not become ready:\n{handle.log.read_text()[-6000:]}")
            time.sleep(0.5)
        sys.stderr.write(
            f"\ntritonserver with {MODEL} ready in {time.monotonic() - started:.1f} s\n"
        )
        yield handle
    finally:
        _unload(handle)
        stop_tritonserver(process)


def _unload(handle: Server) -> None:
    """Unload the model first, so finalize runs while the server waits for it."""
    with contextlib.suppress(requests.RequestException):
        requests.post(handle.url(f"/v2/repository/models/{MODEL}/unload"), timeout=60)
        deadline = time.monotonic() + 60
        while handle.model_ready() and time.monotonic() < deadline:
            time.sleep(0.5)


def stop_tritonserver(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (tritonserver unloads the model), then kill whatever of its group is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def raw_engine_reference(serving_python: Path, tiny_model: Path) -> dict[str, str]:
    """Greedy completions of the raw vLLM engine for REFERENCE_PROMPTS (run before the server)."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    result = subprocess.run(
        [
            str(serving_python),
            str(HERE / "raw_engine.py"),
            str(tiny_model),
            json.dumps(ENGINE_ARGS),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"raw vLLM engine run failed:\n{result.stderr[-6000:]}")
    reference: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return reference
