"""Does histogram matching of additional training data beat simple normalization? (arXiv:2309.02001)

The study: real MSD hippocampus MR volumes are the original domain D0; a disjoint part of them goes
through a simulated scanner change (a non-linear monotone intensity curve, a smooth multiplicative
bias field, Gaussian noise and other units) to make the additional domain D1. A small 3D U-Net is
trained on D0-train + T(D1) for each harmonization T, and Dice per label is measured on D0-test.

    python benchmarks/harmonize_study.py run --severity strong --severity mild   # resumable
    python benchmarks/harmonize_study.py report                                  # table + figure

Every run caches its result as JSON under .knotwork-cache/harmonize_study/, so a rerun skips the
finished ones; `report` writes docs/results/harmonize.md and docs/results/harmonize_study.png from
whatever has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = ROOT.parent / "shared" / "data" / "med" / "hippocampus"
if not DATA.is_dir():  # a git worktree sits one level deeper than the main checkout
    DATA = Path("/work/shared/data/med/hippocampus")
CACHE = ROOT / ".knotwork-cache" / "harmonize_study"

# Split of the 260 cases (sorted by name) with numpy RandomState(0): test, D0-train, D1 source.
N_TEST, N_TRAIN, N_D1 = 40, 20, 60
CROP = (32, 48, 32)  # loses 0.02 % of label voxels on average (max 1.6 %), centre crop/pad
ITERATIONS, BATCH, LR, WIDTH = 150, 4, 5e-3, 4
SEEDS = (0, 1, 2)
CONDITIONS = ("no-D1", "raw", "zscore", "clip", "hm-volume", "hm", "nyul")
# Simulated scanner change applied to D0-canonical intensities y in [0, 1]:
#   y -> units_scale * (bias(r) * y ** gamma + noise) + units_offset
SEVERITIES = {
    "mild": {"gamma": 0.7, "bias": 0.10, "noise": 0.01, "units_scale": 800.0, "units_offset": 30.0},
    "strong": {"gamma": 0.4, "bias": 0.30, "noise": 0.03, "units_scale": 800.0, "units_offset": 30.0},
}


def load_cases():
    import nibabel as nib

    names = sorted(p.name for p in (DATA / "imagesTr").glob("*.nii.gz"))
    perm = np.random.RandomState(0).permutation(len(names))
    split = {
        "test": perm[:N_TEST],
        "train": perm[N_TEST : N_TEST + N_TRAIN],
        "d1": perm[N_TEST + N_TRAIN : N_TEST + N_TRAIN + N_D1],
    }

    def read(i):
        img = np.asanyarray(nib.load(DATA / "imagesTr" / names[i]).dataobj).astype(np.float32)
        lab = np.rint(np.asanyarray(nib.load(DATA / "labelsTr" / names[i]).dataobj)).astype(np.uint8)
        return img, lab

    return {k: [read(i) for i in v] for k, v in split.items()}, {k: [names[i] for i in v] for k, v in split.items()}


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


def prepare(severity):
    """D0-train, D0-test (canonical) and T(D1) for every T; plus W1 of each T(D1) to D0-train."""
    from knotwork.harmonize import get_harmonizer

    cases, names = load_cases()
    rng = np.random.default_rng(12345)
    train = [(canonical(i), lab) for i, lab in cases["train"]]
    test = [(canonical(i), lab) for i, lab in cases["test"]]
    d1 = [(simulate_scanner(canonical(i), SEVERITIES[severity], rng), lab) for i, lab in cases["d1"]]
    levels = np.linspace(0.0, 1.0, 2001)
    q_d0 = np.quantile(np.concatenate([i.ravel() for i, _ in train]), levels)
    refs = [i for i, _ in train]
    harmonizers = {
        "raw": None,
        "zscore": get_harmonizer("zscore"),
        "clip": get_harmonizer("clip"),
        "hm-volume": get_harmonizer("hm-volume"),
        "hm": get_harmonizer("hm"),
        "nyul": get_harmonizer("nyul", standard_range=None),
    }
    out, w1 = {}, {}
    for cond, h in harmonizers.items():
        if h is not None:
            h.fit(refs)
        vols = [i if h is None else h.transform(i) for i, _ in d1]
        out[cond] = list(zip(vols, [lab for _, lab in d1], strict=True))
        # 1-Wasserstein distance between the pooled voxel intensities of T(D1) and of D0-train, as the
        # mean absolute difference of their quantile functions on 2001 levels (trapezoid rule).
        q = np.quantile(np.concatenate([v.ravel() for v in vols]), levels)
        w1[cond] = float(np.trapezoid(np.abs(q - q_d0), levels))
    return train, test, out, w1, names


def dice_per_label(pred, target, labels=(1, 2)):
    res = []
    for c in labels:
        p, t = pred == c, target == c
        denom = p.sum() + t.sum()
        res.append(float(2 * (p & t).sum() / denom) if denom else 1.0)
    return res


def train_and_eval(train_items, test_items, seed):
    import torch
    import torch.nn.functional as F
    from harmonize_unet import UNet3D

    torch.manual_seed(seed)  # benchmark script, not library: a global seed is fine here
    gen = torch.Generator().manual_seed(seed)
    xs = torch.stack([x for x, _ in train_items])
    ys = torch.stack([y for _, y in train_items])
    model = UNet3D(n_classes=3, width=WIDTH)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    for _ in range(ITERATIONS):
        idx = torch.randint(0, len(xs), (BATCH,), generator=gen)
        logits = model(xs[idx])
        prob = logits.softmax(1)
        onehot = F.one_hot(ys[idx], 3).permute(0, 4, 1, 2, 3).float()
        inter = (prob * onehot).sum((0, 2, 3, 4))[1:]
        soft_dice = (2 * inter + 1) / (prob.sum((0, 2, 3, 4))[1:] + onehot.sum((0, 2, 3, 4))[1:] + 1)
        loss = F.cross_entropy(logits, ys[idx]) + (1 - soft_dice.mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    dices = []
    with torch.no_grad():
        xt = torch.stack([x for x, _ in test_items])
        pred = torch.cat([model(xt[i : i + 8]).argmax(1) for i in range(0, len(xt), 8)])
    for p, (_, y) in zip(pred, test_items, strict=True):
        dices.append(dice_per_label(p.numpy(), y.numpy()))
    return np.asarray(dices), float(loss)


def run(severities, seeds, conditions):
    import torch

    torch.set_num_threads(1)
    for severity in severities:
        CACHE.joinpath(severity).mkdir(parents=True, exist_ok=True)
        todo = [(c, s) for s in seeds for c in conditions
                if not CACHE.joinpath(severity, f"{c}_seed{s}.json").exists()
                and not (c == "no-D1" and _has_nod1(s))]
        if not todo:
            continue
        t0 = time.time()
        train, test, d1, w1, names = prepare(severity)
        _atomic_json(CACHE / severity / "w1.json", {"w1": w1, "names": names, "params": SEVERITIES[severity]})
        print(f"[{severity}] data ready in {time.time() - t0:.0f}s; {len(todo)} runs to do", flush=True)
        d0_train = [to_training(i, lab) for i, lab in train]
        d0_test = [to_training(i, lab) for i, lab in test]
        for cond, seed in todo:
            t0 = time.time()
            items = d0_train + ([] if cond == "no-D1" else [to_training(i, lab) for i, lab in d1[cond]])
            dices, last_loss = train_and_eval(items, d0_test, seed)
            res = {"condition": cond, "seed": seed, "severity": severity, "dice": dices.tolist(),
                   "mean_dice": dices.mean(0).tolist(), "final_loss": last_loss, "seconds": time.time() - t0}
            _atomic_json(CACHE / severity / f"{cond}_seed{seed}.json", res)
            print(f"[{severity}] {cond:10s} seed {seed}: Dice {dices.mean(0).round(3)} in {res['seconds']:.0f}s",
                  flush=True)


def _has_nod1(seed):
    # "no-D1" never sees D1, so one run per seed serves every severity.
    return any(CACHE.glob(f"*/no-D1_seed{seed}.json"))


def _atomic_json(path, obj):
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--severity", action="append", choices=sorted(SEVERITIES))
    r.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    r.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    sub.add_parser("report")
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(args.severity or ["strong"], args.seeds, args.conditions)
    else:
        from harmonize_study_report import write_report

        write_report(CACHE, ROOT)


if __name__ == "__main__":
    main()
