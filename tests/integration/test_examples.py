"""Every manifest in examples/ is accepted by the real API server with the committed CRD, keeps
every field it sets (nothing pruned by the structural schema), and renders offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import ClusterHandle

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD_NAME = "tritonvllmmodels.tritonvllm.io"


@pytest.fixture(scope="module")
def crd(cluster: ClusterHandle) -> None:
    """The CRD from crds/, as `kubectl apply --server-side -f crds/` installs it (force: the
    chart's tests may have left the same CRD owned by a Helm release)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


def _missing(sent: Any, stored: Any, path: str = "spec") -> list[str]:
    """Paths of `sent` that `stored` lacks or changed (the server may add defaults)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path]
        return [m for k, v in sent.items() for m in _missing(v, stored.get(k), f"{path}.{k}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [m for i, v in enumerate(sent) for m in _missing(v, stored[i], f"{path}[{i}]")]
    return [] if sent == stored else [f"{path}: sent {sent!r}, stored {stored!r}"]


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"llama-3.1-8b.yaml", "llama-3.1-70b-auto-tp.yaml"} <= names, names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_api_server_accepts_the_example_and_keeps_every_field(
    cluster: ClusterHandle, crd: None, namespace: str, example: Path
) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert docs and all(d["kind"] == "TritonVLLMModel" for d in docs)
    # Server-side dry run: admission and the CRD's schema and CEL rules, nothing stored.
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example))
    created = cluster.kubectl("create", "-n", namespace, "-f", str(example), "-o", "json").stdout
    stored = json.loads(created)
    items = stored["items"] if stored.get("kind") == "List" else [stored]
    for sent, got in zip(docs, items, strict=True):
        assert got["metadata"]["name"] == sent["metadata"]["name"]
        assert not _missing(sent["spec"], got["spec"]), _missing(sent["spec"], got["spec"])
    cluster.kubectl("delete", "-n", namespace, "-f", str(example), "--wait=false")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_operator_renders_the_example_for_the_simulated_gpu_pool(example: Path) -> None:
    out = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "triton_vllm_operator",
            "render",
            str(example),
            "--nodes",
            str(ROOT / "tests" / "gpu-nodes.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
    spec = yaml.safe_load(example.read_text())["spec"]
    autoscaling = spec.get("autoscaling")
    most = autoscaling["maxReplicas"] if autoscaling else spec.get("replicas", 1)
    budget = ["PodDisruptionBudget"] if most > 1 else []
    scaler = ["ScaledObject"] if autoscaling else []
    adapters = ["ConfigMap"] if "lora" in spec else []  # the LoRA adapter list
    storage = spec.get("storage") or {}
    # Download Jobs: the weights' (prefetch), one per Hub adapter's repo and revision.
    hub = {(a["repo"], a.get("revision")) for a in (spec.get("lora") or {}).get("adapters", [])
           if "repo" in a} if storage.get("existingClaim") else set()  # fmt: skip
    jobs = ["Job"] * (len(hub) + bool(storage.get("prefetch")))
    # A replica over several nodes: its group's StatefulSet and the ranks' headless Service.
    nodes = spec.get("nodesPerReplica", 1)
    pods = ["StatefulSet"] * spec.get("replicas", 1) + ["Service"] if nodes > 1 else ["Deployment"]
    expected = ["ConfigMap", "Service", *pods, *budget, *scaler, *adapters, *jobs]
    assert kinds == sorted(expected)


def test_the_api_server_rejects_a_broken_example(
    cluster: ClusterHandle, crd: None, namespace: str
) -> None:
    """The same check fails when it should: a negative replica count is refused."""
    model = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b.yaml").read_text())
    model["spec"]["replicas"] = -1
    out = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(model),
        check=False,
    )
    assert out.returncode != 0 and "replicas" in out.stderr, out.stderr
