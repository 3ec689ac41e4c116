"""Data-parallel training across processes (``torchrun``), shared by the trainers.

A trainer that supports several processes does the same thing whatever the number of processes:

1. every process draws the same *global* batch (same seed, same order);
2. process ``rank`` keeps its share, ``shard(batch, ctx)`` (a strided slice, so the shares differ by at most one
   example and their union is the global batch);
3. each process sums its examples' losses and divides by the *global* batch size (``ctx.global_mean``);
4. ``all_reduce_gradients`` sums the gradients over processes, so every process holds the gradient of the
   global batch's mean loss, steps its optimizer identically, and the models stay equal.

With one process every function here is the identity, so a single-process run is the reference that a
multi-process run equals to float tolerance (summation order differs). Launch with::

    torchrun --nproc-per-node 2 -m knotwork lora train ...

``gloo`` is used on CPU and ``nccl`` on CUDA. Only the process with ``ctx.is_main`` writes outputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DistContext", "all_reduce_gradients", "all_reduce_sum", "barrier", "broadcast_object", "context",
           "shard", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def global_mean(self, local_sum, global_count: int):
        """The local share of the global batch's mean: ``local_sum / global_count`` (summed over ranks later)."""
        return local_sum / global_count


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:  # a launcher bug, not a user input; say which variable
        raise RuntimeError(f"environment variable {name}={raw!r} is not an integer") from exc


def context(device: str = "cpu") -> DistContext:
    """The process group of this run, started from ``torchrun``'s environment when there is one.

    Without ``WORLD_SIZE`` > 1 in the environment this is a one-process context and starts nothing. With it, the
    default process group is initialised once (``gloo`` for CPU, ``nccl`` for CUDA); on CUDA each process uses
    ``cuda:<LOCAL_RANK>``.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=device)
    import torch
    import torch.distributed as dist

    local_rank = _env_int("LOCAL_RANK", 0)
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)


def shard(items: Sequence[Any], ctx: DistContext) -> Sequence[Any]:
    """This process's share of a global batch: every ``world_size``-th item from ``rank``."""
    return items if ctx.world_size == 1 else items[ctx.rank::ctx.world_size]


def all_reduce_gradients(params: Iterable[Any], ctx: DistContext) -> None:
    """Sum every parameter's gradient over processes, in place (one flat buffer).

    A parameter with a gradient on some process but not this one counts as zeros here; a parameter that no process
    used keeps ``grad = None``, as in a one-process run, so optimizers skip it (Adam or weight decay would otherwise
    step on zeros).
    """
    if not ctx.distributed:
        return
    import torch
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    if not params:
        return
    used = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(used, op=dist.ReduceOp.SUM)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, u in zip(params, used.tolist(), strict=True):
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone() if u > 0 else None
        offset += n


def all_reduce_sum(value, ctx: DistContext):
    """A tensor (or float) summed over processes; the value itself with one process."""
    if not ctx.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=torch.float64)
    if ctx.device.startswith("cuda"):
        t = t.to(ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t if isinstance(value, torch.Tensor) else float(t)


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """``obj`` as process ``src`` holds it, on every process (a picklable Python object)."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Tear the process group down (only when this module's ``context`` started one)."""
    if ctx.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
