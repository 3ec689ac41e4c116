"""Save a MergeResult as a PEFT adapter or as dense merged weights, with ``merge_report.json`` inside.

Both writers go through :func:`knotwork._io.atomic_dir`: the folder appears whole or not at all, carries the
marker ``.knotwork.json`` (provenance and the list of files written), is replaced with ``force`` only when it is
a previous knotwork output, and is never an input adapter, the base model folder, or a folder around or inside
one of them. ``merge_report.json`` is the report for people: inputs and their sha256, method, parameters, ranks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from knotwork.merge.adapters import LoraAdapter, write_adapter, write_dense_model
from knotwork.merge.api import MergeResult

REPORT_NAME = "merge_report.json"


def merge_report(result: MergeResult, adapters: Sequence[LoraAdapter] = (), **extra: Any) -> dict[str, Any]:
    """The merge report: inputs with their weight files' sha256, method, parameters, per-module ranks, time."""
    import knotwork

    report = {
        "knotwork_version": knotwork.__version__,
        "inputs": [{"path": a.source, "sha256": a.sha256} for a in adapters],
        **result.report(),
    }
    report.update(extra)
    return report


def save_merged_adapter(
    result: MergeResult,
    out_dir: str | os.PathLike[str],
    *,
    base_config: Mapping[str, Any],
    adapters: Sequence[LoraAdapter] = (),
    rank: int | None = None,
    dtype: torch.dtype = torch.float32,
    force: bool = False,
) -> Path:
    """Write the merged update as a PEFT LoRA adapter (scaling folded in) plus ``merge_report.json``.

    KnOTS results are written exactly (B = U, A = R_merged) unless ``rank`` truncates them.

    Raises
    ------
    knotwork._errors.OutputError
        When ``out_dir`` may not be written (see the module docstring).
    """
    factors = result.factors(rank)
    report = merge_report(result, adapters, output_rank=rank)
    return write_adapter(
        out_dir,
        factors,
        base_config=base_config,
        dtype=dtype,
        force=force,
        inputs=[a.source for a in adapters],
        extra_files={REPORT_NAME: json.dumps(report, indent=2) + "\n"},
    )


def save_merged_model(
    result: MergeResult,
    out_dir: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str],
    adapters: Sequence[LoraAdapter] = (),
    fan_in_fan_out: bool = False,
    force: bool = False,
) -> Path:
    """Write base weights + merged updates as a dense safetensors model, plus ``merge_report.json``.

    Raises
    ------
    knotwork._errors.OutputError
        When ``out_dir`` may not be written (see the module docstring).
    """
    report = merge_report(result, adapters, base_model_dir=str(base_dir))
    return write_dense_model(
        out_dir,
        base_dir,
        result.iter_deltas(),
        fan_in_fan_out=fan_in_fan_out,
        force=force,
        inputs=[a.source for a in adapters],
        extra_files={REPORT_NAME: json.dumps(report, indent=2) + "\n"},
    )
