"""spec.lora through the pure reconcile pass: adapters listed, refused with a reason, downloaded
by Jobs, and never a pod template change for an adapter change."""

from __future__ import annotations

import json
from typing import Any

from tests.unit.builders import model, model_dict
from tests.unit.test_reconcile import (
    NODES,
    SETTINGS,
    conditions,
    converge,
    empty,
    message,
    stored,
    world,
)
from triton_vllm_operator.api import LoraAdapter
from triton_vllm_operator.lora import check_adapter_config
from triton_vllm_operator.reconcile import Observed, OwnPod, Plan, progress_pod
from triton_vllm_operator.render.prefetch import PROGRESS_SECONDS

CLAIM = {"existingClaim": "models"}
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def path_adapter(name: str) -> dict[str, str]:
    return {"name": name, "path": f"/cache/adapters/{name}"}


def hub_adapter(name: str, repo: str | None = None) -> dict[str, str]:
    return {"name": name, "repo": repo or f"acme/{name}"}


def applied(plan: Plan, kind: str) -> list[dict[str, Any]]:
    return [m for m in plan.apply if m["kind"] == kind]


def adapter_file(plan_or_observed: Plan | Observed) -> dict[str, str]:
    if isinstance(plan_or_observed, Plan):
        (cm,) = [
            m for m in applied(plan_or_observed, "ConfigMap") if "lora" in m["metadata"]["name"]
        ]
    else:
        cm = plan_or_observed.children[("ConfigMap", "llama-lora")]
    result: dict[str, str] = json.loads(cm["data"]["multi_lora.json"])
    return result


def template(observed: Observed) -> dict[str, Any]:
    result: dict[str, Any] = observed.children[("Deployment", "llama")]["spec"]["template"]
    return result


def serving_lora(**lora: Any) -> tuple[dict[str, Any], Observed]:
    body = model_dict(tensorParallelSize=1, lora=lora, storage=CLAIM)
    first = converge(body, empty())
    observed = world(first)
    converge(body, observed)
    return body, observed


def carried_out(observed: Observed, plan: Plan) -> Observed:
    children = dict(observed.children)
    children.update({(m["kind"], m["metadata"]["name"]): stored(m) for m in plan.apply})
    for key in plan.delete:
        children.pop(key, None)
    return Observed(nodes=observed.nodes, pods=observed.pods, children=children)


def edit(body: dict[str, Any], **lora: Any) -> None:
    body["spec"]["lora"] = lora
    body["metadata"]["generation"] += 1


def test_path_adapters_are_listed_in_their_own_configmap_beside_the_engine_config() -> None:
    body, observed = serving_lora(adapters=[path_adapter("sql"), path_adapter("chat")])
    assert adapter_file(observed) == {"chat": "/cache/adapters/chat", "sql": "/cache/adapters/sql"}
    assert conditions(body["status"])["LoraAdapters"] == ("True", "AdaptersListed")
    assert [a["state"] for a in body["status"]["lora"]] == ["Listed", "Listed"]
    volume = template(observed)["spec"]["volumes"][0]
    sources = [s["configMap"]["name"] for s in volume["projected"]["sources"]]
    assert sources == [body["status"]["configMap"], "llama-lora"]
    engine = json.loads(
        observed.children[("ConfigMap", body["status"]["configMap"])]["data"]["model.json"]
    )
    assert (engine["enable_lora"], engine["max_loras"], engine["max_lora_rank"]) == (True, 2, 16)
    assert conditions(body["status"])["Ready"] == ("True", "ModelServing")


def test_adding_and_removing_an_adapter_changes_only_the_adapter_list() -> None:
    body, observed = serving_lora(adapters=[path_adapter("sql"), path_adapter("chat")])
    before = template(observed)
    edit(body, adapters=[path_adapter("sql"), path_adapter("chat"), path_adapter("legal")])
    plan = converge(body, observed)
    # One write: the adapter list; max_loras is not lowered or raised for it (no rollout).
    assert [m["metadata"]["name"] for m in plan.apply] == ["llama-lora"]
    assert adapter_file(plan)["legal"] == "/cache/adapters/legal"
    observed = carried_out(observed, plan)
    assert template(observed) == before
    edit(body, adapters=[path_adapter("legal")])
    plan = converge(body, observed)
    assert [m["metadata"]["name"] for m in plan.apply] == ["llama-lora"]
    assert adapter_file(plan) == {"legal": "/cache/adapters/legal"}
    assert ("Normal", "AdapterRemoved", "LoRA adapter sql is no longer listed.") in plan.events
    assert plan.delete == []  # the adapter list is not a stale config
    observed = carried_out(observed, plan)
    assert template(observed) == before
    assert conditions(body["status"])["Ready"] == ("True", "ModelServing")


def test_max_loras_stays_as_adapters_come_and_go_and_raising_it_rolls_and_says_so() -> None:
    body, observed = serving_lora(adapters=[path_adapter("sql")])
    edit(body, adapters=[path_adapter("sql"), path_adapter("chat"), path_adapter("legal")])
    plan = converge(body, observed)
    assert [m["metadata"]["name"] for m in plan.apply] == ["llama-lora"]
    observed = carried_out(observed, plan)
    edit(body, adapters=[path_adapter("sql")], maxLoras=4)
    plan = converge(body, observed)
    assert {m["kind"] for m in plan.apply} == {"ConfigMap", "Deployment"}
    (event,) = [e for e in plan.events if e[1] == "LoraLimits"]
    assert "max_loras=1" in event[2] and "max_loras=4" in event[2] and "roll" in event[2]


def test_an_explicit_max_loras_holds_any_number_of_adapters_without_a_rollout() -> None:
    body, observed = serving_lora(adapters=[path_adapter("sql")], maxLoras=4)
    edit(body, adapters=[path_adapter(n) for n in ("a", "b", "c", "d", "e")], maxLoras=4)
    plan = converge(body, observed)
    assert [m["metadata"]["name"] for m in plan.apply] == ["llama-lora"]


def test_turning_lora_on_rolls_the_pods_and_says_so() -> None:
    body = model_dict(tensorParallelSize=1, storage=CLAIM)
    observed = world(converge(body, empty()))
    converge(body, observed)
    assert "LoraAdapters" not in conditions(body["status"])
    edit(body, adapters=[path_adapter("sql")])
    plan = converge(body, observed)
    kinds = sorted(m["kind"] for m in plan.apply)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment"]
    assert any(e[1] == "LoraLimits" and "LoRA turns on" in e[2] for e in plan.events)


def test_an_adapter_named_like_the_model_is_refused_and_the_others_still_listed() -> None:
    body, observed = serving_lora(adapters=[path_adapter("llama"), path_adapter("sql")])
    assert adapter_file(observed) == {"sql": "/cache/adapters/sql"}
    assert conditions(body["status"])["LoraAdapters"] == ("False", "AdapterRefused")
    assert "Adapter llama refused (AdapterNameTaken)" in message(body["status"], "LoraAdapters")
    assert conditions(body["status"])["Ready"] == ("True", "ModelServing")


def test_lora_engine_args_are_refused_with_what_to_set_instead() -> None:
    both = model_dict(tensorParallelSize=1, engineArgs={"max_loras": 4}, lora={"adapters": []})
    plan = converge(both, empty())
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidEngineArgs")
    assert "spec.lora.maxLoras" in message(plan.status, "Accepted")
    alone = model_dict(tensorParallelSize=1, engineArgs={"enable_lora": True})
    plan = converge(alone, empty())
    assert conditions(plan.status)["Accepted"] == ("False", "InvalidEngineArgs")
    assert "spec.lora" in message(plan.status, "Accepted")


# --- Hub adapters: downloaded by a Job, checked from its report, then listed -----------------


def job_done(job: dict[str, Any], report: dict[str, Any] | None) -> tuple[Any, list[Any]]:
    """The Job as Complete and its pod with the program's last report as termination message."""
    done = stored(job)
    done["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    name = job["metadata"]["name"]
    terminated = {"exitCode": 0, "message": json.dumps(report)} if report else {"exitCode": 0}
    pod = {
        "metadata": {
            "name": f"{name}-x",
            "labels": {"batch.kubernetes.io/job-name": name},
            "creationTimestamp": "2026-12-07T10:00:00Z",
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [{"state": {"terminated": terminated}}],
        },
    }
    return done, [pod]


def done_report(rank: int = 8, base: str = MODEL, targets: Any = None) -> dict[str, Any]:
    config = {
        "peft_type": "LORA",
        "r": rank,
        "base_model": base,
        "target_modules": targets or ["q_proj", "v_proj"],
    }
    return {
        "event": "done",
        "done": 1,
        "total": 1,
        "commit": "c0ffee" * 6 + "abcd",
        "adapter": config,
    }


def hub_pass(body: dict[str, Any], reports: dict[str, dict[str, Any] | None]) -> Plan:
    """Two passes: the Jobs are created, then they are complete with these reports."""
    first = converge(body, empty())
    jobs = {
        j["metadata"]["annotations"]["tritonvllm.io/lora-adapter"]: j for j in applied(first, "Job")
    }
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    pods: list[Any] = []
    for adapter, report in reports.items():
        job = jobs[adapter]
        children[("Job", job["metadata"]["name"])], job_pods = job_done(job, report)
        pods += job_pods
    return converge(body, empty(children=children, prefetch_pods=pods))


def test_a_hub_adapter_is_downloaded_by_a_job_and_listed_once_checked() -> None:
    body = model_dict(tensorParallelSize=1, storage=CLAIM, lora={"adapters": [hub_adapter("sql")]})
    first = converge(body, empty())
    (job,) = applied(first, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["acme/sql", "main"]
    assert adapter_file(first) == {}  # not in the cache yet: not listed
    assert conditions(first.status)["LoraAdapters"] == ("False", "AdaptersPending")
    plan = hub_pass(body, {"sql": done_report()})
    commit = "c0ffee" * 6 + "abcd"
    path = f"/cache/huggingface/hub/models--acme--sql/snapshots/{commit}"
    assert adapter_file(plan) == {"sql": path}
    assert conditions(plan.status)["LoraAdapters"] == ("True", "AdaptersListed")
    (entry,) = plan.status["lora"]
    assert (entry["state"], entry["rank"], entry["path"]) == ("Listed", 8, path)
    assert ("Normal", "AdapterListed", f"LoRA adapter sql listed at {path}.") in plan.events


def test_an_adapter_of_another_base_model_is_refused_naming_it_while_the_other_loads() -> None:
    adapters = [hub_adapter("sql"), hub_adapter("qwen-chat")]
    body = model_dict(tensorParallelSize=1, storage=CLAIM, lora={"adapters": adapters})
    plan = hub_pass(
        body, {"sql": done_report(), "qwen-chat": done_report(base="Qwen/Qwen2.5-7B-Instruct")}
    )
    assert list(adapter_file(plan)) == ["sql"]
    assert conditions(plan.status)["LoraAdapters"] == ("False", "AdapterRefused")
    text = message(plan.status, "LoraAdapters")
    assert (
        "qwen-chat" in text
        and "Qwen/Qwen2.5-7B-Instruct" in text
        and "Listed to the pods: sql" in text
    )
    assert any(
        e[0] == "Warning" and e[1] == "AdapterRefused" and "qwen-chat" in e[2] for e in plan.events
    )


def test_an_adapter_above_an_explicit_max_lora_rank_is_refused_with_what_to_change() -> None:
    lora = {"adapters": [hub_adapter("sql")], "maxLoraRank": 16}
    body = model_dict(tensorParallelSize=1, storage=CLAIM, lora=lora)
    plan = hub_pass(body, {"sql": done_report(rank=64)})
    assert [entry["state"] for entry in plan.status["lora"]] == ["Refused"]
    assert not [m for m in plan.apply if m["metadata"]["name"] == "llama-lora"]  # still {}
    assert "rank 64, above spec.lora.maxLoraRank 16" in message(plan.status, "LoraAdapters")


def test_without_an_explicit_rank_the_limit_rises_to_hold_the_adapter() -> None:
    body = model_dict(tensorParallelSize=1, storage=CLAIM, lora={"adapters": [hub_adapter("sql")]})
    plan = hub_pass(body, {"sql": done_report(rank=48)})
    (config,) = [m for m in applied(plan, "ConfigMap") if "-config-" in m["metadata"]["name"]]
    assert json.loads(config["data"]["model.json"])["max_lora_rank"] == 64
    assert list(adapter_file(plan)) == ["sql"]


def test_a_repo_without_adapter_config_is_not_a_lora_adapter() -> None:
    body = model_dict(tensorParallelSize=1, storage=CLAIM, lora={"adapters": [hub_adapter("sql")]})
    report = {"event": "done", "done": 1, "total": 1, "commit": "abc"}
    plan = hub_pass(body, {"sql": report})
    assert "has no adapter_config.json" in message(plan.status, "LoraAdapters")


def test_a_hub_adapter_without_a_shared_volume_is_refused_with_what_to_set() -> None:
    body = model_dict(
        tensorParallelSize=1, lora={"adapters": [hub_adapter("sql"), path_adapter("chat")]}
    )
    plan = converge(body, empty())
    assert applied(plan, "Job") == []
    assert adapter_file(plan) == {"chat": "/cache/adapters/chat"}
    assert "spec.storage.existingClaim" in message(plan.status, "LoraAdapters")


def test_target_modules_vllm_does_not_adapt_are_refused_when_the_architecture_is_known() -> None:
    adapter = LoraAdapter(name="odd", repo="acme/odd")
    config = {
        "peft_type": "LORA",
        "r": 8,
        "base_model": MODEL,
        "target_modules": ["q_proj", "router"],
    }
    reason, why = check_adapter_config(model(), adapter, config, "LlamaForCausalLM")
    assert reason == "AdapterTargetsUnsupported" and "router" in why
    assert check_adapter_config(model(), adapter, config, None)[0] is None  # not known: not refused


def test_a_running_adapter_download_shows_its_progress_after_the_weights() -> None:
    lora = {"adapters": [hub_adapter("sql"), hub_adapter("chat")]}
    body = model_dict(tensorParallelSize=1, storage=CLAIM, lora=lora)
    first = converge(body, empty())
    jobs = {
        j["metadata"]["annotations"]["tritonvllm.io/lora-adapter"]: j for j in applied(first, "Job")
    }
    children = {(m["kind"], m["metadata"]["name"]): stored(m) for m in first.apply}
    pods = []
    for adapter in ("sql", "chat"):
        name = jobs[adapter]["metadata"]["name"]
        children[("Job", name)]["status"] = {"active": 1}
        pods.append(OwnPod(f"{name}-x", None, None, job=name, phase="Running"))
    observed = Observed(NODES, [], own_pods=pods, children=children)
    # One log at a time: the first adapter's download (the model's weights would come first).
    assert progress_pod(body, observed, SETTINGS) == pods[0].name
    report = json.dumps({"event": "progress", "done": 3 * 1024**2, "total": 12 * 1024**2})
    observed = Observed(NODES, [], own_pods=pods, children=children, prefetch_log=report)
    plan = converge(body, observed)
    entries = {e["name"]: e for e in plan.status["lora"]}
    assert entries["sql"]["message"] == "Downloading: 3.0 MiB of 12.0 MiB (25%) into models."
    assert entries["chat"]["state"] == "Downloading" and "MiB" not in entries["chat"]["message"]
    assert plan.recheck_after == PROGRESS_SECONDS


def test_two_names_for_one_adapter_repo_share_one_download() -> None:
    lora = {"adapters": [hub_adapter("sql", "acme/sql"), hub_adapter("sql-alias", "acme/sql")]}
    body = model_dict(tensorParallelSize=1, storage=CLAIM, lora=lora)
    assert len(applied(converge(body, empty()), "Job")) == 1
    plan = hub_pass(body, {"sql": done_report()})
    assert list(adapter_file(plan)) == ["sql", "sql-alias"]
    assert len({path for path in adapter_file(plan).values()}) == 1


def test_a_config_old_pods_still_mount_through_the_projected_volume_is_kept() -> None:
    body, observed = serving_lora(adapters=[path_adapter("sql")])
    old = body["status"]["configMap"]
    old_hash = body["status"]["configHash"]
    edit(body, adapters=[path_adapter("sql")], maxLoras=4)
    observed = carried_out(observed, converge(body, observed))
    assert body["status"]["configMap"] != old
    # The old pod still runs: the projected volume hides its ConfigMap's name, its hash does not.
    pod = OwnPod("llama-old", old_hash, None)
    still = Observed(NODES, [], own_pods=[pod], children=observed.children)
    assert ("ConfigMap", old) not in converge(body, still).delete
    gone = Observed(NODES, [], children=observed.children)
    assert converge(body, gone).delete == [("ConfigMap", old)]
