"""A token passed the wrong way, as engineArgs.hf_token, is refused with a pointer to
storage.hfTokenSecret instead of being written into the model's ConfigMap (model.json)."""

from __future__ import annotations

import json
import uuid

from kubernetes import client

from tests.operator_process import OperatorProcess
from tests.reliability.helpers import GROUP, PLURAL, VERSION, Namespace, body, conditions, wait_for


def test_hf_token_in_engine_args_is_refused_not_copied(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    token = f"hf_RELIABILITYTEST{uuid.uuid4().hex}"
    ns = Namespace(api_client, namespace)
    operator.start()
    spec = {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "tensorParallelSize": 1,
        "replicas": 0,
        "engineArgs": {"hf_token": token},
    }
    ns.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body("leaky", spec)
    )
    accepted = wait_for(
        lambda: conditions(ns.models()["leaky"]).get("Accepted"), 60, "an Accepted condition"
    )
    configmaps = ns.core.list_namespaced_config_map(namespace).items
    leaked = [c.metadata.name for c in configmaps if token in json.dumps(c.data or {})]
    assert not leaked, f"the token from engineArgs.hf_token was written into {leaked}"
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidEngineArgs")
    assert "hfTokenSecret" in accepted["message"]
    assert token not in json.dumps(ns.models()["leaky"].get("status"))
