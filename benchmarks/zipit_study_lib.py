"""The units of the ZipIt! CIFAR-10 (5+5) study (benchmarks/zipit_study.py): data, base-model training, merging.

Each unit is a plain function of a picklable :class:`Spec` (so a spawn worker can run it) that returns the data
of one result record; the caller writes the record. Model weights go to ``Spec.cache`` only (never committed); a
merge unit whose base models are not in the cache trains them again from their seeds.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from zipit_data import CIFAR_MEAN, CIFAR_STD, SHARED, cached_minilm_vectors, class_split

from knotwork.zipit import count_macs, reset_bn_stats, zip_models
from knotwork.zipit.class_vectors import random_class_vectors
from knotwork.zipit.io import load_checkpoint
from knotwork.zipit.models import ClassEmbeddingHead, HeadedModel, ResNet20
from knotwork.zipit.training import augment_crop_flip, train_on_task

#: The parts of src/knotwork that compute this study's numbers (each record's ``code_used`` hashes them).
CODE_PARTS = ("zipit", "_*.py")
DATA = SHARED / "cifar10.npz"
TEMPLATE = "a photo of a {}."


@dataclass(frozen=True)
class Recipe:
    """Base-model training: SGD (momentum 0.9), linear warm-up then linear decay to 0, random crop + flip."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    warmup_epochs: int
    nesterov: bool
    source: str


RECIPES = {
    # ~20 epochs fit a 2-core CPU (issue 16: about 0.7 min per ResNet-20x1 epoch over 8,000 images on 2 cores);
    # batch 128 gives 63 steps an epoch where the paper's batch 500 would give 16.
    "cpu": Recipe(epochs=20, lr=0.1, batch_size=128, weight_decay=5e-4, warmup_epochs=1, nesterov=True,
                  source="a CIFAR ResNet recipe sized for a CPU"),
    # The paper's train_cliphead (../shared/methods/zipit.md §6.4): 100 epochs, SGD lr 0.4, momentum 0.9,
    # weight decay 5e-4, 5-epoch warm-up then linear decay, batch 500, flip + crop(32, pad 4).
    "paper": Recipe(epochs=100, lr=0.4, batch_size=500, weight_decay=5e-4, warmup_epochs=5, nesterov=False,
                    source="the paper's train_cliphead recipe"),
}

#: Partial zips: (method slug, label, stop_at). Stage ends of ResNet-20, as the paper's appendix requires.
STOPS = (("zipit-19", "ZipIt!_{19/20}", "backbone.layer3"), ("zipit-13", "ZipIt!_{13/20}", "backbone.layer2"),
         ("zipit-7", "ZipIt!_{7/20}", "backbone.layer1"))
#: Every row of a merge unit: (slug, label, zip_models options or None for a model that is not merged).
METHODS: tuple[tuple[str, str, dict | None], ...] = (
    ("model-a", "Model A", None), ("model-b", "Model B", None),
    ("wavg", "W. Avg", {"method": "identity"}), ("rebasin", "Git Re-Basin", {"method": "rebasin"}),
    ("permute", "Permute", {"method": "permute"}), ("zipit", "ZipIt!_{20/20}", {"method": "zipit"}),
    *((slug, label, {"method": "zipit", "stop_at": stop}) for slug, label, stop in STOPS),
    ("ensemble", "Ensemble", None),
)
LABELS = {slug: label for slug, label, _ in METHODS}


@dataclass(frozen=True)
class Spec:
    """One width of the study at one budget; picklable, so worker processes receive it whole."""

    width: int
    recipe: str = "cpu"
    epochs: int | None = None           # None: the recipe's
    data: str = str(DATA)
    cache: str = ".knotwork-cache/zipit-study"
    vectors: str | None = None          # class vectors .npy (None: <cache>/cifar10_class_vectors.npy)
    train_per_task: int | None = None   # None: every training image of the task (8,000 in the shared subset)
    test_images: int | None = None      # None: the whole test set (10,000)
    merge_images: int = 2000            # augmented training images of both tasks: statistics and BN resets
    random_vectors: bool = False        # seeded random class vectors instead of MiniLM (smoke runs)
    device: str = "cpu"
    alpha: float = 0.3
    beta: float = 0.125

    @property
    def train(self) -> Recipe:
        r = RECIPES[self.recipe]
        return r if self.epochs is None else Recipe(**{**asdict(r), "epochs": self.epochs})

    def base_dir(self) -> Path:
        n = self.train_per_task or "all"
        return Path(self.cache) / f"w{self.width}-{self.recipe}-e{self.train.epochs}-n{n}"

    def merge_settings(self) -> dict:
        """What a merge unit depends on beyond its base models (a record made otherwise is not reused)."""
        return {"merge_images": self.merge_images, "test_images": self.test_images, "alpha": self.alpha,
                "beta": self.beta}

    def ckpt(self, pair: int, task: str) -> Path:
        return self.base_dir() / f"pair{pair}_{task}.safetensors"

    def training_record(self, vectors_sha256: str) -> dict:
        """What a base model's training depends on (a cached model or a record is reused only when this matches),
        ``vectors_sha256`` the :func:`vectors_sha256` of the class vectors it trains with."""
        recipe = {k: v for k, v in asdict(self.train).items() if k != "source"}
        return {"width": self.width, "recipe": self.recipe, **recipe, "augment": "crop(pad 4)+flip",
                "train_per_task": self.train_per_task, "vectors": "random" if self.random_vectors else "minilm",
                "vectors_sha256": vectors_sha256}

    def vectors_source(self) -> str:
        """Where this spec's class vectors come from, in words."""
        if self.random_vectors:
            return "seeded random vectors"
        return str(Path(self.vectors) if self.vectors else Path(self.cache) / "cifar10_class_vectors.npy")


def base_unit_name(pair: int, task: str, width: int) -> str:
    return f"base-{pair}-{task}-w{width}"


def merge_unit_name(pair: int, width: int) -> str:
    return f"merge-{pair}-w{width}"


# ------------------------------------------------------------------------------------------------------- data

def _prep(a: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(a).float().div(255).permute(0, 3, 1, 2) - CIFAR_MEAN) / CIFAR_STD


def _decode(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                     for i in range(len(offsets) - 1)])


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """x_train/y_train/x_test/y_test (uint8 HWC) and class_names from the shared npz or a :func:`pack` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data not found at {path}; see shared/data/README.md (vision/cifar10.npz)")
    with np.load(path) as z:
        out = {k: z[k] for k in z.files}
    for split in ("train", "test"):
        if f"{split}_webp" in out:
            out[f"x_{split}"] = _decode(out.pop(f"{split}_webp"), out.pop(f"{split}_offsets"))
    return out


def pack(src: str | Path, dst: str | Path) -> dict:
    """Re-encode the images losslessly as WebP (about 1.6 KB an image against 2.85 in the npz), so the whole
    subset fits the device machine's 64 MiB working-tree limit. :func:`read_arrays` decodes it back exactly."""
    from PIL import Image

    arrays = read_arrays(src)
    out = {k: arrays[k] for k in ("y_train", "y_test", "class_names")}
    for split in ("train", "test"):
        blobs = []
        for img in arrays[f"x_{split}"]:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="WEBP", lossless=True, quality=100, method=6)
            blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
        out[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        out[f"{split}_webp"] = np.concatenate(blobs)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as fh:
        np.savez(fh, **out)
    return {"images": sum(len(arrays[f"x_{s}"]) for s in ("train", "test")), "bytes": Path(dst).stat().st_size}


@functools.lru_cache(maxsize=2)
def load(path: str, test_images: int | None) -> dict:
    """Normalised tensors (N, 3, 32, 32), int64 labels and the class names; cached per worker process."""
    a = read_arrays(path)
    return {"x_train": _prep(a["x_train"]), "y_train": torch.from_numpy(a["y_train"].astype(np.int64)),
            "x_test": _prep(a["x_test"][:test_images]),
            "y_test": torch.from_numpy(a["y_test"][:test_images].astype(np.int64)),
            "names": [str(n) for n in a["class_names"]]}


def class_vectors(spec: Spec, names: Sequence[str]) -> torch.Tensor:
    """MiniLM embeddings of "a photo of a {class}." (cached as .npy), or seeded random unit vectors."""
    if spec.random_vectors:
        return random_class_vectors(len(names), 384, seed=0)
    path = Path(spec.vectors) if spec.vectors else Path(spec.cache) / "cifar10_class_vectors.npy"
    return cached_minilm_vectors(path, list(names), TEMPLATE)


def vectors_sha256(vectors: torch.Tensor) -> str:
    """sha256 of the class vectors as float32 bytes (row-major): which frozen head a base model was trained with."""
    return hashlib.sha256(vectors.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


@functools.lru_cache(maxsize=8)
def spec_vectors_sha256(spec: Spec) -> str:
    """:func:`vectors_sha256` of the class vectors ``spec`` trains with (made, and cached, if absent)."""
    with np.load(spec.data) as z:
        names = [str(n) for n in z["class_names"]]
    return vectors_sha256(class_vectors(spec, names))


def build_model(spec: Spec, vectors: torch.Tensor, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng():  # initialise under a local seed without touching the global RNG
        torch.manual_seed(seed)
        return HeadedModel(ResNet20(spec.width, vectors.shape[1]), ClassEmbeddingHead(vectors))


def task_images(data: dict, classes: Sequence[int], split: str, limit: int | None = None):
    keep = torch.isin(data[f"y_{split}"], torch.tensor(list(classes))).nonzero().squeeze(1)[:limit]
    return data[f"x_{split}"][keep], data[f"y_{split}"][keep]


def merge_loader(data: dict, classes: Sequence[int], *, n_images: int, seed: int, batch: int = 500
                 ) -> list[tuple[torch.Tensor]]:
    """``n_images`` training images of both tasks, drawn and augmented (crop + flip) with ``seed``, labels dropped
    (the paper computes statistics and resets BatchNorm on the augmented training loader)."""
    x, _ = task_images(data, classes, "train")
    g = torch.Generator().manual_seed(seed)
    x = x[torch.randperm(len(x), generator=g)[:n_images]]
    x = augment_crop_flip(x, g)
    return [(x[i:i + batch],) for i in range(0, len(x), batch)]


# ------------------------------------------------------------------------------------------------- evaluation

def outputs(model: torch.nn.Module, x: torch.Tensor, device: str = "cpu", batch: int = 500) -> torch.Tensor:
    """Logits (B, K), or stacked per-head logits (H, B, K), on the CPU."""
    model.eval().to(device)
    try:
        with torch.no_grad():
            return torch.cat([model(x[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)], dim=-2)
    finally:
        model.to("cpu")


def scores(out: torch.Tensor, y: torch.Tensor, tasks: Sequence[Sequence[int]]) -> dict:
    """The paper's metrics from outputs, as :func:`knotwork.zipit.task_accuracy` computes them, plus which
    test images the joint prediction got right (the bootstrap over images needs them).

    Joint: argmax over the union of the tasks' classes (several heads: softmax within each head's task, then the
    most probable class across heads). Task t: argmax within task t's classes on its images, with head t.
    """
    all_classes = torch.tensor([c for t in tasks for c in t])
    keep = torch.isin(y, all_classes)
    out, y = out[..., keep, :], y[keep]
    ids = [torch.tensor(list(t)) for t in tasks]
    if out.ndim == 3:
        probs = torch.cat([out[h][:, i].softmax(-1) for h, i in enumerate(ids)], dim=1)
        joint_pred = all_classes[probs.argmax(1)]
        heads = list(out)
    else:
        joint_pred = all_classes[out[:, all_classes].argmax(1)]
        heads = [out] * len(tasks)
    correct = (joint_pred == y).numpy()
    per_task = []
    for h, i in enumerate(ids):
        mask = torch.isin(y, i)
        per_task.append(float((i[heads[h][mask][:, i].argmax(1)] == y[mask]).float().mean()))
    return {"joint": float(correct.mean()), "task_a": per_task[0], "task_b": per_task[1],
            "avg": float(np.mean(per_task)), "n_test": int(len(y)), "joint_bits": pack_bits(correct)}


def pack_bits(flags: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(flags, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def own_task_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[int],
                      device: str) -> float:
    ids = torch.tensor(list(classes))
    out = outputs(model, x, device)
    return float((ids[out[:, ids].argmax(1)] == y).float().mean())


# ------------------------------------------------------------------------------------------------------ units

def _timed(fn):
    """Run a unit; add its CPU and wall seconds, threads, device and the hash of the code that computed it."""
    @functools.wraps(fn)
    def run(spec: Spec, *args):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out = fn(spec, *args)
        return {**out, "cpu_seconds": round(time.process_time() - cpu0, 1),
                "wall_seconds": round(time.perf_counter() - wall0, 1), "threads": torch.get_num_threads(),
                "device": _device_name(spec.device), "code_used": code_used()}
    return run


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def code_used() -> str:
    import _common

    return _common.scoped_fingerprint(CODE_PARTS, __file__, Path(__file__).with_name("zipit_data.py"))


def _save(state: dict[str, torch.Tensor], path: Path, meta: dict) -> None:
    """Weights (safetensors) and ``meta`` in the report beside them, written atomically; a stale model (other
    training settings) is replaced."""
    from safetensors.torch import save_file

    from knotwork._io import atomic_file

    with atomic_file(path, report={"meta": meta}, force=True) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".knotwork.json")


def cached_meta(spec: Spec, pair: int, task: str) -> dict | None:
    """The training report of the cached model of ``pair``/``task``, whatever it was trained with; None if absent."""
    path = spec.ckpt(pair, task)
    if not (path.is_file() and _meta_path(path).is_file()):
        return None
    return json.loads(_meta_path(path).read_text(encoding="utf-8")).get("meta", {})


def cached_base(spec: Spec, pair: int, task: str, vectors_sha: str) -> dict | None:
    """The cached model's training report, when the cache holds it for exactly this training setting (class
    vectors of sha256 ``vectors_sha`` included)."""
    meta = cached_meta(spec, pair, task)
    return meta if meta is not None and meta.get("training") == spec.training_record(vectors_sha) else None


def _train_base(spec: Spec, pair: int, task: str) -> dict:
    """Train one base model from its seed, cache its weights, and report its own-task accuracy."""
    data = load(spec.data, spec.test_images)
    vectors = class_vectors(spec, data["names"])
    classes = class_split(pair)["AB".index(task)]
    seed = 2 * pair + "AB".index(task)
    model = build_model(spec, vectors, seed)
    x, y = task_images(data, classes, "train", spec.train_per_task)
    r = spec.train
    wall0 = time.perf_counter()
    train_on_task(model, x, y, classes, epochs=r.epochs, lr=r.lr, weight_decay=r.weight_decay,
                  batch_size=r.batch_size, augment=True, seed=seed, warmup_epochs=r.warmup_epochs,
                  nesterov=r.nesterov, device=spec.device)
    train_seconds = time.perf_counter() - wall0
    xt, yt = task_images(data, classes, "test")
    meta = {"pair": pair, "task": task, "classes": classes, "seed": seed,
            "training": spec.training_record(vectors_sha256(vectors)),
            "n_train": len(x), "n_test": len(xt), "train_seconds": round(train_seconds, 1),
            "own_task_acc": own_task_accuracy(model, xt, yt, classes, spec.device),
            "train_acc_first_1000": own_task_accuracy(model, x[:1000], y[:1000], classes, spec.device)}
    _save(model.state_dict(), spec.ckpt(pair, task), meta)
    return meta


@_timed
def base_unit(spec: Spec, pair: int, task: str) -> dict:
    """``base-<pair>-<task>-w<width>``: train one base model (all its task's training images), cache it."""
    return {"unit": "base", **_train_base(spec, pair, task)}


def ensure_base(spec: Spec, pair: int, task: str) -> tuple[torch.nn.Module, dict, bool]:
    """The cached base model, or the same model trained again from its seed when the cache lacks it (or holds it
    trained otherwise, e.g. with other class vectors)."""
    vectors = class_vectors(spec, load(spec.data, spec.test_images)["names"])
    meta = cached_base(spec, pair, task, vectors_sha256(vectors))
    retrained = meta is None
    if retrained:
        meta = _train_base(spec, pair, task)
    model = build_model(spec, vectors, seed=0)
    model.load_state_dict(load_checkpoint(spec.ckpt(pair, task)))
    return model.eval(), meta, retrained


def _reset_bn(model: torch.nn.Module, loader, device: str) -> torch.nn.Module:
    """A copy of ``model`` with BatchNorm statistics recomputed on ``loader`` (on ``device``), back on the CPU."""
    model = copy.deepcopy(model).to(device)
    reset_bn_stats(model, loader)
    return model.to("cpu").eval()


@_timed
def merge_unit(spec: Spec, pair: int) -> dict:
    """``merge-<pair>-w<width>``: every method on one pair; joint and per-task accuracy, MACs, merge time."""
    data = load(spec.data, spec.test_images)
    tasks = class_split(pair)
    (a, meta_a, re_a), (b, meta_b, re_b) = ensure_base(spec, pair, "A"), ensure_base(spec, pair, "B")
    loader = merge_loader(data, tasks[0] + tasks[1], n_images=spec.merge_images, seed=pair)
    # The paper resets BatchNorm for every method, the original models included, on the same loader.
    a, b = (_reset_bn(m, loader, spec.device) for m in (a, b))
    x, y = data["x_test"], data["y_test"]
    example = x[:1]
    rows: dict[str, dict] = {}
    logits = {"model-a": outputs(a, x, spec.device), "model-b": outputs(b, x, spec.device)}
    one = count_macs(a, example)
    for slug, _label, options in METHODS:
        t0, seconds = time.perf_counter(), 0.0
        if options is None:
            out = logits[slug] if slug in logits else torch.stack([logits["model-a"], logits["model-b"]])
            macs = one if slug in logits else 2 * one
        else:
            extra = {"alpha": spec.alpha, "beta": spec.beta} if options["method"] == "zipit" else {}
            merged = zip_models([a, b], loader, **options, **extra, device=spec.device)
            seconds = time.perf_counter() - t0
            out = outputs(merged, x, spec.device)
            macs = count_macs(merged, example)
        rows[slug] = {**scores(out, y, tasks), "macs": macs, "merge_seconds": round(seconds, 2)}
    return {"unit": "merge", "pair": pair, "width": spec.width, "tasks": [list(t) for t in tasks],
            "merge_images": sum(len(bt[0]) for bt in loader), "alpha": spec.alpha, "beta": spec.beta,
            "training": meta_a["training"], "settings": spec.merge_settings(),
            "bases": {"A": {"own_task_acc": meta_a["own_task_acc"], "retrained": re_a},
                      "B": {"own_task_acc": meta_b["own_task_acc"], "retrained": re_b}},
            "rows": rows}


@_timed
def timing_unit(spec: Spec, n_images: int) -> dict:
    """``timing-w<width>``: seconds per image of one training epoch (``n_images`` images of task A of pair 0,
    the recipe's batch size, augmentation on) and of a forward pass, after one warm-up batch, at this machine's
    load."""
    data = load(spec.data, spec.test_images)
    vectors = class_vectors(spec, data["names"])
    classes = class_split(0)[0]
    model = build_model(spec, vectors, 0)
    x, y = task_images(data, classes, "train", n_images)
    r = spec.train

    def epoch(xs, ys):
        train_on_task(model, xs, ys, classes, epochs=1, lr=r.lr, batch_size=r.batch_size, augment=True, seed=0,
                      warmup_epochs=0, nesterov=r.nesterov, device=spec.device)

    epoch(x[:r.batch_size], y[:r.batch_size])  # warm-up: first-call costs are not the rate
    outputs(model, data["x_test"][:r.batch_size], spec.device)
    t0 = time.perf_counter()
    epoch(x, y)
    train_s = (time.perf_counter() - t0) / len(x)
    t0 = time.perf_counter()
    outputs(model, data["x_test"][:n_images], spec.device)
    forward_s = (time.perf_counter() - t0) / min(n_images, len(data["x_test"]))
    return {"unit": "timing", "width": spec.width, "n_images": len(x), "batch_size": r.batch_size,
            "train_seconds_per_image": train_s, "forward_seconds_per_image": forward_s,
            "macs": count_macs(model, x[:1])}
