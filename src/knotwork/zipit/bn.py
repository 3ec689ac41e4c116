"""Re-estimate BatchNorm statistics after merging (REPAIR's "RESET", as ZipIt! applies to every method)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from knotwork._errors import ZipitError
from knotwork._progress import as_callback
from knotwork.zipit.stats import Progress, batch_count, first_input, model_device

__all__ = ["reset_bn_stats"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def reset_bn_stats(model: nn.Module, loader: Iterable, *, max_batches: int | None = None,
                   progress: Progress = False) -> nn.Module:
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
    progress : bool or callable, default=False
        True for a bar on stderr, or a callable given the number of batches just finished.

    The batches are moved to the model's device.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if not bns:
        return model.eval()
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    device = model_device(model)
    update, close = as_callback(progress, total=batch_count(loader, max_batches), desc="BN reset", unit="batch")
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for b, batch in enumerate(loader):
                if max_batches is not None and b >= max_batches:
                    break
                model(first_input(batch).to(device))
                seen += 1
                update(1)
    finally:
        close()
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    if seen == 0:
        raise ZipitError("the loader yielded no batches; BatchNorm statistics need data")
    return model
