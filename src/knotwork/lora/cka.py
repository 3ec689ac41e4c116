"""Task x task similarity of LoRA updates on real inputs, before and after KnOTS alignment (paper Fig. 2).

`adapter_cka` feeds the base model a few validation texts of every task, captures each adapted module's input
activations, and averages `knotwork.merge.cka.update_cka` over modules. Used by `knotwork demo` and the
KnOTS text study (`benchmarks/knots_text.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from knotwork.lora.tasks import TextTask

__all__ = ["adapter_cka", "module_inputs"]


def module_inputs(model, tokenizer, texts: Sequence[str], modules: Sequence[str], *, max_length: int = 64):
    """Inputs X (non-padding tokens x d_in) that the base model feeds each named module on `texts`."""
    captured: dict[str, torch.Tensor] = {}
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    keep = batch["attention_mask"].bool()
    hooks = []
    for name in modules:
        def hook(_mod, args, _out, name=name):
            captured[name] = args[0][keep].detach().double()  # (tokens, d_in), padding dropped
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(**{k: batch[k] for k in ("input_ids", "attention_mask")})
    finally:
        for h in hooks:
            h.remove()
    return captured


def adapter_cka(model, tokenizer, tasks: Sequence[TextTask], factors, *, n_per_task: int = 16,
                max_length: int = 64) -> dict[str, list[list[float]]]:
    """Task x task linear CKA of the adapters' updates before and after KnOTS, averaged over modules (paper Fig. 2).

    The inputs are the base model's activations on the first `n_per_task` validation texts of every task;
    `factors` is ``{module: [(B_i, A_i) per task]}`` with the LoRA scaling folded into ``B_i``
    (`knotwork.merge.cka.update_cka` per module).
    """
    from knotwork.merge.cka import update_cka

    texts = [x for t in tasks for x in t.splits["val"].texts[:n_per_task]]
    inputs = module_inputs(model, tokenizer, texts, sorted(factors), max_length=max_length)
    before = after = None
    for name in sorted(factors):
        b, a = update_cka(inputs[name], factors[name])
        before = b if before is None else before + b
        after = a if after is None else after + a
    n = len(factors)
    return {"before": (before / n).tolist(), "after": (after / n).tolist()}
