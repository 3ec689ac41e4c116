"""Linear CKA between the activations that tasks' updates produce: the alignment measure of the KnOTS paper."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from knotwork._errors import MergeError
from knotwork.merge.align import knots_align


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centered kernel alignment (Kornblith et al., 2019) of two activation matrices.

    CKA(X, Y) = ||X̃ᵀỸ||_F² / (||X̃ᵀX̃||_F · ||ỸᵀỸ||_F) with column-centred X̃, Ỹ; in [0, 1], invariant to orthogonal
    transforms and isotropic scaling of either side.

    Parameters
    ----------
    x : Tensor of shape (n_samples, p)
    y : Tensor of shape (n_samples, q)
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same samples on both sides; got {x.shape[0]} and {y.shape[0]} rows")
    x = x.double() - x.double().mean(dim=0, keepdim=True)
    y = y.double() - y.double().mean(dim=0, keepdim=True)
    denom = torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)
    if denom == 0:
        return 0.0
    return float(torch.linalg.norm(x.T @ y) ** 2 / denom)


def cka_matrix(activations: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pairwise linear CKA, (n, n), between activation matrices of the same samples."""
    n = len(activations)
    out = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = linear_cka(activations[i], activations[j])
    return out


def is_constant(z: torch.Tensor) -> bool:
    """True when every row of ``z`` is the same (up to rounding): its linear CKA with anything is 0/0, undefined."""
    z = z.double()
    centred = z - z.mean(dim=0, keepdim=True)
    return float(torch.linalg.norm(centred)) <= 1e-12 * float(torch.linalg.norm(z))


def _refuse_constant(activations: Sequence[torch.Tensor], labels: Sequence[str], what: str) -> None:
    for label, z in zip(labels, activations, strict=True):
        if is_constant(z):
            raise MergeError(f"adapter {label}: {what}, so linear CKA is undefined (0/0)")


def update_cka(
    inputs: torch.Tensor,
    factors: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    rel_tol: float = 1e-7,
    strict: bool = False,
    labels: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Task x task CKA of one module's updates, before and after the KnOTS transform.

    Before: Z_i = X ΔW_iᵀ with ΔW_i = B_i A_i. After: Z_i = X V_i, where V_iᵀ is task i's block of the joint SVD's
    right singular vectors (R_i = Σ V_iᵀ). Why V_i and not R_i: ΔW_i = U R_i with orthonormal U, so X R_iᵀ is an
    isometric image of X ΔW_iᵀ and its linear CKA is *identical* to the "before" value; the paper does not publish
    its CKA code, and comparing the tasks' coordinates in the shared basis (the V_i, which KnOTS merges up to the
    shared Σ) is the reading under which the transform can change alignment at all.

    Parameters
    ----------
    inputs : Tensor of shape (n_samples, d_in)
        The module's inputs X on shared data (e.g. the base model's hidden states).
    factors : sequence of (B_i, A_i), with the LoRA scaling folded into B_i
    strict : bool, default False
        Refuse a task whose activations are the same for every input row (a zero update, constant inputs), where
        CKA is 0/0; otherwise such a pair counts as 0.
    labels : sequence of str, optional
        Names of the tasks in the ``strict`` message (default: their indices).

    Returns
    -------
    (before, after) : two Tensors of shape (n_tasks, n_tasks)

    Raises
    ------
    knotwork._errors.MergeError
        With ``strict``, naming the task whose activations are constant.
    """
    x = inputs.double()
    labels = [str(i) for i in range(len(factors))] if labels is None else list(labels)
    zs = [x @ (B.double() @ A.double()).T for B, A in factors]
    if strict:
        for label, (B, A) in zip(labels, factors, strict=True):
            if not torch.count_nonzero(B.double() @ A.double()):
                raise MergeError(f"adapter {label}: the update is zero, so linear CKA is undefined (0/0)")
        _refuse_constant(zs, labels, "the update gives the same output for every input row")
    before = cka_matrix(zs)
    alignment = knots_align(factors, rel_tol=rel_tol, dtype=torch.float64)
    zs = [x @ (rep / alignment.singular_values[:, None]).T for rep in alignment.reps]
    if strict:
        _refuse_constant(zs, labels, "the aligned coordinates give the same output for every input row")
    after = cka_matrix(zs)
    return before, after
