"""The Hugging Face token reaches the pods only by secretKeyRef: its value never appears in a
ConfigMap, the model's status or metadata, an Event, a Deployment, or the operator's log."""

from __future__ import annotations

import json
import uuid

from kubernetes import client

from tests.operator_process import OperatorProcess
from tests.reliability.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Namespace,
    body,
    conditions,
    gpu_nodes,
    wait_for,
)


def test_hf_token_is_never_copied_out_of_its_secret(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    token = f"hf_RELIABILITYTEST{uuid.uuid4().hex}"
    ns = Namespace(api_client, namespace)
    ns.core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="hf"), string_data={"token": token}),
    )
    with gpu_nodes(1, gpus=1) as product:
        operator.start()
        spec = {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "tensorParallelSize": 1,
            "gpu": {"product": product},
            "storage": {"size": "10Gi", "hfTokenSecret": {"name": "hf", "key": "token"}},
            "env": [{"name": "HF_HUB_OFFLINE", "value": "0"}],
        }
        ns.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body("gated", spec)
        )
        wait_for(
            lambda: conditions(ns.models()["gated"]).get("Ready", {}).get("status") == "True",
            60,
            "the model to be Ready",
        )
        # The pods get it by reference.
        deployment = ns.apps.read_namespaced_deployment("gated", namespace)
        env = {e.name: e for e in deployment.spec.template.spec.containers[0].env}
        ref = env["HF_TOKEN"].value_from.secret_key_ref
        assert (ref.name, ref.key, env["HF_TOKEN"].value) == ("hf", "token", None)

        places = {
            "model (status, metadata, annotations)": json.dumps(ns.models()["gated"]),
            "ConfigMaps": json.dumps(
                [api_client.sanitize_for_serialization(c) for c in _all_configmaps(ns)]
            ),
            "Deployments": json.dumps(
                [
                    api_client.sanitize_for_serialization(d)
                    for d in ns.apps.list_namespaced_deployment(namespace).items
                ]
            ),
            "Events": json.dumps(
                [
                    api_client.sanitize_for_serialization(e)
                    for e in ns.core.list_namespaced_event(namespace).items
                ]
            ),
            "operator log": operator.log_path.read_text(errors="replace"),
        }
        assert "gated" in places["Events"] and "gated ModelServing" in places["operator log"]
        for where, text in places.items():
            assert token not in text, f"the HF token leaked into {where}"
            assert token[3:] not in text, f"the HF token leaked into {where}"


def _all_configmaps(ns: Namespace) -> list[client.V1ConfigMap]:
    items: list[client.V1ConfigMap] = ns.core.list_namespaced_config_map(ns.name).items
    return items
