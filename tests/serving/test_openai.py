"""The OpenAI API on the model's OpenAI port, with the official client: vLLM's own server, served
from the engine that also answers Triton's generate requests.

With the tiny model's word-level tokenizer every token is one spaced word and every generation
runs to max_tokens, so texts, token counts and finish reasons are predictable.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.operator_process import free_ports

from .clients import MODEL, Samples, http_generate, http_generate_stream, prometheus_samples
from .conftest import ENGINE_ARGS, Server, rendered_files, with_parameters, write_repository

PROMPT = "The capital of France is"
PROMPT_TOKENS = 6  # five words + BOS
CHAT = [{"role": "user", "content": PROMPT}]
IDLE_S = 6.0  # past vLLM's default keep-alive and httpx's pool expiry (5 s each)
CHAT_PROMPT_TOKENS = 10  # BOS "User" ":" five words "Assistant" ":" (the tiny model's template)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server.openai_base, api_key="unused", max_retries=0, timeout=120
    ) as api:
        yield api


def words(text: str) -> list[str]:
    return text.split()


def test_models_lists_the_triton_model_under_its_name(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [model.id for model in models] == [MODEL]
    assert models[0].model_extra is not None
    assert models[0].model_extra["max_model_len"] == ENGINE_ARGS["max_model_len"]


def test_completion_runs_to_max_tokens_and_counts_its_tokens(client: openai.OpenAI) -> None:
    result = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0)
    (choice,) = result.choices
    assert result.model == MODEL
    assert choice.finish_reason == "length"
    assert len(words(choice.text)) == 5
    assert result.usage is not None
    assert result.usage.prompt_tokens == PROMPT_TOKENS
    assert result.usage.completion_tokens == 5
    assert result.usage.total_tokens == PROMPT_TOKENS + 5


def test_greedy_completion_is_the_text_triton_generates(
    client: openai.OpenAI, server: Server
) -> None:
    result = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    triton = http_generate(
        server.http,
        {"text_input": PROMPT, "exclude_input_in_output": True,
         "parameters": {"temperature": 0, "max_tokens": 8}},
    )  # fmt: skip
    assert result.choices[0].text == triton["text_output"]


def test_streamed_completion_adds_up_to_the_whole_one(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0)
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].text
    reasons = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert reasons[-1] == "length" and set(reasons[:-1]) <= {None}
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (6, 12)


def test_chat_completion_applies_the_chat_template(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4, temperature=0)  # type: ignore[call-overload]
    (choice,) = result.choices
    assert choice.message.role == "assistant"
    assert choice.message.content is not None and len(words(choice.message.content)) == 4
    assert choice.finish_reason == "length"
    assert result.usage is not None
    assert result.usage.prompt_tokens == CHAT_PROMPT_TOKENS
    assert result.usage.completion_tokens == 4
    # The template's prompt, completed as a plain completion, gives the same answer.
    plain = client.completions.create(
        model=MODEL, prompt=f"User: {PROMPT} Assistant:", max_tokens=4, temperature=0
    )
    assert plain.usage is not None and plain.usage.prompt_tokens == CHAT_PROMPT_TOKENS
    assert plain.choices[0].text == choice.message.content


def test_streamed_chat_adds_up_to_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=10, temperature=0)  # type: ignore[call-overload]
    stream = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )  # type: ignore[call-overload]
    chunks = list(stream)
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert deltas[0].role == "assistant"
    assert "".join(delta.content or "" for delta in deltas) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10


def test_n_choices_each_run_to_max_tokens(client: openai.OpenAI) -> None:
    result = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=6, n=3, temperature=1.0, seed=7
    )
    assert sorted(choice.index for choice in result.choices) == [0, 1, 2]
    assert all(len(words(choice.text)) == 6 for choice in result.choices)
    assert all(choice.finish_reason == "length" for choice in result.choices)
    assert result.usage is not None and result.usage.completion_tokens == 18


def test_n_streamed_chat_choices_arrive_by_index(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=5, n=2, temperature=1.0, stream=True
    )  # type: ignore[call-overload]
    texts: dict[int, str] = {}
    finished: dict[int, str | None] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason is not None:
                finished[choice.index] = choice.finish_reason
    assert sorted(texts) == [0, 1]
    assert all(len(words(text)) == 5 for text in texts.values())
    assert finished == {0: "length", 1: "length"}


def test_stop_string_ends_the_text_before_it(client: openai.OpenAI) -> None:
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    text = full.choices[0].text
    stop = " " + words(text)[3]
    result = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stop=[stop]
    )
    (choice,) = result.choices
    assert choice.finish_reason == "stop"
    assert choice.text == text[: text.index(stop)]
    chat = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=0)  # type: ignore[call-overload]
    answer = chat.choices[0].message.content or ""
    chat_stop = " " + words(answer)[2]
    stopped = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=8, temperature=0, stop=chat_stop
    )  # type: ignore[call-overload]
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == answer[: answer.index(chat_stop)]


def test_completion_logprobs_cover_each_token(client: openai.OpenAI) -> None:
    result = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2
    )
    (choice,) = result.choices
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.tokens is not None
    assert len(logprobs.tokens) == 4
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.token_logprobs is not None
    assert all(value is not None and value <= 0 for value in logprobs.token_logprobs)
    assert logprobs.top_logprobs is not None
    for token, top in zip(logprobs.tokens, logprobs.top_logprobs, strict=True):
        assert 2 <= len(top) <= 3 and token in top  # greedy: the token is the most likely


def test_chat_logprobs_cover_each_token(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )  # type: ignore[call-overload]
    (choice,) = result.choices
    assert choice.logprobs is not None and choice.logprobs.content is not None
    content = choice.logprobs.content
    assert len(content) == 4
    assert "".join(item.token for item in content) == choice.message.content
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 2
        assert item.top_logprobs[0].token == item.token


def test_json_schema_output_parses_and_follows_the_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "London"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    result = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )  # type: ignore[call-overload]
    (choice,) = result.choices
    assert choice.finish_reason == "stop"
    assert json.loads(choice.message.content or "") == {"city": "Paris"}


def test_model_json_openai_settings_reach_the_server(client: openai.OpenAI) -> None:
    """The session model's model.json turns on vLLM's enable_prompt_tokens_details."""
    result = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
    assert result.usage is not None and result.usage.prompt_tokens_details is not None


def test_unknown_model_is_a_404_with_the_openai_error_body(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=2)
    assert err.value.status_code == 404
    body = err.value.body
    assert isinstance(body, dict)
    assert "no-such-model" in body["message"] and body["type"] and body["code"] == 404


def test_invalid_parameter_is_a_400_with_the_openai_error_body(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, temperature=-1)
    assert err.value.status_code == 400
    assert isinstance(err.value.body, dict) and "temperature" in err.value.body["message"]


@pytest.mark.parametrize(
    "body",
    ['{"model": "tiny", "prompt": ', '{"model": "tiny", "prompt": "Hi", "max_tokens": "many"}'],
    ids=["truncated-json", "wrong-type"],
)
def test_malformed_body_is_a_400_with_an_error_object(server: Server, body: str) -> None:
    response = requests.post(
        f"{server.openai_base}/completions",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] and error["type"] and error["code"] == 400


def test_health_and_version_endpoints_answer(server: Server) -> None:
    assert requests.get(f"http://{server.openai}/health", timeout=10).status_code == 200
    assert requests.get(f"http://{server.openai}/version", timeout=10).json()["version"]


def test_probe_paths_stay_out_of_the_access_log(server: Server, client: openai.OpenAI) -> None:
    """The pods' probes call /health every few seconds: the access log keeps the requests."""
    marker = f"/v1/models?probe-test={time.monotonic_ns()}"
    for _ in range(3):
        assert requests.get(f"http://{server.openai}/health", timeout=10).status_code == 200
    assert requests.get(f"http://{server.openai}{marker}", timeout=10).status_code == 200
    deadline = time.monotonic() + 10
    while marker not in server.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the access log shows no request"
        time.sleep(0.1)
    assert '"GET /health HTTP' not in server.log.read_text(errors="replace")


def test_a_pooled_connection_idle_past_5_s_is_still_served(server: Server) -> None:
    """The cause of a once-flaky test: a client pool (httpx's, the openai client's) keeps an idle
    connection for 5 s, and vLLM's server closed it after 5 s, so a request sent on it just then
    met a closed connection ("Server disconnected without sending a response"). The server now
    keeps idle connections longer than such pools do."""
    assert server.openai is not None
    host, _, port = server.openai.rpartition(":")
    request = f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(IDLE_S)
        conn.sendall(request)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200"), "the server closed the connection"


# Metrics: vLLM's own Prometheus registry on the OpenAI port.


def scrape(server: Server) -> Samples:
    """name -> [(labels, value)] from the OpenAI port's /metrics."""
    return prometheus_samples(f"http://{server.openai}/metrics")


def value(samples: Samples, name: str) -> float:
    """The sum of a metric's series for our model."""
    return sum(v for labels, v in samples.get(name, []) if labels.get("model_name") == MODEL)


def wait_for_value(server: Server, name: str, wanted: float, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        current = value(scrape(server), name)
        if current >= wanted or time.monotonic() > deadline:
            return current
        time.sleep(0.1)


def test_vllm_metrics_are_served_under_the_model_name(
    client: openai.OpenAI, server: Server
) -> None:
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3)
    samples = scrape(server)
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:request_queue_time_seconds_bucket",
    ):
        assert any(labels.get("model_name") == MODEL for labels, _ in samples.get(name, [])), name
    # vLLM labels the cache configuration by its fields and the engine (no model name).
    (cache_labels, cache_value), *_ = samples["vllm:cache_config_info"]
    assert cache_value == 1.0 and cache_labels["block_size"] and cache_labels["engine"] == "0"


def test_triton_requests_count_in_the_same_engine_metrics(server: Server) -> None:
    before = scrape(server)
    tokens = value(before, "vllm:generation_tokens_total")
    done = value(before, "vllm:request_success_total")
    http_generate(server.http, {"text_input": PROMPT, "parameters": {"max_tokens": 7}})
    assert wait_for_value(server, "vllm:generation_tokens_total", tokens + 7) == tokens + 7
    assert wait_for_value(server, "vllm:request_success_total", done + 1) == done + 1


def test_openai_and_triton_requests_run_together_on_one_engine(
    client: openai.OpenAI, server: Server
) -> None:
    """Both paths at once: every answer complete, and the gauges see them running.

    12 workers (OpenAI chat streams and completions, Triton generate and generate_stream) each
    send requests back to back until a scrape saw several requests running and KV cache in use.
    """
    max_tokens = 300
    before = value(scrape(server), "vllm:generation_tokens_total")
    seen = threading.Event()
    running: list[float] = []
    kv_usage: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not seen.is_set() and time.monotonic() < deadline:
            samples = scrape(server)
            running.append(value(samples, "vllm:num_requests_running"))
            kv_usage.append(value(samples, "vllm:kv_cache_usage_perc"))
            if max(running) >= 2 and max(kv_usage) > 0:
                seen.set()
            time.sleep(0.01)
        seen.set()

    def chat() -> str:
        stream = client.chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=max_tokens, stream=True
        )  # type: ignore[call-overload]
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    def completion() -> str:
        result = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=max_tokens)
        return result.choices[0].text

    def triton() -> str:
        return http_generate(
            server.http,
            {"text_input": PROMPT, "exclude_input_in_output": True,
             "parameters": {"max_tokens": max_tokens}},
        )["text_output"]  # fmt: skip

    def triton_stream() -> str:
        events = http_generate_stream(
            server.http,
            {"text_input": PROMPT, "stream": True, "parameters": {"max_tokens": max_tokens}},
        )
        return "".join(event["text_output"] for event in events)

    kinds = [chat, completion, triton, triton_stream]

    def worker(index: int) -> list[tuple[str, str]]:
        kind = kinds[index % len(kinds)]
        texts = [(kind.__name__, kind())]
        while not seen.is_set():
            texts.append((kind.__name__, kind()))
        return texts

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = [text for texts in pool.map(worker, range(12)) for text in texts]
    finally:
        seen.set()
        watcher.join()
    assert {kind for kind, _ in results} == {kind.__name__ for kind in kinds}
    assert all(len(words(text)) == max_tokens for _, text in results)
    expected = before + len(results) * max_tokens
    assert wait_for_value(server, "vllm:generation_tokens_total", expected) == expected
    assert max(running) >= 2 and max(kv_usage) > 0
    assert wait_until_idle(server) == 0


def wait_until_idle(server: Server, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        running = value(scrape(server), "vllm:num_requests_running")
        if running == 0 or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


# Load errors: a model whose OpenAI settings are wrong fails to load, saying why.


def load_model(server: Server, name: str) -> requests.Response:
    return requests.post(server.url(f"/v2/repository/models/{name}/load"), timeout=300)


@pytest.mark.parametrize(
    ("name", "parameters", "openai_section", "message"),
    [
        ("tiny_bad_port", {"OPENAI_API_PORT": "http"}, None, "OPENAI_API_PORT must be a port"),
        ("tiny_busy_port", {}, None, "cannot listen on 127.0.0.1"),
        (
            "tiny_bad_openai_key",
            {"OPENAI_API_PORT": "1"},
            {"chat_templat": "{{ messages }}"},
            "did you mean 'chat_template'",
        ),
    ],
)
def test_bad_openai_settings_fail_the_load_with_a_clear_message(
    server: Server,
    model_repository: Path,
    tiny_model: Path,
    openai_port: int,
    name: str,
    parameters: dict[str, str],
    openai_section: dict[str, Any] | None,
    message: str,
) -> None:
    files = rendered_files(name, tiny_model, openai_port)  # the session server's port: busy
    config_file = f"{name}/config.pbtxt"
    files[config_file] = with_parameters(files[config_file], parameters)
    if openai_section is not None:
        engine_file = f"{name}/1/model.json"
        files[engine_file] = json.dumps(
            {**json.loads(files[engine_file]), "openai": openai_section}
        )
    write_repository(model_repository, files)
    response = load_model(server, name)
    assert response.status_code != 200
    assert message in response.text + server.log.read_text()
    assert server.model_ready()
    assert requests.get(f"http://{server.openai}/health", timeout=10).status_code == 200


def test_unloading_a_model_closes_its_openai_port(
    server: Server, model_repository: Path, tiny_model: Path
) -> None:
    """A second model on its own port: served under its name, and its port freed on unload."""
    (port,) = free_ports(1)
    name = "tiny_second"
    write_repository(model_repository, rendered_files(name, tiny_model, port))
    response = load_model(server, name)
    assert response.status_code == 200, response.text
    try:
        models = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert [model["id"] for model in models["data"]] == [name]
    finally:
        requests.post(server.url(f"/v2/repository/models/{name}/unload"), timeout=120)
    deadline = time.monotonic() + 120
    while server.model_ready(name) and time.monotonic() < deadline:
        time.sleep(0.5)
    wait_until_closed(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free again
    assert server.model_ready()


def wait_until_closed(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"port {port} still accepts connections after the unload")
