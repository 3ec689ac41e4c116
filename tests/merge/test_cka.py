"""Linear CKA against the HSIC definition with explicit kernel matrices, and its invariances."""

from __future__ import annotations

import torch

from knotwork.merge.cka import cka_matrix, linear_cka, update_cka
from tests.merge.helpers import random_factors


def _hsic_cka(x, y):
    n = x.shape[0]
    H = torch.eye(n, dtype=torch.float64) - 1.0 / n
    K, L = x.double() @ x.double().T, y.double() @ y.double().T
    hsic = lambda a, b: torch.trace(a @ H @ b @ H)  # noqa: E731
    return float(hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L)))


def test_linear_cka_equals_kernel_definition():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 5, generator=g), torch.randn(30, 7, generator=g)
    y = y + x @ torch.randn(5, 7, generator=g)
    assert abs(linear_cka(x, y) - _hsic_cka(x, y)) < 1e-12


def test_cka_invariances():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    assert abs(linear_cka(x, 3.0 * x @ q) - 1.0) < 1e-12
    m = cka_matrix([x, x @ q, torch.randn(40, 6, generator=g)])
    assert torch.allclose(m, m.T) and torch.all(m.diag() == 1)


def test_update_cka_before_and_after_match_direct_computation():
    # After KnOTS, ΔW_i = U Σ V_iᵀ with orthonormal U, so V_iᵀ = Σ⁻¹ Uᵀ ΔW_i; a dense SVD is an independent route.
    pairs = [random_factors({"m": (20, 16)}, r, seed=s)["m"] for s, r in ((2, 3), (3, 4), (4, 2))]
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    deltas = [B.double() @ A.double() for B, A in pairs]
    before, after = update_cka(x, pairs)
    torch.testing.assert_close(before, cka_matrix([x @ d.T for d in deltas]))
    U, S, _ = torch.linalg.svd(torch.cat(deltas, dim=1), full_matrices=False)
    keep = S > 1e-7 * S[0]
    U, S = U[:, keep], S[keep]
    torch.testing.assert_close(after, cka_matrix([x @ ((U.T @ d) / S[:, None]).T for d in deltas]))
    # With Σ kept (Z_i = X R_iᵀ) CKA could not move: U is an isometry.
    torch.testing.assert_close(before, cka_matrix([x @ (U.T @ d).T for d in deltas]))
    assert not torch.allclose(before, after)  # the transform changes what CKA sees
