"""auto_complete_config's plan: add what config.pbtxt leaves out, enforce what vLLM needs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.contract import (
    INPUTS,
    OUTPUTS,
    instance_group_problem,
    plan_auto_complete,
)


def test_an_empty_config_gets_the_whole_contract_and_the_enforced_settings() -> None:
    plan = plan_auto_complete({"max_batch_size": 8})
    assert [t["name"] for t in plan.add_inputs] == [t["name"] for t in INPUTS]
    assert [t["name"] for t in plan.add_outputs] == [t["name"] for t in OUTPUTS]
    assert plan.set_decoupled and plan.set_max_batch_size
    assert any("max_batch_size: 8 -> 0" in change for change in plan.changes)
    assert any("decoupled: false -> true" in change for change in plan.changes)


def test_user_declared_tensors_are_never_touched() -> None:
    declared = {"name": "text_input", "data_type": "TYPE_STRING", "dims": [-1]}
    plan = plan_auto_complete(
        {
            "input": [declared],
            "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
            "model_transaction_policy": {"decoupled": True},
            "max_batch_size": 0,
        }
    )
    assert "text_input" not in {t["name"] for t in plan.add_inputs}
    assert "text_output" not in {t["name"] for t in plan.add_outputs}
    assert not plan.set_decoupled and not plan.set_max_batch_size and plan.changes == []


def test_optional_inputs_are_marked_optional() -> None:
    plan = plan_auto_complete({})
    optional = {t["name"] for t in plan.add_inputs if t.get("optional")}
    assert optional == {t["name"] for t in INPUTS} - {"text_input"}


def test_multi_device_models_need_one_kind_model_instance() -> None:
    gpu = {"instance_group": [{"kind": "KIND_GPU", "count": 1}]}
    assert instance_group_problem(gpu, world_size=1) is None
    assert "KIND_MODEL" in (instance_group_problem(gpu, world_size=2) or "")
    two = {"instance_group": [{"kind": "KIND_MODEL", "count": 2}]}
    assert "exactly one instance" in (instance_group_problem(two, world_size=1) or "")
    assert instance_group_problem({}, world_size=4) is None
