"""Before/after intensity histograms for ``knotwork harmonize apply --plot`` (matplotlib, no pyplot state)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from knotwork._io import write_scratch


def save_before_after(before: np.ndarray, after: np.ndarray, path: Path, *, title: str = "", bins: int = 128) -> Path:
    """Save side-by-side histograms (log counts) of a volume before and after harmonization, atomically.

    ``path`` lies in a folder the caller owns (the output folder of ``harmonize apply``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3))
    FigureCanvasAgg(fig)
    for ax, data, name in zip(fig.subplots(1, 2), (before, after), ("before", "after"), strict=True):
        counts, edges = np.histogram(np.asarray(data, dtype=np.float64), bins=bins)
        ax.stairs(np.maximum(counts, 0.5), edges, fill=True)  # 0.5 floor: empty bins stay drawable on a log axis
        ax.set_yscale("log")
        ax.set_title(f"{name}: {title}", fontsize=9)
        ax.set_xlabel("intensity")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=80)
    write_scratch(path, png.getvalue())
    return Path(path)
