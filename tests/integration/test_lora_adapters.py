"""spec.lora on the real control plane: adapters added and removed through the CR reach the pods'
adapter list with no rollout; a bad adapter is refused with the reason while the others are
listed; a Hub adapter is listed once its download Job has put it in the shared volume.

kwok runs no containers: for the Hub adapters the test runs each download Job's own program
(its command and environment, read from the Job) against the Hub stand-in, and writes its exit
into the pod's status as the kubelet would (tests/integration/test_prefetch_e2e.py does the same
for the model's weights).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.models import Models, models, operator, wait_for
from tests.integration.test_prefetch_e2e import (
    HOLD_IMAGE,
    _as_kubelet_the_container_ended,
    _run_as_the_pod,
    _shared_claim,
)
from tests.unit.hub_standin import HubStandIn, serve
from tests.unit.test_lora_prefetch import BASE, make_adapter_repo

__all__ = ["models", "operator"]  # fixtures


def adapter_list(models: Models, name: str) -> dict[str, str] | None:
    try:
        cm = models.core.read_namespaced_config_map(f"{name}-lora", models.namespace)
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise
    listed: dict[str, str] = json.loads(cm.data["multi_lora.json"])
    return listed


def path_adapter(name: str) -> dict[str, str]:
    return {"name": name, "path": f"/cache/adapters/{name}"}


def rollout_state(models: Models, name: str) -> tuple[Any, ...]:
    """What a rollout would change: the Deployment's generation and template, the pods."""
    deployment = models.apps.read_namespaced_deployment(name, models.namespace)
    pods = sorted(
        (p.metadata.name, p.metadata.labels["pod-template-hash"]) for p in models.pods(name)
    )
    template = client.ApiClient().sanitize_for_serialization(deployment.spec.template)
    return deployment.metadata.generation, json.dumps(template, sort_keys=True), pods


def test_adapters_added_and_removed_through_the_cr_reach_the_pods_without_a_rollout(
    models: Models,
) -> None:
    models.create(
        "chat",
        tensorParallelSize=1,
        lora={"adapters": [path_adapter("sql"), path_adapter("legal")], "maxLoras": 4},
    )
    models.wait_condition("chat", "Ready", "True", timeout=90)
    models.wait_condition("chat", "LoraAdapters", "True", "AdaptersListed")
    assert adapter_list(models, "chat") == {
        "legal": "/cache/adapters/legal",
        "sql": "/cache/adapters/sql",
    }
    # The pods mount the list beside model.json, where the backend follows it.
    (pod,) = models.pods("chat")
    (volume,) = [v for v in pod.spec.volumes if v.name == "model-repository"]
    sources = [s.config_map.name for s in volume.projected.sources]
    assert sources[1] == "chat-lora"
    before = rollout_state(models, "chat")

    models.patch_spec(
        "chat", lora={"adapters": [path_adapter("sql"), path_adapter("support")], "maxLoras": 4}
    )
    wait_for(
        lambda: (
            adapter_list(models, "chat")
            == {"sql": "/cache/adapters/sql", "support": "/cache/adapters/support"}
        ),
        30,
        "the adapter list to follow the CR",
    )
    wait_for(
        lambda: (
            [a["name"] for a in models.get("chat")["status"].get("lora", [])] == ["sql", "support"]
        ),
        30,
        "status.lora to follow",
    )
    models.wait_condition("chat", "Ready", "True")
    assert rollout_state(models, "chat") == before
    reasons = {e.reason for e in models.events("chat")}
    assert {"AdapterListed", "AdapterRemoved"} <= reasons

    models.patch_spec("chat", lora={"adapters": [], "maxLoras": 4})
    wait_for(lambda: adapter_list(models, "chat") == {}, 30, "an empty adapter list")
    models.wait_condition("chat", "LoraAdapters", "True", "NoAdapters")
    assert rollout_state(models, "chat") == before


def test_a_bad_adapter_is_refused_with_the_reason_and_the_others_are_listed(
    models: Models,
) -> None:
    models.create(
        "base",
        tensorParallelSize=1,
        lora={
            "adapters": [
                path_adapter("sql"),
                {"name": "base", "path": "/cache/adapters/x"},  # the model's own name
                {"name": "hub", "repo": "acme/sql-lora"},  # no shared volume to download into
            ]
        },
    )
    cond = models.wait_condition("base", "LoraAdapters", "False", "AdapterRefused")
    assert "Adapter base refused (AdapterNameTaken)" in cond["message"]
    assert "Adapter hub refused (LoraNeedsClaim)" in cond["message"]
    assert "spec.storage.existingClaim" in cond["message"]
    assert adapter_list(models, "base") == {"sql": "/cache/adapters/sql"}
    models.wait_condition("base", "Ready", "True", timeout=90)
    states = {a["name"]: a["state"] for a in models.get("base")["status"]["lora"]}
    assert states == {"sql": "Listed", "base": "Refused", "hub": "Refused"}
    warnings = [e for e in models.events("base") if e.reason == "AdapterRefused"]
    assert warnings and all(e.type == "Warning" for e in warnings)


def test_a_malformed_adapter_is_refused_by_the_api_server(models: Models) -> None:
    with pytest.raises(client.ApiException) as refused:
        models.create(
            "twice",
            lora={"adapters": [{"name": "sql", "repo": "acme/sql", "path": "/cache/sql"}]},
        )
    assert refused.value.status == 422
    assert "exactly one source" in str(refused.value.body)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubStandIn]:
    make_adapter_repo(tmp_path / "hub", "acme/sql-lora", rank=8)
    make_adapter_repo(tmp_path / "hub", "acme/qwen-lora", base="Qwen/Qwen2.5-7B-Instruct")
    with serve(HubStandIn(tmp_path / "hub")) as running:
        yield running


def test_hub_adapters_are_listed_once_downloaded_and_checked(
    models: Models, hub: HubStandIn, tmp_path: Path
) -> None:
    volume = _shared_claim(models)
    try:
        models.create(
            "hubbed",
            model=BASE,
            tensorParallelSize=1,
            triton={"image": HOLD_IMAGE},
            storage={"existingClaim": "models", "endpoint": hub.url},
            lora={
                "adapters": [
                    {"name": "sql", "repo": "acme/sql-lora"},
                    {"name": "qwen", "repo": "acme/qwen-lora"},
                ]
            },
        )
        batch = client.BatchV1Api(models.custom.api_client)
        jobs = wait_for(
            lambda: (
                (items := batch.list_namespaced_job(models.namespace).items)
                and len(items) == 2
                and items
            ),
            30,
            "the two adapter download Jobs",
        )
        cond = models.wait_condition("hubbed", "LoraAdapters", "False", "AdaptersPending")
        assert "sql (" in cond["message"] and "qwen (" in cond["message"]
        assert adapter_list(models, "hubbed") == {}  # nothing is listed before it is cached
        for job in jobs:
            selector = f"batch.kubernetes.io/job-name={job.metadata.name}"

            def running(selector: str = selector) -> client.V1Pod | None:
                pods = models.core.list_namespaced_pod(models.namespace, label_selector=selector)
                return next((p for p in pods.items if p.status.phase == "Running"), None)

            pod = wait_for(running, 30, f"the pod of {job.metadata.name} Running")
            termination = tmp_path / f"termination-{job.metadata.name}"
            process = _run_as_the_pod(job, tmp_path / "cache", termination)
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, (out, err)
            _as_kubelet_the_container_ended(models.core, pod, 0, termination.read_text())

        commit = hub.commit("acme/sql-lora")
        path = f"/cache/huggingface/hub/models--acme--sql-lora/snapshots/{commit}"
        wait_for(
            lambda: adapter_list(models, "hubbed") == {"sql": path},
            60,
            "sql listed at its snapshot",
        )
        cond = models.wait_condition("hubbed", "LoraAdapters", "False", "AdapterRefused")
        assert "qwen was trained on Qwen/Qwen2.5-7B-Instruct" in cond["message"]
        entries = {a["name"]: a for a in models.get("hubbed")["status"]["lora"]}
        assert (entries["sql"]["state"], entries["sql"]["rank"]) == ("Listed", 8)
        assert (entries["qwen"]["state"], entries["qwen"]["reason"]) == (
            "Refused",
            "AdapterBaseMismatch",
        )
    finally:
        models.core.delete_persistent_volume(volume)
