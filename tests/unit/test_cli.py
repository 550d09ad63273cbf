"""`python -m triton_vllm_operator render`: every manifest offline, clear errors, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.builders import H100, gpu_node, model_dict
from triton_vllm_operator.__main__ import main

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def write(tmp_path: Path, name: str, docs: list[dict]) -> str:  # type: ignore[type-arg]
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def test_render_prints_every_child(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "m.yaml", [model_dict(tensorParallelSize=2)])
    assert main(["render", path]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service"]
    container = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_auto_tp_uses_the_nodes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write(tmp_path, "m.yaml", [model_dict(modelSizeGiB=140)])
    nodes = write(tmp_path, "n.yaml", [{"kind": "List", "items": [gpu_node("h", 8, H100)]}])
    assert main(["render", model, "--nodes", nodes]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert '"tensor_parallel_size": 4' in docs[0]["data"]["model.json"]


def test_auto_tp_without_nodes_says_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", write(tmp_path, "m.yaml", [model_dict()])]) == 1
    assert "pass --nodes FILE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"engineArgs": {"max_modle_len": 1}}, "did you mean 'max_model_len'"),
        ({"engineArgs": {"max_model_len": "long"}}, "engineArgs.max_model_len must be of type int"),
        (
            {"tensorParallelSize": 2, "engineArgs": {"tensor_parallel_size": 4}},
            "conflicts with spec.tensorParallelSize=2",
        ),
        ({"tensorParallelSize": 0}, "spec.tensorParallelSize"),
        ({"replicas": -1}, "spec.replicas: Input should be greater than or equal to 0"),
        ({"triton": {"config": {"backend": "vllm"}}}, "InvalidTritonConfig"),
        ({"tensorParallelSize": 1, "unknownField": 1}, "spec.unknownField: Extra inputs"),
    ],
)
def test_bad_specs_exit_1_with_a_clear_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec: dict,
    error: str,  # type: ignore[type-arg]
) -> None:
    path = write(tmp_path, "m.yaml", [model_dict(**{"tensorParallelSize": 1, **spec})])
    assert main(["render", path]) == 1
    captured = capsys.readouterr()
    assert error in captured.err
    assert captured.out == ""


def test_tp_that_fits_no_node_renders_pending_pods_and_warns_naming_the_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the operator does: the pods exist for a node autoscaler, and the reason is said."""
    model = write(tmp_path, "m.yaml", [model_dict(tensorParallelSize=16)])
    nodes = write(tmp_path, "n.yaml", [gpu_node("h", 8, H100)])
    assert main(["render", model, "--nodes", nodes]) == 0
    out, err = capsys.readouterr()
    assert "warning: NotEnoughGPUs" in err
    assert "On h (8 x NVIDIA-H100-80GB-HBM3, 79 GiB each, 8 free): 8 GPUs < the 16 GPUs" in err
    deployment = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 16


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_render(example: Path, tmp_path: Path) -> None:
    nodes = write(tmp_path, "n.yaml", [gpu_node("h0", 8, H100), gpu_node("h1", 8, H100)])
    result = subprocess.run(
        [sys.executable, "-m", "triton_vllm_operator", "render", str(example), "--nodes", nodes],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    expected = ["ConfigMap", "Deployment", "Service"]
    spec = yaml.safe_load(example.read_text())["spec"]
    if "lora" in spec:
        expected.insert(1, "ConfigMap")  # the adapter list
        hub = [a for a in spec["lora"]["adapters"] if "repo" in a]
        if hub and (spec.get("storage") or {}).get("existingClaim"):
            expected[:0] = ["Job"] * len({(a["repo"], a.get("revision")) for a in hub})
    if (spec.get("storage") or {}).get("prefetch"):
        expected.insert(0, "Job")  # the weights' download, before the adapters'
    autoscaling = spec.get("autoscaling")
    if (autoscaling["maxReplicas"] if autoscaling else spec.get("replicas", 1)) > 1:
        expected.append("PodDisruptionBudget")
    if autoscaling:
        expected.append("ScaledObject")
    if spec.get("nodesPerReplica", 1) > 1:
        # Each replica a group: the ranks' headless Service, then one StatefulSet per replica.
        groups = ["StatefulSet"] * spec.get("replicas", 1)
        at = expected.index("Deployment")
        expected[at : at + 1] = ["Service", *groups]
    assert [d["kind"] for d in docs] == expected


def test_crd_command_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["kind"] == "CustomResourceDefinition"
