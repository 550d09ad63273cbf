"""Generation through a real tritonserver and vLLM engine: HTTP and gRPC, streamed or not."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import requests

from .clients import GrpcSession, http_generate, http_generate_stream, request_inputs
from .conftest import Server

PROMPT = "The capital of France is"
PROMPT_TOKENS = 6  # five words + BOS with the tiny model's word-level tokenizer
GREEDY = {"temperature": 0, "max_tokens": 8}


def words(text: str) -> list[str]:
    return text.split()


def test_auto_complete_declares_the_whole_contract(server: Server) -> None:
    config = requests.get(server.url("/v2/models/tiny/config"), timeout=10).json()
    inputs = {tensor["name"]: tensor for tensor in config["input"]}
    outputs = {tensor["name"] for tensor in config["output"]}
    assert set(inputs) == {
        "text_input", "image", "stream", "sampling_parameters", "exclude_input_in_output",
        "return_finish_reason", "return_cumulative_logprob", "return_logprobs",
        "return_num_input_tokens", "return_num_output_tokens", "embedding_request",
    }  # fmt: skip
    assert not inputs["text_input"].get("optional", False)
    assert all(inputs[name]["optional"] for name in set(inputs) - {"text_input"})
    assert outputs == {
        "text_output", "finish_reason", "cumulative_logprob", "logprobs",
        "num_input_tokens", "num_output_tokens",
    }  # fmt: skip
    assert config["model_transaction_policy"]["decoupled"] is True
    assert config["max_batch_size"] == 0


def test_http_generate_returns_the_prompt_and_its_completion(server: Server) -> None:
    body = {"text_input": PROMPT, "sampling_parameters": json.dumps(GREEDY)}
    text = http_generate(server.http, body)["text_output"]
    assert text.startswith(PROMPT)
    assert len(words(text)) == len(words(PROMPT)) + 8


def test_http_generate_takes_sampling_values_from_request_parameters(server: Server) -> None:
    body = {"text_input": PROMPT, "parameters": {"temperature": "0", "max_tokens": "3"}}
    assert len(words(http_generate(server.http, body)["text_output"])) == len(words(PROMPT)) + 3


def test_http_generate_stream_deltas_add_up_to_the_full_completion(server: Server) -> None:
    sampling = json.dumps({**GREEDY, "max_tokens": 12})
    events = http_generate_stream(
        server.http, {"text_input": PROMPT, "stream": True, "sampling_parameters": sampling}
    )
    full = http_generate(
        server.http,
        {"text_input": PROMPT, "sampling_parameters": sampling, "exclude_input_in_output": True},
    )
    assert len(events) >= 1
    assert "".join(event["text_output"] for event in events) == full["text_output"]
    assert len(words(full["text_output"])) == 12


def test_grpc_generate_and_stream(server: Server) -> None:
    session = GrpcSession(server.grpc)
    try:
        whole = session.generate(request_inputs(PROMPT, GREEDY))
        streamed = session.generate(request_inputs(PROMPT, GREEDY, stream=True))
    finally:
        session.close()
    assert whole.error is None and streamed.error is None
    assert len(whole.responses) == 1
    assert whole.text == PROMPT + streamed.text
    assert len(words(streamed.text)) == 8


def test_exclude_input_in_output_returns_only_the_completion(server: Server) -> None:
    body = {"text_input": PROMPT, "sampling_parameters": json.dumps(GREEDY)}
    full = http_generate(server.http, body)["text_output"]
    excluded = http_generate(server.http, {**body, "exclude_input_in_output": True})["text_output"]
    assert full == PROMPT + excluded


def test_every_optional_output_when_asked(server: Server) -> None:
    sampling = {"temperature": 0, "max_tokens": 5, "logprobs": 1}
    flags = {
        "return_finish_reason": True,
        "return_cumulative_logprob": True,
        "return_logprobs": True,
        "return_num_input_tokens": True,
        "return_num_output_tokens": True,
        "exclude_input_in_output": True,
    }
    session = GrpcSession(server.grpc)
    try:
        result = session.generate(request_inputs(PROMPT, sampling, **flags))
        plain = session.generate(request_inputs(PROMPT, sampling))
    finally:
        session.close()
    assert result.error is None
    (response,) = result.responses
    assert response["finish_reason"] == ["length"]
    assert response["num_input_tokens"] == [PROMPT_TOKENS]
    assert response["num_output_tokens"] == [5]
    logprobs = json.loads(response["logprobs"][0])
    assert len(logprobs) == 5
    chosen = [next(iter(position.values())) for position in logprobs]
    assert "".join(entry["decoded_token"] for entry in chosen) == response["text_output"][0]
    total = sum(entry["logprob"] for entry in chosen)
    assert abs(response["cumulative_logprob"][0] - total) < 1e-3
    assert set(plain.responses[0]) == {"text_output"}


def test_streamed_optional_outputs_count_tokens_per_response(server: Server) -> None:
    sampling = {"temperature": 0, "max_tokens": 10}
    session = GrpcSession(server.grpc)
    try:
        result = session.generate(
            request_inputs(
                PROMPT,
                sampling,
                stream=True,
                return_num_output_tokens=True,
                return_finish_reason=True,
            )
        )
    finally:
        session.close()
    assert sum(r["num_output_tokens"][0] for r in result.responses) == 10
    assert result.responses[-1]["finish_reason"] == ["length"]


def test_greedy_output_equals_the_raw_vllm_engine(
    server: Server, raw_engine_reference: dict[str, str]
) -> None:
    for prompt, expected in raw_engine_reference.items():
        body = {
            "text_input": prompt,
            "exclude_input_in_output": True,
            "sampling_parameters": json.dumps({"temperature": 0, "max_tokens": 24}),
        }
        assert http_generate(server.http, body)["text_output"] == expected


def test_cumulative_logprob_is_nan_without_logprobs_as_the_official_backend(
    server: Server,
) -> None:
    session = GrpcSession(server.grpc)
    try:
        without = session.generate(request_inputs(PROMPT, GREEDY, return_cumulative_logprob=True))
        streamed = session.generate(
            request_inputs(PROMPT, GREEDY, stream=True, return_cumulative_logprob=True)
        )
        asked = session.generate(
            request_inputs(PROMPT, {**GREEDY, "logprobs": 0}, return_cumulative_logprob=True)
        )
    finally:
        session.close()
    assert math.isnan(without.responses[0]["cumulative_logprob"][0])
    assert all(math.isnan(r["cumulative_logprob"][0]) for r in streamed.responses)
    assert asked.responses[0]["cumulative_logprob"][0] < 0


def test_a_stream_asking_for_the_prompt_in_its_output_is_refused(server: Server) -> None:
    session = GrpcSession(server.grpc)
    try:
        refused = session.generate(
            request_inputs(PROMPT, GREEDY, stream=True, exclude_input_in_output=False)
        )
        allowed = session.generate(
            request_inputs(PROMPT, GREEDY, stream=True, exclude_input_in_output=True)
        )
    finally:
        session.close()
    assert refused.error == (
        "Error generating stream: When streaming, `exclude_input_in_output` = False is not allowed."
    )
    assert allowed.error is None and len(words(allowed.text)) == 8


def test_streamed_n_sequences_each_add_up_to_the_non_streamed_ones(server: Server) -> None:
    sampling = {"n": 3, "temperature": 1.0, "seed": 11, "max_tokens": 6}
    session = GrpcSession(server.grpc)
    try:
        whole = session.generate(request_inputs(PROMPT, sampling, exclude_input_in_output=True))
        streamed = session.generate(
            request_inputs(PROMPT, sampling, stream=True, return_finish_reason=True)
        )
    finally:
        session.close()
    assert whole.error is None and streamed.error is None
    assert all(len(r["text_output"]) == 3 for r in streamed.responses)
    per_sequence = ["".join(r["text_output"][i] for r in streamed.responses) for i in range(3)]
    assert per_sequence == whole.responses[0]["text_output"]
    assert streamed.responses[-1]["finish_reason"] == ["length"] * 3


def test_priority_is_accepted(server: Server) -> None:
    body = {"text_input": PROMPT, "parameters": {**GREEDY, "priority": 3}}
    assert len(words(http_generate(server.http, body)["text_output"])) == len(words(PROMPT)) + 8


def test_structured_outputs_constrain_the_text(server: Server) -> None:
    colours = [" red", " blue", " green"]
    regex = "( red| blue| green){3}"
    cases = [
        ({"structured_outputs": json.dumps({"choice": colours})}, lambda t: t in colours),
        ({"structured_outputs": {"regex": regex}}, lambda t: re.fullmatch(regex, t) is not None),
        ({"guided_choice": colours}, lambda t: t in colours),
        ({"guided_regex": regex}, lambda t: re.fullmatch(regex, t) is not None),
        (
            {"structured_outputs": {"json": {"type": "string", "enum": colours}}},
            lambda t: json.loads(t) in colours,
        ),
    ]
    for constraint, check in cases:
        sampling = {"temperature": 1.0, "max_tokens": 12, **constraint}
        body = {
            "text_input": PROMPT,
            "exclude_input_in_output": True,
            "sampling_parameters": json.dumps(sampling),
        }
        text = http_generate(server.http, body)["text_output"]
        assert check(text), (constraint, text)


# What `vllm serve` (and the official backend) would make of batch limits a model.json leaves unset,
# on this machine: vLLM's defaults for a server, which on H100/H200-class GPUs are larger than
# the library's own (AsyncLLM's). On CPU the two happen to agree; only a GPU tells them apart.
SERVER_DEFAULTS = """
from vllm.engine.arg_utils import EngineArgs
from vllm.usage.usage_lib import UsageContext
tokens, seqs = EngineArgs.get_batch_defaults(1)
print(seqs[UsageContext.OPENAI_API_SERVER], tokens[UsageContext.OPENAI_API_SERVER])
"""


def test_the_engine_gets_the_batch_limits_vllm_serve_would_give_it(
    server: Server, serving_python: Path
) -> None:
    result = subprocess.run(
        [str(serving_python), "-c", SERVER_DEFAULTS],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    seqs, tokens = result.stdout.split()[-2:]
    ready = re.search(r"engine ready \((.*)\)", server.log.read_text())
    assert ready, "the load log does not report the engine's batch limits"
    assert ready.group(1) == f"max_num_seqs={seqs}, max_num_batched_tokens={tokens}"
