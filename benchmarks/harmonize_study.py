"""Does histogram matching of additional training data beat simple normalization? (arXiv:2309.02001)

The study: real MSD hippocampus MR volumes are the original domain D0; a disjoint part of them goes
through a simulated scanner change (a non-linear monotone intensity curve, a smooth multiplicative
bias field, Gaussian noise and other units) to make the additional domain D1. A small 3D U-Net is
trained on D0-train + T(D1) for each harmonization T, and Dice per label is measured on D0-test.

    python benchmarks/harmonize_study.py --severity strong --severity mild --seeds 0 1 2 3 4 5 6 7 8

One command runs what is missing and writes docs/results/harmonize.md and harmonize_study.png from every
record. Each training run is one record, benchmarks/results/harmonize_study/<severity>_<condition>_seed<N>.json
(`none_no-D1_seed<N>` for the D0-only baseline, which no severity changes), so a rerun skips the finished ones.
`--iterations`/`--cases` shrink the budget (records of another budget are neither reused nor reported);
`--records`/`--out` write elsewhere (the smoke test).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_records, write_record  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "med" / "hippocampus"
if not DATA.is_dir():  # a git worktree sits one level deeper than the main checkout
    DATA = Path("/work/shared/data/med/hippocampus")
STUDY = "harmonize_study"
PAGE = ROOT / "docs" / "results" / "harmonize.md"

# Split of the 260 cases (sorted by name) with numpy RandomState(0): test, D0-train, D1 source.
CASES = (40, 20, 60)
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


def load_cases(cases=CASES):
    """The (image, label) pairs of D0-test, D0-train and the D1 source: ``cases`` = their sizes."""
    import nibabel as nib

    n_test, n_train, n_d1 = cases
    names = sorted(p.name for p in (DATA / "imagesTr").glob("*.nii.gz"))
    perm = np.random.RandomState(0).permutation(len(names))
    split = {
        "test": perm[:n_test],
        "train": perm[n_test : n_test + n_train],
        "d1": perm[n_test + n_train : n_test + n_train + n_d1],
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


def prepare(severity, cases=CASES):
    """D0-train, D0-test (canonical) and T(D1) for every T; plus W1 of each T(D1) to D0-train."""
    from knotwork.harmonize import get_harmonizer

    cases, names = load_cases(cases)
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


def train_and_eval(train_items, test_items, seed, iterations=ITERATIONS):
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
    for _ in range(iterations):
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
    return np.asarray(dices), float(loss.detach())


def unit(severity, condition, seed):
    """The record of one training run; the D0-only baseline is one per seed, shared by every severity."""
    return f"none_no-D1_seed{seed}" if condition == "no-D1" else f"{severity}_{condition}_seed{seed}"


def run(severities, seeds, conditions, *, budget, records_root=None):
    """Train and evaluate every (severity, condition, seed) without a record of this budget; one record each."""
    import torch

    torch.set_num_threads(1)
    have = {u for u, r in load_records(STUDY, root=records_root).items() if r["data"].get("budget") == budget}
    for severity in severities:
        todo = [(c, s) for s in seeds for c in conditions if unit(severity, c, s) not in have]
        if not todo:
            continue
        t0 = time.time()
        train, test, d1, w1, _names = prepare(severity, tuple(budget["cases"]))
        print(f"[{severity}] data ready in {time.time() - t0:.0f}s; {len(todo)} runs to do", flush=True)
        d0_train = [to_training(i, lab) for i, lab in train]
        d0_test = [to_training(i, lab) for i, lab in test]
        for cond, seed in todo:
            t0 = time.time()
            items = d0_train + ([] if cond == "no-D1" else [to_training(i, lab) for i, lab in d1[cond]])
            dices, last_loss = train_and_eval(items, d0_test, seed, budget["iterations"])
            res = {"condition": cond, "seed": seed, "severity": None if cond == "no-D1" else severity,
                   "dice": dices.tolist(), "mean_dice": dices.mean(0).tolist(), "final_loss": last_loss,
                   "seconds": time.time() - t0, "w1": w1.get(cond),
                   "severity_params": None if cond == "no-D1" else SEVERITIES[severity], "budget": budget}
            write_record(STUDY, unit(severity, cond, seed), res, script=__file__, root=records_root)
            have.add(unit(severity, cond, seed))
            print(f"[{severity}] {cond:10s} seed {seed}: Dice {dices.mean(0).round(3)} in {res['seconds']:.0f}s",
                  flush=True)


def command(args) -> str:
    """The one command that (re)makes the page, as run (without where its outputs go)."""
    parts = ["python", "benchmarks/harmonize_study.py"]
    for sev in args.severity:
        parts += ["--severity", sev]
    parts += ["--seeds", *map(str, args.seeds)]
    if list(args.conditions) != list(CONDITIONS):
        parts += ["--conditions", *args.conditions]
    if args.iterations != ITERATIONS:
        parts += ["--iterations", str(args.iterations)]
    if tuple(args.cases) != CASES:
        parts += ["--cases", *map(str, args.cases)]
    return shlex.join(parts)


def parser() -> argparse.ArgumentParser:
    """The options of the one command (its results page names them)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--severity", action="append", choices=sorted(SEVERITIES))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    p.add_argument("--iterations", type=int, default=ITERATIONS, help="training iterations per run")
    p.add_argument("--cases", type=int, nargs=3, default=list(CASES), metavar=("TEST", "TRAIN", "D1"),
                   help="how many volumes go to D0-test, D0-train and the D1 source")
    p.add_argument("--records", type=Path, default=None, help="records root (default benchmarks/results)")
    p.add_argument("--out", type=Path, default=PAGE, help="results page; the figure is written beside it")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    args.severity = args.severity or ["strong"]
    if args.iterations < 1 or min(args.cases) < 1 or sum(args.cases) > 260:
        p.error("--iterations and every --cases count must be >= 1, and --cases may use at most 260 volumes")
    if not DATA.is_dir():
        p.error(f"the hippocampus data is not at {DATA}; see shared/data/README.md")
    budget = {"iterations": args.iterations, "cases": list(args.cases)}
    run(args.severity, args.seeds, args.conditions, budget=budget, records_root=args.records)
    from harmonize_study_report import write_report

    write_report(load_records(STUDY, root=args.records), budget=budget, command=command(args), page=args.out)


if __name__ == "__main__":
    main()
