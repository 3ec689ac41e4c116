"""The page of the ZipIt! CIFAR-10 (5+5) study (benchmarks/zipit_study.py), rendered from its result records alone.

Kept apart from the units (zipit_study_lib.py) so that a change to the page's wording does not change the hash of
the code that computed the numbers. Paired tests: a t-test over pairs and a bootstrap over pairs and test images.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import _common
import numpy as np
from zipit_study_lib import LABELS, METHODS, base_unit_name, merge_unit_name, unpack_bits

#: Paper, CIFAR-10 (5+5) ResNet-20x4, CLIP heads, Table 1a (means over 5 pairs; ../shared/methods/zipit.md §5.1):
#: (GFLOPs, joint, task A, task B, avg). The ensemble's 1.37 GFLOPs is the notes' unverified reconstruction.
PAPER_X4 = {
    "model-a": (0.68, 48.2, 97.0, 45.1, 71.0), "model-b": (0.68, 48.4, 49.1, 96.1, 72.6),
    "wavg": (0.68, 43.0, 54.1, 67.5, 60.8), "rebasin": (0.68, 46.2, 76.8, 82.7, 79.8),
    "permute": (0.68, 58.4, 86.6, 87.4, 87.4), "zipit": (0.68, 79.1, 92.9, 91.2, 92.1),
    "zipit-13": (0.91, 83.8, 95.1, 94.1, 94.6), "ensemble": (1.37, 87.4, 97.0, 96.1, 96.6),
}
#: The comparisons tested on every width: (method, reference); the paper's x4 difference where it has one.
COMPARISONS = (("zipit", "permute"), ("zipit-13", "ensemble"), ("zipit-7", "ensemble"), ("zipit-19", "ensemble"),
               ("zipit-13", "rebasin"), ("zipit", "rebasin"), ("permute", "rebasin"), ("zipit", "wavg"))
#: The two primary tests, the paper's two claims this study tests (a Holm correction over the two); every other
#: comparison, and the ordering, is exploratory (uncorrected).
PRIMARY = (("zipit", "permute"), ("zipit-13", "ensemble"))
CONVERGED = 0.85       # mean own-task accuracy below which the comparisons are "not tested at this budget"
FITTED = 0.95          # mean training accuracy (first 1,000 images, no augmentation) above which models fit their data
ALPHA = 0.05
N_BOOT = 2000
ZIP_FAMILY = ("zipit", "zipit-19", "zipit-13", "zipit-7", "ensemble")


def paper_diff(a: str, b: str) -> float | None:
    return PAPER_X4[a][1] - PAPER_X4[b][1] if a in PAPER_X4 and b in PAPER_X4 else None


# ------------------------------------------------------------------------------------------------- statistics

def paired_t(diffs: Sequence[float]) -> dict[str, float]:
    """Paired t-test of differences against 0: mean, sample sd, 95 % t interval, two-sided p, wins/losses
    (`_common.paired_differences`). Every pair differing by the same amount leaves no spread to test against: p is
    then 0 for a non-zero difference and 1 for none."""
    r = _common.paired_differences(diffs)
    p = r["p_t"]
    if r["n"] > 1 and r["sd"] == 0:
        p = 0.0 if r["mean"] != 0 else 1.0
    return {**{k: r[k] for k in ("n", "mean", "sd", "lo", "hi", "t", "wins", "losses")}, "p": p}


def bootstrap(diff: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, float]:
    """Two-level bootstrap of the mean of ``diff`` (pairs x test images): resample the pairs with replacement, and
    the test images with replacement (the same draw for every pair: they are one test set). Returns the mean, the 95 % percentile interval and
    the two-sided p (twice the smaller share of resamples on either side of 0). The same ``seed`` draws the same
    resamples, so every comparison of one page sees the same ones."""
    d = np.asarray(diff, dtype=np.float64)
    pairs, images = _resamples(d.shape[0], d.shape[1], n_boot, seed)
    stats = (pairs * (images @ d.T.astype(np.float32))).sum(1) / (d.shape[0] * d.shape[1])
    lo, hi = np.percentile(stats, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    p = min(1.0, 2 * min(float((stats <= 0).mean()), float((stats >= 0).mean())))
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "p": p, "n_boot": n_boot}


@functools.lru_cache(maxsize=2)
def _resamples(n: int, m: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each pair (n_boot x n) and each test image (n_boot x m, float32) is drawn in each resample."""
    rng = np.random.default_rng(seed)
    pairs = rng.multinomial(n, np.full(n, 1 / n), size=n_boot)
    draws = rng.integers(0, m, size=(n_boot, m)) + m * np.arange(n_boot)[:, None]
    images = np.bincount(draws.ravel(), minlength=n_boot * m).reshape(n_boot, m).astype(np.float32)
    return pairs, images


def supported(t: Mapping[str, float], bs: Mapping[str, float]) -> int:
    """+1 / -1 when both tests put the difference above / below 0 at the 5 % level, else 0."""
    if np.isnan(t["p"]) or t["p"] >= ALPHA or bs["p"] >= ALPHA:
        return 0
    if t["mean"] > 0 and bs["lo"] > 0:
        return 1
    if t["mean"] < 0 and bs["hi"] < 0:
        return -1
    return 0


# ------------------------------------------------------------------------------------------------ collection

@dataclass
class Width:
    """A width's records: base models by (pair, task), merge units by pair; ``done`` pairs have all three."""

    width: int
    planned: list[int]
    bases: dict[tuple[int, str], dict] = field(default_factory=dict)
    merges: dict[int, dict] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def rows(self, slug: str, key: str = "joint") -> np.ndarray:
        return np.array([self.merges[p]["rows"][slug][key] for p in self.done], dtype=float)

    def diff(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-pair joint differences in points, and the per-image matrix (pairs x images) of correct(a) - correct(b)."""
        per_pair = 100 * (self.rows(a) - self.rows(b))
        mats = []
        for p in self.done:
            ra, rb = self.merges[p]["rows"][a], self.merges[p]["rows"][b]
            mats.append(unpack_bits(ra["joint_bits"], ra["n_test"]).astype(np.int8)
                        - unpack_bits(rb["joint_bits"], rb["n_test"]).astype(np.int8))
        return per_pair, 100 * np.stack(mats).astype(np.float64)

    def test(self, a: str, b: str) -> tuple[dict, dict, int]:
        per_pair, mat = self.diff(a, b)
        t, bs = paired_t(per_pair), bootstrap(mat)
        return t, bs, supported(t, bs)

    def own_task(self) -> np.ndarray:
        return np.array([self.bases[(p, k)]["own_task_acc"] for p in self.done for k in "AB"], dtype=float)


def collect(records: Mapping[str, Mapping[str, Any]], plan: Sequence[tuple[int, Sequence[int]]]) -> list[Width]:
    data = {u: r["data"] for u, r in records.items()}
    out = []
    for width, pairs in plan:
        w = Width(width, list(pairs))
        for p in pairs:
            units = [base_unit_name(p, "A", width), base_unit_name(p, "B", width), merge_unit_name(p, width)]
            for task, unit in zip("AB", units[:2], strict=True):
                if unit in data:
                    w.bases[(p, task)] = data[unit]
            if units[2] in data:
                w.merges[p] = data[units[2]]
            w.missing += [u for u in units if u not in data]
            if all(u in data for u in units):
                w.done.append(p)
        out.append(w)
    return out


# ------------------------------------------------------------------------------------------------ formatting

def _ms(values: np.ndarray, scale: float = 100.0) -> str:
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def _p(x: float) -> str:
    return "–" if np.isnan(x) else (f"{x:.3f}" if x >= 0.001 else "< 0.001")


def _p_eq(x: float) -> str:
    """A p-value inside a sentence: 'p = 0.060' or 'p < 0.001'."""
    text = _p(x)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _ci(lo: float, hi: float) -> str:
    return "–" if np.isnan(lo) else f"[{lo:+.1f}, {hi:+.1f}]"


def _diff_name(a: str, b: str) -> str:
    return f"{LABELS[a]} − {LABELS[b]}"


def base_table(w: Width) -> list[str]:
    lines = ["| pair | task | classes | seed | own-task test acc | train acc (first 1,000, no aug.) | epochs "
             "| train images | CPU min | wall min | threads | device |", "|" + "---|" * 12]
    for (p, task), b in sorted(w.bases.items()):
        lines.append(f"| {p} | {task} | {b['classes']} | {b['seed']} | {100 * b['own_task_acc']:.1f} | "
                     f"{100 * b['train_acc_first_1000']:.1f} | {b['training']['epochs']} | {b['n_train']} | "
                     f"{b['cpu_seconds'] / 60:.1f} | {b['wall_seconds'] / 60:.1f} | {b['threads']} | {b['device']} |")
    retrained = [f"pair {p} {k}" for p in w.done for k in "AB" if w.merges[p]["bases"][k]["retrained"]]
    if retrained:
        gaps = [abs(w.merges[p]["bases"][k]["own_task_acc"] - w.bases[(p, k)]["own_task_acc"])
                for p in w.done for k in "AB" if w.merges[p]["bases"][k]["retrained"]]
        lines += ["", f"Retrained from their seeds by a merge unit (the cache was gone): {', '.join(retrained)}; "
                  f"their own-task accuracy differs from the base record by at most {100 * max(gaps):.2f} points."]
    return lines


def main_table(w: Width) -> list[str]:
    one = float(np.mean([w.merges[p]["rows"]["model-a"]["macs"] for p in w.done]))
    lines = ["| Method | MMACs | × one model | Joint | Task A | Task B | Avg | merge s | paper x4 joint |",
             "|" + "---|" * 9]
    for slug, label, _ in METHODS:
        macs = float(np.mean(w.rows(slug, "macs")))
        cells = [_ms(w.rows(slug, k)) for k in ("joint", "task_a", "task_b", "avg")]
        paper = f"{PAPER_X4[slug][1]:.1f}" if slug in PAPER_X4 else "–"
        lines.append(f"| {label} | {macs / 1e6:.1f} | {macs / one:.2f} | " + " | ".join(cells)
                     + f" | {np.mean(w.rows(slug, 'merge_seconds')):.1f} | {paper} |")
    return lines


def per_pair_table(w: Width) -> list[str]:
    slugs = [s for s, _, _ in METHODS]
    lines = ["| pair | task A classes | " + " | ".join(LABELS[s] for s in slugs) + " |",
             "|" + "---|" * (len(slugs) + 2)]
    for p in w.done:
        rows = w.merges[p]["rows"]
        lines.append(f"| {p} | {w.merges[p]['tasks'][0]} | "
                     + " | ".join(f"{100 * rows[s]['joint']:.1f}" for s in slugs) + " |")
    return lines


def tests_table(w: Width) -> tuple[list[str], dict[tuple[str, str], tuple[dict, dict, int]]]:
    """The table of every comparison, and (t-test, bootstrap, sign) by comparison. A primary test's sign holds
    only where the Holm-adjusted p (of the larger of its two p-values) is below 5 %; its t dict has "p_holm"."""
    lines = ["| difference (joint, points) | pairs | mean | sd | 95 % t CI | paired t p | bootstrap 95 % CI "
             "| bootstrap p | wins / losses | test | supported | paper x4 |", "|" + "---|" * 12]
    res = {key: w.test(*key) for key in COMPARISONS}
    adjusted = _common.holm([max(1.0 if np.isnan(res[k][0]["p"]) else res[k][0]["p"], res[k][1]["p"]) for k in PRIMARY])
    for key, p_holm in zip(PRIMARY, adjusted, strict=True):
        t, bs, sign = res[key]
        res[key] = ({**t, "p_holm": p_holm}, bs, sign if p_holm < ALPHA else 0)
    for a, b in COMPARISONS:
        t, bs, sign = res[(a, b)]
        paper = paper_diff(a, b)
        role = (f"primary {PRIMARY.index((a, b)) + 1} of {len(PRIMARY)}, Holm {_p_eq(t['p_holm'])}"
                if (a, b) in PRIMARY else "exploratory")
        lines.append(f"| {_diff_name(a, b)} | {t['n']} | {t['mean']:+.1f} | {t['sd']:.1f} | {_ci(t['lo'], t['hi'])} "
                     f"| {_p(t['p'])} | {_ci(bs['lo'], bs['hi'])} | {_p(bs['p'])} | {t['wins']} / {t['losses']} | "
                     f"{role} | {'> 0' if sign > 0 else '< 0' if sign < 0 else 'no'} | "
                     f"{'–' if paper is None else f'{paper:+.1f}'} |")
    return lines, res


def ordering(w: Width) -> str:
    """Methods by mean joint accuracy, '>' between neighbours only where both tests support it, else '≈'."""
    slugs = sorted(LABELS, key=lambda s: -w.rows(s).mean())
    text = LABELS[slugs[0]]
    for hi, lo in zip(slugs, slugs[1:], strict=False):
        text += (" > " if w.test(hi, lo)[2] > 0 else " ≈ ") + LABELS[lo]
    return text


# ---------------------------------------------------------------------------------------------------- curve

def curve_points(w: Width) -> list[tuple[str, float, float, float]]:
    """(slug, MACs relative to one model, mean joint %, sd) for every method."""
    one = float(np.mean(w.rows("model-a", "macs")))
    out = []
    for slug, _, _ in METHODS:
        j = 100 * w.rows(slug)
        out.append((slug, float(np.mean(w.rows(slug, "macs"))) / one, float(j.mean()),
                    float(j.std(ddof=1)) if len(j) > 1 else 0.0))
    return out


def write_curve(widths: Sequence[Width], path: Path) -> bool:
    """Joint accuracy against MACs (relative to one model): the ZipIt! family as a line, baselines as markers,
    the paper's x4 points hollow. False when no width has a finished pair."""
    done = [w for w in widths if w.done]
    if not done:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8))
    for i, w in enumerate(done):
        pts = {s: (x, y, e) for s, x, y, e in curve_points(w)}
        colour = f"C{i}"
        fam = [pts[s] for s in ZIP_FAMILY]
        ax.errorbar([p[0] for p in fam], [p[1] for p in fam], yerr=[p[2] for p in fam], color=colour, marker="o",
                    capsize=3, label=f"ZipIt! partial zips → ensemble, x{w.width} ({len(w.done)} pairs)")
        for s, marker in (("permute", "s"), ("rebasin", "^"), ("wavg", "v")):
            ax.errorbar([pts[s][0]], [pts[s][1]], yerr=[pts[s][2]], color=colour, marker=marker, capsize=3,
                        linestyle="none", label=f"{LABELS[s]}, x{w.width}")
        for s in ("zipit", "zipit-19", "zipit-13", "zipit-7"):
            ax.annotate(LABELS[s][8:-1], pts[s][:2], textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color=colour)
    fam = [(PAPER_X4[s][0] / PAPER_X4["model-a"][0], PAPER_X4[s][1]) for s in ("zipit", "zipit-13", "ensemble")]
    ax.plot([p[0] for p in fam], [p[1] for p in fam], color="k", marker="o", mfc="none", linestyle="--",
            label="paper x4 (Table 1a): 20/20, 13/20, ensemble")
    ax.plot([1, 1, 1], [PAPER_X4[s][1] for s in ("permute", "rebasin", "wavg")], color="k", marker="s",
            mfc="none", linestyle="none", label="paper x4: Permute, Git Re-Basin, W. Avg")
    ax.set_xlabel("MACs per image, relative to one base model")
    ax.set_ylabel("joint accuracy (%)")
    ax.set_title("CIFAR-10 (5+5): joint accuracy against inference cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def curve_table(widths: Sequence[Width]) -> list[str]:
    done = [w for w in widths if w.done]
    pts = {w.width: {s: (x, y, e) for s, x, y, e in curve_points(w)} for w in done}
    head = "| point | " + " | ".join(f"x{w.width}: × one model | x{w.width}: joint" for w in done) + \
        " | paper x4: × one model | paper x4: joint |"
    lines = [head, "|" + "---|" * (2 * len(done) + 3)]
    for s in ("model-a", *ZIP_FAMILY):
        cells = [f"{pts[w.width][s][0]:.2f} | {_ms(w.rows(s))}" for w in done]
        paper = (f"{PAPER_X4[s][0] / PAPER_X4['model-a'][0]:.2f} | {PAPER_X4[s][1]:.1f}" if s in PAPER_X4
                 else "– | –")
        lines.append(f"| {LABELS[s]} | " + " | ".join(cells) + f" | {paper} |")
    return lines


# ---------------------------------------------------------------------------------------------------- verdicts

def _result(t: Mapping[str, float], bs: Mapping[str, float]) -> str:
    return (f"{t['mean']:+.1f} points (95 % CI {_ci(t['lo'], t['hi'])}, paired t {_p_eq(t['p'])}; bootstrap "
            f"CI {_ci(bs['lo'], bs['hi'])}, {_p_eq(bs['p'])}; {t['n']} pairs)")


def verdicts(w: Width, res: Mapping[tuple[str, str], tuple[dict, dict, int]]) -> list[str]:
    """Sentences computed from the numbers: what this width's tests support, against the paper's claims."""
    own = w.own_task()
    lines = [f"- **Base models (x{w.width}).** {len(own)} models reach {100 * own.min():.1f}–{100 * own.max():.1f} % "
             f"on their own task (mean {100 * own.mean():.1f} %; the paper's x4 models 96–97 %)."]
    if own.mean() < CONVERGED:
        lines[-1] += f" That is below the {100 * CONVERGED:.0f} % target: {shortfall(w)}"
        return lines
    if own.min() < CONVERGED:
        lines[-1] += " " + below_target(w, res[("zipit", "permute")][0]["mean"])
    t, bs, sign = res[("zipit", "permute")]
    head = f"- **ZipIt! vs Permute at x{w.width}** (primary test 1 of 2, Holm {_p_eq(t['p_holm'])})."
    gap = f"ZipIt!_{{20/20}} − Permute = {_result(t, bs)}"
    if w.width >= 4:
        lines.append(f"{head} {gap}. The paper: +20.7 at x4 (Table 1a); "
                     + ("the lead is supported here." if sign > 0 else "a lead is **not supported** here."))
    elif sign == 0:
        lines.append(f"{head} {gap}: no difference detected (95 % CI {_ci(t['lo'], t['hi'])} points): consistent "
                     "with, but not evidence for, Fig. 7b's ZipIt! ≈ Permute below x4. The +20.7 of Table 1a is a "
                     "claim about x4 that this width does not test.")
    elif sign > 0:
        size = ("by a few points, which the figure's 'about equal' below x4 does not exclude" if t["mean"] < 5
                else "by more than a few points, a lead Fig. 7b shows only from x4 on")
        lines.append(f"{head} {gap}: ZipIt! leads {size}; the paper's +20.7 (Table 1a) is at x4, another width.")
    else:
        lines.append(f"{head} {gap}: Permute leads; the paper shows no such reversal at any width (Fig. 7b: about "
                     "equal below x4).")
    t, bs, sign = res[("zipit-13", "ensemble")]
    word = {-1: "below", 0: "not shown to differ from", 1: "above"}[sign]
    few = ("a few points below, as the paper's 3.6 at x4" if sign < 0 and t["mean"] > -5 else
           "further below than the paper's 3.6 at x4" if sign < 0 else "the paper: 3.6 below at x4")
    lines.append(f"- **Partial zip vs ensemble** (primary test 2 of 2, Holm {_p_eq(t['p_holm'])}). "
                 f"ZipIt!_{{13/20}} is {word} the ensemble: {_result(t, bs)}; {few}.")
    t, bs, sign = res[("zipit-13", "rebasin")]
    word = {-1: "below", 0: "not shown to differ from", 1: "above"}[sign]
    lines.append(f"- **Partial zip vs Git Re-Basin** (exploratory, uncorrected). ZipIt!_{{13/20}} is {word} Git "
                 f"Re-Basin: {_result(t, bs)}. The paper: +37.6 at x4 ('far above').")
    lines.append(f"- **Ordering by joint accuracy (x{w.width})** (exploratory, uncorrected), '>' only where both "
                 f"tests support it: {ordering(w)}.")
    return lines


def below_target(w: Width, gap_all: float) -> str:
    """The base models under the own-task target when the width's mean meets it: each with its training accuracy
    (underfit or not), and the first primary test's paired t again over the pairs whose two models both meet the
    target, beside `gap_all`, its mean difference over all pairs."""
    below = [(p, k, w.bases[(p, k)]) for p in w.done for k in "AB" if w.bases[(p, k)]["own_task_acc"] < CONVERGED]
    named = ", ".join(f"pair {p} {k} ({100 * b['own_task_acc']:.1f} % test, {100 * b['train_acc_first_1000']:.1f} % "
                      "train)" for p, k, b in below)
    fitted = all(b["train_acc_first_1000"] >= FITTED for _, _, b in below)
    why = ("they fit their training images, so the gap is generalisation, not too few epochs" if fitted else
           f"below {100 * FITTED:.0f} % on their own training images (first 1,000, no augmentation), they are still "
           "underfit at this recipe's epochs (more epochs may lift them over the target; not run)")
    text = f"Below {100 * CONVERGED:.0f} %: {named}: {why}."
    good = [p for p in w.done if all(w.bases[(p, k)]["own_task_acc"] >= CONVERGED for k in "AB")]
    if len(good) >= 2:
        t = paired_t(replace(w, done=good).diff("zipit", "permute")[0])
        text += (f" Over the {len(good)} pairs whose two models both reach {100 * CONVERGED:.0f} %, ZipIt!_{{20/20}} "
                 f"− Permute = {t['mean']:+.1f} points (paired t {_p_eq(t['p'])}), against "
                 f"{gap_all:+.1f} over all {len(w.done)}.")
    return text


def shortfall(w: Width) -> str:
    """Why the base models of a width missed the own-task target, from their records: the recipe and epochs, and
    whether they fit their training images (then the shortfall is generalisation, not too few epochs alone)."""
    bases = [w.bases[(p, k)] for p in w.done for k in "AB"]
    train = 100 * float(np.mean([b["train_acc_first_1000"] for b in bases]))
    own = 100 * float(np.mean([b["own_task_acc"] for b in bases]))
    recipes = sorted({(b["training"]["recipe"], b["training"]["epochs"], b["training"]["batch_size"],
                       b["training"]["lr"]) for b in bases})
    how = "; ".join(f"the '{r}' recipe, {e} epochs, batch {bs}, lr {lr:g}" for r, e, bs, lr in recipes)
    n = "/".join(f"{n:,}" for n in sorted({b["n_train"] for b in bases}))
    why = (f"they still underfit (below {100 * FITTED:.0f} % on their training images), so this budget trained them "
           "too little: more epochs or another recipe are needed" if train < 100 * FITTED else
           f"they fit their training images, so the shortfall is generalisation from {n} images per task (the gap "
           "between training and test accuracy), which more epochs alone may not close")
    return (f"trained with {how} on {n} images per task, they reach {train:.1f} % on their first 1,000 training "
            f"images (no augmentation) and {own:.1f} % on their task's test images: {why}. Every comparison at this "
            "width is therefore **not tested at this budget** (the numbers stand as measured, not as a test of the "
            "paper).")


def width_trend(widths: Sequence[Width]) -> list[str]:
    """The ZipIt! − Permute gap of the wider model against the narrower one, over the pairs both finished."""
    done = [w for w in widths if w.done]
    out = []
    for lo, hi in zip(done, done[1:], strict=False):
        common = [p for p in lo.done if p in hi.done]
        if not common:
            continue
        gap = {w.width: {p: 100 * (w.merges[p]["rows"]["zipit"]["joint"] - w.merges[p]["rows"]["permute"]["joint"])
                         for p in common} for w in (lo, hi)}
        t = paired_t([gap[hi.width][p] - gap[lo.width][p] for p in common])
        claim = ("too few pairs for a test" if len(common) < 3 else
                 f"paired t {_p_eq(t['p'])}; {'supported' if t['p'] < ALPHA else 'not supported'} at 5 %")
        out.append(f"- **Width.** Over the {len(common)} pair(s) run at both widths, the ZipIt! − Permute gap is "
                   f"{np.mean(list(gap[lo.width].values())):+.1f} points at x{lo.width} and "
                   f"{np.mean(list(gap[hi.width].values())):+.1f} at x{hi.width} (change {t['mean']:+.1f}; {claim}). "
                   "The paper (Fig. 7b): the gap opens from x4 on.")
    return out


# ------------------------------------------------------------------------------------------------------ costs

#: Issue 16's measurements on a quiet machine: one x1 epoch over 8,000 images took about 0.7 min on 2 cores; one
#: image's forward pass 5 ms at x1 and 53 ms at x4 (one thread). The page's estimates without a timing record.
ISSUE_EPOCH_MIN_X1_2CORES = 0.7
ISSUE_FORWARD_MS = {1: 5.0, 4: 53.0}
TRAIN_IMAGES = 8000
#: Image-passes of one merge unit at the defaults: 10,000 test images x ~11 model-equivalents (two models, four
#: full merges, partial zips of 1.0/1.33/1.66 models) + 2,000 merge images x ~22 passes (statistics, BN resets).
MERGE_FORWARDS = 10_000 * 11 + 2_000 * 22


def estimate_minutes(train_s: float, forward_s: float, epochs: int) -> tuple[float, float]:
    """(one base model, one merge unit) in minutes from per-image seconds: an estimate, not a measurement."""
    return epochs * TRAIN_IMAGES * train_s / 60, MERGE_FORWARDS * forward_s / 60


def _pair_hours(t: Mapping[str, Any], epochs: int) -> float:
    base, merge = estimate_minutes(t["train_seconds_per_image"], t["forward_seconds_per_image"], epochs)
    return (2 * base + merge) / 60


def cost_lines(widths: Sequence[Width], timing: Mapping[int, dict], epochs: int) -> list[str]:
    lines = ["Measured, per unit (from the records):", "",
             "| width | unit | units run | CPU min per unit (mean) | wall min per unit (mean) | threads |",
             "|---|---|---|---|---|---|"]
    for w in widths:
        for kind, recs in (("base", list(w.bases.values())), ("merge", list(w.merges.values()))):
            if recs:
                lines.append(f"| x{w.width} | {kind} | {len(recs)} | "
                             f"{np.mean([r['cpu_seconds'] for r in recs]) / 60:.1f} | "
                             f"{np.mean([r['wall_seconds'] for r in recs]) / 60:.1f} | "
                             f"{sorted({r['threads'] for r in recs})} |")
    if timing:
        lines += ["", "Rates measured with `--time-only` (one epoch of task A of pair 0 after a warm-up batch, and "
                  "a forward pass, at the machine's load then), and the unit costs they give (estimates):", "",
                  "| width | threads | train ms / image | forward ms / image | MMACs | base model, "
                  f"{epochs} epochs | base model, 100 epochs (paper) | merge unit |", "|---|---|---|---|---|---|---|---|"]
        for width, t in sorted(timing.items()):
            base, merge = estimate_minutes(t["train_seconds_per_image"], t["forward_seconds_per_image"], epochs)
            paper = estimate_minutes(t["train_seconds_per_image"], 0.0, 100)[0]
            lines.append(f"| x{width} | {t['threads']} | {t['train_seconds_per_image'] * 1e3:.1f} | "
                         f"{t['forward_seconds_per_image'] * 1e3:.1f} | {t['macs'] / 1e6:.0f} | {base:.0f} min | "
                         f"{paper / 60:.1f} h | {merge:.0f} min |")
    if {1, 4} <= set(timing):
        lines += ["", "One pair is two base models and a merge unit: " + "; ".join(
            f"x{width} ≈ {_pair_hours(timing[width], epochs):.1f} CPU-hours at {epochs} epochs "
            f"({_pair_hours(timing[width], 100):.1f} at the paper's 100)" for width in sorted(timing))
            + " (from the rates above; two workers halve the wall time). Hence x4 on this CPU is out of reach "
            "within a session, and runs only where a GPU machine is lent (docs/results/zipit-paper.md)."]
        return lines
    x1_base = epochs * ISSUE_EPOCH_MIN_X1_2CORES
    x1_merge = MERGE_FORWARDS * ISSUE_FORWARD_MS[1] / 1e3 / 60
    ratio = ISSUE_FORWARD_MS[4] / ISSUE_FORWARD_MS[1]
    lines += ["", f"Estimates from issue 16's rates (a quiet machine: one x1 epoch over 8,000 images ≈ "
              f"{ISSUE_EPOCH_MIN_X1_2CORES} min on 2 cores; a forward pass {ISSUE_FORWARD_MS[1]:.0f} ms/image at x1 "
              f"and {ISSUE_FORWARD_MS[4]:.0f} ms at x4 on one thread), not measured by this study:", "",
              f"- x1: a base model ≈ {x1_base:.0f} min on 2 cores ({epochs} epochs); a merge unit ≈ {x1_merge:.0f} "
              f"min on one thread; 6 pairs ≈ {(12 * x1_base + 6 * x1_merge / 2) / 60:.1f} h on 2 cores.",
              f"- x4 on a CPU (x{ratio:.1f} the x1 time per image): a base model ≈ {ratio * x1_base / 60:.1f} h at "
              f"{epochs} epochs and ≈ {ratio * 100 * ISSUE_EPOCH_MIN_X1_2CORES / 60:.0f} h at the paper's 100 "
              f"epochs (2 cores); a merge unit ≈ {ratio * x1_merge / 60:.1f} h on one thread. Hence x4 runs only "
              "where a GPU machine is lent (docs/results/zipit-paper.md).",
              "- x2: no rate in the issue; by MACs at most 4x x1 (x4's 16x the MACs took 10.6x the time). Time it "
              "with `--time-only --widths 2` before planning."]
    return lines


# ------------------------------------------------------------------------------------------------------- page

def vectors_line(widths: Sequence[Width]) -> str:
    """Which class vectors the base models were trained with (sha256 of their float32 bytes, from the records)."""
    shas: dict[str, list[str]] = {}
    for w in widths:
        for (p, k), b in sorted(w.bases.items()):
            shas.setdefault(b["training"].get("vectors_sha256") or "not recorded", []).append(f"x{w.width} {p}{k}")
    if not shas:
        return "- Class vectors: no base model has finished yet."
    if len(shas) == 1:
        return f"- Class vectors: sha256 `{next(iter(shas))}` (every base model)."
    return "- Class vectors **differ between base models**: " + "; ".join(
        f"sha256 `{sha}`: {', '.join(units)}" for sha, units in shas.items()) + "."


def render(records: Mapping[str, Mapping[str, Any]], plan: Sequence[tuple[int, Sequence[int]]], *, command: str,
           script: str | Path, out: Path, title: str, data: str, recipe_text: str, epochs: int) -> Path:
    """Write the page (and its curve PNG beside it) from the records; returns the page's path."""
    widths = collect(records, plan)
    timing = {r["data"]["width"]: r["data"] for u, r in records.items() if u.startswith("timing-")}
    used = {u: r for u, r in records.items()
            if any(u in (base_unit_name(p, k, w), merge_unit_name(p, w)) for w, ps in plan for p in ps for k in "AB")}
    machines = sorted({r["machine"] for r in used.values()})
    merges = [m for w in widths for m in w.merges.values()]
    first = merges[0] if merges else None
    n_train = "/".join(str(n) for n in sorted({b["n_train"] for w in widths for b in w.bases.values()})) or "all"
    extra = [
        f"- Units ran on: {'; '.join(machines) if machines else 'no unit has run yet'}.",
        "- Base models: ResNet-20 of width xw (channels 16w/32w/64w) with a frozen class-embedding head "
        "(`100 · cos(f(x), e_c)`, `e_c` the all-MiniLM-L6-v2 embedding of \"a photo of a {class}.\"; the paper uses "
        f"CLIP's text tower), trained on {n_train} training images of their 5-class task with {recipe_text}; "
        "cross-entropy over the task's own classes; augmentation random crop (pad 4) + horizontal flip.",
        "- Splits: pair *p* splits the 10 classes into random halves with `RandomState(1000 + p).permutation(10)` "
        "(the paper's `train_test_split` of the class ids); model A (seed 2p) trains on the first half, model B "
        "(seed 2p+1) on the second.",
        (f"- Merging: {first['merge_images']} training images of both tasks, drawn and augmented with the pair's "
         "seed, for the feature statistics and for the BatchNorm reset, which is applied to every model (the base "
         f"models and the ensemble included, as the paper does). ZipIt! α = {first['alpha']}, β = {first['beta']} "
         "(the reference code's defaults). Git Re-Basin: weight matching over the traced feature spaces, then "
         "averaging and the reset. Partial zips stop at the end of a stage (after layer3, layer2, layer1: "
         "19/20, 13/20, 7/20 of the 20 layers zipped); the rest of each model is its own head."
         if first else "- Merging: no merge unit has run yet."),
        (f"- Metrics as in the paper, on the first {first['rows']['model-a']['n_test']} images of the (shuffled) "
         "test set: *joint* = accuracy over all 10 classes without the task label; *task A/B* = accuracy among the "
         "task's own classes; *avg* = their mean. Several heads (partial zips, ensemble): softmax within each "
         "head's task, then the most probable class across heads. MACs of every Conv/Linear per image."
         if first else "- Metrics: as in the paper (joint and per-task accuracy)."),
        "- Cells: mean ± sample standard deviation over the finished pairs. Paired tests over pairs: a t-test of "
        f"the per-pair differences, and a bootstrap ({N_BOOT} resamples) over pairs and test images; an ordering "
        "or difference is stated only where both are below 5 %. With few pairs the bootstrap has few distinct "
        "pair resamples (3 for 2 pairs) and understates the spread: the t-test is then the binding one. Two "
        "primary tests, the paper's two claims tested here: ZipIt!_{20/20} vs Permute and ZipIt!_{13/20} vs the "
        "ensemble, with a Holm correction over the two (on the larger of each one's two p-values); every other "
        "comparison, and the ordering, is exploratory (uncorrected 5 %).",
        vectors_line(widths),
    ]
    lines = [_common.header(title, command=command, script=script, records=used, data=data, extra=extra)]
    status = []
    for w in widths:
        status.append(f"x{w.width}: {len(w.done)} of {len(w.planned)} pairs finished"
                      + (f" (missing units: {', '.join(w.missing)})" if w.missing else ""))
    lines += ["**Status.** " + "; ".join(status) + ".", ""]
    png = out.with_name(out.stem + "-curve.png")
    for w in widths:
        lines += [f"## ResNet-20x{w.width}", "", "### Base models", ""]
        lines += base_table(w) if w.bases else ["No base model has finished."]
        lines.append("")
        if not w.done:
            lines += ["No pair has finished at this width.", ""]
            continue
        lines += ["### All methods (joint and per-task accuracy, %)", ""] + main_table(w) + [""]
        lines += ["### Joint accuracy per pair (%)", ""] + per_pair_table(w) + [""]
        if len(w.done) < 2:
            lines += ["One pair: no test yet.", ""]
            continue
        table, res = tests_table(w)
        lines += ["### Paired tests", ""] + table + [""]
        lines += ["### What the numbers support", ""] + verdicts(w, res) + [""]
    lines += width_trend(widths) + [""]
    if write_curve(widths, png):
        lines += ["## Partial-zip curve: joint accuracy against MACs", "",
                  f"![joint accuracy against MACs]({png.name})", ""] + curve_table(widths) + [""]
    lines += [
        "## Against the paper", "",
        "- **Setting.** The paper's CIFAR-10 (5+5) table (Table 1a) uses ResNet-20x4 trained 100 epochs on all "
        "25,000 training images of a task, CLIP text heads, 5 pairs; its width ablation (Fig. 7b, a figure without "
        "numbers) shows ZipIt! ≈ Permute below x4 and the gap opening from x4 on. The method notes list that "
        "figure under CIFAR-100 (50+50), and its ~75 % ensemble level fits CIFAR-100's 73.5 % rather than "
        "CIFAR-10's 87.4 %: it is the paper's evidence on width, from the other CIFAR setting. Here the training set is the "
        "shared 8,000-image-per-task subset (1,600 per class), the heads are MiniLM class-name embeddings, and "
        "the widths are those in the tables above: a width below x4 tests the width ablation's "
        "'about equal', not Table 1a's +20.7.",
        "- **Partial zips.** The paper: ZipIt!_{13/20} 83.8 at 1.34x one model's FLOPs, far above Git Re-Basin "
        "(46.2) and 3.6 below the ensemble (87.4). The tests above say which of these hold here.",
        "",
        "## Cost", "",
    ]
    lines += cost_lines(widths, timing, epochs) + [""]
    text = "\n".join(lines).rstrip() + "\n"
    _common.write_atomic(out, text)
    return out
