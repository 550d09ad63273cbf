"""A model's Hub token goes only to Hub endpoints the operator's admin allows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import model_dict
from tests.unit.test_reconcile import NODES, NOW, conditions, message
from triton_vllm_operator.__main__ import render_documents
from triton_vllm_operator.reconcile import Observed, needs_facts, plan_reconcile
from triton_vllm_operator.settings import Settings
from triton_vllm_operator.validation import SpecError

TOKEN = {"name": "hf", "key": "token"}


def _model(**storage: Any) -> dict[str, Any]:
    body = model_dict(model="meta-llama/Llama-3.1-8B-Instruct", tensorParallelSize=1)
    body["spec"]["storage"] = storage
    return body


def test_a_token_bound_for_an_endpoint_not_allowed_is_refused_before_any_lookup() -> None:
    body = _model(hfTokenSecret=TOKEN, endpoint="https://hub.attacker.example")
    settings = Settings()
    observed = Observed(nodes=NODES, pods=[])
    assert needs_facts(body, observed, settings) is None  # no lookup: it would send the token
    plan = plan_reconcile(body, observed, settings, NOW)
    assert plan.apply == []  # no pod, Job or lookup carries the token there
    assert conditions(plan.status)["Accepted"] == ("False", "HubEndpointNotAllowed")
    text = message(plan.status, "Accepted")
    assert "https://hub.attacker.example" in text and "https://huggingface.co" in text
    assert "hub.tokenEndpoints" in text
    assert ("Warning", "HubEndpointNotAllowed") in {(e[0], e[1]) for e in plan.events}
    with pytest.raises(SpecError, match="not a Hub endpoint"):
        render_documents([body], NODES, settings)


@pytest.mark.parametrize(
    ("storage", "settings"),
    [
        ({"hfTokenSecret": TOKEN}, Settings()),  # the public Hub
        ({"hfTokenSecret": TOKEN, "endpoint": "https://huggingface.co/"}, Settings()),
        ({"endpoint": "https://hub.attacker.example"}, Settings()),  # no token to leak
        (
            {"hfTokenSecret": TOKEN, "endpoint": "http://hub-mirror.ml:8080"},
            Settings(hf_token_endpoints=("https://huggingface.co", "http://hub-mirror.ml:8080")),
        ),
        (  # the operator's own endpoint is the admin's choice
            {"hfTokenSecret": TOKEN},
            Settings(hf_endpoint="https://mirror.corp.example", hf_token_endpoints=()),
        ),
    ],
)
def test_allowed_endpoints_or_no_token_are_accepted(
    storage: dict[str, Any], settings: Settings
) -> None:
    plan = plan_reconcile(_model(**storage), Observed(nodes=NODES, pods=[]), settings, NOW)
    assert conditions(plan.status)["Accepted"] == ("True", "Valid")


def test_the_allowed_list_comes_from_the_environment() -> None:
    env = {"TRITON_VLLM_HF_TOKEN_ENDPOINTS": "https://huggingface.co, https://hf.corp.example"}
    assert Settings.from_env(env).hf_token_endpoints == (
        "https://huggingface.co",
        "https://hf.corp.example",
    )
    assert Settings().hf_token_endpoints == ("https://huggingface.co",)
    # The chart's empty list: only the operator's own endpoint may get a token.
    assert Settings.from_env({"TRITON_VLLM_HF_TOKEN_ENDPOINTS": ""}).hf_token_endpoints == ()
