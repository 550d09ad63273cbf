"""LoRA as the official backend serves it: adapters listed in multi_lora.json beside model.json
(model.json sets enable_lora), chosen per request with the sampling parameter lora_name.

The engine differs (LoRA enabled), so this runs on a server of its own.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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

HERE = Path(__file__).resolve().parent
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def lora_server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: Path,
    serving_python: Path,
    log_dir: Path,
    server: Server,
) -> Iterator[Server]:
    adapter = tmp_path_factory.mktemp("lora") / "pirate"
    subprocess.run(
        [str(serving_python), str(HERE / "lora_adapter.py"), str(tiny_model), str(adapter)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    files = rendered_files(MODEL, tiny_model)
    engine_file = f"{MODEL}/1/model.json"
    engine_args = json.loads(files[engine_file])
    files[engine_file] = json.dumps({**engine_args, "enable_lora": True, "max_lora_rank": 8})
    files[f"{MODEL}/1/multi_lora.json"] = json.dumps({"pirate": str(adapter)})
    repository = write_repository(tmp_path_factory.mktemp("lora-repository"), files)
    process, handle = start_tritonserver(repository, log_dir / "lora.log")
    started = time.monotonic()
    try:
        while not (handle.ready() and handle.model_ready()):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"tritonserver did not become ready:\n{handle.log.read_text()[-6000:]}")
            time.sleep(0.5)
        yield handle
    finally:
        stop_tritonserver(process)


def completion(server: Server, **sampling: object) -> str:
    body = {
        "text_input": PROMPT,
        "exclude_input_in_output": True,
        "sampling_parameters": json.dumps({"temperature": 0, "max_tokens": 12, **sampling}),
    }
    text: str = http_generate(server.http, body)["text_output"]
    return text


def test_a_request_naming_an_adapter_is_served_by_it(lora_server: Server) -> None:
    base = completion(lora_server)
    adapted = completion(lora_server, lora_name="pirate")
    assert adapted != base
    assert completion(lora_server, lora_name="pirate") == adapted
    assert completion(lora_server) == base


def test_an_adapter_not_in_multi_lora_json_is_refused(lora_server: Server) -> None:
    with pytest.raises(GenerateError) as err:
        completion(lora_server, lora_name="parrot")
    assert str(err.value) == "LoRA parrot is not supported, we currently support ['pirate']"
    assert lora_server.model_ready()
