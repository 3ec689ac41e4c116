"""DBA as an optimizer wrapper: exact agreement with plain steps and with explicit per-sample gradients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from knotwork.train import DBA, per_sample_gradients
from knotwork.train.metrics import METRICS
from knotwork.train.search import SEARCHES


def _data(model_name, n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (n, 6) if model_name == "mlp" else (n, 2, 7, 7)
    return torch.randn(shape, dtype=torch.float64, generator=gen), torch.randint(0, 3, (n,), generator=gen)


OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
}


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("aggregate", ["mean", "sum"])
def test_select_all_equals_plain_optimizer(model_name, opt_name, aggregate, request):
    model = request.getfixturevalue(model_name)
    plain = copy.deepcopy(model)
    x, y = _data(model_name)
    dba = DBA(model, OPTIMIZERS[opt_name](model.parameters()), search="all", aggregate=aggregate)
    opt = OPTIMIZERS[opt_name](plain.parameters())
    for _ in range(3):
        dba.step(lambda: F.cross_entropy(model(x), y, reduction="none"))
        opt.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt.step()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("per_layer", [True, False])
@pytest.mark.parametrize("aggregate", ["mean", "sum"])
def test_written_gradient_is_aggregate_of_selected_per_sample_gradients(mlp, per_layer, aggregate):
    x, y = _data("mlp", n=16, seed=3)
    grads = per_sample_gradients(mlp, F.cross_entropy, x, y)
    # min_size=4: below that the SNR of every pair-minus-one is +inf, a tie broken by index order.
    dba = DBA(
        mlp, torch.optim.SGD(mlp.parameters(), lr=0.0), metric="snr", per_layer=per_layer, aggregate=aggregate, min_size=4
    )
    # lr=0 keeps the parameters, so .grad can be compared with the oracle after the step.
    captured = {}
    dba.optimizer.step = lambda: captured.update({n: p.grad.clone() for n, p in mlp.named_parameters()})
    dba.step(lambda: F.cross_entropy(mlp(x), y, reduction="none"))
    sizes = dba.history[-1].sizes
    if not per_layer:
        assert len(set(sizes.values())) == 1
    for name in ("0", "2"):
        # Recover the subset from the record by re-running the search on the oracle Gram matrix.
        flat = torch.cat([grads[f"{name}.weight"].flatten(1), grads[f"{name}.bias"]], 1)
        gram = (flat @ flat.T).numpy()
        if not per_layer:
            flat0 = torch.cat([grads["0.weight"].flatten(1), grads["0.bias"], grads["2.weight"].flatten(1), grads["2.bias"]], 1)
            gram = (flat0 @ flat0.T).numpy()
        subset = SEARCHES["backward"](gram, METRICS["snr"], min_size=4)
        assert len(subset) == sizes[name] and 4 <= len(subset) < len(y)
        denom = len(subset) if aggregate == "mean" else len(y)
        expected = grads[f"{name}.weight"][subset].sum(0) / denom
        torch.testing.assert_close(captured[f"{name}.weight"], expected, rtol=1e-9, atol=1e-12)


def test_random_composition_keeps_sizes_and_changes_samples(mlp):
    x, y = _data("mlp", n=30, seed=4)
    a, b = copy.deepcopy(mlp), copy.deepcopy(mlp)
    chosen = DBA(a, torch.optim.SGD(a.parameters(), lr=0.0), metric="snr")
    random = DBA(b, torch.optim.SGD(b.parameters(), lr=0.0), metric="snr", random_composition=True, seed=0)
    chosen.step(lambda: F.cross_entropy(a(x), y, reduction="none"))
    random.step(lambda: F.cross_entropy(b(x), y, reduction="none"))
    assert chosen.history[0].sizes == random.history[0].sizes
    assert min(chosen.history[0].sizes.values()) < 30  # otherwise the comparison below says nothing
    assert not torch.allclose(a[0].weight.grad, b[0].weight.grad)


def test_history_and_subset_sizes(mlp):
    x, y = _data("mlp", n=20, seed=5)
    dba = DBA(mlp, torch.optim.SGD(mlp.parameters(), lr=0.05), metric="variance", min_size=4)
    for _ in range(3):
        dba.step(lambda: F.cross_entropy(mlp(x), y, reduction="none"))
    sizes = dba.subset_sizes()
    # Minimising the variance greedily always reaches the floor: a smaller subset can always be tighter.
    assert set(sizes) == {"0", "2"} and all(np.array_equal(v, [4, 4, 4]) for v in sizes.values())
    rec = dba.history[-1]
    assert all(rec.score_selected[k] <= rec.score_pool[k] for k in rec.score_pool)


def test_frozen_unsupported_module_is_allowed():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    model[1].requires_grad_(False)
    dba = DBA(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 2, (8,))
    dba.step(lambda: F.cross_entropy(model(x), y, reduction="none"))
    assert set(dba.layers) == {"0", "2"}


def test_refuses_unsupported_trainable_layer():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"module '1' \(BatchNorm1d\) has trainable parameters \['weight', 'bias'\]"):
        DBA(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_refuses_grouped_conv():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2))
    with pytest.raises(ValueError, match="Conv2d '0' has groups=2"):
        DBA(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_refuses_parameter_missing_from_optimizer(mlp):
    with pytest.raises(ValueError, match=r"parameter '2.weight' is trainable but not held by the optimizer"):
        DBA(mlp, torch.optim.SGD(mlp[0].parameters(), lr=0.1))


def test_refuses_shared_layer():
    layer = nn.Linear(3, 3)
    model = nn.Sequential(layer, nn.Tanh(), layer)
    dba = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match="layer '0' ran 2 times in one forward pass"):
        dba.step(lambda: F.cross_entropy(model(x), y, reduction="none"))


def test_refuses_mean_loss(mlp):
    dba = DBA(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1))
    x, y = _data("mlp")
    with pytest.raises(ValueError, match=r"1-D tensor of per-sample losses; got \(\)"):
        dba.step(lambda: F.cross_entropy(mlp(x), y))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "loss"}, "unknown DBA metric 'loss'"),
        ({"search": "beam"}, "unknown DBA search 'beam'"),
        ({"aggregate": "median"}, "The 'aggregate' parameter of DBA must be one of"),
        ({"min_size": 0}, "The 'min_size' parameter of DBA must be an int >= 1. Got 0"),
        ({"min_size": 5, "max_size": 2}, "The 'max_size' parameter of DBA must be None or an int >= min_size"),
    ],
)
def test_parameter_validation(mlp, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DBA(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1), **kwargs)
