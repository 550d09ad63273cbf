"""auto_complete_config's plan: add what config.pbtxt leaves out, enforce what vLLM needs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.contract import INPUTS, OUTPUTS, plan_auto_complete

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
    assert plan.enforce == {} and plan.changes == []


def test_user_values_that_vllm_cannot_use_are_overridden_and_logged() -> None:
    plan = plan_auto_complete(
        {
            "max_batch_size": 8,
            "dynamic_batching": {"max_queue_delay_microseconds": 100},
            "model_transaction_policy": {"decoupled": False},
            "instance_group": [{"count": 2, "kind": "KIND_GPU"}],
        }
    )
    assert plan.enforce == {
        "max_batch_size": 0,
        "dynamic_batching": None,
        "model_transaction_policy": {"decoupled": True},
        "instance_group": [{"count": 1, "kind": "KIND_MODEL"}],
    }
    changes = "\n".join(plan.changes)
    for fragment in ("max_batch_size: 8 -> 0", "decoupled: false -> true", "dynamic_batching",
                     "instance_group"):  # fmt: skip
        assert fragment in changes


def test_defaults_left_unset_are_filled_in_without_noise() -> None:
    plan = plan_auto_complete({"name": "m"})
    assert plan.enforce == {
        "model_transaction_policy": {"decoupled": True},
        "instance_group": [{"count": 1, "kind": "KIND_MODEL"}],
    }
    assert plan.changes == []


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
