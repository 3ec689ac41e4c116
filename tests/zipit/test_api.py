"""zip_models end to end on tiny models: exact recoveries, baselines, partial zips, BN reset and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from knotwork._errors import ZipitError
from knotwork.zipit import (
    Ensemble,
    MultiHeadModel,
    UnsupportedOperationError,
    fold_models,
    reset_bn_stats,
    trace_feature_graph,
    weight_matching,
    zip_models,
)
from knotwork.zipit.models import MLP

from .helpers import loader_for, permuted_copy, tiny_resnet, tiny_vgg


@pytest.fixture(scope="module")
def resnet_pair():
    model = tiny_resnet(0)
    loader = loader_for((8, 3, 8, 8), n_batches=2)
    graph = trace_feature_graph(model, loader[0])
    other, perms = permuted_copy(model, graph, seed=1)
    return model, other, loader, graph, perms


def test_permuted_copy_is_the_same_function(resnet_pair):
    model, other, loader, _, _ = resnet_pair
    with torch.no_grad():
        torch.testing.assert_close(other(loader[0]), model(loader[0]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["zipit", "permute", "rebasin"])
def test_zipping_a_permuted_copy_at_beta_zero_reproduces_the_model(resnet_pair, method):
    model, other, loader, _, _ = resnet_pair
    kwargs = {"beta": 0.0} if method == "zipit" else {}
    merged = zip_models([model, other], loader, method=method, reset_bn=False, **kwargs)
    assert type(merged) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(merged(loader[1]), model(loader[1]), rtol=1e-4, atol=1e-3)


def test_vgg_with_flatten_and_mlp_with_residual_zip_back_exactly():
    for model, shape in ((tiny_vgg(0), (16, 3, 8, 8)), (MLP(6, 10, 3, depth=3, residual=True).eval(), (16, 6))):
        loader = loader_for(shape, n_batches=2, seed=3)
        other, _ = permuted_copy(model, trace_feature_graph(model, loader[0]), seed=2)
        merged = zip_models([model, other], loader, beta=0.0, reset_bn=False)
        with torch.no_grad():
            torch.testing.assert_close(merged(loader[0]), model(loader[0]), rtol=1e-4, atol=1e-4)


def test_identity_method_is_plain_weight_averaging():
    a, b = tiny_vgg(0), tiny_vgg(1)
    merged = zip_models([a, b], loader_for((4, 3, 8, 8)), method="identity", reset_bn=False)
    sa, sb, sm = a.state_dict(), b.state_dict(), merged.state_dict()
    for key, t in sm.items():
        if t.is_floating_point():
            torch.testing.assert_close(t, (sa[key] + sb[key]) / 2)


def test_weight_matching_recovers_a_hidden_permutation(resnet_pair):
    model, other, _, graph, perms = resnet_pair
    transforms = weight_matching([model, other], graph)
    for k, (_, unmerge) in transforms.items():
        width = graph.spaces[k].width
        # Feature c of model 0 is matched with feature c' of the copy where perms[k][c'] == c.
        partner = unmerge[width:].argmax(0)
        assert torch.equal(perms[k][partner], torch.arange(width))


def test_zip_of_three_models_runs_and_keeps_the_architecture():
    models = [tiny_vgg(s) for s in range(3)]
    merged = zip_models(models, loader_for((8, 3, 8, 8)), alpha=0.5, beta=0.5)
    assert type(merged) is type(models[0])
    assert merged(torch.randn(2, 3, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize("stop_at", ["backbone.layer1", "backbone.layer2", "backbone.layer2.1"])
def test_partial_zip_heads_reproduce_each_model(resnet_pair, stop_at):
    model, other, loader, _, _ = resnet_pair
    multi = zip_models([model, other], loader, beta=0.0, stop_at=stop_at, reset_bn=False)
    assert isinstance(multi, MultiHeadModel)
    with torch.no_grad():
        out = multi(loader[0])
        assert out.shape == (2, 8, 6)
        torch.testing.assert_close(out[0], model(loader[0]), rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(out[1], other(loader[0]), rtol=1e-4, atol=1e-3)


def test_partial_zip_leaves_heads_unmerged_and_bad_cuts_fail(resnet_pair):
    model, _, loader, _, _ = resnet_pair
    other = tiny_resnet(5)
    multi = zip_models([model, other], loader, stop_at="backbone.layer1", reset_bn=False)
    head_b = dict(multi.heads[1].named_parameters())
    torch.testing.assert_close(head_b["backbone.layer3.2.conv2.weight"], other.backbone.layer3[2].conv2.weight)
    with pytest.raises(UnsupportedOperationError, match=r"cannot split after fx node 'backbone_layer1_0_bn1'.*also used"):
        zip_models([model, other], loader, stop_at="backbone.layer1.0.bn1")
    with pytest.raises(ZipitError, match=r"stop_at='backbone.layer9' names no fx node"):
        zip_models([model, other], loader, stop_at="backbone.layer9")


def test_ensemble_stacks_member_outputs():
    a, b = tiny_vgg(0), tiny_vgg(1)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        out = Ensemble([a, b])(x)
        assert torch.equal(out, torch.stack([a(x), b(x)]))


def test_bn_reset_sets_running_stats_to_the_data_moments():
    model = tiny_vgg(0)
    loader = loader_for((16, 3, 8, 8), n_batches=3, seed=7)
    bn = model.features[1]
    seen = []
    handle = bn.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    reset_bn_stats(model, loader)
    handle.remove()
    x = torch.cat(seen).transpose(0, 1).reshape(8, -1)  # oracle: every BN input pixel of the pass
    torch.testing.assert_close(bn.running_mean, x.mean(1), rtol=1e-4, atol=1e-5)
    # torch keeps the unbiased variance; with momentum=None it is the average of the per-batch values.
    per_batch = torch.stack([s.transpose(0, 1).reshape(8, -1).var(1, unbiased=True) for s in seen]).mean(0)
    torch.testing.assert_close(bn.running_var, per_batch, rtol=1e-4, atol=1e-5)
    assert not model.training and bn.momentum == 0.1


def test_fold_leaves_inputs_untouched():
    a, b = tiny_vgg(0), tiny_vgg(1)
    before = copy.deepcopy(a.state_dict())
    zip_models([a, b], loader_for((4, 3, 8, 8)))
    for key, t in a.state_dict().items():
        assert torch.equal(t, before[key])
    graph = trace_feature_graph(a, torch.randn(2, 3, 8, 8))
    assert set(fold_models([a, b], graph, {})) == set(a.state_dict())


def test_zip_models_input_errors():
    a, loader = tiny_vgg(0), loader_for((4, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2 models; got 1"):
        zip_models([a], loader)
    with pytest.raises(ZipitError, match="model 1 is a MLP, model 0 a VGG"):
        zip_models([a, MLP()], loader)
    wide = tiny_vgg(0)
    wide.classifier[0] = nn.Linear(64, 13)
    with pytest.raises(ValueError, match=r"model 1: tensor 'classifier.0.weight' has shape \(13, 64\) but "
                                         r"\(12, 64\) in model 0"):
        zip_models([a, wide], loader)
    with pytest.raises(ValueError, match=r"unknown method 'zip'"):
        zip_models([a, tiny_vgg(1)], loader, method="zip")
    with pytest.raises(ValueError, match="method 'permute' does not use them"):
        zip_models([a, tiny_vgg(1)], loader, method="permute", alpha=0.5)
    with pytest.raises(ValueError, match="the loader yielded no batches"):
        zip_models([a, tiny_vgg(1)], [])


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so a hand-written graph is needed."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) if x.shape[0] > 0 and bool(x.abs().sum() >= 0) else -self.b(h)


def test_explicit_graph_for_an_untraceable_model():
    from knotwork.zipit import Consumer, FeatureSpace, Tap, ZipGraph

    torch.manual_seed(0)
    model = _Untraceable().eval()
    loader = loader_for((16, 5), n_batches=2, seed=4)
    with pytest.raises(UnsupportedOperationError, match="torch.fx could not trace _Untraceable"):
        trace_feature_graph(model, loader[0])
    graph = ZipGraph([FeatureSpace(6, producers=["a"], consumers=[Consumer("b")], tap=Tap("b", "input")),
                      FeatureSpace(3, producers=["b"], fixed=True)])
    other, _ = permuted_copy(model, graph, seed=3)
    merged = zip_models([model, other], loader, beta=0.0, graph=graph)
    with torch.no_grad():
        torch.testing.assert_close(merged(loader[0]), model(loader[0]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="stop_at needs a traced graph"):
        zip_models([model, other], loader, graph=graph, stop_at="a")
    bad = ZipGraph([FeatureSpace(6, producers=["c"], consumers=[Consumer("b")], tap=Tap("b"))])
    with pytest.raises(ZipitError, match="feature space 0 names module 'c', which the model does not have"):
        zip_models([model, other], loader, graph=bad)


def test_progress_callback_counts_every_batch_of_both_data_passes():
    a, b, loader = tiny_vgg(0), tiny_vgg(1), loader_for((4, 3, 8, 8), n_batches=3)
    calls = []
    zip_models([a, b], loader, progress=calls.append, bn_batches=2)
    assert calls == [1] * (3 + 2)  # three batches of statistics, then two of the BatchNorm reset


def test_device_argument_gives_the_same_model_back_where_the_inputs_live():
    """--device runs the data passes where asked; on this CPU-only check the result must equal the default."""
    a, b, loader = tiny_vgg(0), tiny_vgg(1), loader_for((4, 3, 8, 8))
    plain = zip_models([a, b], loader).state_dict()
    placed = zip_models([a, b], loader, device="cuda" if torch.cuda.is_available() else "cpu")
    for key, t in placed.state_dict().items():
        assert t.device.type == "cpu"
        torch.testing.assert_close(t, plain[key], rtol=1e-5, atol=1e-5)
