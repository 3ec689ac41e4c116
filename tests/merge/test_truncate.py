"""Rank policy: exact LoRA factors where the merge is low rank; truncation close to the SVD optimum, with the
exact error of what is written (checked against dense computations)."""

from __future__ import annotations

import pytest
import torch

from knotwork.merge import MergeConfig
from knotwork.merge.stream import merge_stream
from knotwork.merge.truncate import factor_module
from tests.merge.helpers import random_factors


def _merged(method, shape=(96, 80), ranks=(4, 8, 6), **params):
    tasks = [random_factors({"m": shape}, r, seed=i) for i, r in enumerate(ranks)]
    pairs = [t["m"] for t in tasks]
    (mod,) = merge_stream(["m"], lambda _: pairs, method=method, config=MergeConfig(**params))
    return mod, torch.cat([A for _, A in pairs]).T


def _dense_error(M, f):
    return float(torch.linalg.matrix_norm(M.double() - f.B.double() @ f.A.double()))


@pytest.mark.parametrize("method", ["ta", "knots-ta", "knots-ties", "knots-dare-ties"])
def test_low_rank_results_are_written_exactly(method):
    mod, _ = _merged(method, topk=30)
    f = factor_module(mod, None)
    M = mod.delta()
    assert f.rank <= 18
    assert _dense_error(M, f) / float(M.norm()) < 1e-6 and f.rel_error < 1e-6


@pytest.mark.parametrize("method", ["ties", "dare", "dare-ties"])
def test_full_rank_results_need_a_rank_and_full_is_exact(method):
    mod, _ = _merged(method, topk=30, drop_rate=0.2)
    with pytest.raises(ValueError, match="needs rank K or 'full'"):
        factor_module(mod, None)
    f = factor_module(mod, "full")
    assert f.rank == 80 and torch.allclose(f.B @ f.A, mod.delta(), rtol=0, atol=1e-7)
    assert f.error < 1e-6 * f.norm


@pytest.mark.parametrize("method, shape", [("ties", (96, 80)), ("dare-ties", (200, 256)), ("ties", (256, 200))])
@pytest.mark.parametrize("rank", [4, 18, 40])
def test_truncation_is_within_one_percent_of_the_svd_optimum_and_reports_its_true_error(method, shape, rank):
    mod, sketch = _merged(method, shape=shape, topk=30, drop_rate=0.3)
    M = mod.delta()
    S = torch.linalg.svdvals(M.double())
    optimum = float(S[rank:].pow(2).sum().sqrt())
    f = factor_module(mod, rank, sketch=sketch)
    true = _dense_error(M, f)
    assert f.rank == rank
    assert true <= 1.01 * optimum, (true, optimum)
    assert f.error == pytest.approx(true, rel=1e-6)
    assert f.kept_energy == pytest.approx(1 - true**2 / float(M.double().norm()) ** 2, rel=1e-6)  # M @ Aᵀ in float32


def test_factored_truncation_is_optimal_and_error_counts_the_output_dtype():
    mod, _ = _merged("knots-ties", topk=30)
    M = mod.delta()
    S = torch.linalg.svdvals(M.double())
    f = factor_module(mod, 5)
    assert _dense_error(M, f) == pytest.approx(float(S[5:].pow(2).sum().sqrt()), rel=1e-5)
    half = factor_module(mod, None, dtype=torch.bfloat16)
    assert half.B.dtype == torch.bfloat16
    assert half.error == pytest.approx(_dense_error(M, half), rel=1e-3) and half.error > 0
