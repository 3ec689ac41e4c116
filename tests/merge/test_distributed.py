"""Dask: a LocalCluster of 2 workers gives the same merge as one process (global top-K as a reduction)."""

from __future__ import annotations

import pytest
import torch

from knotwork._errors import InputError
from knotwork._scheduler import dask_client, ordered_map
from knotwork.merge import MergeConfig
from knotwork.merge.stream import merge_stream
from tests.merge.helpers import random_factors

pytest.importorskip("distributed")

SHAPES = {f"l{i}.{m}": (24, 20) for i in range(3) for m in ("q", "v")}


@pytest.mark.slow
def test_local_cluster_equals_one_process():
    tasks = [random_factors(SHAPES, r, seed=i) for i, r in enumerate((4, 8, 6))]
    factors = {n: [t[n] for t in tasks] for n in sorted(SHAPES)}
    runs = [("dare-ties", {"drop_rate": 0.4, "seed": 3, "topk": 60}), ("knots-ties", {"topk": 30})]
    with dask_client("local:2") as client:
        for method, params in runs:
            config = MergeConfig(**params)
            one = {m.name: m for m in merge_stream(sorted(factors), factors.__getitem__, method=method, config=config)}
            many = {m.name: m for m in merge_stream(sorted(factors), factors.__getitem__, method=method,
                                                    config=config, map_fn=ordered_map(client))}
            assert sorted(one) == sorted(many)
            for name in one:
                assert torch.equal(one[name].delta(), many[name].delta()), (method, name)


def test_bad_scheduler_is_one_clear_line():
    with pytest.raises(InputError, match="the worker count N of local:N must be an integer >= 1"), \
            dask_client("local:0"):
        pass
    with pytest.raises(InputError, match=r"tcp://127.0.0.1:9: cannot connect to a Dask scheduler there"), \
            dask_client("tcp://127.0.0.1:9", timeout=1):
        pass
