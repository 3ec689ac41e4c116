"""ConvE scoring over given embeddings (JRRELP's KGLP head) and the filtered rank metrics of link prediction."""

from __future__ import annotations

import torch
from torch import nn

from knotwork._errors import JrrelpError


class ConvEInteraction(nn.Module):
    """ConvE's interaction: score head ``h`` and relation ``r`` against every candidate tail ``t``.

    Dettmers et al., "Convolutional 2D Knowledge Graph Embeddings", AAAI 2018, as adapted by JRRELP
    (Stoica et al., arXiv 2012.04812, ``model/link_prediction_models.py``): ``h`` and ``r`` are reshaped into
    images of the **same width** but possibly different heights, stacked, convolved, projected back to the
    entity size and matched with each tail by a dot product plus a per-tail bias. Unlike stock ConvE (and
    PyKEEN's ``ConvEInteraction``) the entity and relation sizes may differ, which JRRELP needs because R is
    the RE classifier's weight matrix.

    Parameters
    ----------
    entity_dim, relation_dim : int
        Sizes of ``h``/``t`` and of ``r``; both must be multiples of ``width``.
    width : int
        Width of the reshaped images.
    channels : int, default 32
        Convolution filters.
    kernel_size : int, default 3
    input_dropout, feature_dropout, hidden_dropout : float, default 0.2, 0.2, 0.3
        ConvE's three dropouts (on the stacked image, on the feature maps, after the projection).
    batchnorm : {"batch", "running"}, default "batch"
        ``"batch"`` normalises by batch statistics in training, as ConvE does; ``"running"`` keeps the three
        BatchNorm layers in eval mode (running statistics, never updated), so an example's score does not depend on
        the rest of its batch: what exact data-parallel equality needs.

    Examples
    --------
    >>> conv = ConvEInteraction(300, 200, width=10).eval()
    >>> conv(torch.zeros(4, 300), torch.zeros(4, 200), torch.zeros(17, 300)).shape
    torch.Size([4, 17])
    """

    def __init__(
        self,
        entity_dim: int,
        relation_dim: int,
        *,
        width: int,
        channels: int = 32,
        kernel_size: int = 3,
        input_dropout: float = 0.2,
        feature_dropout: float = 0.2,
        hidden_dropout: float = 0.3,
        batchnorm: str = "batch",
    ) -> None:
        super().__init__()
        if batchnorm not in ("batch", "running"):
            raise JrrelpError(f"batchnorm must be 'batch' or 'running', got {batchnorm!r}")
        self.batchnorm = batchnorm
        for name, dim in (("entity_dim", entity_dim), ("relation_dim", relation_dim)):
            if dim % width:
                raise JrrelpError(f"{name}={dim} is not a multiple of width={width}; ConvE reshapes it to (H, width)")
        self.entity_dim, self.relation_dim, self.width = entity_dim, relation_dim, width
        self.entity_height, self.relation_height = entity_dim // width, relation_dim // width
        height = self.entity_height + self.relation_height
        if height < kernel_size or width < kernel_size:
            raise JrrelpError(f"image {height}x{width} is smaller than the {kernel_size}x{kernel_size} kernel")
        self.bn0 = nn.BatchNorm2d(1)
        self.input_drop = nn.Dropout(input_dropout)
        self.conv = nn.Conv2d(1, channels, kernel_size)
        self.bn1 = nn.BatchNorm2d(channels)
        self.feature_drop = nn.Dropout2d(feature_dropout)
        self.flat_dim = channels * (height - kernel_size + 1) * (width - kernel_size + 1)
        self.fc = nn.Linear(self.flat_dim, entity_dim)
        self.hidden_drop = nn.Dropout(hidden_dropout)
        self.bn2 = nn.BatchNorm1d(entity_dim)
        self.train(self.training)

    def train(self, mode: bool = True) -> ConvEInteraction:
        """Set training mode; with ``batchnorm="running"`` the BatchNorm layers stay in eval mode."""
        super().train(mode)
        if self.batchnorm == "running":
            for bn in (self.bn0, self.bn1, self.bn2):
                bn.eval()
        return self

    def hidden(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The query vector ``g(h, r)`` of shape (B, entity_dim)."""
        b = h.shape[0]
        x = torch.cat(
            [h.view(b, 1, self.entity_height, self.width), r.view(b, 1, self.relation_height, self.width)], dim=2
        )  # (B, 1, He + Hr, W)
        x = self.input_drop(self.bn0(x))
        x = self.feature_drop(torch.relu(self.bn1(self.conv(x))))  # (B, C, He + Hr - k + 1, W - k + 1)
        x = self.hidden_drop(self.fc(x.reshape(b, -1)))
        # BatchNorm1d cannot normalise a single example in training mode; PyKEEN skips it there, and so do we.
        if not (self.bn2.training and b == 1):
            x = self.bn2(x)
        return torch.relu(x)

    def forward(
        self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor, t_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores (logits) of every tail for every query.

        Parameters
        ----------
        h : Tensor of shape (B, entity_dim)
        r : Tensor of shape (B, relation_dim)
        t : Tensor of shape (N, entity_dim)
            Candidate tails (JRRELP: the object-node embeddings V_otype).
        t_bias : Tensor of shape (N,), optional

        Returns
        -------
        Tensor of shape (B, N)
        """
        if h.shape[-1] != self.entity_dim or t.shape[-1] != self.entity_dim:
            raise JrrelpError(f"h and t must have {self.entity_dim} features, got {h.shape[-1]} and {t.shape[-1]}")
        if r.shape[-1] != self.relation_dim:
            raise JrrelpError(f"r must have {self.relation_dim} features, got {r.shape[-1]}")
        scores = self.hidden(h, r) @ t.T
        return scores if t_bias is None else scores + t_bias


def filtered_ranks(scores: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Filtered ranks of the true tails (Bordes et al. 2013), with ties broken "realistically".

    Every other known true tail of the same query is removed before ranking; ties with the true tail count
    half, i.e. the mean of the optimistic and pessimistic rank (PyKEEN's ``realistic`` rank).

    Parameters
    ----------
    scores : Tensor of shape (B, N)
        Scores of all candidate tails.
    targets : Tensor of shape (B,), int
        The true tail of each query.
    known : Tensor of shape (B, N), bool
        All tails known true for each query (train, valid and test); the target itself may be included.

    Returns
    -------
    Tensor of shape (B,), float
        1-based ranks.
    """
    rows = torch.arange(scores.shape[0], device=scores.device)
    targets = targets.to(scores.device)
    true = scores[rows, targets].unsqueeze(1)
    others = known.clone()
    others[rows, targets] = False
    candidates = ~others
    candidates[rows, targets] = False
    higher = ((scores > true) & candidates).sum(1)
    ties = ((scores == true) & candidates).sum(1)
    return 1.0 + higher.double() + ties.double() / 2.0


def rank_metrics(ranks: torch.Tensor, ks: tuple[int, ...] = (1, 3, 10)) -> dict[str, float]:
    """MRR, mean rank and Hits@k of 1-based ranks."""
    ranks = ranks.double()
    out = {"mrr": float((1.0 / ranks).mean()), "mr": float(ranks.mean())}
    for k in ks:
        out[f"hits@{k}"] = float((ranks <= k).double().mean())
    return out
