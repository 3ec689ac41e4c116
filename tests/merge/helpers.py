"""Random PEFT-format adapters written by hand (independently of knotwork's writer) for the merge tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file


def random_factors(
    shapes: Mapping[str, tuple[int, int]], ranks: Mapping[str, int] | int, *, seed: int, std: float = 0.1
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (B (d_out, r), A (r, d_in))}`` with Gaussian entries."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (d_out, d_in) in shapes.items():
        r = ranks if isinstance(ranks, int) else ranks[name]
        out[name] = (std * torch.randn(d_out, r, generator=g), std * torch.randn(r, d_in, generator=g))
    return out


def write_peft_dir(
    path: Path,
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    r: int,
    alpha: float,
    base_model: str = "tiny-base",
    use_rslora: bool = False,
    rank_pattern: Mapping[str, int] | None = None,
    alpha_pattern: Mapping[str, float] | None = None,
    adapter_name_in_keys: bool = False,
    as_bin: bool = False,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": alpha,
        "use_rslora": use_rslora,
        "rank_pattern": dict(rank_pattern or {}),
        "alpha_pattern": dict(alpha_pattern or {}),
        "target_modules": sorted({n.rsplit(".", 1)[-1] for n in factors}),
        "fan_in_fan_out": False,
        "bias": "none",
        "lora_dropout": 0.0,
    }
    (path / "adapter_config.json").write_text(json.dumps(config))
    tag = ".default" if adapter_name_in_keys else ""
    tensors = {}
    for name, (B, A) in factors.items():
        tensors[f"base_model.model.{name}.lora_A{tag}.weight"] = A.contiguous()
        tensors[f"base_model.model.{name}.lora_B{tag}.weight"] = B.contiguous()
    if as_bin:
        torch.save(tensors, path / "adapter_model.bin")
    else:
        save_file(tensors, str(path / "adapter_model.safetensors"))
    return path
