"""One reconcile pass with the model's facts (or the reason there are none), without a cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.builders import L4, gpu_node, model_dict
from tests.unit.model_dirs import snapshot
from tests.unit.test_reconcile import NOW, conditions, empty, message, stored, world
from triton_vllm_operator.facts_lookup import FactsLookup
from triton_vllm_operator.hub import ModelNotFound, NeedsToken
from triton_vllm_operator.model_facts import ModelFacts, ModelFactsError, facts_from_dir
from triton_vllm_operator.placement import FactsQuery
from triton_vllm_operator.reconcile import (
    Observed,
    OwnPod,
    Plan,
    needs_facts,
    plan_reconcile,
    progress_pod,
)
from triton_vllm_operator.render.prefetch import PROGRESS_SECONDS
from triton_vllm_operator.settings import Settings

SETTINGS = Settings()
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
LLAMA = "meta-llama/Llama-3.1-8B"


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelFacts]:
    into: Path = tmp_path_factory.mktemp("models")
    return {
        QWEN: facts_from_dir(snapshot("Qwen2.5-0.5B-Instruct", into)),
        LLAMA: facts_from_dir(snapshot("Llama-3.1-8B", into)),
    }


def plan(body: dict[str, Any], observed: Observed, settings: Settings = SETTINGS) -> Plan:
    result = plan_reconcile(body, observed, settings, NOW)
    body["status"] = result.status
    return result


def gpu_limit(result: Plan) -> Any:
    deployment = next(m for m in result.apply if m["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"
    ]


def test_auto_takes_the_smallest_size_the_facts_allow_and_status_reports_them(
    facts: dict[str, ModelFacts],
) -> None:
    result = plan(model_dict(model=QWEN), empty(facts=facts[QWEN]))
    assert result.status["tensorParallelSize"] == 1  # one GPU, not the 8-GPU node
    assert gpu_limit(result) == 1
    assert conditions(result.status)["Scheduled"] == ("True", "Placed")
    assert conditions(result.status)["ModelFacts"] == ("True", "Read")
    assert "14 attention heads" in message(result.status, "ModelFacts")
    reported = result.status["model"]
    assert reported["attentionHeads"] == 14 and reported["kvHeads"] == 2
    assert reported["maxContext"] == 32768 and reported["dtype"] == "bfloat16"
    assert reported["parameters"] > 400_000_000


def test_more_pipeline_stages_than_layers_are_not_accepted(facts: dict[str, ModelFacts]) -> None:
    body = model_dict(model=QWEN, tensorParallelSize=1, nodesPerReplica=32)
    result = plan(body, empty(facts=facts[QWEN]))
    assert result.apply == []
    assert conditions(result.status)["Accepted"] == ("False", "TooManyPipelineStages")
    assert "32 pipeline stages" in message(result.status, "Accepted")
    assert "24 layers" in message(result.status, "Accepted")


def test_an_explicit_size_vllm_cannot_split_the_model_over_is_not_accepted(
    facts: dict[str, ModelFacts],
) -> None:
    result = plan(model_dict(model=QWEN, tensorParallelSize=3), empty(facts=facts[QWEN]))
    assert result.apply == []
    assert conditions(result.status)["Accepted"] == ("False", "TensorParallelSizeInvalid")
    text = message(result.status, "Accepted")
    assert "14 attention heads" in text and "Use tensorParallelSize 1 or 2." in text
    assert conditions(result.status)["Ready"] == ("False", "NotAccepted")
    assert result.status["model"]["attentionHeads"] == 14
    assert any(e[0] == "Warning" and e[1] == "TensorParallelSizeInvalid" for e in result.events)


def test_a_max_model_len_that_fits_no_gpu_is_refused_with_the_largest_that_fits(
    facts: dict[str, ModelFacts],
) -> None:
    l4_only = [gpu_node("gpu-l4-0", 1, L4)]
    result = plan(model_dict(model=LLAMA), empty(nodes=l4_only, facts=facts[LLAMA]))
    assert result.apply == []
    assert conditions(result.status)["Scheduled"] == ("False", "MaxModelLenTooLong")
    assert "largest max_model_len that fits is 26624" in message(result.status, "Scheduled")
    fits = plan(
        model_dict(model=LLAMA, engineArgs={"max_model_len": 16384}),
        empty(nodes=l4_only, facts=facts[LLAMA]),
    )
    assert fits.status["tensorParallelSize"] == 1
    assert conditions(fits.status)["Scheduled"] == ("True", "Placed")


def test_a_max_model_len_above_the_models_own_context_is_not_accepted(
    facts: dict[str, ModelFacts],
) -> None:
    body = model_dict(model=QWEN, engineArgs={"max_model_len": 65536})
    result = plan(body, empty(facts=facts[QWEN]))
    assert conditions(result.status)["Accepted"] == ("False", "MaxModelLenAboveModel")
    assert "at most 32768" in message(result.status, "Accepted")


def test_an_explicit_size_the_estimate_rejects_is_rendered_as_asked_with_a_warning(
    facts: dict[str, ModelFacts],
) -> None:
    l4_only = [gpu_node("gpu-l4-0", 1, L4)]
    result = plan(
        model_dict(model=LLAMA, tensorParallelSize=1), empty(nodes=l4_only, facts=facts[LLAMA])
    )
    assert gpu_limit(result) == 1
    assert conditions(result.status)["Scheduled"] == ("True", "Placed")
    text = message(result.status, "Scheduled")
    assert "tensorParallelSize=1 is used as set, though the memory estimate" in text
    assert "largest max_model_len that fits is 26624" in text
    deployment = next(m for m in result.apply if m["kind"] == "Deployment")
    affinity = str(deployment["spec"]["template"]["spec"].get("affinity"))
    assert "nvidia.com/gpu.memory" not in affinity  # no floor the user did not ask for
    # A Warning Event says it, once: with the template that carries it.
    warned = [e for e in result.events if e[1] == "TensorParallelSizeBelowEstimate"]
    assert [e[0] for e in warned] == ["Warning"] and "26624" in warned[0][2]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ModelNotFound("acme/gone was not found at the Hub: check spec.model."), "ModelNotFound"),
        (NeedsToken("acme/gated is gated at the Hub."), "HubTokenRequired"),
    ],
)
def test_a_failed_lookup_falls_back_to_model_size_and_says_so(
    error: ModelFactsError, reason: str
) -> None:
    result = plan(model_dict(modelSizeGiB=16), empty(facts=error))
    assert result.status["tensorParallelSize"] == 1
    assert conditions(result.status)["Scheduled"] == ("True", "Placed")
    assert conditions(result.status)["ModelFacts"] == ("False", reason)
    assert "Placed by spec.modelSizeGiB (16 GiB) instead" in message(result.status, "ModelFacts")
    assert "Looked up again when the spec changes" in message(result.status, "ModelFacts")
    assert result.status.get("model") is None


def test_a_failed_lookup_with_auto_and_no_size_places_nothing_and_says_what_to_set() -> None:
    error = ModelNotFound("acme/gone was not found at the Hub: check spec.model.")
    result = plan(model_dict(model="acme/gone"), empty(facts=error))
    assert result.apply == []
    assert conditions(result.status)["Scheduled"] == ("False", "ModelNotFound")
    text = message(result.status, "Scheduled")
    assert "acme/gone was not found" in text and "set spec.modelSizeGiB" in text
    assert conditions(result.status)["Ready"] == ("False", "Unschedulable")
    assert "Retried with backoff" in message(result.status, "ModelFacts")


def test_a_gated_model_without_a_token_secret_is_told_to_name_one() -> None:
    body = model_dict(modelSizeGiB=16)
    text = "acme/gated is gated at the Hub: set spec.storage.hfTokenSecret."
    result = plan(body, empty(facts=NeedsToken(text)))
    assert conditions(result.status)["ModelFacts"] == ("False", "HubTokenRequired")
    assert text in message(result.status, "ModelFacts")


def test_a_path_model_with_auto_and_no_size_says_to_set_the_size() -> None:
    result = plan(model_dict(model="/cache/models/tiny"), empty())
    assert result.apply == []
    assert conditions(result.status)["Scheduled"] == ("False", "ModelSizeUnknown")
    text = message(result.status, "Scheduled")
    assert "is a path in the cache volume" in text and "spec.modelSizeGiB" in text
    assert "ModelFacts" not in conditions(result.status)


def test_facts_are_looked_up_only_for_a_hub_model_that_needs_placing(
    facts: dict[str, ModelFacts],
) -> None:
    body = model_dict(model=QWEN, storage={"revision": "v1"})
    assert needs_facts(body, empty(), SETTINGS) == FactsQuery(QWEN, "v1", None)
    mirror = Settings(hf_endpoint="http://mirror.local")
    assert needs_facts(body, empty(), mirror) == FactsQuery(QWEN, "v1", "http://mirror.local")
    assert needs_facts(body, empty(), Settings(model_facts=False)) is None
    assert needs_facts(model_dict(model="/cache/models/tiny"), empty(), SETTINGS) is None
    # Once its Deployment runs, the placement is kept: no lookup, the facts stay in status.
    first = plan(body, empty(facts=facts[QWEN]))
    observed = world(first)
    plan(body, observed)
    assert needs_facts(body, observed, SETTINGS) is None
    again = plan_reconcile(body, observed, SETTINGS, "later")
    assert again.apply == [] and again.events == []
    assert again.status["model"] == first.status["model"]
    assert conditions(again.status)["ModelFacts"] == ("True", "Read")


class _Cache:
    """A FactsCache stand-in that fails until told otherwise."""

    def __init__(self, facts: ModelFacts) -> None:
        self.calls = 0
        self.fail = True
        self._facts = facts

    def facts(
        self, repo: str, revision: str | None, endpoint: str | None, token: str | None = None
    ) -> ModelFacts:
        self.calls += 1
        if self.fail:
            raise ModelNotFound(f"{repo} was not found")
        return self._facts


def test_a_failed_lookup_is_held_until_its_retry_is_due(facts: dict[str, ModelFacts]) -> None:
    now = [0.0]
    cache = _Cache(facts[QWEN])
    lookup = FactsLookup(SETTINGS, cache=cache, clock=lambda: now[0])  # type: ignore[arg-type]
    key, query = ("ml", "qwen"), FactsQuery(QWEN, None, None)
    first = lookup.lookup(key, query)
    assert first.failed and first.fresh and cache.calls == 1
    lookup.hold(key, 5.0)
    now[0] = 4.0
    held = lookup.lookup(key, query)
    assert held.failed and not held.fresh and cache.calls == 1  # events in between: no query
    assert lookup.lookup(key, FactsQuery(QWEN, "v2", None)).fresh  # a new revision is asked
    lookup.hold(key, 5.0)
    now[0] = 10.0
    cache.fail = False
    found = lookup.lookup(key, query)
    assert found.fresh and not found.failed and found.found is facts[QWEN]


PREFETCH = {"existingClaim": "models", "prefetch": True}


def _job_done(job: dict[str, Any], condition: str = "Complete") -> dict[str, Any]:
    done = stored(job)
    done["status"] = {
        "succeeded": 1 if condition == "Complete" else 0,
        "conditions": [{"type": condition, "status": "True"}],
    }
    return done


def test_prefetch_runs_a_job_and_renders_the_deployment_only_once_cached() -> None:
    body = model_dict(tensorParallelSize=1, storage=PREFETCH)
    first = plan(body, empty())
    kinds = [m["kind"] for m in first.apply]
    assert "Job" in kinds and "Deployment" not in kinds
    assert conditions(first.status)["Cached"] == ("False", "Pending")
    assert conditions(first.status)["Ready"] == ("False", "Caching")
    (job,) = [m for m in first.apply if m["kind"] == "Job"]
    assert job["metadata"]["ownerReferences"][0]["name"] == "llama"
    # The Job runs: it is not applied again, and the Deployment still waits.
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    running = plan(body, empty(children=children))
    assert [m["kind"] for m in running.apply] == []
    assert conditions(running.status)["Cached"] == ("False", "Downloading")
    # Complete: the Deployment is rendered, and Cached says so.
    children[("Job", job["metadata"]["name"])] = _job_done(job)
    cached = plan(body, empty(children=children))
    assert [m["kind"] for m in cached.apply] == ["Deployment"]
    assert conditions(cached.status)["Cached"] == ("True", "Downloaded")
    assert conditions(cached.status)["Ready"] == ("False", "Deploying")


def test_a_failed_prefetch_says_so_and_keeps_the_deployment_back() -> None:
    body = model_dict(tensorParallelSize=1, storage=PREFETCH)
    first = plan(body, empty())
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    (job,) = [m for m in first.apply if m["kind"] == "Job"]
    children[("Job", job["metadata"]["name"])] = _job_done(job, "Failed")
    failed = plan(body, empty(children=children))
    assert conditions(failed.status)["Cached"] == ("False", "DownloadFailed")
    assert "delete Job" in message(failed.status, "Cached")
    assert not [m for m in failed.apply if m["kind"] == "Deployment"]


def test_prefetch_of_a_path_model_is_not_accepted() -> None:
    result = plan(
        model_dict(model="/cache/models/tiny", tensorParallelSize=1, storage=PREFETCH), empty()
    )
    assert conditions(result.status)["Accepted"] == ("False", "PrefetchNeedsRepo")
    assert result.apply == []


def test_facts_and_cached_go_from_status_when_the_spec_no_longer_asks_for_them(
    facts: dict[str, ModelFacts],
) -> None:
    body = model_dict(model=QWEN, tensorParallelSize=1, storage=PREFETCH)
    plan(body, empty(facts=facts[QWEN]))
    assert {"ModelFacts", "Cached"} <= set(conditions(body["status"]))
    body["spec"] = {"model": "/cache/models/qwen", "tensorParallelSize": 1}
    after = plan(body, empty())
    assert "ModelFacts" not in conditions(after.status)
    assert "Cached" not in conditions(after.status)
    assert after.status.get("model") is None


def test_a_failed_prefetch_says_why_from_the_failed_pods_termination_message() -> None:
    body = model_dict(tensorParallelSize=1, storage=PREFETCH)
    first = plan(body, empty())
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    (job,) = [m for m in first.apply if m["kind"] == "Job"]
    name = job["metadata"]["name"]
    children[("Job", name)] = _job_done(job, "Failed")
    report = '{"event": "error", "reason": "HubTokenRequired", "message": "the repo is gated"}'
    failed_pod = {
        "metadata": {"name": f"{name}-x", "labels": {"batch.kubernetes.io/job-name": name}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 1, "message": report}}}],
        },
    }
    other = {
        **failed_pod,
        "metadata": {"name": "o", "labels": {"batch.kubernetes.io/job-name": "o"}},
    }
    failed = plan(body, empty(children=children, prefetch_pods=[failed_pod, other]))
    assert conditions(failed.status)["Cached"] == ("False", "HubTokenRequired")
    assert "the repo is gated" in message(failed.status, "Cached")


def test_prefetch_starts_while_no_node_fits_yet() -> None:
    body = model_dict(storage=PREFETCH)  # auto without a size: nothing placed
    result = plan(body, empty(nodes=[]))
    assert [m["kind"] for m in result.apply] == ["Job"]
    assert conditions(result.status)["Scheduled"][0] == "False"
    assert conditions(result.status)["Cached"] == ("False", "Pending")


def _prefetch_pod(job: str, phase: str = "Running") -> OwnPod:
    return OwnPod(f"{job}-x7k2p", None, None, job=job, phase=phase)


def test_a_running_download_shows_its_progress_and_is_looked_at_again_until_it_ends() -> None:
    gib = 1024**3
    body = model_dict(tensorParallelSize=1, storage=PREFETCH)
    first = plan(body, empty())
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    (job,) = [m for m in first.apply if m["kind"] == "Job"]
    name = job["metadata"]["name"]
    children[("Job", name)]["status"] = {"active": 1}
    pod = _prefetch_pod(name)
    observed = empty(children=children, own_pods=[pod])
    assert progress_pod(body, observed, SETTINGS) == pod.name  # whose log the operator reads
    report = json.dumps({"event": "progress", "done": 3 * gib, "total": 12 * gib})
    running = plan(body, empty(children=children, own_pods=[pod], prefetch_log=report))
    assert conditions(running.status)["Cached"] == ("False", "Downloading")
    assert message(running.status, "Cached").startswith("Downloading: 3.0 GiB of 12.0 GiB (25%)")
    assert running.recheck_after == PROGRESS_SECONDS
    later = json.dumps({"event": "progress", "done": 6 * gib, "total": 12 * gib})
    again = plan(body, empty(children=children, own_pods=[pod], prefetch_log=later))
    assert "6.0 GiB of 12.0 GiB (50%)" in message(again.status, "Cached")
    assert not again.events  # the status is rewritten, but no Event per report
    # A pod not started yet: its start is an event of its own, no re-check is needed.
    waiting = empty(children=children, own_pods=[_prefetch_pod(name, "Pending")])
    assert progress_pod(body, waiting, SETTINGS) is None
    assert plan(body, waiting).recheck_after is None
    # Progress turned off: no log read, no re-check.
    off = Settings(prefetch_progress=False)
    assert progress_pod(body, observed, off) is None
    assert plan(body, observed, off).recheck_after is None
    # Done: nothing left to look at.
    children[("Job", name)] = _job_done(job)
    done = empty(children=children, own_pods=[pod])
    assert progress_pod(body, done, SETTINGS) is None
    assert plan(body, done).recheck_after is None
