"""model.json loading: unknown engine arguments fail the load with a suggestion."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.engine_config import EngineConfigError, load_engine_config

ACCEPTED = {"model", "dtype", "max_model_len", "gpu_memory_utilization", "tensor_parallel_size"}


def write(tmp_path: Path, content: object) -> Path:
    text = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / "model.json").write_text(text)
    return tmp_path


def test_valid_config_loads(tmp_path: Path) -> None:
    config = {"model": "/models/tiny", "dtype": "float32"}
    assert load_engine_config(write(tmp_path, config), ACCEPTED) == config


def test_unknown_key_is_named_with_a_close_match(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError) as err:
        load_engine_config(write(tmp_path, {"model": "m", "max_model_length": 5}), ACCEPTED)
    assert "unknown key 'max_model_length'" in str(err.value)
    assert "did you mean 'max_model_len'" in str(err.value)


def test_every_unknown_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError) as err:
        load_engine_config(write(tmp_path, {"model": "m", "zzz": 1, "dtyp": "x"}), ACCEPTED)
    assert "'zzz'" in str(err.value) and "did you mean 'dtype'" in str(err.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("{oops", "not valid JSON"), ("[]", "JSON object"), ({"dtype": "float32"}, "'model'")],
)
def test_malformed_files_are_explained(tmp_path: Path, content: object, fragment: str) -> None:
    with pytest.raises(EngineConfigError, match=fragment):
        load_engine_config(write(tmp_path, content), ACCEPTED)


def test_missing_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="missing"):
        load_engine_config(tmp_path, ACCEPTED)
