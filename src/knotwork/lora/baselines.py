"""The baselines an adapter must beat on validation: the majority class and a linear probe on frozen embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from knotwork._errors import MergeError

#: L2 strength of the probe's weights, per example (the loss is mean cross-entropy + l2/2 * ||W||^2 on
#: standardised features; sklearn's ``LogisticRegression(C=1 / (n * l2))``). Chosen on SST-2, TREC and SICK
#: validation among 1e-4, 1e-3 and 1e-2 (the best on all three; docs/lora.md), so the probe is no strawman.
PROBE_L2 = 1e-2


def majority_accuracy(train_labels: Sequence[int], val_labels: Sequence[int]) -> float:
    """Accuracy on `val_labels` of always predicting the most frequent training label (lowest id on a tie).

    Examples
    --------
    >>> majority_accuracy([0, 1, 1], [1, 1, 0, 1])
    0.75
    """
    if not len(train_labels) or not len(val_labels):
        raise MergeError("majority_accuracy needs at least one training and one validation label.")
    counts = torch.bincount(torch.as_tensor(list(train_labels)))
    majority = int(counts.argmax())
    return sum(1 for y in val_labels if y == majority) / len(val_labels)


def fit_logistic_regression(x: Tensor, y: Tensor, n_classes: int, *, l2: float = PROBE_L2, max_iter: int = 500
                            ) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression by L-BFGS: ``(W (d, C), b (C,))`` minimising
    ``mean_i CE(x_i W + b, y_i) + l2 / 2 * ||W||^2`` (the bias is not penalised), in float64.

    The same objective as ``sklearn.linear_model.LogisticRegression(C=1 / (n * l2))``.
    """
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise MergeError(f"fit_logistic_regression needs x (n, d) and y (n,); got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    x, y = x.double(), y.long()
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def linear_probe_accuracy(train_x: Tensor, train_y: Sequence[int], val_x: Tensor, val_y: Sequence[int],
                          n_classes: int, *, l2: float = PROBE_L2) -> float:
    """Validation accuracy of a logistic-regression probe fitted on frozen training embeddings.

    Features are standardised with the training mean and standard deviation, then `fit_logistic_regression`.
    """
    mean, std = train_x.double().mean(0), train_x.double().std(0, correction=0).clamp_min(1e-8)
    w, b = fit_logistic_regression((train_x.double() - mean) / std, torch.as_tensor(list(train_y)), n_classes, l2=l2)
    pred = (((val_x.double() - mean) / std) @ w + b).argmax(1)
    return float((pred == torch.as_tensor(list(val_y))).double().mean())
