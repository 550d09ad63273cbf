"""spec.gateway through a whole reconcile pass: the InferencePool is applied where its CRD is
served and said in the Gateway condition; without the CRD it is said what to install; removing
the field deletes the pool and its condition."""

from __future__ import annotations

import copy
from typing import Any

from tests.unit.builders import H100, gpu_node, model_dict
from triton_vllm_operator.reconcile import Observed, Plan, plan_reconcile
from triton_vllm_operator.settings import Settings

NODES = [gpu_node("gpu-h100-0", 8, H100)]
NOW = "2026-12-01T00:00:00Z"
GATEWAY = {"endpointPicker": {"name": "chat-epp"}}


def _pass(body: dict[str, Any], observed: Observed) -> Plan:
    plan = plan_reconcile(body, observed, Settings(), NOW)
    body["status"] = plan.status
    return plan


def _world(plan: Plan, pool_served: bool) -> Observed:
    """What the watches show once the plan's children exist."""
    children = {(m["kind"], m["metadata"]["name"]): copy.deepcopy(m) for m in plan.apply}
    return Observed(nodes=NODES, pods=[], children=children, pool_served=pool_served)


def _gateway(plan: Plan) -> tuple[str, str, str] | None:
    found = [c for c in plan.status["conditions"] if c["type"] == "Gateway"]
    return (found[0]["status"], found[0]["reason"], found[0]["message"]) if found else None


def test_the_pool_is_applied_where_the_crd_is_served_and_said_in_the_condition() -> None:
    body = model_dict("chat", gateway=GATEWAY, tensorParallelSize=1)
    plan = _pass(body, Observed(nodes=NODES, pods=[], pool_served=True))
    (pool,) = [m for m in plan.apply if m["kind"] == "InferencePool"]
    assert pool["metadata"]["name"] == "chat"
    assert pool["spec"]["endpointPickerRef"]["name"] == "chat-epp"
    condition = _gateway(plan)
    assert condition is not None and condition[:2] == ("True", "InferencePool")
    again = _pass(body, _world(plan, pool_served=True))
    assert not [m for m in again.apply if m["kind"] == "InferencePool"]


def test_without_the_crd_no_pool_and_the_condition_says_what_to_install() -> None:
    body = model_dict("chat", gateway=GATEWAY, tensorParallelSize=1)
    plan = _pass(body, Observed(nodes=NODES, pods=[], pool_served=False))
    assert "InferencePool" not in {m["kind"] for m in plan.apply}
    condition = _gateway(plan)
    assert condition is not None and condition[:2] == ("False", "InferencePoolCRDMissing")
    assert "inferencepools.inference.networking.k8s.io" in condition[2]


def test_removing_the_field_deletes_the_pool_and_its_condition() -> None:
    body = model_dict("chat", gateway=GATEWAY, tensorParallelSize=1)
    plan = _pass(body, Observed(nodes=NODES, pods=[], pool_served=True))
    observed = _world(plan, pool_served=True)
    del body["spec"]["gateway"]
    after = _pass(body, observed)
    assert ("InferencePool", "chat") in after.delete
    assert _gateway(after) is None
