"""Matching and merging time, and memory, of ZipIt!'s greedy matcher for widths 64..1024 features per model.

Two tables, each width one record per table under ``benchmarks/results/zipit_timing/``:

- ``matcher-width<n>``: the library's greedy matcher (``zipit_match``: each row keeps its best column, only the rows
  a merge invalidates are scanned again) against the naive loop with a full O² argmax per step
  (``zipit_match_naive``, the anchor), timed one after the other in this process, with a check that both give
  the same merge and unmerge matrices, and the physical floor: one pass over the O×O matrix (a full argmax,
  which any exact greedy must do at least once).
- ``width<n>``: the loop shape of the reference code, which deletes the merged row and column with ``torch.cat``
  at every step (a fresh (O-k)² copy per step, O(O³) in all; written from the method notes' description of
  ``match_tensors_zipit``, not copied), Permute (linear assignment) and folding M/U into a 3-layer MLP of that
  width ("merging").

Usage: ``python benchmarks/zipit_timing.py [--widths 64 128 256 512 1024] [--out docs/results/zipit_timing.md]``

A width whose records exist is not measured again (``--rerun`` measures it again). ``--only matcher`` (or
``other``) measures only that table's records again, for the widths given, and renders the whole page from the
records. The page is rendered from the records of the widths asked for.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, header, load_records, record_path, write_atomic, write_record  # noqa: E402

from knotwork.zipit import fold_models, trace_feature_graph  # noqa: E402
from knotwork.zipit.matchers import permute_match, zipit_match, zipit_match_naive  # noqa: E402
from knotwork.zipit.models import MLP  # noqa: E402


def reference_style(corr: torch.Tensor, n: int, alpha: float, beta: float) -> list[list[int]]:
    """Greedy zip that shrinks the similarity matrix with torch.cat at every step (the reference's loop shape)."""
    o = corr.shape[0]
    sim = corr.clone()
    sim.fill_diagonal_(float("-inf"))
    origin = torch.arange(o) // n
    members: list[list[int]] = [[k] for k in range(o)]
    budget = [int((o - n) // 2 * beta)] * 2
    for m in range(2):
        if budget[m] <= 0:
            idx = (origin == m).nonzero().flatten()
            sim[idx[:, None], idx[None, :]] = float("-inf")
    while sim.shape[0] > n:
        flat = int(torch.argmax(sim))
        i, j = divmod(flat, sim.shape[0])
        i, j = min(i, j), max(i, j)
        members[i] = members[i] + members[j]
        new = torch.minimum(sim[i], sim[j])
        new = torch.where(new > 0, new * alpha, new)
        sim[i], sim[:, i] = new, new
        sim[i, i] = float("-inf")
        keep = torch.cat([torch.arange(j), torch.arange(j + 1, sim.shape[0])])
        sim = torch.cat([sim[:j], sim[j + 1 :]])[:, keep]  # the O(O²) copy per step
        same = origin[i] == origin[j]
        origin = torch.cat([origin[:j], origin[j + 1 :]])
        del members[j]
        if same:
            m = int(origin[i])
            budget[m] -= 1
            if budget[m] <= 0:
                idx = (origin == m).nonzero().flatten()
                sim[idx[:, None], idx[None, :]] = float("-inf")
    return members


def _time(fn, reps: int) -> dict:
    """Best wall and best CPU seconds of ``reps`` calls, and the last call's result."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return {"wall": wall, "cpu": cpu, "result": result}


STUDY = "zipit_timing"
#: Issue 14: the greedy matcher at least this many times faster than the naive loop at 2 x 1024 features.
TARGET_WIDTH, TARGET_SPEEDUP = 1024, 10.0


def correlation(w: int) -> torch.Tensor:
    """Correlation of synthetic features of two models of width ``w``, with planted partners (seeded by ``w``)."""
    g = torch.Generator().manual_seed(w)
    feats = torch.randn(2 * w, 4 * w, generator=g, dtype=torch.float64)
    feats[w:] += feats[:w][torch.randperm(w, generator=g)]  # correlated partners, as between two models
    return torch.corrcoef(feats)


def measure_matcher(w: int, *, reps: int) -> dict:
    """The greedy matcher against the naive full-argmax loop and the one-pass floor, at width ``w`` per model."""
    corr = correlation(w)
    zipit_match(corr, [w, w])  # warm: first-touch page faults of the working arrays are not the matcher's cost
    fast = _time(lambda: zipit_match(corr, [w, w]), reps)
    naive = _time(lambda: zipit_match_naive(corr, [w, w]), reps)
    floor = _time(lambda: np.argmax(corr.numpy()), max(reps, 3))
    same = all(torch.equal(a, b) for a, b in zip(fast["result"], naive["result"], strict=True))
    return {"width": w, "reps": reps, "same_as_naive": same,
            **{name: {"wall": t["wall"], "cpu": t["cpu"]} for name, t in
               (("fast", fast), ("naive", naive), ("floor", floor))}}


def measure_other(w: int, *, reps: int, reference_max: int) -> dict:
    """The reference-style loop, Permute and folding at width ``w`` (best wall seconds of ``reps``)."""
    corr = correlation(w)
    t_ref = _time(lambda: reference_style(corr, w, 0.3, 0.125), reps)["wall"] if w <= reference_max else None
    t_perm = _time(lambda: permute_match(corr, [w, w]), reps)["wall"]
    match = zipit_match(corr, [w, w])
    ref_clusters = reference_style(corr, w, 0.3, 0.125) if w <= min(reference_max, 256) else None
    agree = None
    if ref_clusters is not None:
        ours = {frozenset(torch.nonzero(match[1][:, c]).flatten().tolist()) for c in range(w)}
        agree = ours == {frozenset(m) for m in ref_clusters}
    a, b = MLP(w, w, 10, depth=3), MLP(w, w, 10, depth=3)
    graph = trace_feature_graph(a, torch.randn(2, w))
    transforms = {k: match for k in graph.mergeable}  # any valid (M, U) of this width: folding cost only
    t_fold = _time(lambda: fold_models([a, b], graph, transforms), reps)["wall"]
    return {"width": w, "reference": t_ref, "permute": t_perm, "fold": t_fold,
            "corr_mib": (2 * w) ** 2 * 8 / 2**20, "agree": agree, "reps": reps}


TABLES = {"matcher": ("matcher-width", measure_matcher), "other": ("width", measure_other)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--reference-max", type=int, default=512, help="skip the reference-style loop above this")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "zipit_timing.md")
    p.add_argument("--records", type=Path, default=None,
                   help="folder of the result records (default: benchmarks/results)")
    p.add_argument("--rerun", action="store_true", help="measure every width again, even those with a record")
    p.add_argument("--only", choices=sorted(TABLES), default=None,
                   help="measure this table's records again (the other table's records are kept)")
    p.add_argument("--force", action="store_true", help="replace an existing results page")
    return p


def page_argv(argv: list[str]) -> list[str]:
    """The command line that makes the whole page: ``--only`` and ``--rerun`` only choose what is measured again."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--only":
            skip = True
        elif not (arg.startswith("--only=") or arg == "--rerun"):
            out.append(arg)
    return out


def render_matcher(records: list[dict]) -> list[str]:
    lines = [
        "## Greedy matcher against the naive loop",
        "",
        "CPU seconds, best of the repeats; the two matchers run one after the other in one process. The naive loop "
        "(`zipit_match_naive`) takes a full O² argmax at every one of its n steps; the floor is one such pass over "
        "the O×O matrix, which any exact greedy needs at least once.",
        "",
        "| n per model | greedy (ours) CPU s | naive full-argmax CPU s | naive / ours | floor: one full argmax CPU s "
        "| ours / floor | same M and U as naive |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in records:
        fast, naive, floor = d["fast"]["cpu"], d["naive"]["cpu"], d["floor"]["cpu"]
        lines.append(f"| {d['width']} | {fast:.3f} | {naive:.3f} | {naive / fast:.1f}× | {floor:.4f} "
                     f"| {fast / max(floor, 1e-9):.0f}× | {'yes' if d['same_as_naive'] else 'NO'} |")
    lines.append("")
    at = {d["width"]: d for d in records}.get(TARGET_WIDTH)
    if at is None:
        return [*lines, f"Target (issue 14) not checked: width {TARGET_WIDTH} was not measured.", ""]
    speedup = at["naive"]["cpu"] / at["fast"]["cpu"]
    verdict = (f"**met**: {speedup:.1f}×" if speedup >= TARGET_SPEEDUP and at["same_as_naive"] else
               f"**missed**: {speedup:.1f}×, {100 * (1 - speedup / TARGET_SPEEDUP):.0f}% short"
               if at["same_as_naive"] else "**missed**: the matches differ from the naive loop's")
    return lines + [
        f"Target (issue 14): the greedy matcher at least {TARGET_SPEEDUP:.0f}× faster than the naive loop at "
        f"2×{TARGET_WIDTH} features, with the same matches: {verdict}.",
        "",
        "Why: each row keeps its largest value and the first column holding it, so finding the pair is one O-long "
        "argmax and the row-major tie order of the naive loop is kept; a merge rescans only the merged row, the rows "
        "whose best column it invalidated (a handful) and, once, the rows of a model whose within-model budget runs "
        "out. What remains per step is O-long vector work and one strided write of the merged column (a cache miss "
        "per row), so the step costs about as much as a few full rows rather than the whole matrix; the copy of the "
        "O×O matrix and building M and U are fixed costs shared with the naive loop. At small widths the matrix "
        "fits in cache and the naive argmax is cheap, so the gain grows with the width.",
        "",
    ]


def render_other(records: list[dict]) -> list[str]:
    lines = [
        "## Reference-style loop, Permute and folding",
        "",
        "Wall seconds, best of the repeats.",
        "",
        "| n per model | reference-style torch.cat loop s | Permute (LAP) s | fold into 3-layer MLP s "
        "| O×O float64 MiB | same clusters as reference-style |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for d in records:
        ref = f"{d['reference']:.3f}" if d["reference"] is not None else "skipped"
        ag = {True: "yes", False: "no", None: "not checked"}[d["agree"]]
        lines.append(f"| {d['width']} | {ref} | {d['permute']:.3f} | {d['fold']:.3f} | {d['corr_mib']:.1f} | {ag} |")
    return lines + [
        "",
        "Memory: feature statistics keep one O-vector and one O×O float64 matrix per feature space, whatever the "
        "amount of data (streaming). The greedy matcher works in place on one O×O copy; the reference-style loop "
        "allocates a fresh (O-k)² matrix at each of its n steps (about O³/3 element copies in all).",
        "",
        "The paper reports 1.1 s per ResNet-20x4 zip with its greedy matcher (GPU machine; Table 8).",
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if min(args.widths) < 2 or args.reps < 1:
        parser().error("--widths must be >= 2 and --reps >= 1")
    if args.out.exists() and not args.force:
        parser().error(f"{args.out} exists; pass --force to replace it")
    torch.set_num_threads(1)
    for table, (prefix, fn) in TABLES.items():
        if args.only not in (None, table):
            continue
        for w in args.widths:
            if args.only or args.rerun or not record_path(STUDY, f"{prefix}{w}", root=args.records).exists():
                kwargs = {"reference_max": args.reference_max} if table == "other" else {}
                r = fn(w, reps=args.reps, **kwargs)
                write_record(STUDY, f"{prefix}{w}", r, script=__file__, root=args.records)
                print(f"{table} width {w}: " + ", ".join(f"{k} {v}" for k, v in r.items() if k != "width"), flush=True)
    records = {u: r for u, r in load_records(STUDY, root=args.records).items()
               if r["data"]["width"] in args.widths}

    def rows(prefix: str) -> list[dict]:
        found = [r["data"] for u, r in records.items() if u.startswith(prefix) and u[len(prefix):].isdigit()]
        return sorted(found, key=lambda d: d["width"])

    reps = sorted({r["data"]["reps"] for r in records.values()})
    lines = [
        header("ZipIt! matching and merging time", script=__file__, records=records,
               command=shlex.join(["python", "benchmarks/zipit_timing.py", *page_argv(argv)]),
               extra=[f"- Setup: one thread, best of {'/'.join(map(str, reps))}; timings on a shared CPU are noisy "
                      "upper bounds. Two models, width *n* each (O = 2n concatenated features), correlation of "
                      "synthetic features with planted partners; α = 0.3, β = 0.125."]),
        *render_matcher(rows("matcher-width")),
        *render_other(rows("width")),
    ]
    write_atomic(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
