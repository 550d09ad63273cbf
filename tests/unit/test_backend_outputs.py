"""Output shaping: what a client receives for each combination of return_* flags."""

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.outputs import SequenceDelta, Wanted, shape_response


@dataclass
class Logprob:
    logprob: float
    rank: int | None
    decoded_token: str | None


SEQ = SequenceDelta(
    text=" Paris is",
    num_tokens=2,
    finish_reason="length",
    cumulative_logprob=-1.5,
    logprobs=[{7: Logprob(-1.0, 1, " Paris")}, {9: Logprob(-0.5, 1, " is")}],
)


def names(tensors: list) -> list[str]:
    return [name for name, _, _ in tensors]


def test_only_text_by_default_with_the_prompt_in_front() -> None:
    tensors = shape_response(Wanted(), [SEQ], "The capital", 3, final=True)
    assert tensors == [("text_output", ["The capital Paris is"], "object")]


def test_exclude_input_and_streaming_send_only_the_new_text() -> None:
    excluded = shape_response(Wanted(exclude_input_in_output=True), [SEQ], "P", 1, final=True)
    streamed = shape_response(Wanted(stream=True), [SEQ], "P", 1, final=True)
    assert excluded[0][1] == streamed[0][1] == [" Paris is"]


def test_every_return_flag_adds_its_output() -> None:
    wanted = Wanted.from_flags(
        {
            "return_finish_reason": True,
            "return_cumulative_logprob": True,
            "return_logprobs": True,
            "return_num_input_tokens": True,
            "return_num_output_tokens": True,
        }
    )
    tensors = dict(
        (name, (values, dtype))
        for name, values, dtype in shape_response(wanted, [SEQ], "P", 6, final=True)
    )
    assert tensors["finish_reason"] == (["length"], "object")
    assert tensors["cumulative_logprob"] == ([-1.5], "float32")
    assert tensors["num_input_tokens"] == ([6], "uint32")
    assert tensors["num_output_tokens"] == ([2], "uint32")
    logprobs = json.loads(tensors["logprobs"][0][0])
    assert logprobs[0] == {"7": {"logprob": -1.0, "rank": 1, "decoded_token": " Paris"}}
    assert "".join(next(iter(p.values()))["decoded_token"] for p in logprobs) == SEQ.text


def test_logprobs_are_null_when_vllm_was_not_asked_for_them() -> None:
    seq = SequenceDelta("x", 1, None, None, None)
    tensors = shape_response(Wanted(return_logprobs=True), [seq], "", 1, final=False)
    assert tensors[1] == ("logprobs", ["null"], "object")


def test_cumulative_logprob_is_nan_when_vllm_was_not_asked_for_logprobs() -> None:
    seq = SequenceDelta("x", 1, "length", None, None)
    tensors = shape_response(Wanted(return_cumulative_logprob=True), [seq], "", 1, final=True)
    (value,) = tensors[1][1]
    assert tensors[1][0] == "cumulative_logprob" and math.isnan(value)
