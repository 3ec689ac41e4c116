"""Re-estimate BatchNorm statistics after merging (REPAIR's "RESET", as ZipIt! applies to every method)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from knotwork.zipit.stats import first_input

__all__ = ["reset_bn_stats"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def reset_bn_stats(model: nn.Module, loader: Iterable, *, max_batches: int | None = None,
                   progress: bool = False) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance as exact averages over ``loader``.

    Merged features have other means and variances than either parent's, so the folded running statistics are
    wrong; one training-mode pass with ``momentum=None`` (cumulative average) replaces them. Weights are not
    touched (no gradients). The model is modified in place and returned in eval mode.

    Parameters
    ----------
    model : nn.Module
    loader : iterable
        Batches of inputs or (inputs, labels).
    max_batches : int, optional
        Use only the first batches.
    progress : bool
        Show a tqdm bar.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if not bns:
        return model.eval()
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc="BN reset", unit="batch", total=max_batches)
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for b, batch in enumerate(it):
                if max_batches is not None and b >= max_batches:
                    break
                model(first_input(batch))
                seen += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    if seen == 0:
        raise ValueError("the loader yielded no batches; BatchNorm statistics need data")
    return model
