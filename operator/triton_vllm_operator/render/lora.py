"""Render the download Jobs of a model's Hub LoRA adapters, and where the pods find them."""

from __future__ import annotations

import hashlib
from typing import Any

from ..api import LoraAdapter, TritonVLLMModel
from ..settings import Settings
from .manifests import CACHE_MOUNT
from .prefetch import DEFAULT_REVISION, MAX_NAME, render_download_job

# huggingface_hub's cache under HF_HOME=/cache/huggingface, as the download Job fills it.
HUB_CACHE = f"{CACHE_MOUNT}/huggingface/hub"


def adapter_revision(adapter: LoraAdapter) -> str:
    return adapter.revision or DEFAULT_REVISION


def adapter_job_name(model: TritonVLLMModel, adapter: LoraAdapter) -> str:
    """`<model>-lora-<hash of repo@revision>`: one download per adapter repo and revision."""
    source = f"{adapter.repo}@{adapter_revision(adapter)}"
    suffix = f"-lora-{hashlib.sha256(source.encode()).hexdigest()[:8]}"
    return model.metadata.name[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def render_adapter_job(
    model: TritonVLLMModel, adapter: LoraAdapter, settings: Settings
) -> dict[str, Any]:
    """The Job that downloads a Hub adapter into spec.storage.existingClaim; its program reports
    the adapter's adapter_config.json (rank, base model, target modules) when done."""
    if adapter.repo is None:
        raise ValueError(f"adapter {adapter.name} is a path, not a Hub repo")
    name = adapter_job_name(model, adapter)
    job = render_download_job(model, settings, name, adapter.repo, adapter_revision(adapter))
    job["metadata"]["annotations"]["tritonvllm.io/lora-adapter"] = adapter.name
    return job


def snapshot_path(repo: str, commit: str) -> str:
    """The directory of a downloaded snapshot in the pods (huggingface_hub's cache layout)."""
    return f"{HUB_CACHE}/models--{repo.replace('/', '--')}/snapshots/{commit}"
