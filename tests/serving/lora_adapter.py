"""Write a LoRA adapter for the tiny test model, in PEFT's file format, to OUT_DIR.

PEFT is not part of the serving environment, so the two files PEFT would save are written here
directly: ``adapter_config.json`` and ``adapter_model.safetensors`` holding ``lora_A`` / ``lora_B``
for every attention and MLP projection, random and large enough to change what the model says.

Run it with the serving environment's python (torch, safetensors); SEED picks the weights (1):
    python tests/serving/lora_adapter.py MODEL_DIR OUT_DIR [SEED]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RANK = 8
PROJECTIONS = {
    "self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}


def projection_shapes(config: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection of a Llama layer."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * head_dim
    return {
        "q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
        "o_proj": (hidden, hidden), "gate_proj": (hidden, inner), "up_proj": (hidden, inner),
        "down_proj": (inner, hidden),
    }  # fmt: skip


def main(model_dir: Path, out_dir: Path, seed: int = 1) -> None:
    import torch
    from safetensors.torch import save_file

    config = json.loads((model_dir / "config.json").read_text())
    shapes = projection_shapes(config)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for block, names in PROJECTIONS.items():
            for name in names:
                fan_in, fan_out = shapes[name]
                prefix = f"base_model.model.model.layers.{layer}.{block}.{name}"
                tensors[f"{prefix}.lora_A.weight"] = torch.randn(RANK, fan_in, generator=generator)
                tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, RANK, generator=generator)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(model_dir),
        "r": RANK,
        "lora_alpha": RANK,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": [name for names in PROJECTIONS.values() for name in names],
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1)
