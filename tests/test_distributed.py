"""knotwork._distributed under torchrun: 2 gloo processes give the gradient of one process's global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from knotwork._distributed import DistContext, all_reduce_gradients, context, shard

WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    from knotwork._distributed import context, shard, all_reduce_gradients, all_reduce_sum, broadcast_object, shutdown
    ctx = context("cpu")
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    unused = torch.nn.Parameter(torch.zeros(2))  # no process uses it: must keep grad None, as with one process
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    idx = shard(list(range(11)), ctx)
    loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx], reduction="sum") / 11
    loss.backward()
    all_reduce_gradients([*model.parameters(), unused], ctx)
    total = all_reduce_sum(loss.detach(), ctx)
    seen = broadcast_object({"rank0": ctx.rank}, ctx)
    if ctx.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": ctx.world_size, "loss": float(total), "seen": seen, "unused_grad": unused.grad is None,
                       "grad": [p.grad.reshape(-1).tolist() for p in model.parameters()]}, f)
    shutdown(ctx)
""")


def _reference():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return float(loss), [p.grad.reshape(-1).tolist() for p in model.parameters()]


def test_one_process_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = context("cpu")
    assert ctx == DistContext() and ctx.is_main and not ctx.distributed
    assert shard([1, 2, 3], ctx) == [1, 2, 3]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    all_reduce_gradients([p], ctx)
    assert p.grad.tolist() == [3.0, 3.0]


def test_shards_partition_the_batch():
    items = list(range(11))
    parts = [shard(items, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == items and max(map(len, parts)) - min(map(len, parts)) <= 1


def test_two_gloo_processes_equal_one(tmp_path):
    script, out = tmp_path / "worker.py", tmp_path / "out.json"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(out.read_text())
    loss, grads = _reference()
    assert got["world"] == 2 and got["seen"] == {"rank0": 0} and got["unused_grad"]
    assert abs(got["loss"] - loss) < 1e-6
    for g, r in zip(got["grad"], grads, strict=True):
        assert torch.allclose(torch.tensor(g), torch.tensor(r), atol=1e-6)
