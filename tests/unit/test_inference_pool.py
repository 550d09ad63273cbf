"""The InferencePool of a model with spec.gateway: its v1 shape, the pods it selects, and the
Gateway condition with and without the CRD."""

from __future__ import annotations

import pydantic
import pytest

from tests.unit.builders import model
from triton_vllm_operator.render.inference_pool import (
    GATEWAY,
    plan_inference_pool,
    pool_selector,
    render_inference_pool,
)
from triton_vllm_operator.render.manifests import ENGINE_LABELS, labels
from triton_vllm_operator.render.prefetch import prefetch_labels

PICKER = {"endpointPicker": {"name": "chat-epp"}}


class TestRenderInferencePool:
    def test_v1_pool_selects_the_serving_pods_on_the_openai_port_behind_the_picker(self) -> None:
        pool = render_inference_pool(model("chat", gateway=PICKER))
        assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
        assert pool["kind"] == "InferencePool"
        assert pool["metadata"]["name"] == "chat"
        assert pool["metadata"]["ownerReferences"][0]["kind"] == "TritonVLLMModel"
        assert pool["spec"] == {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "triton-vllm",
                    "app.kubernetes.io/instance": "chat",
                    "llm-d.ai/engine-type": "vllm",
                }
            },
            "targetPorts": [{"number": 9000}],
            "endpointPickerRef": {
                "group": "",
                "kind": "Service",
                "name": "chat-epp",
                "port": {"number": 9002},
                "failureMode": "FailClose",
            },
        }

    def test_the_selector_matches_the_serving_pods_not_the_prefetch_pods(self) -> None:
        chat = model("chat", gateway=PICKER)
        serving = {**labels(chat), **ENGINE_LABELS}  # the Deployment's pod template
        assert pool_selector(chat).items() <= serving.items()
        assert not pool_selector(chat).items() <= prefetch_labels(chat).items()

    def test_tritons_http_port_and_the_pickers_settings(self) -> None:
        gateway = {
            "port": "http",
            "endpointPicker": {"name": "epp", "port": 9100, "failureMode": "FailOpen"},
        }
        spec = render_inference_pool(model("chat", gateway=gateway))["spec"]
        assert spec["targetPorts"] == [{"number": 8000}]
        assert spec["endpointPickerRef"]["port"] == {"number": 9100}
        assert spec["endpointPickerRef"]["failureMode"] == "FailOpen"

    def test_a_custom_openai_port_is_the_target(self) -> None:
        pool = render_inference_pool(model("chat", gateway=PICKER, openai={"port": 9100}))
        assert pool["spec"]["targetPorts"] == [{"number": 9100}]

    def test_the_openai_port_needs_the_openai_server(self) -> None:
        with pytest.raises(pydantic.ValidationError, match=r"needs spec\.openai\.enabled"):
            model("chat", gateway=PICKER, openai={"enabled": False})
        pool = render_inference_pool(
            model("chat", gateway={**PICKER, "port": "http"}, openai={"enabled": False})
        )
        assert pool["spec"]["targetPorts"] == [{"number": 8000}]


class TestPlanInferencePool:
    def test_no_gateway_no_pool_no_condition(self) -> None:
        plan = plan_inference_pool(model("chat"), crd_served=True)
        assert plan.manifest is None and plan.verdict is None

    def test_without_the_crd_the_condition_says_what_to_install(self) -> None:
        plan = plan_inference_pool(model("chat", gateway=PICKER), crd_served=False)
        assert plan.manifest is None
        assert plan.verdict is not None
        assert (plan.verdict.type, plan.verdict.status) == (GATEWAY, "False")
        assert plan.verdict.reason == "InferencePoolCRDMissing"
        assert "inferencepools.inference.networking.k8s.io" in plan.verdict.message

    def test_with_the_crd_the_pool_and_what_the_gateways_say(self) -> None:
        chat = model("chat", gateway=PICKER)
        plan = plan_inference_pool(chat, crd_served=True)
        assert plan.manifest == render_inference_pool(chat)
        assert plan.verdict is not None and plan.verdict.status == "True"
        assert "no gateway reports using it yet" in plan.verdict.message
        live = {
            "status": {
                "parents": [
                    {
                        "parentRef": {"name": "inference-gateway"},
                        "conditions": [{"type": "Accepted", "status": "True"}],
                    }
                ]
            }
        }
        plan = plan_inference_pool(chat, crd_served=True, live=live)
        assert plan.verdict is not None
        assert "inference-gateway: Accepted=True" in plan.verdict.message
