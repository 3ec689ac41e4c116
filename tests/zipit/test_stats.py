"""Streaming float64 statistics against a dense computation over all samples at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knotwork.zipit import collect_statistics, trace_feature_graph
from knotwork.zipit.stats import FeatureStats, first_input

from .helpers import tiny_vgg


def test_streaming_moments_equal_numpy_cov_and_corrcoef():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 300, generator=g) * torch.tensor([[1.0], [2.0], [0.5], [3.0], [1.0]]) + 4.0
    st = FeatureStats.empty(5)
    for chunk in x.split(37, dim=1):  # uneven chunks: streaming must not depend on batching
        st.update(chunk)
    ref = x.double().numpy()
    np.testing.assert_allclose(st.mean.numpy(), ref.mean(1), rtol=1e-12)
    np.testing.assert_allclose(st.covariance.numpy(), np.cov(ref, bias=True), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(st.correlation.numpy(), np.corrcoef(ref), rtol=1e-9, atol=1e-12)


def test_dead_feature_correlates_zero_not_nan():
    st = FeatureStats.empty(3)
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    x[1] = 0.0
    st.update(x)
    corr = st.correlation
    assert torch.isfinite(corr).all() and corr[1, 0] == 0 and corr[1, 1] == 1


def test_collected_features_are_the_concatenated_per_pixel_activations():
    models = [tiny_vgg(0), tiny_vgg(1)]
    batches = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    graph = trace_feature_graph(models[0], batches[0])
    stats = collect_statistics(models, graph, [(b, torch.zeros(4)) for b in batches])
    # Oracle: run each model's first conv-BN-ReLU by hand and correlate every pixel as one sample.
    k = [i for i, s in enumerate(graph.spaces) if s.producers == ["features.0"]][0]
    with torch.no_grad():
        feats = [torch.cat([m.features[:3](b) for b in batches]) for m in models]  # (8, 8, 8, 8)
    rows = torch.cat([f.transpose(0, 1).reshape(8, -1) for f in feats]).double()
    np.testing.assert_allclose(stats[k].correlation.numpy(), np.corrcoef(rows.numpy()), atol=1e-9)
    assert stats[k].count == 2 * 4 * 8 * 8
    # The flattened space (16 channels x 2x2 positions into the classifier) is recorded before max-pooling.
    k2 = [i for i, s in enumerate(graph.spaces) if s.producers == ["features.4"]][0]
    assert stats[k2].count == 2 * 4 * 4 * 4


def test_loader_errors_are_clear():
    with pytest.raises(TypeError, match="cannot find the input tensor in a loader batch of type str"):
        first_input("abc")
    models = [tiny_vgg(0), tiny_vgg(1)]
    graph = trace_feature_graph(models[0], torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="the loader yielded no batches"):
        collect_statistics(models, graph, [])
