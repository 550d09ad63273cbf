"""A Hub LoRA adapter's download Job: its program against the Hub stand-in reports the adapter's
adapter_config.json, and what it reports decides whether the operator lists the adapter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.builders import model
from tests.unit.hub_standin import HubStandIn, serve
from tests.unit.safetensors_files import write_safetensors
from tests.unit.test_prefetch import finish, prefetch, snapshot_dir
from triton_vllm_operator.render.lora import adapter_job_name, render_adapter_job, snapshot_path
from triton_vllm_operator.settings import Settings

BASE = "meta-llama/Llama-3.1-8B-Instruct"


def make_adapter_repo(
    root: Path, repo: str, base: str = BASE, rank: int = 8, targets: tuple[str, ...] = ()
) -> None:
    """A PEFT LoRA adapter repo as `peft` saves one: adapter_config.json and its weights."""
    path = root / repo
    path.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": list(targets or ("q_proj", "v_proj")),
        "task_type": "CAUSAL_LM",
    }
    (path / "adapter_config.json").write_text(json.dumps(config))
    tensors = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": ("F32", (rank, 128)),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": ("F32", (128, rank)),
    }
    write_safetensors(path / "adapter_model.safetensors", tensors)
    (path / "README.md").write_text("an adapter")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubStandIn]:
    make_adapter_repo(tmp_path / "hub", "acme/sql-lora", rank=16)
    (tmp_path / "hub" / "acme" / "plain").mkdir(parents=True)
    (tmp_path / "hub" / "acme" / "plain" / "config.json").write_text("{}")
    with serve(HubStandIn(tmp_path / "hub")) as running:
        yield running


def test_the_adapter_job_reports_what_the_operator_checks(hub: HubStandIn, tmp_path: Path) -> None:
    code, reports = finish(prefetch(hub, tmp_path, repo="acme/sql-lora"))
    assert code == 0, reports
    done = reports[-1]
    assert done["event"] == "done"
    assert done["adapter"] == {
        "peft_type": "LORA",
        "r": 16,
        "base_model": BASE,
        "target_modules": ["q_proj", "v_proj"],
    }
    files = sorted(p.name for p in snapshot_dir(tmp_path, hub, "acme/sql-lora").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    # The termination message, where the operator reads it, fits its 4 KiB.
    assert len((tmp_path / "termination-log").read_text()) < 4096


def test_a_repo_without_adapter_config_reports_no_adapter(hub: HubStandIn, tmp_path: Path) -> None:
    code, reports = finish(prefetch(hub, tmp_path, repo="acme/plain"))
    assert code == 0 and "adapter" not in reports[-1]


def test_the_adapter_job_downloads_with_the_models_token_and_endpoint() -> None:
    spec = {
        "tensorParallelSize": 1,
        "storage": {
            "existingClaim": "models",
            "endpoint": "http://mirror:8080",
            "hfTokenSecret": {"name": "hf", "key": "token"},
        },
        "lora": {"adapters": [{"name": "sql", "repo": "acme/sql-lora", "revision": "v2"}]},
    }
    m = model(**spec)
    adapter = m.spec.lora.adapters[0] if m.spec.lora else None
    assert adapter is not None
    job = render_adapter_job(m, adapter, Settings())
    assert job["metadata"]["name"] == adapter_job_name(m, adapter)
    assert job["metadata"]["name"].startswith("llama-lora-")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["acme/sql-lora", "v2"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_ENDPOINT"]["value"] == "http://mirror:8080"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["persistentVolumeClaim"] == {"claimName": "models"}
    # Where the pods find it: the snapshot the Job filled, in the same volume at /cache.
    assert snapshot_path("acme/sql-lora", "abc") == (
        "/cache/huggingface/hub/models--acme--sql-lora/snapshots/abc"
    )
