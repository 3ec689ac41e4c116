"""Data, splits, models and checkpoint cache shared by the ZipIt! benchmark scripts (not part of the library)."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _shared_vision() -> Path:
    """../shared/data/vision beside the project root (git worktrees sit one level deeper, so look there too)."""
    if os.environ.get("KNOTWORK_SHARED_DATA"):
        return Path(os.environ["KNOTWORK_SHARED_DATA"]) / "vision"
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data" / "vision"
    return ROOT.parent / "shared" / "data" / "vision"


SHARED = _shared_vision()
CACHE = ROOT / ".knotwork-cache" / "zipit"

MNIST_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class Setting:
    """One experiment: data set, architecture, training budget and the (split, seed) pairs it runs."""

    name: str
    data: str
    arch: str
    width: int
    epochs: int
    lr: float
    augment: bool
    pairs: int
    n_train: int | None = None  # per-task cap on training examples (None = all)
    n_test: int | None = None
    batch_size: int = 32  # small batches: many more SGD steps for the same CPU time on these tiny budgets
    pool: int | None = None  # training images loaded at all (None = all); only the smoke setting cuts it
    vectors: str = "minilm"  # class vectors: "minilm" (class-name embeddings) or "random" (no model needed)


SETTINGS = {
    "mnist": Setting("mnist", "mnist.npz", "cnn", 64, epochs=2, lr=0.05, augment=False, pairs=3, n_train=3000, n_test=2000),
    # Width check (the paper: ZipIt!'s lead over Permute grows with width): the MNIST pairs at twice the channels.
    "mnist-w128": Setting("mnist-w128", "mnist.npz", "cnn", 128, epochs=2, lr=0.05, augment=False, pairs=3,
                          n_train=3000, n_test=2000),
    # A seconds-long run of the whole pipeline, to check the scripts (its numbers mean nothing).
    "smoke": Setting("smoke", "mnist.npz", "cnn", 16, epochs=1, lr=0.05, augment=False, pairs=1, n_train=300,
                     n_test=300, pool=2000, vectors="random"),
    "cifar10": Setting("cifar10", "cifar10.npz", "resnet20", 1, epochs=3, lr=0.1, augment=True, pairs=2, n_train=3000, n_test=2000),
}


def load_data(setting: Setting) -> dict[str, torch.Tensor | list[str]]:
    """Images as float tensors (N, C, H, W), normalised; labels as int64; the class names."""
    path = SHARED / setting.data
    if not path.exists():
        raise FileNotFoundError(f"data not found at {path}; see shared/data/README.md")
    with np.load(path) as z:
        xtr, ytr = z["x_train"][: setting.pool], z["y_train"][: setting.pool]
        xte, yte = z["x_test"][: setting.n_test], z["y_test"][: setting.n_test]
        names = [str(n) for n in z["class_names"]] if "class_names" in z else MNIST_NAMES
    if xtr.ndim == 3:  # MNIST: (N, 28, 28) -> (N, 1, 28, 28), standardised with MNIST's usual mean/std
        def prep(a):
            return (torch.from_numpy(a).float().div(255).unsqueeze(1) - 0.1307) / 0.3081
    else:
        def prep(a):
            return (torch.from_numpy(a).float().div(255).permute(0, 3, 1, 2) - CIFAR_MEAN) / CIFAR_STD
    return {"x_train": prep(xtr), "y_train": torch.from_numpy(ytr.astype(np.int64)),
            "x_test": prep(xte), "y_test": torch.from_numpy(yte.astype(np.int64)), "names": names}


def class_split(pair: int, n_classes: int = 10) -> tuple[list[int], list[int]]:
    """Random disjoint halves of the classes, as the paper's ``train_test_split(arange(K), train_size=K//2)``."""
    perm = np.random.RandomState(1000 + pair).permutation(n_classes)
    half = n_classes // 2
    return sorted(perm[:half].tolist()), sorted(perm[half:].tolist())


def class_vectors(setting: Setting, names: list[str], cache: Path = CACHE) -> torch.Tensor:
    """MiniLM embeddings of the class names (cached as .npy under ``cache``), or seeded random unit vectors."""
    from knotwork.zipit.class_vectors import random_class_vectors

    if setting.vectors == "random":
        return random_class_vectors(len(names), 384, seed=0)
    template = "a handwritten digit {}." if setting.data == "mnist.npz" else "a photo of a {}."
    return cached_minilm_vectors(cache / f"{setting.name}_class_vectors.npy", names, template)


def cached_minilm_vectors(path: Path, names: list[str], template: str) -> torch.Tensor:
    """MiniLM embeddings of ``template.format(name)`` for each class, read from ``path`` (.npy) or made and
    written there."""
    from knotwork._io import write_scratch
    from knotwork.zipit.class_vectors import minilm_class_vectors

    if path.exists():
        return torch.from_numpy(np.load(path))
    vec = minilm_class_vectors(names, template=template)
    buf = io.BytesIO()
    np.save(buf, vec.numpy())
    write_scratch(path, buf.getvalue())
    return vec


def build_model(setting: Setting, vectors: torch.Tensor, seed: int) -> torch.nn.Module:
    """A freshly initialised backbone (seeded) with the frozen class-embedding head."""
    from knotwork.zipit.models import ClassEmbeddingHead, HeadedModel, ResNet20, SmallCNN

    with torch.random.fork_rng():  # initialise under a local seed without leaking into the global RNG
        torch.manual_seed(seed)
        dim = vectors.shape[1]
        if setting.arch == "cnn":
            backbone = SmallCNN(setting.width, dim, in_channels=1)
        else:
            backbone = ResNet20(setting.width, dim)
    return HeadedModel(backbone, ClassEmbeddingHead(vectors))


def ckpt_path(setting: Setting, pair: int, which: str, cache: Path = CACHE) -> Path:
    return cache / setting.name / f"pair{pair}_{which}.safetensors"


def save_checkpoint(state: dict[str, torch.Tensor], path: Path, meta: dict) -> None:
    """A base model's safetensors, written atomically, with ``meta`` in its report ``<name>.knotwork.json``."""
    from safetensors.torch import save_file

    from knotwork._io import atomic_file

    with atomic_file(path, report={"meta": json.loads(json.dumps(meta))}) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))


def load_checkpoint(setting: Setting, vectors: torch.Tensor, pair: int, which: str, cache: Path = CACHE
                    ) -> torch.nn.Module:
    """A cached base model, in eval mode."""
    from knotwork.zipit.io import load_checkpoint as read

    model = build_model(setting, vectors, seed=0)
    model.load_state_dict(read(ckpt_path(setting, pair, which, cache)))
    return model.eval()
