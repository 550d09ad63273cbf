"""The GPU stack's lock matches versions.env and keeps what the python backend stub needs."""

from __future__ import annotations

from pathlib import Path

from bench.versions import pinned_versions

ROOT = Path(__file__).resolve().parents[2]


def lock() -> dict[str, str]:
    lines = (ROOT / "hack" / "gpu-requirements.txt").read_text().splitlines()
    pins = (line.split("==") for line in lines if line and not line.startswith("#"))
    return {name: version for name, version in pins}


def test_the_lock_pins_the_versions_of_versions_env() -> None:
    pins, wanted = lock(), pinned_versions()
    assert pins["vllm"] == wanted["VLLM_GPU_VERSION"], "run hack/gpu-env.sh --lock"
    assert pins["nvidia-pytriton"] == wanted["TRITON_PYPI_VERSION"], "run hack/gpu-env.sh --lock"


def test_the_lock_leaves_torch_to_the_machine_and_pins_numpy_1_for_the_stub() -> None:
    pins = lock()
    assert not {"torch", "triton", "torchvision", "torchaudio"} & pins.keys()
    assert not [name for name in pins if name.startswith("nvidia-") and name.endswith("-cu13")]
    assert pins["numpy"].startswith("1.")
    assert pins["protobuf"].startswith("6.")


def test_the_gpu_results_name_their_vllm_when_it_is_not_the_serving_images() -> None:
    from bench.gpu_bench import vllm_version_note

    wanted = pinned_versions()
    note = vllm_version_note()
    if wanted["VLLM_GPU_VERSION"] == wanted["VLLM_VERSION"]:
        assert note == ""
    else:
        assert f"vLLM {wanted['VLLM_GPU_VERSION']}" in note
        assert wanted["VLLM_VERSION"] in note and wanted["TORCH_GPU_VERSION"] in note
