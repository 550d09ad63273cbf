"""spec.engineArgs is checked against the committed snapshot of vLLM's AsyncEngineArgs."""

from __future__ import annotations

import pytest

from triton_vllm_operator.engine_args import EngineArgsError, snapshot, validate_engine_args


def test_snapshot_is_from_the_pinned_vllm() -> None:
    data = snapshot()
    assert data["vllm_version"] == "0.32.0"
    assert data["fields"]["max_model_len"] == "int"
    assert data["fields"]["enable_prefix_caching"] == "bool"


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"max_model_len": 8192, "gpu_memory_utilization": 0.9, "enable_prefix_caching": True},
        {"gpu_memory_utilization": 1},  # an int is a fine float
        {"max_model_len": None},  # null means vLLM's default
        {"tensor_parallel_size": 2},  # equal to spec.tensorParallelSize
    ],
)
def test_valid_engine_args(args: dict[str, object]) -> None:
    validate_engine_args(args, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"max_num_seq": 8}, "did you mean 'max_num_seqs'"),
        ({"zzz": 1}, "engineArgs.zzz is not a vLLM 0.32.0 engine argument$"),
        ({"enforce_eager": 1}, "engineArgs.enforce_eager must be of type bool, got int"),
        ({"max_model_len": True}, "must be of type int, got bool"),
        ({"model": "x"}, "set by the operator from spec.model"),
        ({"hf_token": "hf_abc"}, "set spec.storage.hfTokenSecret"),
        ({"tensor_parallel_size": 4}, "conflicts with spec.tensorParallelSize=auto"),
    ],
)
def test_invalid_engine_args(args: dict[str, object], message: str) -> None:
    with pytest.raises(EngineArgsError, match=message):
        validate_engine_args(args, "auto")
