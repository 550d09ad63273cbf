"""The model's download Jobs (weights, then Hub LoRA adapters) as a pass sees them: which one
runs, and whose pod's log tail says how far it got."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .api import TritonVLLMModel
from .observed import Observed
from .render.lora import adapter_job_name
from .render.prefetch import prefetch_job_name
from .settings import Settings


def finished(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


def downloading(observed: Observed, job_name: str, settings: Settings) -> str | None:
    """The running pod of the model's unfinished download Job, if progress is read at all."""
    job = observed.children.get(("Job", job_name))
    if not settings.prefetch_progress or job is None or finished(job):
        return None
    running = [
        p.name
        for p in observed.own_pods
        if p.job == job_name and p.phase == "Running" and not p.terminating
    ]
    return min(running) if running else None


def download_jobs(model: TritonVLLMModel) -> list[str]:
    """The model's download Jobs, the weights' first, then its Hub LoRA adapters'."""
    jobs = [prefetch_job_name(model)] if model.spec.storage.prefetch else []
    adapters = model.spec.lora.adapters if model.spec.lora else []
    return jobs + [adapter_job_name(model, a) for a in adapters if a.repo is not None]


def progress_job(model: TritonVLLMModel, observed: Observed, settings: Settings) -> str | None:
    """The download whose progress a pass reads: one at a time, the weights' first."""
    return next((j for j in download_jobs(model) if downloading(observed, j, settings)), None)


def pods_of_job(observed: Observed, job_name: str) -> list[Mapping[str, Any]]:
    label = ("batch.kubernetes.io/job-name", job_name)
    return [
        p
        for p in observed.prefetch_pods
        if label in ((p.get("metadata") or {}).get("labels") or {}).items()
    ]
