"""The one learning-rate schedule the trainers share: linear warm-up, then linear decay to zero."""

from __future__ import annotations

import torch


def warmup_linear_decay(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int
                        ) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose factor rises as ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then
    falls linearly to 0 at ``total_steps`` (the BERT/Transformers schedule; ``warmup_steps = 0`` skips warm-up)."""
    total, warm = int(total_steps), int(warmup_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
