"""The units of the harmonization study (benchmarks/harmonize_study.py): data, simulated scanner, U-Net training
and Dice, one function per unit. Kept apart from the command and from the page (harmonize_study_report.py), so
that the hash of the code that computes the numbers (a record's ``code_used``) ignores the page's wording.

A unit is one training run, ``<condition>-seed<k>``: a 3D U-Net trained on D0-train (+ T(D1) for the condition's
transform T) with seed k, scored by Dice per class on every D0-test volume. Everything a unit needs is rebuilt
from the shared data deterministically, so a unit runs alone on any machine.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = ROOT.parent / "shared" / "data" / "med" / "hippocampus"
if not DATA.is_dir():  # a git worktree sits one level deeper than the main checkout
    DATA = Path("/work/shared/data/med/hippocampus")

#: Split of the 260 cases (sorted by name) with numpy RandomState(0): D0-test, D0-train, D1 source.
CASES = (40, 20, 60)
CROP = (32, 48, 32)  # loses 0.02 % of label voxels on average (max 1.6 %), centre crop/pad
BATCH, LR = 4, 5e-3
#: Defaults of the network and schedule (the old page: width 4, 150 iterations, a class lost in 5 of 9 seeds).
WIDTH, ITERATIONS = 8, 600
CURVE_POINTS = 10  # the training curve is kept as the mean loss over this many equal windows of iterations
CLASSES = ("anterior", "posterior")
#: Every condition: ``no-D1`` trains on D0-train alone; the others add D1 transformed by the named harmonizer
#: (``raw``: untransformed, not in the default set).
CONDITIONS = ("no-D1", "raw", "zscore", "clip", "hm-volume", "hm", "nyul")
DEFAULT_CONDITIONS = ("no-D1", "zscore", "clip", "hm-volume", "hm", "nyul")
# Simulated scanner change applied to D0-canonical intensities y in [0, 1]:
#   y -> units_scale * (bias(r) * y ** gamma + noise) + units_offset
SEVERITIES = {
    "mild": {"gamma": 0.7, "bias": 0.10, "noise": 0.01, "units_scale": 800.0, "units_offset": 30.0},
    "strong": {"gamma": 0.4, "bias": 0.30, "noise": 0.03, "units_scale": 800.0, "units_offset": 30.0},
}
D1_SEED = 12345

#: The code that computes the numbers: these parts of src/knotwork, this file and the network.
CODE_PARTS = ("harmonize", "_*.py")


def code_used() -> str:
    import _common

    return _common.scoped_fingerprint(CODE_PARTS, __file__, BENCH / "harmonize_unet.py")


@dataclass(frozen=True)
class Budget:
    """What a record's numbers depend on besides the code: one study folder per budget."""

    severity: str = "strong"
    width: int = WIDTH
    iterations: int = ITERATIONS
    cases: tuple[int, int, int] = CASES
    batch: int = BATCH
    lr: float = LR

    @property
    def study(self) -> str:
        """``harmonize-<severity>-w<width>-i<iterations>`` (+ ``-c<test>-<train>-<d1>`` for other case counts)."""
        cases = "" if tuple(self.cases) == CASES else "-c" + "-".join(map(str, self.cases))
        return f"harmonize-{self.severity}-w{self.width}-i{self.iterations}{cases}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cases": list(self.cases)}


def unit_name(condition: str, seed: int) -> str:
    return f"{condition}-seed{seed}"


# --------------------------------------------------------------------------------------------------- data

def split_names(cases=CASES) -> dict[str, list[str]]:
    """The file names of D0-test, D0-train and the D1 source: ``cases`` = their sizes."""
    n_test, n_train, n_d1 = cases
    names = sorted(p.name for p in (DATA / "imagesTr").glob("*.nii.gz"))
    perm = np.random.RandomState(0).permutation(len(names))
    idx = {"test": perm[:n_test], "train": perm[n_test:n_test + n_train],
           "d1": perm[n_test + n_train:n_test + n_train + n_d1]}
    return {k: [names[i] for i in v] for k, v in idx.items()}


def read_case(name: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = np.asanyarray(nib.load(DATA / "imagesTr" / name).dataobj).astype(np.float32)
    lab = np.rint(np.asanyarray(nib.load(DATA / "labelsTr" / name).dataobj)).astype(np.uint8)
    return img, lab


def canonical(img):
    """D0's own preprocessing: per-volume clip to the 0.5/99.5 percentiles and rescale to [0, 1]."""
    from knotwork.harmonize import clip_rescale

    return clip_rescale(img, percentiles=(0.5, 99.5), out_range=(0.0, 1.0)).astype(np.float32)


def simulate_scanner(y, params, rng):
    """The D1 scanner: monotone gamma curve, smooth bias field (low-order polynomial), noise, units."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in y.shape], indexing="ij")
    terms = list(grids) + [grids[0] * grids[1], grids[1] * grids[2], grids[0] ** 2, grids[1] ** 2]
    coef = rng.normal(size=len(terms))
    field = sum(c * t for c, t in zip(coef, terms, strict=True))
    field = np.exp(params["bias"] * field / np.abs(field).max())
    z = field * np.power(np.clip(y, 0, None), params["gamma"]) + rng.normal(0, params["noise"], y.shape)
    return (params["units_scale"] * z + params["units_offset"]).astype(np.float32)


def fit_crop(a, fill):
    out = np.full(CROP, fill, dtype=a.dtype)
    src, dst = [], []
    for n, m in zip(a.shape, CROP, strict=True):
        s = abs(n - m) // 2
        src.append(slice(s, s + m) if n >= m else slice(0, n))
        dst.append(slice(0, m) if n >= m else slice(s, s + n))
    out[tuple(dst)] = a[tuple(src)]
    return out


def to_training(img, lab):
    """Centre crop/pad to CROP, then 2x down-sampling (mean for images, majority for labels)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(fit_crop(img, float(img.min())))[None, None]
    y = torch.from_numpy(fit_crop(lab, 0).astype(np.int64))
    x = F.avg_pool3d(x, 2)[0]
    y = F.avg_pool3d(F.one_hot(y, 3).permute(3, 0, 1, 2).float()[None], 2)[0].argmax(0)
    return x, y


def w1_distance(vols, reference_vols) -> float:
    """1-Wasserstein distance between the pooled voxel intensities of two sets of volumes: the mean absolute
    difference of their quantile functions on 2001 levels (trapezoid rule)."""
    levels = np.linspace(0.0, 1.0, 2001)
    q = np.quantile(np.concatenate([v.ravel() for v in vols]), levels)
    q_ref = np.quantile(np.concatenate([v.ravel() for v in reference_vols]), levels)
    return float(np.trapezoid(np.abs(q - q_ref), levels))


def unit_data(condition: str, budget: Budget):
    """D0-train (+ T(D1)) as training pairs, D0-test pairs and their names, and W1 of T(D1) to D0-train."""
    from knotwork.harmonize import get_harmonizer

    names = split_names(budget.cases)
    train = [(canonical(i), lab) for i, lab in map(read_case, names["train"])]
    test = [(canonical(i), lab) for i, lab in map(read_case, names["test"])]
    items = [to_training(i, lab) for i, lab in train]
    w1 = None
    if condition != "no-D1":
        rng = np.random.default_rng(D1_SEED)  # the same D1 for every condition and seed
        d1 = [(simulate_scanner(canonical(i), SEVERITIES[budget.severity], rng), lab)
              for i, lab in map(read_case, names["d1"])]
        vols = [i for i, _ in d1]
        if condition != "raw":
            params = {"standard_range": None} if condition == "nyul" else {}
            h = get_harmonizer(condition, **params).fit([i for i, _ in train])
            vols = [h.transform(v) for v in vols]
        w1 = w1_distance(vols, [i for i, _ in train])
        items += [to_training(v, lab) for v, (_, lab) in zip(vols, d1, strict=True)]
    return items, [to_training(i, lab) for i, lab in test], names["test"], w1


# --------------------------------------------------------------------------------------------------- training

def dice_per_class(pred, target, classes=(1, 2)) -> list[float]:
    """Dice of each foreground class; 1.0 when both prediction and target lack the class."""
    res = []
    for c in classes:
        p, t = pred == c, target == c
        denom = p.sum() + t.sum()
        res.append(float(2 * (p & t).sum() / denom) if denom else 1.0)
    return res


def train(items, seed: int, budget: Budget):
    """Train the U-Net on ``items`` (image, label) pairs: the model and the training curve."""
    import torch
    import torch.nn.functional as F
    from harmonize_unet import UNet3D

    torch.manual_seed(seed)  # benchmark unit in its own process: a global seed is fine here
    gen = torch.Generator().manual_seed(seed)
    xs = torch.stack([x for x, _ in items])
    ys = torch.stack([y for _, y in items])
    model = UNet3D(n_classes=3, width=budget.width)
    opt = torch.optim.Adam(model.parameters(), lr=budget.lr)
    model.train()
    window = max(1, budget.iterations // CURVE_POINTS)
    curve, losses, soft = [], [], []
    for it in range(1, budget.iterations + 1):
        idx = torch.randint(0, len(xs), (budget.batch,), generator=gen)
        logits = model(xs[idx])
        prob = logits.softmax(1)
        onehot = F.one_hot(ys[idx], 3).permute(0, 4, 1, 2, 3).float()
        inter = (prob * onehot).sum((0, 2, 3, 4))[1:]
        soft_dice = (2 * inter + 1) / (prob.sum((0, 2, 3, 4))[1:] + onehot.sum((0, 2, 3, 4))[1:] + 1)
        loss = F.cross_entropy(logits, ys[idx]) + (1 - soft_dice.mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        soft.append(soft_dice.detach().tolist())
        if it % window == 0 or it == budget.iterations:
            curve.append({"iteration": it, "loss": float(np.mean(losses)),
                          "train_soft_dice": np.mean(soft, axis=0).round(4).tolist()})
            losses, soft = [], []
    return model, curve


def evaluate(model, test_items) -> list[list[float]]:
    """Dice per class (anterior, posterior) of every test volume."""
    import torch

    model.eval()
    with torch.no_grad():
        xt = torch.stack([x for x, _ in test_items])
        pred = torch.cat([model(xt[i:i + 8]).argmax(1) for i in range(0, len(xt), 8)])
    return [dice_per_class(p.numpy(), y.numpy()) for p, (_, y) in zip(pred, test_items, strict=True)]


def run_unit(condition: str, seed: int, budget: Budget) -> dict[str, Any]:
    """One unit: its record's data (Dice per test volume and class, curve, cost in CPU seconds of this process)."""
    import harmonize_unet  # noqa: F401  (imports first: a unit's CPU time is its own work)
    import nibabel  # noqa: F401
    import torch

    import knotwork.harmonize  # noqa: F401

    torch.set_num_threads(1)
    wall0 = time.perf_counter()
    cpu = [time.process_time()]
    items, test, test_names, w1 = unit_data(condition, budget)
    cpu.append(time.process_time())
    model, curve = train(items, seed, budget)
    cpu.append(time.process_time())
    dice = evaluate(model, test)
    cpu.append(time.process_time())
    per_class = np.mean(dice, axis=0)
    return {
        "condition": condition, "seed": seed, "budget": budget.as_dict(),
        "severity_params": None if condition == "no-D1" else SEVERITIES[budget.severity],
        "test_volumes": test_names, "dice": dice, "class_dice": per_class.tolist(),
        "mean_dice": float(per_class.mean()), "training_volumes": len(items), "w1": w1,
        "parameters": sum(p.numel() for p in model.parameters()), "curve": curve,
        "cpu_seconds": {"prepare": round(cpu[1] - cpu[0], 2), "train": round(cpu[2] - cpu[1], 2),
                        "evaluate": round(cpu[3] - cpu[2], 2), "total": round(cpu[3] - cpu[0], 2)},
        "wall_seconds": round(time.perf_counter() - wall0, 2), "torch_threads": torch.get_num_threads(),
        "code_used": code_used(),
    }


# ------------------------------------------------------------------------------------------ pre-registration

#: Named before any run of this study (part of ``code_used``, so a record made under other comparisons shows a
#: different hash). Each primary is ``(a, b)``: does condition ``a`` beat condition ``b`` in mean test Dice?
#: 1. the paper's claim: histogram matching of the extra data to a dataset reference vs simple normalization
#:    (z-score); 2. does that extra data help at all: matched extra data vs none.
PRIMARY: tuple[tuple[str, str], ...] = (("hm", "zscore"), ("hm", "no-D1"))
#: The primary test: paired t over seeds of the per-seed score (Dice averaged over both classes and every test
#: volume), two-sided, Holm-corrected over PRIMARY only, at level ALPHA. The Wilcoxon signed-rank test and a
#: bootstrap over seeds and test volumes are reported beside it; every other pair is exploratory (uncorrected).
ALPHA = 0.05
BOOTSTRAP_DRAWS, BOOTSTRAP_SEED = 10_000, 0
#: A class is collapsed in a run when its test Dice (mean over the test volumes) is below this.
COLLAPSED = 0.1
SEEDS = tuple(range(9))
PILOT_SEEDS = (0, 1, 2, 3, 4)  # the old width-4 network lost a class with seeds 2, 3 and 4
