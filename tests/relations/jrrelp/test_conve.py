"""ConvE: shapes from the JRRELP table, a naive one-triple score, and filtered ranks vs brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knotwork.relations.jrrelp import ConvEInteraction, filtered_ranks, rank_metrics


def test_palstm_shapes_match_the_paper_table():
    # rekglp.md §5: entity 300 -> 30x10, relation 200 -> 20x10, conv output 32x48x8 = 12,288 features.
    conv = ConvEInteraction(300, 200, width=10, channels=32)
    assert conv.flat_dim == 12_288
    assert conv(torch.randn(3, 300), torch.randn(3, 200), torch.randn(17, 300)).shape == (3, 17)


def test_score_equals_naive_computation():
    torch.manual_seed(0)
    conv = ConvEInteraction(6, 4, width=2, channels=2, kernel_size=2).eval()
    for bn in (conv.bn0, conv.bn1, conv.bn2):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    h, r, t, b = torch.randn(1, 6), torch.randn(1, 4), torch.randn(5, 6), torch.randn(5)
    got = conv(h, r, t, b)[0].detach().numpy().astype(np.float64)

    def bn(x, m, c=None):
        idx = (slice(None),) if c is None else (c,)
        mean, var = m.running_mean.numpy()[idx], m.running_var.numpy()[idx]
        return (x - mean) / np.sqrt(var + m.eps) * m.weight.detach().numpy()[idx] + m.bias.detach().numpy()[idx]

    img = np.concatenate([h.numpy().reshape(3, 2), r.numpy().reshape(2, 2)])  # (5, 2) stacked image
    img = bn(img, conv.bn0, 0)
    w, cb = conv.conv.weight.detach().numpy(), conv.conv.bias.detach().numpy()
    feats = []
    for c in range(2):  # explicit 2x2 valid convolution
        fm = np.zeros((4, 1))
        for i in range(4):
            fm[i, 0] = (img[i : i + 2, 0:2] * w[c, 0]).sum() + cb[c]
        feats.append(np.maximum(bn(fm, conv.bn1, c), 0))
    flat = np.stack(feats).reshape(-1)
    hidden = flat @ conv.fc.weight.detach().numpy().T + conv.fc.bias.detach().numpy()
    hidden = np.maximum(bn(hidden, conv.bn2), 0)
    expected = t.numpy() @ hidden + b.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_batch_of_one_trains_without_batchnorm_error():
    conv = ConvEInteraction(20, 10, width=5, channels=4).train()
    out = conv(torch.randn(1, 20), torch.randn(1, 10), torch.randn(3, 20))
    out.sum().backward()
    assert out.shape == (1, 3)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="relation_dim=25 is not a multiple of width=10"):
        ConvEInteraction(300, 25, width=10)
    conv = ConvEInteraction(20, 10, width=5)
    with pytest.raises(ValueError, match="r must have 10 features, got 20"):
        conv(torch.randn(2, 20), torch.randn(2, 20), torch.randn(3, 20))


def test_filtered_ranks_match_brute_force_on_a_tiny_graph():
    rng = np.random.default_rng(0)
    n_ent = 7
    # All known true triples (h, r, t) of a tiny graph; we rank the test ones.
    known = {(0, 0, 1), (0, 0, 2), (0, 0, 3), (1, 1, 4), (2, 0, 5), (2, 0, 6), (3, 1, 0), (1, 1, 2)}
    test = [(0, 0, 2), (1, 1, 4), (2, 0, 6), (3, 1, 0)]
    scores = torch.tensor(rng.integers(0, 4, size=(len(test), n_ent)).astype(np.float32))  # integer: many ties
    targets = torch.tensor([t for _, _, t in test])
    mask = torch.zeros(len(test), n_ent, dtype=torch.bool)
    for i, (h, r, _) in enumerate(test):
        for hh, rr, tt in known:
            if (hh, rr) == (h, r):
                mask[i, tt] = True
    got = filtered_ranks(scores, targets, mask)
    for i, (h, r, t) in enumerate(test):
        s = scores[i].tolist()
        others = [e for e in range(n_ent) if e != t and (h, r, e) not in known]
        optimistic = 1 + sum(s[e] > s[t] for e in others)
        pessimistic = 1 + sum(s[e] >= s[t] for e in others)
        assert got[i].item() == pytest.approx((optimistic + pessimistic) / 2)
    m = rank_metrics(got, ks=(1, 3))
    assert m["mrr"] == pytest.approx(float(np.mean([1 / x for x in got.tolist()])))
    assert m["hits@3"] == pytest.approx(float(np.mean([x <= 3 for x in got.tolist()])))


def test_running_batchnorm_makes_each_score_independent_of_its_batch():
    """batchnorm="running": in training mode a row's scores equal its scores computed alone (batch mode: not)."""
    torch.manual_seed(0)
    h, r, t = torch.randn(6, 20), torch.randn(6, 10), torch.randn(9, 20)
    scores = {}
    for mode in ("batch", "running"):
        conv = ConvEInteraction(20, 10, width=5, channels=4, input_dropout=0, feature_dropout=0, hidden_dropout=0,
                                batchnorm=mode).train()
        together, alone = conv(h, r, t), torch.cat([conv(h[i:i + 1], r[i:i + 1], t) for i in range(6)])
        scores[mode] = (together, alone, conv)
    together, alone, conv = scores["running"]
    torch.testing.assert_close(together, alone)
    assert conv.training and not any(bn.training for bn in (conv.bn0, conv.bn1, conv.bn2))
    assert float(conv.bn1.running_mean.abs().sum()) == 0.0  # never updated
    together, alone, _ = scores["batch"]
    assert not torch.allclose(together, alone, atol=1e-3)
    with pytest.raises(ValueError, match="batchnorm must be 'batch' or 'running', got 'sync'"):
        ConvEInteraction(20, 10, width=5, batchnorm="sync")
