"""Sampling parameters from requests: JSON parsing and coercion to SamplingParams' types."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.sampling import RequestError, SamplingRequest, parse_sampling_parameters

KINDS = {
    "temperature": "float",
    "top_p": "float",
    "max_tokens": "int",
    "seed": "int",
    "ignore_eos": "bool",
    "stop": "any",
    "stop_token_ids": "list",
    "logit_bias": "dict",
    "bad_words": "list",
    "output_kind": "any",
    "skip_clone": "bool",
    "output_text_buffer_length": "int",
    "stream_interval": "int",
    "repetition_detection": "any",
    "flat_logprobs": "bool",
}


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ('{"temperature": "0"}', {"temperature": 0.0}),
        ('{"temperature": 1}', {"temperature": 1.0}),
        ('{"max_tokens": "16"}', {"max_tokens": 16}),
        ('{"max_tokens": 16.0}', {"max_tokens": 16}),
        ('{"ignore_eos": "true"}', {"ignore_eos": True}),
        ('{"ignore_eos": "False"}', {"ignore_eos": False}),
        ('{"stop_token_ids": "[1, 2]"}', {"stop_token_ids": [1, 2]}),
        ('{"logit_bias": "{\\"5\\": 1.5}"}', {"logit_bias": {5: 1.5}}),
        # JSON object keys are strings; vLLM wants integer token ids.
        ('{"logit_bias": {"5": -100, "7": "2.5"}}', {"logit_bias": {5: -100.0, 7: 2.5}}),
        # Public fields that a fixed list of names would refuse (newer than the list).
        ('{"flat_logprobs": "true"}', {"flat_logprobs": True}),
        (
            '{"repetition_detection": {"max_pattern_size": 4}}',
            {"repetition_detection": {"max_pattern_size": 4}},
        ),
        ('{"stop": ["a", "b"]}', {"stop": ["a", "b"]}),
        ('{"seed": null}', {"seed": None}),
        ("", {}),
    ],
)
def test_string_values_are_coerced_to_the_field_type(sent: str, expected: dict) -> None:
    assert parse_sampling_parameters(sent, None, KINDS).params == expected


@pytest.mark.parametrize(
    ("sent", "fragment"),
    [
        ('{"temperature": "hot"}', "'temperature' must be a number"),
        ('{"max_tokens": "1.5"}', "'max_tokens' must be an integer"),
        ('{"max_tokens": true}', "'max_tokens' must be an integer"),
        ('{"ignore_eos": "maybe"}', "'ignore_eos' must be a boolean"),
        ('{"stop_token_ids": "not json"}', "'stop_token_ids' must be a list"),
        ('{"temperature": "nan"}', "'temperature' must be a number"),
        ('{"temprature": 0}', "did you mean 'temperature'"),
        ('{"output_kind": 1}', "set by the backend"),
        ('{"skip_clone": true}', "'skip_clone' is internal to vLLM"),
        ('{"output_text_buffer_length": 3}', "'output_text_buffer_length' is internal to vLLM"),
        ('{"_eos_token_id": 3}', "'_eos_token_id' is internal to vLLM"),
        ('{"logit_bias": {"five": 1}}', "'logit_bias' must be an object"),
        ('{"stop": {"a": 1}}', "'stop' must be a string or a list of strings"),
        ('{"stop": [1, 2]}', "'stop' must be a string or a list of strings"),
        ('{"priority": "high"}', "'priority' must be an integer"),
        ('{"max_tokens": 1e30}', "'max_tokens' must be an integer"),
        ('{"seed": "-99999999999999999999"}', "'seed' must be an integer"),
        ('{"bad_words": [1]}', "'bad_words' must be a list of strings"),
        ('{"lora_name": 3}', "'lora_name' must be a string"),
        ('{"structured_outputs": "{not json"}', "'structured_outputs' must be an object"),
        ('{"structured_outputs": [1]}', "'structured_outputs' must be an object"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_values_name_the_key_and_the_problem(sent: str, fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment.replace("(", r"\(")):
        parse_sampling_parameters(sent, None, KINDS)


def test_request_parameters_are_used_without_transport_keys() -> None:
    params = '{"temperature": "0", "stream": false, "triton_enable_empty_final_response": true}'
    assert parse_sampling_parameters(None, params, KINDS).params == {"temperature": 0.0}


def test_request_parameters_keep_stream_interval() -> None:
    params = '{"stream": true, "stream_interval": "4", "max_tokens": 8}'
    got = parse_sampling_parameters(None, params, KINDS).params
    assert got == {"stream_interval": 4, "max_tokens": 8}


def test_sampling_parameters_input_wins_over_request_parameters() -> None:
    got = parse_sampling_parameters('{"max_tokens": 4}', '{"max_tokens": 8}', KINDS)
    assert got.params == {"max_tokens": 4}


def test_lora_priority_and_structured_outputs_are_taken_apart_from_sampling_params() -> None:
    sent = (
        '{"max_tokens": 4, "lora_name": "pirate", "priority": "2",'
        ' "structured_outputs": "{\\"regex\\": \\"[a-z]+\\"}"}'
    )
    assert parse_sampling_parameters(sent, None, KINDS) == SamplingRequest(
        params={"max_tokens": 4},
        structured_outputs={"regex": "[a-z]+"},
        lora_name="pirate",
        priority=2,
    )


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ('{"guided_json": {"type": "object"}}', {"json": {"type": "object"}}),
        ('{"guided_regex": "a+"}', {"regex": "a+"}),
        ('{"guided_choice": ["yes", "no"]}', {"choice": ["yes", "no"]}),
        ('{"guided_decoding": {"choice": ["yes"]}}', {"choice": ["yes"]}),
        ('{"structured_outputs": {"json": "{}"}}', {"json": "{}"}),
    ],
)
def test_guided_decoding_names_become_structured_outputs(sent: str, expected: dict) -> None:
    assert parse_sampling_parameters(sent, None, KINDS).structured_outputs == expected


def test_an_unknown_key_suggests_only_what_a_client_may_set() -> None:
    with pytest.raises(RequestError) as err:
        parse_sampling_parameters('{"skip_clon": true}', None, KINDS)
    assert "skip_clone" not in str(err.value)
