"""Specs the schema admits but whose children the API server refuses: the model still gets all
three conditions (Accepted False with RejectedByAPIServer, and a reasoned Scheduled and Ready),
and text outside Unicode's basic plane (an emoji) is not a reason to refuse anything."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.operator_process import OperatorProcess
from tests.reliability.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Namespace,
    body,
    conditions,
    wait_for,
)

BASE = {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 1, "replicas": 0}


def _create(ns: Namespace, name: str, **spec: Any) -> None:
    ns.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns.name, PLURAL, body(name, {**BASE, **spec})
    )


def test_a_refused_child_still_gives_every_condition_a_reason(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    ns = Namespace(api_client, namespace)
    operator.start()
    # The API server refuses this Deployment: a toleration without key must use Exists.
    _create(ns, "bad-toleration", tolerations=[{"operator": "Equal", "value": "x"}])
    accepted = wait_for(
        lambda: conditions(ns.models()["bad-toleration"]).get("Accepted"), 60, "Accepted"
    )
    assert (accepted["status"], accepted["reason"]) == ("False", "RejectedByAPIServer")
    conds = conditions(ns.models()["bad-toleration"])
    for type_ in ("Scheduled", "Ready"):
        assert conds.get(type_, {}).get("reason"), f"no {type_} condition: {conds}"


def test_text_beyond_the_basic_plane_is_applied(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    ns = Namespace(api_client, namespace)
    operator.start()
    _create(
        ns,
        "emoji",
        podAnnotations={"team": "llm \U0001f680"},
        env=[{"name": "GREETING", "value": "\U0001f600"}],
    )
    accepted = wait_for(lambda: conditions(ns.models()["emoji"]).get("Accepted"), 60, "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("True", "Valid"), accepted["message"]
    deployment = ns.apps.read_namespaced_deployment("emoji", namespace)
    assert deployment.spec.template.metadata.annotations["team"] == "llm \U0001f680"
