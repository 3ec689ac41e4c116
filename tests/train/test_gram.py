"""The closed-form Gram matrices and subset gradients equal explicit per-sample gradients from torch.func."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from knotwork.train import find_layers, layer_gram, per_sample_gradients, subset_gradient
from knotwork.train.capture import capture
from knotwork.train.gram import _SELF_GRAM_BLOCK, _gram_by_positions, per_sample_from_trace, self_gram

from .conftest import seeded


def _traces(model, x, y):
    with capture(find_layers(model)) as traces:
        F.cross_entropy(model(x), y, reduction="sum").backward()
    return traces


def _oracle_gram(grads, name, module):
    names = [f"{name}.{p}" for p, q in module.named_parameters(recurse=False) if q.requires_grad]
    flat = torch.cat([grads[n].reshape(grads[n].shape[0], -1) for n in names], 1)
    return flat @ flat.T


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_gram_equals_torch_func(model_name, request):
    model = request.getfixturevalue(model_name)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 6, dtype=torch.float64, generator=gen) if model_name == "mlp" else torch.randn(
        7, 2, 7, 7, dtype=torch.float64, generator=gen
    )
    y = torch.randint(0, 3, (7,), generator=gen)
    grads = per_sample_gradients(model, F.cross_entropy, x, y)
    traces = _traces(model, x, y)
    for name, t in traces.items():
        gram = layer_gram(t.inputs, t.grad_outputs, bias=t.has_bias)
        torch.testing.assert_close(gram, _oracle_gram(grads, name, t.module), rtol=1e-10, atol=1e-12)


def test_both_conv_routes_agree(cnn):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 3, (5,), generator=gen)
    t = _traces(cnn, x, y)["conv1"]
    explicit = per_sample_from_trace(t.inputs, t.grad_outputs).reshape(5, -1)
    torch.testing.assert_close(_gram_by_positions(t.inputs, t.grad_outputs), explicit @ explicit.T, rtol=1e-10, atol=1e-12)


def test_linear_on_sequences_sums_over_positions():
    # A Linear applied to (batch, time, features) shares W over positions: g_i = sum_t delta_it x_it^T.
    model = nn.Sequential(nn.Linear(4, 3)).double()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, 4, dtype=torch.float64, generator=gen)
    target = torch.randn(6, 5, 3, dtype=torch.float64, generator=gen)

    def loss(out, tgt):
        return ((out - tgt) ** 2).sum()

    grads = per_sample_gradients(model, loss, x, target)
    with capture(find_layers(model)) as traces:
        loss(model(x), target).backward()
    t = traces["0"]
    torch.testing.assert_close(
        layer_gram(t.inputs, t.grad_outputs, bias=True), _oracle_gram(grads, "0", model[0]), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_subset_gradient_is_weighted_sum_of_per_sample(model_name, request):
    model = request.getfixturevalue(model_name)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 6, dtype=torch.float64, generator=gen) if model_name == "mlp" else torch.randn(
        6, 2, 7, 7, dtype=torch.float64, generator=gen
    )
    y = torch.randint(0, 3, (6,), generator=gen)
    grads = per_sample_gradients(model, F.cross_entropy, x, y)
    w = torch.tensor([0.5, 0.0, 0.25, 0.0, 1.0, 0.0], dtype=torch.float64)
    for name, t in _traces(model, x, y).items():
        wg, bg = subset_gradient(t.module, t.inputs, t.grad_outputs, w)
        torch.testing.assert_close(wg, torch.einsum("p,p...->...", w, grads[f"{name}.weight"]), rtol=1e-10, atol=1e-12)
        if t.module.bias is not None:
            torch.testing.assert_close(bg, torch.einsum("p,p...->...", w, grads[f"{name}.bias"]), rtol=1e-10, atol=1e-12)


def test_gram_with_inplace_activation_equals_torch_func():
    # The output-gradient hook sees the gradient of the Linear's own output, before the in-place ReLU.
    model = seeded(nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 3)).double(), 6)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(9, 6, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 3, (9,), generator=gen)
    grads = per_sample_gradients(model, F.cross_entropy, x, y)
    for name, t in _traces(model, x, y).items():
        gram = layer_gram(t.inputs, t.grad_outputs, bias=t.has_bias)
        torch.testing.assert_close(gram, _oracle_gram(grads, name, t.module), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rows", [7, 2 * _SELF_GRAM_BLOCK, 2 * _SELF_GRAM_BLOCK + 1, 3 * _SELF_GRAM_BLOCK + 37])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_self_gram_is_the_product(rows, dtype):
    a = torch.rand(rows, 50, generator=torch.Generator().manual_seed(rows), dtype=dtype)
    exact = a.double() @ a.double().T
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(self_gram(a).double(), exact, rtol=tol, atol=0)
