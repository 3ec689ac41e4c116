"""The KnOTS alignment: one SVD per module over all tasks' LoRA updates, exactly and cheaply.

For one module with task updates ΔW_i = B_i A_i (B_i scaled), KnOTS stacks M = [ΔW_1 | ... | ΔW_n] (d_out x n·d_in),
takes a thin SVD M = U Σ Vᵀ and represents task i by R_i = Σ V_iᵀ, the i-th column block of Σ Vᵀ, so ΔW_i = U R_i.

The paper's code builds M densely. Here M = [B_1 .. B_n] · blockdiag(A_1 .. A_n), so two reduced QRs and the SVD of
a small (Σr x Σr) core give the same U, Σ and R_i (up to one sign per component, which no merge method sees):
B = Q_B R_B, A_iᵀ = Q_i P_i, C = R_B · blockdiag(P_1ᵀ .. P_nᵀ) = U_c S V_cᵀ, U = Q_B U_c, R_i = S V_c,iᵀ Q_iᵀ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

DEFAULT_REL_TOL = 1e-7  # fp64 SVD: singular values below 1e-7·σ_max are numerical noise, not task signal


@dataclass(frozen=True)
class Alignment:
    """KnOTS representation of one module.

    Attributes
    ----------
    basis : Tensor of shape (d_out, k)
        The shared orthonormal output basis U.
    singular_values : Tensor of shape (k,)
    reps : list of Tensor of shape (k, d_in)
        R_i = Σ V_iᵀ for each task, so that ΔW_i = basis @ reps[i].
    """

    basis: torch.Tensor
    singular_values: torch.Tensor
    reps: list[torch.Tensor]

    @property
    def rank(self) -> int:
        return self.basis.shape[1]


def _keep(s: torch.Tensor, rel_tol: float) -> int:
    if s.numel() == 0 or s[0] <= 0:
        return 0
    return int((s > rel_tol * s[0]).sum())


def knots_align(
    factors: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    dtype: torch.dtype = torch.float32,
) -> Alignment:
    """Align one module's task updates through the exact QR/core route.

    Parameters
    ----------
    factors : sequence of (B_i, A_i)
        Per task, B_i of shape (d_out, r_i) with the LoRA scaling folded in, and A_i of shape (r_i, d_in).
        Ranks may differ between tasks.
    rel_tol : float, default 1e-7
        Components with σ <= rel_tol · σ_max are dropped (the paper drops σ <= 1e-5 in absolute terms, which can
        discard real signal when updates are small).
    dtype : torch.dtype, default float32
        dtype of the returned basis and representations; the factorisation itself runs in float64.

    Returns
    -------
    Alignment
    """
    if not factors:
        raise ValueError("knots_align needs at least one task")
    d_out, d_in = factors[0][0].shape[0], factors[0][1].shape[1]
    for i, (B, A) in enumerate(factors):
        if B.shape[0] != d_out or A.shape[1] != d_in or B.shape[1] != A.shape[0]:
            raise ValueError(f"task {i}: factors of shapes {tuple(B.shape)} and {tuple(A.shape)} do not fit ({d_out}, {d_in})")
    B_all = torch.cat([B.double() for B, _ in factors], dim=1)  # (d_out, Σr)
    Q_B, R_B = torch.linalg.qr(B_all)  # (d_out, m), (m, Σr)
    if len({A.shape for _, A in factors}) == 1:  # equal ranks: one batched QR of every A_iᵀ
        Q_all, P_all = torch.linalg.qr(torch.stack([A.double().T for _, A in factors]))  # (n, d_in, r), (n, r, r)
        Q_A, P_T = list(Q_all), [P.T for P in P_all]
    else:
        Q_A, P_T = [], []
        for _, A in factors:
            Q_i, P_i = torch.linalg.qr(A.double().T)  # (d_in, m_i), (m_i, r_i)
            Q_A.append(Q_i)
            P_T.append(P_i.T)  # (r_i, m_i)
    core = R_B @ torch.block_diag(*P_T)  # (m, Σm_i)
    U_c, S, Vh_c = torch.linalg.svd(core, full_matrices=False)
    k = _keep(S, rel_tol)
    U_c, S, Vh_c = U_c[:, :k], S[:k], Vh_c[:k]
    # The factorisation ran in float64; the two large products only map its result back to (d_out, k) and
    # (k, d_in), so they run in the output dtype when that is at least float32 (half the cost, same rounding).
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float64
    basis = Q_B.to(work) @ U_c.to(work)  # (d_out, k)
    reps, start = [], 0
    for Q_i in Q_A:
        width = Q_i.shape[1]
        coef = (S[:, None] * Vh_c[:, start : start + width]).to(work)  # (k, m_i)
        reps.append((coef @ Q_i.T.to(work)).to(dtype))  # (k, d_in)
        start += width
    return Alignment(basis=basis.to(dtype), singular_values=S.to(dtype), reps=reps)


def dense_knots_align(
    deltas: Sequence[torch.Tensor], *, rel_tol: float = DEFAULT_REL_TOL, dtype: torch.dtype = torch.float32
) -> Alignment:
    """The paper's route: a full float64 thin SVD of the dense (d_out x n·d_in) stack. Slow; an oracle and baseline.

    Parameters
    ----------
    deltas : sequence of Tensor of shape (d_out, d_in)
    """
    M = torch.cat([d.double() for d in deltas], dim=1)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    k = _keep(S, rel_tol)
    U, S, Vh = U[:, :k], S[:k], Vh[:k]
    d_in = deltas[0].shape[1]
    reps = [(S[:, None] * Vh[:, i * d_in : (i + 1) * d_in]).to(dtype) for i in range(len(deltas))]
    return Alignment(basis=U.to(dtype), singular_values=S.to(dtype), reps=reps)
