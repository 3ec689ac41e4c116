"""The page of the harmonization study (docs/results/harmonize.md and harmonize_study.png), rendered from the
result records of benchmarks/harmonize_study.py alone, and the statistics it uses (paired t, Wilcoxon, Holm,
a bootstrap over seeds and test volumes). A helper of that script, not a command."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harmonize_study_lib as lib
import numpy as np
from _common import header, holm, paired_differences, write_atomic

from knotwork._io import write_scratch

NORMALIZATION = ("zscore", "clip")
MATCHING = ("hm-volume", "hm", "nyul")


# ------------------------------------------------------------------------------------------------ statistics

def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """``a - b`` paired: mean, 95 % t interval, paired-t and Wilcoxon signed-rank p (two-sided), wins/losses
    (`_common.paired_differences`; NaN where undefined)."""
    return paired_differences(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))


def bootstrap_diff(diffs: np.ndarray, draws: int = lib.BOOTSTRAP_DRAWS,
                   seed: int = lib.BOOTSTRAP_SEED) -> dict[str, float]:
    """Bootstrap over seeds and test volumes of the mean of ``diffs`` (seeds x volumes, paired differences).

    Each draw resamples the seeds and, independently, the test volumes with replacement (the same volumes for
    every seed: a volume's difficulty is shared), and averages the selected cells. Returns the 95 % percentile
    interval and a two-sided p (twice the smaller tail share at 0, at most 1).
    """
    d = np.asarray(diffs, dtype=float)
    n_seeds, n_vols = d.shape
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seeds, size=(draws, n_seeds))
    vol_idx = rng.integers(0, n_vols, size=(draws, n_vols))
    ws = np.zeros((draws, n_seeds))
    wv = np.zeros((draws, n_vols))
    np.add.at(ws, (np.arange(draws)[:, None], seed_idx), 1.0)
    np.add.at(wv, (np.arange(draws)[:, None], vol_idx), 1.0)
    means = np.einsum("bs,sv,bv->b", ws, d, wv) / (n_seeds * n_vols)
    lo, hi = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return {"lo": float(lo), "hi": float(hi), "p": p, "draws": draws}


# ------------------------------------------------------------------------------------------------ records

@dataclass
class Study:
    """The records of one study folder, arranged: ``runs[condition][seed]`` = a record's data."""

    budget: lib.Budget
    conditions: list[str]
    seeds: list[int]
    runs: dict[str, dict[int, dict[str, Any]]]
    ignored: list[str]  # records of another budget in the folder (not reported)

    @property
    def missing(self) -> list[str]:
        return [lib.unit_name(c, s) for s in self.seeds for c in self.conditions if s not in self.runs.get(c, {})]

    def paired_seeds(self, a: str, b: str) -> list[int]:
        return [s for s in self.seeds if s in self.runs.get(a, {}) and s in self.runs.get(b, {})]

    def score(self, c: str, seeds: Sequence[int]) -> np.ndarray:
        return np.array([self.runs[c][s]["mean_dice"] for s in seeds])

    def volume_diffs(self, a: str, b: str, seeds: Sequence[int]) -> np.ndarray:
        """(seeds x test volumes) differences of the class-averaged Dice, a - b."""
        for s in seeds:
            if self.runs[a][s]["test_volumes"] != self.runs[b][s]["test_volumes"]:
                raise ValueError(f"{lib.unit_name(a, s)} and {lib.unit_name(b, s)} were scored on other test volumes")
        return np.array([np.mean(self.runs[a][s]["dice"], axis=1) - np.mean(self.runs[b][s]["dice"], axis=1)
                         for s in seeds])


def collect(records: Mapping[str, Mapping[str, Any]], budget: lib.Budget, conditions: Sequence[str],
            seeds: Sequence[int]) -> Study:
    """Arrange the records (``_common.load_records(budget.study)``) of the requested conditions and seeds."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    ignored = []
    for unit, rec in records.items():
        data = rec["data"]
        if data.get("budget") != budget.as_dict():
            ignored.append(unit)
        elif data["condition"] in conditions and data["seed"] in seeds:
            runs.setdefault(data["condition"], {})[data["seed"]] = data
    return Study(budget, list(conditions), list(seeds), runs, sorted(ignored))


def collapsed(run: Mapping[str, Any]) -> list[str]:
    """The classes a run never learned (test Dice below lib.COLLAPSED)."""
    return [name for name, d in zip(lib.CLASSES, run["class_dice"], strict=True) if d < lib.COLLAPSED]


def comparisons(st: Study) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The primary comparisons (Holm-adjusted) and every other pair of conditions (exploratory)."""
    def one(a: str, b: str) -> dict[str, Any]:
        seeds = st.paired_seeds(a, b)
        res = {"a": a, "b": b, "seeds": seeds, **paired_test(st.score(a, seeds), st.score(b, seeds))}
        res["boot"] = bootstrap_diff(st.volume_diffs(a, b, seeds)) if seeds else None
        return res

    primary = [one(a, b) for a, b in lib.PRIMARY if a in st.conditions and b in st.conditions]
    for res, p in zip(primary, holm([r["p_t"] for r in primary]), strict=True):
        res["p_holm"] = p
    named = {(a, b) for a, b in lib.PRIMARY} | {(b, a) for a, b in lib.PRIMARY}
    conds = st.conditions
    explore = [one(a, b) for i, a in enumerate(conds) for b in conds[i + 1:]
               if (a, b) not in named and st.paired_seeds(a, b)]
    return primary, explore


# ------------------------------------------------------------------------------------------------ page

def _p(x: float) -> str:
    return "–" if np.isnan(x) else (f"{x:.3f}" if x >= 0.001 else "< 0.001")


def _ms(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    return "–" if not len(v) else f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def _test_row(r: Mapping[str, Any], holm_p: bool) -> str:
    ci = "–" if np.isnan(r["lo"]) else f"[{r['lo']:+.3f}, {r['hi']:+.3f}]"
    boot = "–" if not r["boot"] else f"[{r['boot']['lo']:+.3f}, {r['boot']['hi']:+.3f}], p {_p(r['boot']['p'])}"
    cells = [f"`{r['a']}` − `{r['b']}`", str(r["n"]), f"{r['mean']:+.3f}", ci, _p(r["p_t"]),
             *([_p(r["p_holm"])] if holm_p else []), _p(r["p_w"]), boot, f"{r['wins']} / {r['ties']} / {r['losses']}"]
    return "| " + " | ".join(cells) + " |"


def _test_table(rows: Sequence[Mapping[str, Any]], holm_p: bool) -> list[str]:
    head = ["comparison", "seeds", "mean Dice difference", "95 % t CI", "paired t p", *(["Holm p"] if holm_p else []),
            "Wilcoxon p", "bootstrap 95 % CI (seeds × volumes), p", "wins / ties / losses"]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *(_test_row(r, holm_p) for r in rows)]


def condition_table(st: Study) -> list[str]:
    """Mean ± sd over seeds of the test Dice per class and averaged, runs with a collapsed class, W1."""
    lines = ["| condition | Dice anterior | Dice posterior | mean Dice | seeds | runs with a collapsed class "
             "| W1 of T(D1) to D0 |", "|---|---|---|---|---|---|---|"]
    for c in st.conditions:
        rs = [st.runs[c][s] for s in sorted(st.runs.get(c, {}))]
        if not rs:
            lines.append(f"| {c} | – | – | – | 0 | – | – |")
            continue
        per_class = np.array([r["class_dice"] for r in rs])
        n_col = sum(bool(collapsed(r)) for r in rs)
        w1 = "–" if rs[0]["w1"] is None else f"{rs[0]['w1']:.4f}"
        lines.append(f"| {c} | {_ms(per_class[:, 0])} | {_ms(per_class[:, 1])} | {_ms([r['mean_dice'] for r in rs])} "
                     f"| {len(rs)} | {n_col} of {len(rs)} | {w1} |")
    return lines


def seed_table(st: Study) -> list[str]:
    """Mean Dice per seed and condition (`*`: a class collapsed; `…`: unit not finished)."""
    lines = ["| condition | " + " | ".join(f"seed {s}" for s in st.seeds) + " |", "|---|" + "---|" * len(st.seeds)]
    for c in st.conditions:
        cells = []
        for s in st.seeds:
            r = st.runs.get(c, {}).get(s)
            cells.append("…" if r is None else f"{r['mean_dice']:.3f}" + ("*" if collapsed(r) else ""))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def curve_table(st: Study) -> tuple[list[str], int, int]:
    """Training loss (mean over seeds) at the first, middle and last window, the last window's soft Dice per
    class, and how many runs still improved at the end (last window's loss > 3 % below the one before)."""
    lines = ["| condition | loss, first window | loss, middle | loss, last window | training soft Dice (last "
             "window) anterior / posterior | runs whose loss still fell > 3 % in the last window |",
             "|---|---|---|---|---|---|"]
    falling = total = 0
    for c in st.conditions:
        rs = list(st.runs.get(c, {}).values())
        if not rs:
            continue
        loss = np.array([[p["loss"] for p in r["curve"]] for r in rs])
        soft = np.array([r["curve"][-1]["train_soft_dice"] for r in rs])
        fell = sum(len(r["curve"]) > 1 and r["curve"][-1]["loss"] < 0.97 * r["curve"][-2]["loss"] for r in rs)
        falling, total = falling + fell, total + len(rs)
        lines.append(f"| {c} | {loss[:, 0].mean():.3f} | {loss[:, loss.shape[1] // 2].mean():.3f} | "
                     f"{loss[:, -1].mean():.3f} | {soft[:, 0].mean():.3f} / {soft[:, 1].mean():.3f} | {fell} of {len(rs)} |")
    return lines, falling, total


def cost_lines(st: Study) -> list[str]:
    rs = [r for by in st.runs.values() for r in by.values()]
    if not rs:
        return ["No finished unit yet."]
    cpu = np.array([[r["cpu_seconds"][k] for k in ("prepare", "train", "evaluate", "total")] for r in rs])
    per_it = np.median(cpu[:, 1]) / st.budget.iterations
    left = len(st.missing) * float(np.median(cpu[:, 3]))
    return [f"Measured CPU time (one torch thread per unit): {cpu[:, 3].sum() / 3600:.2f} CPU-hours for the "
            f"{len(rs)} finished units; per unit median {np.median(cpu[:, 3]):.0f} s (preparing data "
            f"{np.median(cpu[:, 0]):.1f} s, training {np.median(cpu[:, 1]):.0f} s = {per_it:.3f} s per iteration, "
            f"evaluating {np.median(cpu[:, 2]):.1f} s), range {cpu[:, 3].min():.0f}-{cpu[:, 3].max():.0f} s."
            + (f" The {len(st.missing)} unfinished units would take about {left / 3600:.2f} CPU-hours more at "
               "the median." if st.missing else "")]


def verdict(st: Study, primary: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences computed from the records: is the network learning, and what do the primary tests say."""
    out = []
    base = list(st.runs.get("no-D1", {}).values())
    lost = [r for r in base if collapsed(r)]
    learning = bool(base) and not lost
    if st.missing:
        out.append(f"**Partial**: {len(st.missing)} of {len(st.seeds) * len(st.conditions)} units are unfinished; "
                   "the tests below use the seeds finished in both conditions and may change.")
    if not base:
        out.append("No run without extra data has finished: whether the network learns is not known yet.")
    elif lost:
        out.append(f"**Not tested at this budget**: without extra data the network lost a class (test Dice < "
                   f"{lib.COLLAPSED}) in {len(lost)} of {len(base)} seeds, so it does not learn reliably at width "
                   f"{st.budget.width} and {st.budget.iterations} iterations; the comparisons below are reported but "
                   "do not decide the question.")
    else:
        out.append(f"Without extra data no class collapsed in any of the {len(base)} seeds (every class's test Dice "
                   f">= {lib.COLLAPSED}): the network learns at this budget.")
    for r in primary:
        a, b = f"`{r['a']}`", f"`{r['b']}`"
        if r["n"] < 2 or np.isnan(r["p_holm"]):
            why = "fewer than two paired seeds" if r["n"] < 2 else "every paired difference is the same"
            out.append(f"{a} vs {b}: no test ({why}; {r['n']} paired seeds, mean difference {r['mean']:+.3f}).")
            continue
        ci = f"mean difference {r['mean']:+.3f} Dice, 95 % CI [{r['lo']:+.3f}, {r['hi']:+.3f}], n = {r['n']} seeds"
        if r["p_holm"] < lib.ALPHA:
            win, lose = (a, b) if r["mean"] > 0 else (b, a)
            word = f"{win} beat {lose} ({ci}; Holm-adjusted paired t p {_p(r['p_holm'])} < {lib.ALPHA})"
        else:
            word = (f"no difference between {a} and {b} was detected ({ci}; Holm-adjusted paired t p "
                    f"{_p(r['p_holm'])} >= {lib.ALPHA}); the interval shows the effects these seeds cannot rule out")
        agree = []
        if not np.isnan(r["p_w"]):
            agree.append("Wilcoxon " + ("agrees" if (r["p_w"] < lib.ALPHA) == (r["p_t"] < lib.ALPHA) else "disagrees")
                         + f" (uncorrected p {_p(r['p_w'])})")
        if r["boot"]:
            agree.append(f"the bootstrap over seeds and test volumes gives [{r['boot']['lo']:+.3f}, "
                         f"{r['boot']['hi']:+.3f}]")
        out.append(word[0].upper() + word[1:] + ("; " + "; ".join(agree) if agree else "") + ".")
    claim = next((r for r in primary if (r["a"], r["b"]) == ("hm", "zscore")), None)
    if claim and claim["n"] >= 2 and not np.isnan(claim["p_holm"]):
        if not learning:
            answer = "**Not tested at this budget** (the network without extra data did not learn every class)"
        elif claim["p_holm"] < lib.ALPHA and claim["mean"] > 0:
            answer = "**Yes** here: histogram matching to a dataset reference beat z-score"
        elif claim["p_holm"] < lib.ALPHA:
            answer = "**No**: z-score beat histogram matching here"
        else:
            answer = "**Not shown**: no difference between histogram matching and z-score was detected"
        out.append("Does histogram matching of the extra data beat simple normalization (the paper's claim)? "
                   + answer + (" (partial results)." if st.missing else "."))
    return out


def render(st: Study, *, command: str, page: Path, script: str | Path, records: Mapping[str, Any]) -> Path:
    """Write the page and its figure (``harmonize_study.png`` beside it) from the collected records."""
    b = st.budget
    n_test, n_train, n_d1 = b.cases
    primary, explore = comparisons(st)
    curves, falling, total = curve_table(st)
    params = next((r["parameters"] for by in st.runs.values() for r in by.values()), None)
    sev = lib.SEVERITIES[b.severity]
    kept = {u: r for u, r in records.items() if u not in st.ignored}
    prim_txt = "; ".join(f"({i}) `{a}` vs `{b_}`" for i, (a, b_) in enumerate(lib.PRIMARY, 1))
    lines = [
        header("Histogram matching vs. normalization for additional 3D training data (hippocampus study)",
               command=command, script=script, records=kept,
               data=f"MSD Task04 hippocampus (`../shared/data/med/hippocampus`), {n_test}/{n_train}/{n_d1} volumes "
               f"for D0-test/D0-train/D1; D1 simulation seed {lib.D1_SEED}",
               extra=[f"- Records: one per unit `<condition>-seed<k>` in `benchmarks/results/{b.study}/`, written as "
                      "each unit finishes (a rerun skips finished units); seeds " + ", ".join(map(str, st.seeds))
                      + " vary the network initialisation and batch order."
                      + (f" Records of another budget in that folder, not reported: {', '.join(st.ignored)}."
                         if st.ignored else "")]),
        "Checks the direction of the finding of Stoica, Breaban, Barbu, *Analyzing domain shift when using "
        "additional data for the MICCAI KiTS23 Challenge* (arXiv:2309.02001): extra training data from another "
        "scanner helps more after histogram matching than after simple normalization. The paper's data, network and "
        "numbers are not verified, so this is a test of that direction on other data, not a reproduction.",
        "",
    ]
    if st.missing:
        lines += [f"**Unfinished units ({len(st.missing)}):** " + ", ".join(st.missing) + ". They appear as `…` below; "
                  "the tests use the seeds finished in both conditions.", ""]
    lines += [
        "## Verdict", "", *(f"- {s}" for s in verdict(st, primary)), "",
        "## Design (named in `benchmarks/harmonize_study_lib.py` before any run)", "",
        f"- **Primary comparisons**: {prim_txt}. Score of a run: test Dice averaged over both classes and all "
        f"{n_test} test volumes. Test: two-sided paired t over seeds, **Holm-corrected over the primaries only**, "
        f"level {lib.ALPHA}; the Wilcoxon signed-rank test and a bootstrap over seeds and test volumes "
        f"({lib.BOOTSTRAP_DRAWS} draws, seed {lib.BOOTSTRAP_SEED}) are reported beside it.",
        "- **Exploratory**: every other pair of conditions, uncorrected; they test no hypothesis named in advance.",
        f"- **Collapsed class**: test Dice < {lib.COLLAPSED} for a class in a run. Every run is reported and "
        "tested; none is excluded.",
        "",
        "## Set-up", "",
        "- **Data**: the 260 MSD Task04 hippocampus T1 MR crops with labels. Split with "
        "`numpy.random.RandomState(0).permutation(260)` over sorted names: D0-test = first "
        f"{n_test}, D0-train = next {n_train}, D1 source = next {n_d1} (disjoint).",
        "- **D0 preprocessing**: per volume, clip to the 0.5/99.5 percentiles and rescale to [0, 1].",
        f"- **D1 = simulated scanner change** (severity `{b.severity}`) of D0-preprocessed volumes y: "
        f"`{sev['units_scale']:g} * (b(r) * y**{sev['gamma']} + noise) + {sev['units_offset']:g}`, b a smooth "
        f"multiplicative bias field `exp({sev['bias']} * p(r) / max|p|)` (p a random 2nd-order polynomial of the "
        f"coordinates), Gaussian noise of sd {sev['noise']}.",
        f"- **Conditions**: `no-D1` trains on the {n_train} D0-train volumes alone; the others add the {n_d1} D1 "
        "volumes after a transform fitted on D0-train (whole crops, no masks), with output in D0 units: `zscore` "
        "(per-volume z-score, then D0's pooled mean/std), `clip` (the volume's 0.5/99.5 percentiles to D0's mean "
        "percentile values), `hm-volume` (exact matching to the medoid D0-train volume), `hm` (matching to the mean "
        "of the D0 quantile functions, K = 1000: a dataset reference), `nyul` (11 landmarks 1, 10, ..., 90, 99, in "
        "D0 units)" + (", `raw` (none)" if "raw" in st.conditions else "") + ".",
        f"- **Model**: the 3D U-Net of `benchmarks/harmonize_unet.py`, width {b.width} "
        + (f"({params:,} parameters)" if params else "") + f", two poolings, BatchNorm; cross-entropy + soft Dice, "
        f"Adam lr {b.lr}, {b.iterations} iterations of batch {b.batch} drawn uniformly from the training volumes.",
        "- **Reductions for a CPU budget**: volumes centre cropped/padded to 32 x 48 x 32 and down-sampled 2x to "
        "16 x 24 x 16 (2 mm); Dice is computed on those test crops, so it is far below full-resolution figures.",
        "",
        "## Dice on D0-test", "",
        "Mean ± sd over seeds; W1 = 1-Wasserstein distance between the pooled voxel intensities of T(D1) and of "
        "D0-train (D0 units).", "",
        *condition_table(st), "",
        "**Per seed** (mean Dice of the two classes; `*` = a class collapsed; `…` = not finished):", "",
        *seed_table(st), "",
        "## Primary comparisons (named before the runs)", "",
        *_test_table(primary, holm_p=True), "",
        "## Exploratory comparisons (uncorrected)", "",
        *(_test_table(explore, holm_p=False) if explore else ["No pair finished yet."]), "",
        "## Training", "",
        f"Loss = cross-entropy + (1 − soft Dice), averaged over windows of {max(1, b.iterations // lib.CURVE_POINTS)} "
        f"iterations; mean over seeds. The loss still fell by more than 3 % in the last window in {falling} of "
        f"{total} runs" + (" (longer training might still change the numbers)." if falling else "."), "",
        *curves, "",
        "## Cost", "", *cost_lines(st), "",
        "![Dice per condition](harmonize_study.png)", "",
    ]
    write_atomic(page, "\n".join(lines))
    figure(st, page.with_name("harmonize_study.png"))
    return page


def figure(st: Study, path: Path) -> None:
    """Per-seed Dice (dots; red crosses: that class, or for the average any class, collapsed) and the mean ± sd
    per condition, per class and averaged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*lib.CLASSES, "mean of both"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for k, (ax, name) in enumerate(zip(axes, panels, strict=True)):
        for x, c in enumerate(st.conditions):
            rs = [st.runs[c][s] for s in sorted(st.runs.get(c, {}))]
            if not rs:
                continue
            vals = np.array([r["mean_dice"] if k == 2 else r["class_dice"][k] for r in rs])
            bad = np.array([bool(collapsed(r)) if k == 2 else r["class_dice"][k] < lib.COLLAPSED for r in rs])
            jitter = np.linspace(-0.15, 0.15, len(rs))
            ax.scatter(x + jitter[~bad], vals[~bad], s=12, color="tab:blue")
            ax.scatter(x + jitter[bad], vals[bad], s=20, color="tab:red", marker="x")
            ax.errorbar(x + 0.3, vals.mean(), yerr=vals.std(ddof=1) if len(vals) > 1 else 0, fmt="o", color="black",
                        capsize=3)
        ax.set_xticks(range(len(st.conditions)), st.conditions, rotation=30)
        ax.set_title(f"Dice, {name}", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel(f"test Dice (seeds; w{st.budget.width}, {st.budget.iterations} it.)")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_scratch(path, png.getvalue())


def pilot_summary(st: Study) -> list[str]:
    """Lines for the pilot: collapsed classes per seed without extra data, and the measured cost per unit."""
    rs = [st.runs.get("no-D1", {}).get(s) for s in st.seeds]
    done = [r for r in rs if r]
    lines = [f"pilot {st.budget.study}: no-D1 at width {st.budget.width}, {st.budget.iterations} iterations"]
    for s, r in zip(st.seeds, rs, strict=True):
        lines.append(f"  seed {s}: " + ("not finished" if r is None else
                     f"Dice {r['class_dice'][0]:.3f} / {r['class_dice'][1]:.3f}, collapsed: "
                     f"{', '.join(collapsed(r)) or 'none'}, {r['cpu_seconds']['total']:.0f} CPU-s"))
    if done:
        lost = sum(bool(collapsed(r)) for r in done)
        med = float(np.median([r["cpu_seconds"]["total"] for r in done]))
        per_it = float(np.median([r["cpu_seconds"]["train"] for r in done])) / st.budget.iterations
        units = len(lib.DEFAULT_CONDITIONS) * len(lib.SEEDS)
        lines += [f"  collapsed in {lost} of {len(done)} seeds; training {per_it:.3f} CPU-s per iteration",
                  f"  full study ({units} units) at this budget: about {units * med / 3600:.2f} CPU-hours at the "
                  "no-D1 median (units with D1 also prepare 60 more volumes)"]
    return lines
