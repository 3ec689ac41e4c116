"""The page of the DBA study (docs/results/dba.md), rendered from the result records alone.

Per setting: the tuning (final grids, choices, where each stopped), test accuracy per method (mean ± sd over the
seeds, per-seed rows), paired tests of DBA against the baseline that validated better and against the
random-subset ablation, learning curves (PNG), the costs, and a verdict computed from these numbers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import dba_protocol as protocol
import numpy as np

# From the abstract of arXiv 2208.00815; baselines implied by the stated relative error reductions.
PAPER = {
    10: {"dba": 97.44, "reduction": 88.07, "implied_baseline": 78.54},
    60: {"dba": 97.79, "reduction": 81.78, "implied_baseline": 87.87},
}
ALPHA = 0.05

READING = [
    "## Reading these numbers",
    "",
    "- Only the paper's abstract is public. Its metric, search, aggregation, subset-size limits, network width, "
    "training length and tuning protocol are unknown; the settings here are documented reconstructions "
    "(docs/dba.md), so a gap to the abstract may come from any of them.",
    "- The abstract's accuracies (97.44% from 100 images, 97.79% from 600) are far above what plain training of "
    "a one-hidden-layer MLP reaches from so few MNIST images; its implied baselines (≈ 78.5% and ≈ 87.9%) are the "
    "numbers to compare our baselines with.",
    "- The random-subset ablation keeps DBA's subset sizes and draws the samples at random: if it matches or "
    "beats DBA, the benefit (or harm) comes from the step size and noise, not from which samples were chosen; "
    "Balles et al. (arXiv 2312.05021) report the same for gradient-matching selection.",
    "- The best baseline is the one that validated better, not the one that tested better: the test set is "
    "never used for a choice. Paired tests pair the runs of one seed (same subset, same initialisation).",
    "- Full-batch training with the whole training subset as DBA's pool. Step time and memory: see "
    "dba_step_cost.md.",
    "",
]


# ------------------------------------------------------------------------------------------------ statistics


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired comparison of ``a`` and ``b`` (same seeds, same order): mean difference a - b, its 95% t interval,
    the paired t-test and the Wilcoxon signed-rank test (two-sided; NaN where undefined:
    `_common.paired_differences`)."""
    return _common.paired_differences(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))


def judge(r: Mapping[str, float]) -> str:
    """"better", "worse", "no difference detected", "the tests disagree", or "too few seeds"."""
    if r["n"] < 2:
        return "too few seeds"
    p_t, p_w = (1.0 if math.isnan(r[k]) else r[k] for k in ("p_t", "p_w"))
    if p_t < ALPHA and p_w < ALPHA:
        return "better" if r["mean"] > 0 else "worse"
    if p_t >= ALPHA and p_w >= ALPHA:
        return "no difference detected"
    return "the tests disagree"


# ------------------------------------------------------------------------------------------------ collecting


@dataclass
class Result:
    """One setting's plan and the records of its finished units."""

    plan: protocol.Plan
    tune: dict[str, dict] = field(default_factory=dict)  # unit name -> record data
    runs: dict[str, dict[int, dict]] = field(default_factory=dict)  # method -> seed -> record data

    @property
    def setting(self) -> protocol.Setting:
        return self.plan.setting

    def scores(self, method: str, seeds: Sequence[int]) -> list[float]:
        return [100 * self.runs[method][s]["test_at_step"] for s in seeds]

    def common_seeds(self, *methods: str) -> list[int]:
        sets = [set(self.runs.get(m, {})) for m in methods]
        return sorted(set.intersection(*sets)) if sets else []


def collect(setting: protocol.Setting, budget: protocol.Budget, records: Mapping[str, Mapping[str, Any]],
            fresh: set[str] | None = None) -> Result:
    """The plan of ``setting`` and the data of every record it counts."""
    res = Result(protocol.plan(setting, budget, records, fresh))
    for fam in res.plan.families.values():
        for name in fam.units:
            if name in res.plan.valid:
                res.tune[name] = records[name]["data"]
    for method, units in res.plan.runs.items():
        res.runs[method] = {u.args["seed"]: records[u.name]["data"] for u in units if u.name in res.plan.valid}
    return res


# ------------------------------------------------------------------------------------------------ formatting


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _p(x: float) -> str:
    return "n/a" if math.isnan(x) else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "—"
    sd = f"{np.std(values, ddof=1):.2f}" if len(values) > 1 else "n/a"
    return f"{np.mean(values):.2f} ± {sd}"


def _lr_list(fam: protocol.Family) -> str:
    return ", ".join(f"{protocol.lr_of(k):g}" for k in fam.ks)


def _describe(spec: Mapping[str, Any]) -> str:
    opt = f"{'SGD' if spec['optimizer'] == 'sgd' else 'Adam'} lr={spec['lr']:g}"
    if spec.get("momentum"):
        opt += f" m={spec['momentum']:g}"
    d = spec.get("dba")
    if not d:
        return opt
    bits = [f"metric={d['metric']}", f"agg={d['aggregate']}"]
    if not d.get("per_layer", True):
        bits.append("global")
    if d.get("random_composition"):
        bits.append("random composition")
    bits.append(f"min_size={spec['min_frac']:g}·P" if spec.get("min_frac") else "min_size=1")
    return f"{opt}; " + ", ".join(bits)


def _methods(res: Result) -> list[str]:
    return [m for m in res.plan.families if res.plan.families[m].choice is not None]


def _label(res: Result, method: str) -> str:
    return res.plan.families[method].label


def tuning_table(res: Result) -> list[str]:
    lines = ["| method | final learning-rate grid | chosen | val acc | val-chosen step | steps run | stopped | "
             "chosen lr on the grid |", "|---|---|---|---|---|---|---|---|"]
    for fam in res.plan.families.values():
        c = fam.choice
        if not fam.done:
            lines.append(f"| {fam.label} | {_lr_list(fam)} | *tuning unfinished* | | | | | |")
            continue
        if c is None:
            lines.append(f"| {fam.label} | {_lr_list(fam)} | none ({fam.edge}) | | | | | |")
            continue
        lines.append(f"| {fam.label} | {_lr_list(fam)} | {_describe(c.spec)} | {100 * c.val_acc:.2f} | {c.step} | "
                     f"{c.steps_run} | {c.stopped} | {fam.edge} |")
    lines += ["", "<details><summary>Every tuning unit (mean over the tuning seeds)</summary>", "",
              "| unit | best val acc | at step | val loss there | steps run | stopped |", "|---|---|---|---|---|---|"]
    for fam in res.plan.families.values():
        for name in fam.units:
            data = res.tune.get(name)
            if data is None:
                lines.append(f"| `{name}` | *unfinished* | | | | |")
                continue
            best = protocol.best_checkpoint(data)
            acc, step, loss = ((f"{100 * best[1]:.2f}", best[0], f"{best[2]:.3f}") if best else ("—", "—", "—"))
            lines.append(f"| `{name}` | {acc} | {step} | {loss} | {data['steps_run']} | {data['stopped']} |")
    return [*lines, "", "</details>", ""]


def trials_lines(res: Result, budget: protocol.Budget) -> list[str]:
    """How many tuning trials each method had (one per learning rate and setting): DBA tunes its metric and
    minimum subset size with its learning rate, so it gets more than each baseline."""
    fams = res.plan.families
    if "dba" not in fams:
        return []
    dba, n_cfg = fams["dba"], len(protocol.DBA_CONFIGS)
    base = ", ".join(f"{fams[m].label} {len(fams[m].units)} ({_n(len(fams[m].ks), 'learning rate')})"
                     for m in ("sgd", "adam"))
    return [f"Tuning trials, each over {_n(len(budget.tune_seeds), 'tuning seed')}: {base}; {dba.label} "
            f"{len(dba.units)} ({n_cfg} settings of metric and minimum subset size × "
            f"{_n(len(dba.ks), 'learning rate')}). DBA gets more tuning trials than each baseline (it tunes its "
            "metric and minimum subset size too): a larger search, which the comparisons below do not correct "
            "for.", ""]


def results_table(res: Result, n_seeds: int) -> list[str]:
    lines = ["| method | setting | val-chosen step | seeds | test acc | [min, max] | train acc at that step | "
             "test acc at the last step | mean |S| (per layer) |", "|---|---|---|---|---|---|---|---|---|"]
    for m in _methods(res):
        c, runs = res.plan.families[m].choice, res.runs.get(m, {})
        seeds = sorted(runs)
        test = res.scores(m, seeds)
        train = [100 * runs[s]["train_at_step"] for s in seeds]
        last = [100 * runs[s]["test_acc"][-1] for s in seeds if runs[s]["test_acc"]]
        sizes: dict[str, list[float]] = {}
        for s in seeds:
            for layer, v in runs[s]["mean_sizes"].items():
                sizes.setdefault(layer, []).append(v)
        size = " / ".join(f"{np.mean(v):.1f}" for v in sizes.values()) if sizes else (
            f"{res.setting.per_class * 10} (all)")
        rng = f"[{min(test):.2f}, {max(test):.2f}]" if test else ""
        lines.append(f"| {_label(res, m)} | {_describe(c.spec)} | {c.step} | {len(seeds)}/{n_seeds} | {_ms(test)} | "
                     f"{rng} | {_ms(train)} | {_ms(last)} | {size} |")
    return [*lines, ""]


def per_seed_table(res: Result) -> list[str]:
    methods = [m for m in _methods(res) if res.runs.get(m)]
    if not methods:
        return []
    seeds = sorted(set().union(*(res.runs[m] for m in methods)))
    lines = ["| seed | " + " | ".join(_label(res, m) for m in methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for s in seeds:
        cells = []
        for m in methods:
            r = res.runs[m].get(s)
            if r is None:
                cells.append("*pending*")
                continue
            mark = f" (diverged at step {r['diverged_at']})" if r["diverged_at"] else ""
            cells.append(f"{100 * r['test_at_step']:.2f} / {100 * r['train_at_step']:.1f}{mark}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def comparisons(res: Result) -> list[tuple[str, str, str]]:
    """(name, method a, method b) pairs to test: DBA against each baseline and against each ablation."""
    if "dba" not in res.runs:
        return []
    out = []
    best = res.plan.best_baseline
    for base in ("sgd", "adam"):
        if base in res.runs:
            tag = " (validated better)" if base == best else ""
            out.append((f"DBA − {_label(res, base)}{tag}", "dba", base))
    for m in res.plan.families:
        if m.startswith("dba_") and m in res.runs:
            out.append((f"DBA − ablation: {protocol.ABLATIONS[m[4:]][0]}", "dba", m))
    return out


def paired_table(res: Result) -> tuple[list[str], dict[str, dict]]:
    lines = ["| comparison (test accuracy, pp) | seeds | mean difference | 95% CI | paired t p | Wilcoxon p | "
             "outcome (both tests at 0.05) |", "|---|---|---|---|---|---|---|"]
    tests = {}
    for name, a, b in comparisons(res):
        seeds = res.common_seeds(a, b)
        r = tests[b] = paired(res.scores(a, seeds), res.scores(b, seeds))
        ci = "n/a" if math.isnan(r["lo"]) else f"[{r['lo']:+.2f}, {r['hi']:+.2f}]"
        mean = "n/a" if math.isnan(r["mean"]) else f"{r['mean']:+.2f}"
        lines.append(f"| {name} | {r['n']} | {mean} | {ci} | {_p(r['p_t'])} | {_p(r['p_w'])} | {judge(r)} |")
    return [*lines, ""], tests


def converged(res: Result, method: str) -> bool:
    c = res.plan.families[method].choice
    return c is not None and c.stopped == "patience"


def verdict(res: Result, tests: Mapping[str, dict], budget: protocol.Budget) -> list[str]:
    """Sentences computed from the numbers: the outcome of each comparison, or why there is none yet."""
    fams, best = res.plan.families, res.plan.best_baseline
    if best is None or "dba" not in fams or not fams["dba"].done:
        return ["No verdict yet: the tuning is unfinished."]
    if fams["dba"].choice is None:
        return ["No verdict: every DBA learning rate diverged."]
    n = len(res.common_seeds("dba", best))
    if n < len(budget.seeds):
        return [f"No verdict yet: {n} of {len(budget.seeds)} seeds finished for DBA and {_label(res, best)}."]
    cap = [fams[m].label for m in ("dba", best, *(m for m in fams if m.startswith("dba_"))) if not converged(res, m)]
    if cap:
        return [f"Not tested at this budget: the validation accuracy of {', '.join(cap)} "
                f"{'was' if len(cap) == 1 else 'were'} still improving when the tuning runs reached the "
                f"{budget.max_steps}-step cap."]
    out = []
    for name, _, b in comparisons(res):
        r, word = tests[b], judge(tests[b])
        p_t, p_w = (_p(r[k]) if _p(r[k])[0] in "<n" else f"= {_p(r[k])}" for k in ("p_t", "p_w"))
        ci = f"{r['mean']:+.2f} pp (95% CI [{r['lo']:+.2f}, {r['hi']:+.2f}]; paired t p {p_t}, Wilcoxon p {p_w}, " \
             f"{r['n']} seeds)"
        other = name.split(" − ", 1)[1]
        if word in ("better", "worse"):
            out.append(f"DBA tests {word} than {other}: {ci}.")
        else:
            out.append(f"DBA against {other}: {word}, {ci}.")
    paper = PAPER.get(res.setting.per_class) if res.setting.arch == "mlp" else None
    if paper and best in tests:
        base = float(np.mean(res.scores(best, res.common_seeds("dba", best))))
        r = tests[best]
        rr, lo, hi = (100 * x / (100 - base) for x in (r["mean"], r["lo"], r["hi"]))
        claim = paper["reduction"]
        reproduced = "not reproduced" if hi < claim else "not contradicted"
        out.append(f"The abstract's {claim:.2f}% relative error reduction over SGD/Adam is {reproduced} by these "
                   f"converged runs: measured {rr:.1f}% (95% CI [{lo:.1f}, {hi:.1f}]) against the baseline that "
                   f"validated better ({base:.2f}%; the abstract implies ≈ {paper['implied_baseline']:.2f}%).")
    return out


def cost_lines(res: Result) -> list[str]:
    lines = ["| method | tuning units | tuning CPU-min | run units | run CPU-min | mean CPU-s per run |",
             "|---|---|---|---|---|---|"]
    for m, fam in res.plan.families.items():
        tune = [res.tune[u]["cpu_seconds"] for u in fam.units if u in res.tune]
        runs = [r["cpu_seconds"] for r in res.runs.get(m, {}).values()]
        per = f"{np.mean(runs):.1f}" if runs else "—"
        lines.append(f"| {fam.label} | {len(tune)} | {sum(tune) / 60:.1f} | {len(runs)} | {sum(runs) / 60:.1f} | "
                     f"{per} |")
    return [*lines, ""]


def reductions(res: Result, budget: protocol.Budget) -> list[str]:
    """What this study leaves out, each with its cost at the rates the records measured."""
    tune = [d["cpu_seconds"] / len(d["args"]["seeds"]) for d in res.tune.values()]
    runs = {m: np.mean([r["cpu_seconds"] for r in v.values()]) for m, v in res.runs.items() if v}
    if not tune or not runs:
        return []
    return [
        "Reductions against a larger study, priced at the rates measured here: "
        f"{_n(len(budget.tune_seeds), 'tuning seed')} (each more adds about {np.mean(tune):.1f} CPU-s to each of "
        f"the {len(res.tune)} tuning units); {_n(len(budget.seeds), 'scored seed')} (each more costs about "
        f"{sum(runs.values()):.1f} CPU-s for all methods); one network width; DBA's search (greedy backward) and "
        "aggregation (mean) fixed, its metric and minimum subset size tuned over "
        f"{len(protocol.DBA_CONFIGS)} combinations.",
        "",
    ]


def plot_curves(res: Result, path: Path) -> Path | None:
    """Mean test accuracy and training accuracy over the seeds against the step, one line per method."""
    methods = [m for m in _methods(res) if res.runs.get(m)]
    if not methods:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from knotwork._io import write_scratch

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, m in enumerate(methods):
        runs = list(res.runs[m].values())
        n = min(len(r["checkpoints"]) for r in runs)
        steps = runs[0]["checkpoints"][:n]
        color = f"C{i}"
        for ax, key in zip(axes, ("test_acc", "train_acc"), strict=True):
            ax.plot(steps, 100 * np.mean([r[key][:n] for r in runs], axis=0), color=color, label=_label(res, m))
            ax.axvline(res.plan.families[m].choice.step, color=color, ls=":", lw=0.8)
    axes[0].set_ylabel("test accuracy (%), mean over seeds")
    axes[1].set_ylabel("training accuracy (%), mean over seeds")
    for ax in axes:
        ax.set_xlabel("step (dotted: the val-chosen step)")
    axes[0].legend(fontsize=7)
    fig.suptitle(res.setting.describe(), fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_scratch(path, buf.getvalue())
    return path


# ------------------------------------------------------------------------------------------------ the page


def protocol_lines(budget: protocol.Budget, n_test: int | None) -> list[str]:
    grids = "; ".join(f"{'SGD (momentum 0.9)' if o == 'sgd' else 'Adam'} "
                      + ", ".join(f"{protocol.lr_of(k):g}" for k in protocol.START[o])
                      + f" (hard bounds {protocol.lr_of(protocol.BOUNDS[o][0]):g} and "
                        f"{protocol.lr_of(protocol.BOUNDS[o][1]):g})" for o in ("sgd", "adam"))
    configs = ", ".join(f"{m}{f' with min_size {f:g}·P' if f else ''}" for m, f in protocol.DBA_CONFIGS.values())
    n_cfg, n_start = len(protocol.DBA_CONFIGS), len(protocol.START["sgd"])
    return [
        "## Protocol",
        "",
        f"- Seeds {list(budget.seeds)} for the scored runs; tuning seeds {list(budget.tune_seeds)} (their own "
        "draws). Each seed draws its own class-balanced subset of MNIST's train split and its own initialisation.",
        f"- Tuning: {budget.val_frac:.0%} of each class of a tuning seed's subset is held out for validation. Every "
        f"method and grid point trains its tuning seeds for at least {budget.min_steps} full-batch steps, with "
        f"validation every {budget.eval_every} steps, until the mean validation accuracy has not improved for "
        f"{budget.patience} checkpoints (cap {budget.max_steps} steps). The learning rate and the step count are "
        "chosen together, by the best mean validation accuracy (ties: lower validation loss); a learning rate that "
        "diverged is never chosen.",
        f"- Grids start at {grids}. A choice at a grid's edge grows the grid by one step of the ladder "
        "(…, 0.1, 0.3, 1, …) in that direction until the choice is interior or on a hard bound; the tables give "
        "the final grids.",
        "- DBA (greedy backward elimination, per-layer subsets, mean aggregation) runs on top of the baseline "
        "optimizer that validated better, with its own learning rate tuned on that optimizer's final grid "
        f"(grown by the same rule), jointly with its metric: {configs}. So DBA gets more tuning trials than each "
        f"baseline: {n_cfg} settings × the learning rates of its grid, {n_cfg} × {n_start} = {n_cfg * n_start} when "
        f"no grid grows, against {n_start} for SGD and {len(protocol.START['adam'])} for Adam (each growth adds "
        f"{n_cfg} trials to DBA's grid, 1 to a baseline's; the tables give the counts). Ablations "
        f"change one thing in the chosen DBA setting and get their own step count on validation: "
        + ", ".join(protocol.ABLATIONS[a][0] for a in budget.ablations) + ".",
        "- Scored runs retrain each chosen setting on the whole subset (no validation carve) for as many steps as "
        f"its tuning ran, with test accuracy on the full test split ({n_test or '?'} images) every "
        f"{budget.eval_every} steps; the score is the test accuracy at the validation-chosen step. The test set "
        "is never used for a choice.",
        "",
    ]


def render(results: Sequence[Result], budget: protocol.Budget, *, figures: Mapping[str, str]) -> str:
    """The page below its header."""
    n_test = next((r.get("n_test") for res in results for runs in res.runs.values() for r in runs.values()), None)
    lines = protocol_lines(budget, n_test)
    summary = []
    for res in results:
        name = res.setting.describe()
        lines += [f"## {name[0].upper()}{name[1:]}", ""]
        pending = [u.name for u in res.plan.needed]
        if pending:
            lines += [f"**Unfinished units: {len(pending)}** (next: {', '.join(f'`{p}`' for p in pending[:4])}"
                      f"{', …' if len(pending) > 4 else ''}); units further down the plan are not listed until "
                      "the ones they depend on are done.", ""]
        lines += ["### Tuning", "", *tuning_table(res), *trials_lines(res, budget)]
        lines += ["### Test accuracy", "",
                  f"Test accuracy (%) at the validation-chosen step, mean ± sample sd over the seeds finished (of "
                  f"{len(budget.seeds)}); training accuracy (%) at the same step; mean |S| is DBA's mean chosen "
                  "subset size per layer up to that step.", "", *results_table(res, len(budget.seeds))]
        rows = per_seed_table(res)
        if rows:
            lines += ["Per seed: test accuracy / training accuracy (%) at the validation-chosen step.", "", *rows]
        table, tests = paired_table(res)
        if len(table) > 3:
            lines += ["### Paired tests", "", "Differences are DBA minus the other method, paired by seed.", "",
                      *table]
        if figures.get(res.setting.name):
            lines += [f"![learning curves, {res.setting.name}]({figures[res.setting.name]})", ""]
        lines += ["### Cost", "", "CPU time measured by each unit (one thread).", "", *cost_lines(res),
                  *reductions(res, budget)]
        sentences = verdict(res, tests, budget)
        lines += ["### Verdict", "", *(f"- {s}" for s in sentences), ""]
        summary += [f"- {res.setting.name}: {s}" for s in sentences]
    lines += ["## Verdict at this budget", "", *summary, "", *READING]
    return "\n".join(lines) + "\n"
