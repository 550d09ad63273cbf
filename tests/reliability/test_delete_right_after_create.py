"""A model deleted right after it was created or changed (within ~0.1 s, while the operator is
still handling that) must still go away: its finalizer removed, its children collected."""

from __future__ import annotations

import random
import time

from kubernetes import client

from tests.operator_process import OperatorProcess
from tests.reliability.helpers import GROUP, PLURAL, VERSION, Namespace, body, wait_empty

SPEC = {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 1, "replicas": 0}


def test_models_deleted_right_after_create_or_update_go_away(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    ns = Namespace(api_client, namespace)
    operator.start()
    rng = random.Random(1)
    for i in range(30):
        name = f"d{i}"
        ns.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body(name, SPEC)
        )
        time.sleep(rng.uniform(0, 0.05))
        if rng.random() < 0.5:
            change = {"spec": {"engineArgs": {"max_model_len": 1024}}}
            ns.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, change
            )
            time.sleep(rng.uniform(0, 0.05))
        ns.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def stuck() -> list[str]:
        return [
            f"{name}: finalizers {m['metadata'].get('finalizers')}, deletionTimestamp "
            f"{m['metadata'].get('deletionTimestamp')}"
            for name, m in ns.models().items()
        ]

    wait_empty(stuck, 30, "every deleted model to go")
