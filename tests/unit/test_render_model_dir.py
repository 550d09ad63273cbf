"""`render FILE --nodes NODES --model DIR`: tensor parallelism from a local model snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.builders import H100, L4, gpu_node, model_dict
from tests.unit.model_dirs import snapshot
from triton_vllm_operator.__main__ import main

H200 = ("NVIDIA-H200", 143771)


def render(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    snapshot_name: str,
    nodes: list[dict[str, Any]] | None,
    **spec: Any,
) -> tuple[int, list[dict[str, Any]], str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    model_file = tmp_path / "model.yaml"
    model_file.write_text(yaml.safe_dump(model_dict(**spec)))
    args = ["render", str(model_file), "--model", str(snapshot(snapshot_name, tmp_path))]
    if nodes is not None:
        nodes_file = tmp_path / "nodes.yaml"
        nodes_file.write_text(yaml.safe_dump({"kind": "List", "items": nodes}))
        args += ["--nodes", str(nodes_file)]
    code = main(args)
    out = capsys.readouterr()
    return code, list(yaml.safe_load_all(out.out)) if code == 0 else [], out.err


def engine_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return json.loads(docs[0]["data"]["model.json"])  # type: ignore[no-any-return]


def test_small_model_gets_one_gpu_of_a_big_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, docs, _ = render(tmp_path, capsys, "Qwen2.5-0.5B-Instruct", [gpu_node("h200-0", 8, H200)])
    assert code == 0
    assert engine_config(docs)["tensor_parallel_size"] == 1


def test_70b_is_sized_to_four_h100s_from_its_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = [gpu_node("h100-0", 8, H100), gpu_node("l4-0", 1, L4)]
    code, docs, _ = render(tmp_path, capsys, "Llama-3.1-70B-Instruct", nodes)
    assert code == 0
    assert engine_config(docs)["tensor_parallel_size"] == 4
    container = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_8b_on_an_l4_needs_a_shorter_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = render(tmp_path, capsys, "Llama-3.1-8B", [gpu_node("l4-0", 1, L4)])
    assert code == 1
    assert "error: MaxModelLenTooLong: llama: On l4-0 (1 x NVIDIA-L4, 22 GiB each" in err
    assert "set spec.engineArgs.max_model_len to at most 26624" in err

    code, docs, _ = render(
        tmp_path / "short",
        capsys,
        "Llama-3.1-8B",
        [gpu_node("l4-0", 1, L4)],
        engineArgs={"max_model_len": 16384},
    )
    assert code == 0
    assert engine_config(docs)["tensor_parallel_size"] == 1


def test_tensor_parallel_size_the_heads_do_not_divide_by_is_refused_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = render(tmp_path, capsys, "Qwen2.5-0.5B-Instruct", None, tensorParallelSize=3)
    assert code == 1
    assert "error: TensorParallelSizeInvalid: llama: Qwen2.5-0.5B-Instruct has 14 attention" in err
    assert "cannot split it over 3 GPUs" in err and "Use tensorParallelSize 1 or 2" in err


def test_missing_snapshot_is_an_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tmp_path / "model.yaml"
    model_file.write_text(yaml.safe_dump(model_dict(tensorParallelSize=1)))
    assert main(["render", str(model_file), "--model", str(tmp_path / "nowhere")]) == 1
    assert "error: ModelConfigMissing" in capsys.readouterr().err
