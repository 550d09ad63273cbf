"""Hostile and malformed specs never crash a reconcile pass: each ends in a reasoned condition."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.builders import A10G, H100, gpu_node
from triton_vllm_operator.reconcile import Observed, plan_reconcile
from triton_vllm_operator.settings import Settings

NODES = [gpu_node("h", 8, H100), gpu_node("a", 4, A10G), gpu_node("c", 0, None)]
SETTINGS = Settings()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
engine_keys = st.sampled_from(
    [
        "max_model_len",
        "dtype",
        "tensor_parallel_size",
        "enforce_eager",
        "max_num_seqs",
        "model",
        "typo_key",
    ]
)
spec_fields: dict[str, st.SearchStrategy[Any]] = {
    "model": st.one_of(st.text(max_size=40), json_values),
    "servedModelName": st.one_of(st.text(max_size=40), json_values),
    "engineArgs": st.one_of(st.dictionaries(engine_keys, json_values, max_size=4), json_values),
    "tensorParallelSize": st.one_of(st.just("auto"), st.integers(-3, 40), json_values),
    "replicas": st.one_of(st.integers(-5, 100), json_values),
    "gpu": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "product": st.sampled_from([H100[0], A10G[0], "NVIDIA-B200", ""]),
                "minMemoryGiB": st.integers(-1, 200),
                "resourceName": st.sampled_from(["nvidia.com/gpu", "amd.com/gpu", ""]),
            },
        ),
        json_values,
    ),
    "modelSizeGiB": st.one_of(st.floats(-10, 2000), json_values),
    "triton": st.one_of(
        st.fixed_dictionaries(
            {}, optional={"config": json_values, "args": json_values, "image": json_values}
        ),
        json_values,
    ),
    "storage": json_values,
    "resources": json_values,
    "nodeSelector": json_values,
    "tolerations": json_values,
    "affinity": json_values,
    "env": json_values,
    "podAnnotations": json_values,
}
specs = st.fixed_dictionaries({}, optional=spec_fields)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, name=st.text(min_size=0, max_size=20))
def test_every_spec_gets_reasoned_conditions(spec: dict[str, Any], name: str) -> None:
    body = {
        "apiVersion": "tritonvllm.io/v1alpha1",
        "kind": "TritonVLLMModel",
        "metadata": {"name": name, "namespace": "ns", "uid": "u", "generation": 3},
        "spec": spec,
    }
    plan = plan_reconcile(body, Observed(nodes=NODES, pods=[]), SETTINGS, "now")
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert set(conditions) == {"Accepted", "Scheduled", "Ready"}
    for cond in conditions.values():
        assert cond["reason"] and cond["message"]
        assert cond["observedGeneration"] == 3
    if conditions["Accepted"]["status"] == "False":
        assert plan.apply == []
        assert plan.events and plan.events[0][0] == "Warning"
    else:
        assert [m["kind"] for m in plan.apply] in (["ConfigMap", "Deployment", "Service"], [])
