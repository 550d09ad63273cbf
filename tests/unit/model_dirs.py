"""Model snapshot directories for tests: the real configs under data/model_configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.unit.safetensors_files import qwen2_tensors, write_safetensors

CONFIGS = Path(__file__).parent / "data" / "model_configs"


def snapshot(name: str, into: Path) -> Path:
    """A copy of a real model's config files; Qwen2.5-0.5B also gets its weights' header."""
    target = into / name
    shutil.copytree(CONFIGS / name, target)
    if name.startswith("Qwen2.5-0.5B"):
        config = json.loads((target / "config.json").read_text())
        write_safetensors(target / "model.safetensors", qwen2_tensors(config), data=False)
    return target
