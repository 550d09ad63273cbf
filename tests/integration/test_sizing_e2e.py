"""Sizing from the model's own files, on the real control plane: the operator reads config.json
and the weights' header from a Hub and places (or refuses) the model before any pod starts.

The Hub here is a stand-in (tests/unit/hub_standin.py: the Hub's URL layout and error answers on
127.0.0.1), serving tiny Llama-shaped repos the test generates: 4 attention heads, 2 KV heads,
an MLP of 128, bfloat16 safetensors weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.integration.models import (
    GROUP,
    PLURAL,
    VERSION,
    Models,
    models,
    running_operator,
    wait_for,
)
from tests.kube import ClusterHandle
from tests.operator_process import OperatorProcess
from tests.unit.hub_standin import HubStandIn, serve
from tests.unit.test_hub import TINY_PARAMETERS, TOKEN, make_repo

__all__ = ["models"]  # fixture


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandIn]:
    root = tmp_path_factory.mktemp("hub")
    make_repo(root, "acme/tiny-llama")
    make_repo(root, "acme/tiny-gated")
    with serve(HubStandIn(root, gated={"acme/tiny-gated": {TOKEN}})) as running:
        yield running


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterHandle, hub: HubStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator with model facts on, reading them from the stand-in Hub."""
    work: Path = tmp_path_factory.mktemp("operator")
    env = {
        "TRITON_VLLM_MODEL_FACTS": "true",
        "TRITON_VLLM_HF_ENDPOINT": hub.url,
        "TRITON_VLLM_FACTS_CACHE_DIR": str(work / "facts"),
    }
    with running_operator(cluster, work / "operator.log", env) as process:
        yield process


def _deployment(models: Models, name: str) -> client.V1Deployment | None:
    try:
        deployment: client.V1Deployment = models.apps.read_namespaced_deployment(
            name, models.namespace
        )
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise
    return deployment


def test_auto_is_sized_from_the_models_config_and_status_reports_its_facts(
    models: Models, hub: HubStandIn
) -> None:
    models.create("tiny", model="acme/tiny-llama")  # tensorParallelSize auto, no modelSizeGiB
    models.wait_condition("tiny", "Scheduled", "True", "Placed")
    facts = models.wait_condition("tiny", "ModelFacts", "True", "Read")
    assert "4 attention heads, 2 KV heads" in facts["message"]
    status = models.get("tiny")["status"]
    assert status["tensorParallelSize"] == 1
    assert status["model"]["attentionHeads"] == 4 and status["model"]["kvHeads"] == 2
    assert status["model"]["parameters"] == TINY_PARAMETERS
    assert status["model"]["commit"] == hub.commit("acme/tiny-llama")
    deployment = wait_for(lambda: _deployment(models, "tiny"), 30, "the Deployment")
    limits = deployment.spec.template.spec.containers[0].resources.limits
    assert limits["nvidia.com/gpu"] == "1"
    # Read once: the facts are cached for the repo and revision, not fetched per pass.
    configs = [p for p in hub.paths("GET") if p.endswith("/config.json")]
    models.patch_spec("tiny", replicas=2)
    wait_for(lambda: models.get("tiny")["status"].get("replicas") == 2, 30, "2 replicas")
    assert [p for p in hub.paths("GET") if p.endswith("/config.json")] == configs


def test_an_explicit_size_that_does_not_divide_the_heads_is_refused_with_those_that_do(
    models: Models,
) -> None:
    models.create("split", model="acme/tiny-llama", tensorParallelSize=3)
    cond = models.wait_condition("split", "Accepted", "False", "TensorParallelSizeInvalid")
    assert "4 attention heads do not divide by 3" in cond["message"]
    assert "Use tensorParallelSize 1, 2 or 4." in cond["message"]
    models.wait_condition("split", "Ready", "False", "NotAccepted")
    assert _deployment(models, "split") is None
    # The size the message names is accepted.
    models.patch_spec("split", tensorParallelSize=2)
    models.wait_condition("split", "Scheduled", "True", "Placed")
    assert models.get("split")["status"]["tensorParallelSize"] == 2


def test_a_repo_the_hub_does_not_have_is_reasoned_and_the_operator_keeps_running(
    models: Models, operator: OperatorProcess, hub: HubStandIn
) -> None:
    models.create("missing", model="acme/no-such-model")
    cond = models.wait_condition("missing", "Scheduled", "False", "ModelNotFound")
    assert "acme/no-such-model was not found" in cond["message"]
    assert "set spec.modelSizeGiB" in cond["message"]
    models.wait_condition("missing", "ModelFacts", "False", "ModelNotFound")
    assert _deployment(models, "missing") is None
    assert operator.alive

    # Events in between do not ask the Hub again: the lookup waits for its backoff retry.
    def asked() -> int:
        return sum("acme/no-such-model" in path for path in hub.paths())

    before = asked()
    for i in range(20):
        models.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            models.namespace,
            PLURAL,
            "missing",
            {"metadata": {"labels": {"n": str(i)}}},
        )
    time.sleep(1)
    assert asked() - before < 20, hub.paths()[-40:]
    # With a size, the model is placed by it; the failed lookup is still said.
    models.patch_spec("missing", modelSizeGiB=1)
    models.wait_condition("missing", "Scheduled", "True", "Placed")
    facts = models.wait_condition("missing", "ModelFacts", "False", "ModelNotFound")
    assert "Placed by spec.modelSizeGiB (1 GiB) instead" in facts["message"]
    assert wait_for(lambda: _deployment(models, "missing"), 30, "the Deployment")


def _token_secret(models: Models, name: str, token: str) -> None:
    models.core.create_namespaced_secret(
        models.namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={"token": token}),
    )


def test_a_gated_repo_is_sized_with_the_token_of_the_models_secret(
    models: Models, hub: HubStandIn
) -> None:
    _token_secret(models, "hf", TOKEN)
    models.create(
        "gated",
        model="acme/tiny-gated",
        storage={"hfTokenSecret": {"name": "hf", "key": "token"}},
    )
    models.wait_condition("gated", "ModelFacts", "True", "Read")
    models.wait_condition("gated", "Scheduled", "True", "Placed")
    status = models.get("gated")["status"]
    assert status["model"]["attentionHeads"] == 4
    assert status["model"]["commit"] == hub.commit("acme/tiny-gated")
    gated = [r for r in hub.requests if "acme/tiny-gated" in r.path]
    assert {r.authorization for r in gated if r.status == 200} == {f"Bearer {TOKEN}"}
    # The token went to the Hub only: not into the model's status.
    assert TOKEN not in json.dumps(models.get("gated"))


def test_a_missing_token_secret_is_reasoned_until_it_is_created(
    models: Models, operator: OperatorProcess, hub: HubStandIn
) -> None:
    models.create(
        "late",
        model="acme/tiny-gated",
        storage={"hfTokenSecret": {"name": "hf-late", "key": "token"}},
    )
    facts = models.wait_condition("late", "ModelFacts", "False", "TokenSecretNotFound")
    assert f"Secret hf-late in namespace {models.namespace}" in facts["message"]
    assert "does not exist" in facts["message"] and "key token" in facts["message"]
    models.wait_condition("late", "Scheduled", "False", "TokenSecretNotFound")
    assert _deployment(models, "late") is None
    assert operator.alive
    # Secrets are not watched: the lookup's backoff retry finds it.
    _token_secret(models, "hf-late", TOKEN)
    models.wait_condition("late", "ModelFacts", "True", "Read", timeout=90)
    models.wait_condition("late", "Scheduled", "True", "Placed")
    assert models.get("late")["status"]["model"]["kvHeads"] == 2


def test_a_max_model_len_above_the_models_context_is_refused_with_what_it_takes(
    models: Models,
) -> None:
    models.create("long", model="acme/tiny-llama", engineArgs={"max_model_len": 4096})
    cond = models.wait_condition("long", "Accepted", "False", "MaxModelLenAboveModel")
    assert "above the 2048 tokens" in cond["message"] and "at most 2048" in cond["message"]
    models.patch_spec("long", engineArgs={"max_model_len": 2048})
    models.wait_condition("long", "Scheduled", "True", "Placed")
