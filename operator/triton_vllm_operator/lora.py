"""A model's LoRA adapters, pure: where each stands (downloading, checked, listed to the pods, or
refused and why), the limits they need, and the LoraAdapters condition.

A Hub adapter is downloaded by a Job into the shared cache volume; the Job's program reports the
adapter_config.json it downloaded (rank, base model, target modules), and the adapter is checked
from that report before it is listed: the pods only ever see checked adapters that are in the
cache. An adapter given as a path in the pods is listed as it is (the operator cannot read it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import LORA_RANKS, LoraAdapter, TritonVLLMModel
from .conditions import LORA_ADAPTERS, Verdict
from .prefetch_status import parse_report, progress, termination_message
from .render.lora import adapter_job_name, adapter_revision, render_adapter_job, snapshot_path
from .render.model_files import ENGINE_FILE, LoraLimits, lora_limits
from .settings import Settings

# The modules vLLM applies LoRA to in Llama-style decoder layers, with its packed names.
LLAMA_TARGETS = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    | {"qkv_proj", "gate_up_proj"}
)
SUPPORTED_TARGETS = {
    architecture: LLAMA_TARGETS
    for architecture in (
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
    )
}


@dataclass(frozen=True)
class AdapterState:
    """One adapter as this pass sees it."""

    name: str
    source: str
    state: str  # Listed, Downloading, Refused, Pending
    message: str
    reason: str = ""
    path: str | None = None
    rank: int | None = None

    def status(self) -> dict[str, Any]:
        """Its entry in status.lora."""
        entry: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "state": self.state,
            "message": self.message,
        }
        if self.reason:
            entry["reason"] = self.reason
        if self.path is not None:
            entry["path"] = self.path
        if self.rank is not None:
            entry["rank"] = self.rank
        return entry


def _is_repo_id(name: str) -> bool:
    return bool(name) and not name.startswith(("/", ".", "~")) and name.count("/") == 1


def check_adapter_config(
    model: TritonVLLMModel,
    adapter: LoraAdapter,
    config: Mapping[str, Any],
    architecture: str | None,
) -> tuple[str, str] | tuple[None, str]:
    """(reason, why it is refused), or (None, a note for status) for an adapter that may load."""
    name = adapter.name
    if config.get("error"):
        return "AdapterConfigInvalid", f"{adapter.source}: {config['error']}"
    peft_type = str(config.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        return "NotALoraAdapter", f"{adapter.source} is a {peft_type} adapter; vLLM serves LoRA."
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1 or rank > LORA_RANKS[-1]:
        return "AdapterRankInvalid", (
            f"{adapter.source} has rank {rank!r}; vLLM serves ranks 1 to {LORA_RANKS[-1]}."
        )
    lora = model.spec.lora
    if lora is not None and lora.max_lora_rank is not None and rank > lora.max_lora_rank:
        return "AdapterRankTooLarge", (
            f"{name} has rank {rank}, above spec.lora.maxLoraRank {lora.max_lora_rank}: raise "
            "maxLoraRank (the pods roll to restart the engine) or remove the adapter."
        )
    targets = config.get("target_modules")
    supported = SUPPORTED_TARGETS.get(architecture or "")
    if supported is not None and isinstance(targets, list):
        unsupported = sorted({t for t in targets if str(t).rsplit(".", 1)[-1] not in supported})
        if unsupported:
            return "AdapterTargetsUnsupported", (
                f"{name} adapts {', '.join(unsupported)}, which vLLM does not adapt in "
                f"{architecture} (it adapts {', '.join(sorted(supported))})."
            )
    base = str(config.get("base_model") or "")
    if _is_repo_id(base) and _is_repo_id(model.spec.model):
        if base.lower() != model.spec.model.lower():
            return "AdapterBaseMismatch", (
                f"{name} was trained on {base}, not on spec.model {model.spec.model}: use an "
                "adapter of this model, or remove it."
            )
        return None, f"rank {rank}, base model {base}."
    return None, (
        f"rank {rank}; its base model ({base or 'not given'}) cannot be compared with "
        f"spec.model {model.spec.model}: make sure it is the same model."
    )


def _pods_of(pods: Sequence[Mapping[str, Any]], job: str) -> list[Mapping[str, Any]]:
    label = ("batch.kubernetes.io/job-name", job)
    return [p for p in pods if label in ((p.get("metadata") or {}).get("labels") or {}).items()]


def _condition(job: Mapping[str, Any], kind: str) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _reports(pods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    ordered = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp")))
    return [r for p in ordered if (r := parse_report(termination_message(p)))]


def _hub_state(
    model: TritonVLLMModel,
    adapter: LoraAdapter,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    architecture: str | None,
    log_tail: str | None = None,
) -> AdapterState:
    """A Hub adapter: from its download Job and the report of the Job's pod (and, while it
    runs, the last lines of its log)."""
    claim = model.spec.storage.existing_claim
    source = adapter.source
    job_name = adapter_job_name(model, adapter)
    if claim is None:
        return AdapterState(
            adapter.name,
            source,
            "Refused",
            f"{adapter.name} is a Hub repo, downloaded into a volume the pods share: set "
            "spec.storage.existingClaim, or give the adapter as a path in the pods.",
            "LoraNeedsClaim",
        )
    if job is None:
        return AdapterState(
            adapter.name, source, "Pending", f"Creating Job {job_name} to download it into {claim}."
        )
    reports = _reports(pods)
    if _condition(job, "Complete") or (job.get("status") or {}).get("succeeded"):
        done = next((r for r in reversed(reports) if r.get("event") == "done"), None)
        if done is None:
            return AdapterState(
                adapter.name, source, "Pending", f"Downloaded; reading Job {job_name}'s report."
            )
        config = done.get("adapter")
        if not isinstance(config, dict):
            return AdapterState(
                adapter.name,
                source,
                "Refused",
                f"{source} has no adapter_config.json: it is not a PEFT LoRA adapter.",
                "AdapterConfigMissing",
            )
        rank = config.get("r") if isinstance(config.get("r"), int) else None
        reason, message = check_adapter_config(model, adapter, config, architecture)
        if reason is not None:
            return AdapterState(adapter.name, source, "Refused", message, reason, rank=rank)
        path = snapshot_path(
            str(adapter.repo), str(done.get("commit") or adapter_revision(adapter))
        )
        return AdapterState(adapter.name, source, "Listed", message, path=path, rank=rank)
    failures = [r for r in reports if r.get("event") == "failed"]
    why = failures[-1].get("message") if failures else "see the Job's pods"
    if _condition(job, "Failed"):
        return AdapterState(
            adapter.name,
            source,
            "Refused",
            f"Downloading {source} failed: {why}. Fix that, then delete Job {job_name} to "
            "download again.",
            str(failures[-1].get("reason") if failures else "DownloadFailed"),
        )
    retry = f" (last attempt: {why})" if failures else ""
    report = parse_report(log_tail)
    if report and report.get("event") in ("start", "progress"):
        done, total = _int(report.get("done")), _int(report.get("total"))
        return AdapterState(
            adapter.name,
            source,
            "Downloading",
            f"Downloading: {progress(done, total)} into {claim}{retry}.",
        )
    return AdapterState(
        adapter.name, source, "Downloading", f"Job {job_name} downloads it into {claim}{retry}."
    )


def adapter_states(
    model: TritonVLLMModel,
    children: Mapping[tuple[str, str], Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    architecture: str | None,
    progress_log: tuple[str, str | None] | None = None,
) -> list[AdapterState]:
    """Each adapter of spec.lora, in the spec's order; `progress_log`: the Job whose running
    pod's log tail was read, and that tail."""
    states = []
    for adapter in model.spec.lora.adapters if model.spec.lora else []:
        if adapter.name == model.served_name:
            states.append(
                AdapterState(
                    adapter.name,
                    adapter.source,
                    "Refused",
                    f"{adapter.name} is the base model's own name: rename the adapter.",
                    "AdapterNameTaken",
                )
            )
        elif adapter.path is not None:
            note = "a path in the pods: its adapter_config.json is not checked by the operator."
            states.append(
                AdapterState(adapter.name, adapter.source, "Listed", note, path=adapter.path)
            )
        else:
            job_name = adapter_job_name(model, adapter)
            job = children.get(("Job", job_name))
            tail = progress_log[1] if progress_log and progress_log[0] == job_name else None
            job_pods = _pods_of(pods, job_name)
            states.append(_hub_state(model, adapter, job, job_pods, architecture, tail))
    return states


def lora_verdict(states: Sequence[AdapterState], limits: LoraLimits) -> Verdict:
    """LoraAdapters: True when every adapter is listed; False naming each refused one."""
    listed = [s.name for s in states if s.state == "Listed"]
    refused = [s for s in states if s.state == "Refused"]
    waiting = [s for s in states if s.state in ("Pending", "Downloading")]
    limit_text = f"max_loras={limits.max_loras}, max_lora_rank={limits.max_lora_rank}"
    served = f"Listed to the pods: {', '.join(listed) or 'none'} ({limit_text})."
    if refused:
        why = " ".join(f"Adapter {s.name} refused ({s.reason}): {s.message}" for s in refused)
        return Verdict(LORA_ADAPTERS, "False", "AdapterRefused", f"{why} {served}")
    if waiting:
        what = ", ".join(f"{s.name} ({s.state.lower()})" for s in waiting)
        return Verdict(LORA_ADAPTERS, "False", "AdaptersPending", f"Waiting: {what}. {served}")
    if not states:
        return Verdict(
            LORA_ADAPTERS, "True", "NoAdapters", f"LoRA is on with no adapters ({limit_text})."
        )
    return Verdict(LORA_ADAPTERS, "True", "AdaptersListed", served)


def live_limits(
    deployment: Mapping[str, Any] | None, children: Mapping[tuple[str, str], Mapping[str, Any]]
) -> LoraLimits | None:
    """The LoRA limits of the engine config the live Deployment mounts; None without LoRA."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    for volume in (template.get("spec") or {}).get("volumes") or []:
        if volume.get("name") != "model-repository":
            continue
        sources = (volume.get("projected") or {}).get("sources") or [volume]
        for source in sources:
            name = str((source.get("configMap") or {}).get("name"))
            data = (children.get(("ConfigMap", name)) or {}).get("data") or {}
            if ENGINE_FILE not in data:
                continue
            try:
                engine = json.loads(data[ENGINE_FILE])
            except ValueError:
                return None
            if not engine.get("enable_lora"):
                return None
            return LoraLimits(int(engine.get("max_loras", 1)), int(engine.get("max_lora_rank", 16)))
    return None


def adapter_events(
    old: Sequence[Mapping[str, Any]] | None, new: Sequence[Mapping[str, Any]] | None
) -> list[tuple[str, str, str]]:
    """An Event for each adapter whose state changed between two status.lora lists, and for each
    one no longer declared."""
    before = {str(e.get("name")): e for e in old or []}
    events = []
    for entry in new or []:
        name, state = str(entry.get("name")), entry.get("state")
        previous = before.pop(name, None)
        if previous and (previous.get("state"), previous.get("path")) == (state, entry.get("path")):
            continue
        if state == "Listed":
            where = entry.get("path")
            events.append(("Normal", "AdapterListed", f"LoRA adapter {name} listed at {where}."))
        elif state == "Refused":
            message = entry.get("message")
            events.append(("Warning", "AdapterRefused", f"LoRA adapter {name}: {message}"))
    for name in before:
        events.append(("Normal", "AdapterRemoved", f"LoRA adapter {name} is no longer listed."))
    return events


@dataclass(frozen=True)
class LoraPass:
    """What one reconcile pass does about spec.lora."""

    limits: LoraLimits
    listed: dict[str, str]  # name -> directory, for multi_lora.json
    states: list[AdapterState]
    verdict: Verdict
    jobs: list[dict[str, Any]]  # download Jobs to create
    raised: str | None  # why the limits rise above the live pods' (they roll), if they do


def plan_lora(
    model: TritonVLLMModel,
    children: Mapping[tuple[str, str], Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    architecture: str | None,
    settings: Settings,
    progress_log: tuple[str, str | None] | None = None,
) -> LoraPass | None:
    """The adapters' states, the list the pods follow, the limits and the Jobs to create."""
    lora = model.spec.lora
    if lora is None:
        return None
    states = adapter_states(model, children, pods, architecture, progress_log)
    listed = {s.name: s.path for s in states if s.state == "Listed" and s.path}
    ranks = tuple(s.rank for s in states if s.state == "Listed" and s.rank)
    deployment = children.get(("Deployment", model.metadata.name))
    live = live_limits(deployment, children)
    limits = lora_limits(lora, ranks, live)
    raised = None
    if deployment is not None and live is None:
        raised = (
            f"LoRA turns on with max_loras={limits.max_loras}, max_lora_rank="
            f"{limits.max_lora_rank}: the pods roll to restart the engine."
        )
    elif live is not None and limits != live:
        raised = (
            f"LoRA limits change from max_loras={live.max_loras}, max_lora_rank="
            f"{live.max_lora_rank} to max_loras={limits.max_loras}, max_lora_rank="
            f"{limits.max_lora_rank}: the pods roll to restart the engine."
        )
    jobs: list[dict[str, Any]] = []
    if model.spec.storage.existing_claim is not None:
        for adapter in lora.adapters:
            if adapter.repo is not None and adapter.name != model.served_name:
                job = render_adapter_job(model, adapter, settings)
                name = job["metadata"]["name"]  # one per repo and revision, whatever the names
                if ("Job", name) not in children and name not in [
                    j["metadata"]["name"] for j in jobs
                ]:
                    jobs.append(job)
    return LoraPass(limits, listed, states, lora_verdict(states, limits), jobs, raised)


def read_adapter_config(directory: Path) -> dict[str, Any]:
    """A local adapter's adapter_config.json in the form the download Job reports it."""
    path = directory / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return {"error": f"{path} cannot be read as JSON: {err}"}
    if not isinstance(config, dict):
        return {"error": f"{path} is not a JSON object"}
    return {
        "peft_type": config.get("peft_type"),
        "r": config.get("r"),
        "base_model": config.get("base_model_name_or_path"),
        "target_modules": config.get("target_modules"),
    }


def check_local_adapters(
    model: TritonVLLMModel, root: Path, architecture: str | None
) -> list[tuple[str, str, str]]:
    """Offline checks of the adapters found under `root/<name>/` (e.g. downloaded there with
    `hf download REPO --local-dir ROOT/NAME`): (name, reason, why) of each one refused."""
    refused = []
    for adapter in model.spec.lora.adapters if model.spec.lora else []:
        directory = root / adapter.name
        if not directory.is_dir():
            continue
        config = read_adapter_config(directory)
        reason, why = check_adapter_config(model, adapter, config, architecture)
        if reason is not None:
            refused.append((adapter.name, reason, why))
    return refused
