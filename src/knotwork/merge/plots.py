"""Plots for merging (outside the algorithms): CKA heatmaps before and after the KnOTS transform."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def render_cka_heatmaps(before: np.ndarray, after: np.ndarray, names: Sequence[str]) -> bytes:
    """Two side-by-side task x task heatmaps (shared 0..1 colour scale), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(names), 2.5 + 0.5 * len(names)), constrained_layout=True)
    for ax, mat, title in zip(axes, (before, after), ("LoRA updates", "after KnOTS"), strict=True):
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{title} (mean off-diag {(mat.sum() - np.trace(mat)) / max(1, mat.size - len(mat)):.2f})")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w" if mat[i, j] < 0.6 else "k", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="linear CKA")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def save_cka_heatmaps(
    before: np.ndarray,
    after: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write :func:`render_cka_heatmaps` to ``path`` through :func:`knotwork._io.write_bytes`.

    Atomic, with the report ``<name>.knotwork.json`` beside it; an existing file is replaced only with ``force``
    and only when knotwork wrote it; ``path`` may not be one of ``inputs``.
    """
    from knotwork._io import write_bytes

    return write_bytes(Path(path), render_cka_heatmaps(before, after, names), inputs=inputs, force=force)
