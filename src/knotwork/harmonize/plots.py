"""Before/after intensity histograms for ``knotwork harmonize apply --plot`` (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_before_after(before: np.ndarray, after: np.ndarray, path: Path, *, title: str = "", bins: int = 128) -> Path:
    """Save side-by-side histograms of a volume before and after harmonization, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, data, name in zip(axes, (before, after), ("before", "after"), strict=True):
        ax.hist(np.asarray(data, dtype=np.float64).ravel(), bins=bins, color="tab:blue")
        ax.set_title(f"{name}: {title}", fontsize=9)
        ax.set_xlabel("intensity")
        ax.set_yscale("log")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
