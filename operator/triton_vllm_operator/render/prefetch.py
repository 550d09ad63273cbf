"""Render the prefetch Job: one download of the model's snapshot into the shared cache volume."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from ..api import TritonVLLMModel
from ..settings import Settings
from ..validation import SpecError
from .manifests import CACHE_MOUNT, labels, owner_reference, pod_security_context

DEFAULT_REVISION = "main"
# Kubernetes retries a failed pod with an exponential backoff (10 s, 20 s, 40 s, ... 6 min).
BACKOFF_LIMIT = 6
PROGRESS_SECONDS = 5
PREFETCH_CONTAINER = "prefetch"
MAX_NAME = 63


def prefetch_revision(model: TritonVLLMModel) -> str:
    return model.spec.storage.revision or DEFAULT_REVISION


def prefetch_job_name(model: TritonVLLMModel) -> str:
    """`<model>-prefetch-<hash of repo@revision>`: a new revision gets a new Job."""
    digest = hashlib.sha256(f"{model.spec.model}@{prefetch_revision(model)}".encode()).hexdigest()
    suffix = f"-prefetch-{digest[:8]}"
    return model.metadata.name[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def prefetch_labels(model: TritonVLLMModel) -> dict[str, str]:
    """The model's labels, but a name of its own: the serving selectors never match the Job."""
    return {
        **labels(model),
        "app.kubernetes.io/name": "triton-vllm-prefetch",
        "app.kubernetes.io/component": "model-prefetch",
    }


def prefetch_script() -> str:
    """The Job's program (prefetch_script.py), passed to `python3 -c`."""
    return (resources.files("triton_vllm_operator") / "prefetch_script.py").read_text("utf-8")


def _env(model: TritonVLLMModel) -> list[dict[str, Any]]:
    storage = model.spec.storage
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": f"{CACHE_MOUNT}/huggingface"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        # The program reports progress itself; tqdm's bars would only crowd the log's tail.
        {"name": "HF_HUB_DISABLE_PROGRESS_BARS", "value": "1"},
        {"name": "PREFETCH_PROGRESS_SECONDS", "value": str(PROGRESS_SECONDS)},
    ]
    if storage.endpoint:
        env.append({"name": "HF_ENDPOINT", "value": storage.endpoint})
    if storage.hf_token_secret:
        ref = {"name": storage.hf_token_secret.name, "key": storage.hf_token_secret.key}
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    return env


def _claim(model: TritonVLLMModel) -> str:
    claim = model.spec.storage.existing_claim
    if claim is None:
        raise SpecError(
            "PrefetchNeedsClaim",
            "storage.prefetch downloads into a volume the serving pods share: set "
            "storage.existingClaim.",
        )
    return claim


def render_prefetch_job(model: TritonVLLMModel, settings: Settings) -> dict[str, Any]:
    """A Job that downloads spec.model at its revision into spec.storage.existingClaim."""
    _claim(model)
    if model.spec.model.startswith("/"):
        raise SpecError(
            "PrefetchNeedsRepo",
            f"storage.prefetch downloads a Hub repo; {model.spec.model} is a path in the volume.",
        )
    return render_download_job(
        model, settings, prefetch_job_name(model), model.spec.model, prefetch_revision(model)
    )


def render_download_job(
    model: TritonVLLMModel, settings: Settings, name: str, repo: str, revision: str
) -> dict[str, Any]:
    """A Job that downloads `repo` at `revision` (the model's, or an adapter's) into
    spec.storage.existingClaim, with the model's token and endpoint."""
    spec = model.spec
    claim = _claim(model)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": model.metadata.namespace,
        "labels": prefetch_labels(model),
        "annotations": {
            "tritonvllm.io/model-repo": repo,
            "tritonvllm.io/model-revision": revision,
        },
    }
    if model.metadata.uid:
        metadata["ownerReferences"] = [owner_reference(model)]
    container = {
        "name": PREFETCH_CONTAINER,
        "image": spec.triton.image or settings.triton_image,
        "command": ["python3", "-c", prefetch_script(), repo, revision],
        "env": _env(model),
        "volumeMounts": [
            {"name": "cache", "mountPath": CACHE_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"memory": "2Gi"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "template": {
                "metadata": {"labels": metadata["labels"]},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": [
                        {"name": "cache", "persistentVolumeClaim": {"claimName": claim}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
