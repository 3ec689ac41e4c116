"""The DBA study on data-scarce MNIST: SGD, Adam and DBA each with its own learning rate and step count tuned on
validation, runs to convergence, at least 8 seeds, paired tests; writes docs/results/dba.md.

Usage (from the repository root)::

    python benchmarks/dba_study.py --per-class 10 --per-class 60 --seeds 8 --tune-seeds 3 --steps 400 \\
        --max-steps 2000 --patience 4 --val-frac 0.2 --jobs 2 --force

The page names this command without the options that decide no number (``--jobs``, ``--force``, ``--out``,
``--records``, ``--rerun``, ``--page-only``): ``python benchmarks/dba_study.py --per-class 10 --per-class 60
--seeds 8 --tune-seeds 3 --steps 400 --max-steps 2000 --patience 4 --val-frac 0.2`` (add ``--force`` to replace an
existing page). (``--arch mlp --arch cnn`` adds the CNN rows; ``--ablations random global sum`` the other
ablations.) The
protocol is in benchmarks/dba_protocol.py, the page in benchmarks/dba_page.py. Every unit (one tuning grid
point of one method over the tuning seeds; one scored run of one method and seed) writes its result record
``benchmarks/results/dba/<unit>.json`` as it finishes; a rerun skips the units whose record exists and was made
with the same arguments (``--rerun`` redoes them), so the study resumes across sessions. The page and its
learning-curve figures (``dba_curves_<setting>.png`` beside it) are rendered from the records alone, after
every round of units and every 30 s while units finish (the figures at the end); ``--page-only`` only renders. ``--time-only`` times a few steps of every method and prints a
projection of the study's cost, writing nothing.

First step of the session that runs it (on the machine that will run it, with nothing else running)::

    python benchmarks/dba_study.py --per-class 10 --per-class 60 --time-only        # add --arch cnn for the CNN
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shlex
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

# This checkout's benchmarks and package come first (an installed knotwork may be another checkout).
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "src")]
import _common  # noqa: E402
import dba_page as page  # noqa: E402
import dba_protocol as protocol  # noqa: E402
from _common import ROOT, header, write_atomic, write_record  # noqa: E402

STUDY = "dba"
SCRIPT = "benchmarks/dba_study.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "vision" / "mnist.npz"
TITLE = "Dynamic Batch Adaptation on data-scarce MNIST: measured results"
#: The parts of src/knotwork that compute this study's numbers (the records' ``code_used``).
PARTS = ("train", "_*.py")
#: Between rounds of units the page is re-rendered at most this often (and after every round).
PAGE_EVERY_S = 30.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # No abbreviated options: the page's command (page_command) drops options by their full names.
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MNIST-format .npz.")
    p.add_argument("--per-class", type=int, action="append", dest="per_class",
                   help="Training images per class; repeat the option (default: 10 and 60).")
    p.add_argument("--arch", action="append", choices=["mlp", "cnn"],
                   help="Network(s); repeat the option (default: mlp). The CNN's cost has not been measured.")
    p.add_argument("--hidden", type=int, default=256, help="Hidden width of the MLP.")
    p.add_argument("--seeds", type=int, default=8, help="Seeds 0..seeds-1 for the scored runs.")
    p.add_argument("--tune-seeds", type=int, default=3,
                   help=f"Tuning seeds {protocol.TUNE_SEED_OFFSET}..{protocol.TUNE_SEED_OFFSET}+N-1.")
    p.add_argument("--steps", "--min-steps", type=int, default=400, dest="min_steps",
                   help="Minimum full-batch steps of every tuning run.")
    p.add_argument("--max-steps", type=int, default=2000, help="Hard cap on the steps of a tuning run.")
    p.add_argument("--patience", type=int, default=4,
                   help="Stop tuning after this many checkpoints without a better mean validation accuracy.")
    p.add_argument("--eval-every", type=int, default=25, help="Steps between checkpoints.")
    p.add_argument("--val-frac", type=float, default=0.2, help="Fraction of each class held out when tuning.")
    p.add_argument("--ablations", nargs="+", choices=sorted(protocol.ABLATIONS), default=["random"],
                   help="Ablations of the chosen DBA setting.")
    p.add_argument("--jobs", type=int, default=2, help="Worker processes (one thread each); 1 runs in-process.")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "dba.md", help="Results page.")
    p.add_argument("--records", type=Path, default=None,
                   help="Root of the result records (default benchmarks/results); this study's go to RECORDS/dba/.")
    p.add_argument("--force", action="store_true", help="Replace an existing page (needed when resuming).")
    p.add_argument("--rerun", action="store_true", help="Recompute units whose record exists.")
    p.add_argument("--page-only", action="store_true", help="Compute nothing: render the page from the records.")
    p.add_argument("--time-only", action="store_true", help="Time --time-steps steps of every method, print a "
                   "projection of the study's cost, write nothing.")
    p.add_argument("--time-steps", type=int, default=50, help="Steps per method timed by --time-only.")
    args = p.parse_args(argv)
    args.per_class = args.per_class or [10, 60]
    args.arch = args.arch or ["mlp"]
    for name in ("seeds", "tune_seeds", "min_steps", "max_steps", "patience", "eval_every", "jobs", "hidden",
                 "time_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.max_steps < args.min_steps:
        p.error(f"--max-steps ({args.max_steps}) must be >= --steps ({args.min_steps})")
    if min(args.per_class) < 2:
        p.error(f"--per-class must be >= 2 (one image per class is held out for validation); got {min(args.per_class)}")
    if not 0 < args.val_frac < 1:
        p.error(f"--val-frac must lie in (0, 1); got {args.val_frac}")
    if not args.data.is_file():
        p.error(f"MNIST file not found: {args.data}")
    if args.out.exists() and not (args.force or args.time_only):
        p.error(f"{args.out} exists; pass --force to replace it")
    return args


#: Options that decide no number (whether and where to write, how many processes): the page's command leaves them
#: out. Name -> whether it takes a value.
NOT_SHOWN = {"--page-only": False, "--force": False, "--rerun": False, "--jobs": True, "--out": True, "--records": True}


def page_command(argv: list[str]) -> str:
    """The study's command as the page names it: ``argv`` in its order, less the options in NOT_SHOWN (so a page
    rendered with ``--page-only --force --jobs 2`` names the command that computes its numbers)."""
    shown, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = token.partition("=")
        if name in NOT_SHOWN:
            skip = NOT_SHOWN[name] and not eq
            continue
        shown.append(token)
    return "python " + shlex.join([SCRIPT, *shown])


def budget_of(args: argparse.Namespace, data_sha: str) -> protocol.Budget:
    return protocol.Budget(
        seeds=tuple(range(args.seeds)),
        tune_seeds=tuple(range(protocol.TUNE_SEED_OFFSET, protocol.TUNE_SEED_OFFSET + args.tune_seeds)),
        val_frac=args.val_frac, eval_every=args.eval_every, min_steps=args.min_steps, max_steps=args.max_steps,
        patience=args.patience, ablations=tuple(dict.fromkeys(args.ablations)), data_sha=data_sha)


# ------------------------------------------------------------------------------------------------ running


def _init_worker(paths: list[str]) -> None:
    import torch

    sys.path[:0] = paths
    torch.set_num_threads(1)


class Runner:
    """Runs rounds of units in one pool of ``jobs`` single-threaded spawn workers (in-process with one job)."""

    def __init__(self, jobs: int, data: Path):
        self.jobs, self.data, self.pool = jobs, str(data), None

    def run(self, units: list[protocol.Unit], done) -> list[str]:
        """Run ``units``; ``done(unit, data)`` is called in this process as each finishes. Returns the failures."""
        failed = []
        if self.jobs == 1:
            for u in units:
                try:
                    done(u, protocol.execute(u.kind, u.args, self.data))
                except Exception as err:  # noqa: BLE001 - one unit's failure must not lose the others' records
                    failed.append(f"{u.name}: {type(err).__name__}: {err}")
            return failed
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                            initargs=([str(BENCH), str(BENCH.parent / "src")],))
        pending = {self.pool.submit(protocol.execute, u.kind, u.args, self.data): u for u in units}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                u = pending.pop(fut)
                try:
                    done(u, fut.result())
                except Exception as err:  # noqa: BLE001
                    failed.append(f"{u.name}: {type(err).__name__}: {err}")
        return failed

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def time_only(args: argparse.Namespace, settings: list[protocol.Setting], budget: protocol.Budget) -> None:
    """Seconds per step of every method family (one thread) and a projection of the study's CPU time."""
    import torch

    from knotwork.train.io import load_mnist
    from knotwork.train.mlp import Trainer

    torch.set_num_threads(1)
    data = load_mnist(args.data)
    n_dba = len(protocol.DBA_CONFIGS)
    print(f"{'setting':<10} {'method':<14} {'ms/step tune':>13} {'ms/step run':>12} {'ms/test eval':>13}")
    low = high = 0.0
    for st in settings:
        specs = {"sgd": protocol.spec_for(st, "sgd", -2, budget), "adam": protocol.spec_for(st, "adam", -6, budget)}
        for name, (metric, frac) in protocol.DBA_CONFIGS.items():
            specs[f"dba_{name}"] = protocol.spec_for(st, "adam", -6, budget, protocol.dba_options(metric), frac)
        per = {}
        for name, spec in specs.items():
            ms = []
            for role in ("tune", "final"):
                x, y, ev = protocol.prepare(data, st.per_class, 0, args.val_frac, role)
                t = Trainer(spec, x, y, seed=0)
                start = time.perf_counter()
                for _ in range(args.time_steps):
                    t.step()
                ms.append(1000 * (time.perf_counter() - start) / args.time_steps)
            start = time.perf_counter()
            t.accuracy(*ev["test"])
            ms.append(1000 * (time.perf_counter() - start))
            per[name] = ms
            print(f"{st.name:<10} {name:<14} {ms[0]:>13.1f} {ms[1]:>12.1f} {ms[2]:>13.1f}")
        dba_tune = sum(per[f"dba_{n}"][0] for n in protocol.DBA_CONFIGS) / n_dba
        dba_run = sum(per[f"dba_{n}"][1] for n in protocol.DBA_CONFIGS) / n_dba
        ev = per["sgd"][2]
        # Units with the starting grids (no growth): 3 lrs per baseline, 3 lrs x configs for DBA, 1 per ablation.
        tune_ms = len(budget.tune_seeds) * (3 * (per["sgd"][0] + per["adam"][0]) + 3 * n_dba * dba_tune
                                            + len(budget.ablations) * dba_tune)
        run_ms = len(budget.seeds) * (per["sgd"][1] + per["adam"][1] + (1 + len(budget.ablations)) * dba_run)
        evals = len(budget.seeds) * (3 + len(budget.ablations)) * ev / budget.eval_every
        for steps, acc in ((budget.min_steps, "low"), (budget.max_steps, "high")):
            total = steps * (tune_ms + run_ms + evals) / 60000
            low, high = (low + total, high) if acc == "low" else (low, high + total)
    print(f"projected CPU time with the starting grids: {low:.0f} min if every run stops at {budget.min_steps} steps, "
          f"{high:.0f} min if every run reaches {budget.max_steps}; each grid growth adds a tuning unit; divide by "
          f"--jobs for the wall time on that many free cores.")


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from knotwork._io import sha256_file

    sha = sha256_file(args.data)
    settings = protocol.settings_of(args.per_class, args.arch, args.hidden)
    budget = budget_of(args, sha)
    if args.time_only:
        time_only(args, settings, budget)
        return 0
    root = args.records
    records = _common.load_records(STUDY, root=root)
    fresh: set[str] | None = set() if args.rerun else None
    log = lambda m: print(time.strftime("%H:%M:%S ") + m, file=sys.stderr, flush=True)  # noqa: E731
    code_used = _common.scoped_fingerprint(PARTS, BENCH / "dba_protocol.py")

    last_page = [time.monotonic()]

    def write_page(figures: bool) -> None:
        last_page[0] = time.monotonic()
        results = [page.collect(st, budget, records, fresh) for st in settings]
        figs = {}
        for res in results:
            path = args.out.parent / f"dba_curves_{res.setting.name}.png"
            if figures:
                page.plot_curves(res, path)
            if path.is_file():
                figs[res.setting.name] = path.name
        used = {n: records[n] for res in results for n in res.plan.valid}
        cpu = sum(rec["data"]["cpu_seconds"] for rec in used.values())
        head = header(
            TITLE, command=page_command(argv), script=__file__, records=used,
            data=f"`{os.path.relpath(args.data, ROOT)}` (sha256 `{sha[:16]}…`), MNIST train split for the training "
                 "subsets, the full test split for testing.",
            extra=[f"- Status: {'complete' if not any(r.plan.needed for r in results) else 'partial'}; records: "
                   f"{len(used)} units in `{os.path.relpath((root or _common.RESULTS) / STUDY, ROOT)}`, "
                   f"CPU time summed over them {cpu / 60:.1f} min (one torch thread per unit)."])
        write_atomic(args.out, head + "\n" + page.render(results, budget, figures=figs))

    def page_logged(figures: bool) -> str | None:
        """Render the page; a failure is logged as one line and returned, never raised: a finished unit stays
        finished, its record written, and the study goes on (``--page-only`` renders the page again)."""
        try:
            write_page(figures)
        except Exception as err:  # noqa: BLE001 - the page is made from the records; losing it must not lose them
            log(f"page not rendered: {type(err).__name__}: {err}")
            return f"{type(err).__name__}: {err}"
        return None

    def done(unit: protocol.Unit, data: dict) -> None:
        path = write_record(STUDY, unit.name, data, script=__file__, root=root, code_used=code_used)
        records[unit.name] = json.loads(path.read_text(encoding="utf-8"))
        if fresh is not None:
            fresh.add(unit.name)
        log(f"done {unit.name} ({data['cpu_seconds']:.1f} CPU-s)")
        if time.monotonic() - last_page[0] >= PAGE_EVERY_S:
            page_logged(figures=False)

    failed: list[str] = []
    runner = Runner(args.jobs, args.data)
    try:
        while not args.page_only:
            units = [u for st in settings for u in protocol.plan(st, budget, records, fresh).needed]
            if not units:
                break
            log(f"{len(units)} units: {', '.join(u.name for u in units[:6])}{', …' if len(units) > 6 else ''}")
            failed = runner.run(units, done)
            page_logged(figures=False)
            if failed:
                break
    finally:
        runner.close()
    page_error = page_logged(figures=True)
    if page_error is None:
        log(f"wrote {args.out}")
    problems = (["units failed: " + "; ".join(failed)] if failed else []) + (
        [f"the page was not rendered ({page_error}); the records are kept: render it with --page-only --force"]
        if page_error else [])
    if problems:
        from knotwork._errors import RunError

        raise RunError("; ".join(problems))
    return 0


if __name__ == "__main__":
    _common.run_main(main)
