"""auto_complete_config's plan: add what config.pbtxt leaves out, enforce what vLLM needs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.contract import INPUTS, OUTPUTS, instance_kind_error, plan_auto_complete

RENDERED = {
    "name": "tiny",
    "max_batch_size": 0,
    "model_transaction_policy": {"decoupled": True},
    "instance_group": [{"count": 1, "kind": "KIND_MODEL"}],
}


def test_the_operator_rendered_config_only_gets_the_tensors() -> None:
    plan = plan_auto_complete(RENDERED)
    assert [t["name"] for t in plan.add_inputs] == [t["name"] for t in INPUTS]
    assert [t["name"] for t in plan.add_outputs] == [t["name"] for t in OUTPUTS]
    assert plan.errors == [] and not plan.set_decoupled


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"max_batch_size": 8}, "max_batch_size is 8"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": 100}}, "dynamic_batching is set"),
        ({"sequence_batching": {"max_sequence_idle_microseconds": 5}}, "sequence_batching is set"),
        ({"model_transaction_policy": {"decoupled": False}}, "decoupled is false"),
        ({"instance_group": [{"count": 2, "kind": "KIND_MODEL"}]}, "starts 2 vLLM engines"),
        ({"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}, "starts 2 vLLM engines"),
        (
            {
                "instance_group": [
                    {"count": 1, "kind": "KIND_MODEL"},
                    {"count": 1, "kind": "KIND_GPU"},
                ]
            },
            "on the same devices",
        ),
    ],
)
def test_what_triton_does_not_let_a_backend_change_fails_the_load(
    config: dict, fragment: str
) -> None:
    plan = plan_auto_complete({**RENDERED, **config})
    assert len(plan.errors) == 1 and fragment in plan.errors[0]


def test_single_gpu_instances_per_gpu_are_allowed() -> None:
    plan = plan_auto_complete({**RENDERED, "instance_group": [{"count": 2, "kind": "KIND_GPU"}]})
    assert plan.errors == []


def test_defaults_left_unset_are_filled_in() -> None:
    plan = plan_auto_complete({"name": "m"})
    assert plan.errors == [] and plan.set_decoupled and plan.set_max_batch_size


@pytest.mark.parametrize(
    ("kind", "size", "refused"),
    [("GPU", 2, True), ("GPU", 1, False), ("MODEL", 4, False), ("CPU", 1, False)],
)
def test_a_kind_gpu_instance_cannot_hold_a_multi_gpu_engine(
    kind: str, size: int, refused: bool
) -> None:
    error = instance_kind_error(kind, size)
    assert (error is not None) == refused
    if error:
        assert "KIND_MODEL" in error and str(size) in error


def test_user_declared_tensors_are_never_touched() -> None:
    declared = {"name": "text_input", "data_type": "TYPE_STRING", "dims": [-1]}
    plan = plan_auto_complete(
        {
            **RENDERED,
            "input": [declared],
            "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
        }
    )
    assert "text_input" not in {t["name"] for t in plan.add_inputs}
    assert "text_output" not in {t["name"] for t in plan.add_outputs}


def test_optional_inputs_are_marked_optional() -> None:
    plan = plan_auto_complete({})
    optional = {t["name"] for t in plan.add_inputs if t.get("optional")}
    assert optional == {t["name"] for t in INPUTS} - {"text_input"}
