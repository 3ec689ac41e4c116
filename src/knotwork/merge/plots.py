"""Plots for merging (outside the algorithms): CKA heatmaps before and after the KnOTS transform."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def save_cka_heatmaps(before: np.ndarray, after: np.ndarray, names: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """Two side-by-side task x task heatmaps (shared 0..1 colour scale), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
