"""Does histogram matching of additional training data beat simple normalization? (arXiv:2309.02001)

Real MSD hippocampus MR volumes are the original domain D0; a disjoint part of them goes through a simulated
scanner change to make the additional domain D1. A small 3D U-Net is trained on D0-train + T(D1) for each
harmonization T (and on D0-train alone), and Dice per class is measured on D0-test, over 9 seeds.

Next session, on a quiet machine (the CPU times are measured):

    python benchmarks/harmonize_study.py --pilot --seeds 0  # one no-D1 unit: its CPU seconds
    python benchmarks/harmonize_study.py --pilot            # no-D1 only, seeds 0-4: collapsed classes? cost?
    python benchmarks/harmonize_study.py --jobs 2           # the study: docs/results/harmonize.md

The pilot checks that the network without extra data learns every class (test Dice >= 0.1) and prints the
measured CPU seconds per unit with a projection for the whole study (6 conditions x 9 seeds = 54 units; budget
about 4 CPU-hours); if a class collapses, raise `--width` / `--iters` and pilot again (each budget has its own
record folder), then run the study at that budget (the page names `--width`/`--iters` when they differ from the
defaults). The pilot's units are the study's `no-D1` units.

Why width 8 and 600 iterations (an estimate, not a measurement): the old page (width 4, 21 k parameters, 150
iterations) lost a class in 5 of 9 seeds and took a median 53 s wall per run on a 2-core machine at load ~6,
i.e. at most 0.35 s per iteration including data and evaluation. Width 8 has 85 k parameters and 3.9x the
multiply-adds of width 4 (73 vs 18.6 M per 16x24x16 forward; width 6: 48 k, 41 M). Scaling 0.35 s by 3.9x and
600 iterations gives ~820 s per unit on a machine that loaded; with about a third of a core then, roughly 270
CPU-s, 54 units ~4 CPU-hours. Small 3D convolutions cost less than their multiply-adds suggest, so this is
likely high; if the pilot projects more than ~4 CPU-hours, use `--width 6` (~2.2x width 4).

Units are `<condition>-seed<k>` records in benchmarks/results/harmonize-<severity>-w<width>-i<iters>/, written by
this process as each unit finishes (units run in `--jobs` single-threaded worker processes), so the study
resumes across sessions; `--rerun` redoes finished units. The page is rendered from the records alone after every
finished unit, with unfinished units marked; `--page-only` only renders. Commit the record folder as units
finish (`git add benchmarks/results/harmonize-*`); at the default budget the page names the command
`python benchmarks/harmonize_study.py` (the benchmarks/README.md row to use once the page is regenerated). The primary comparisons, the test and
the collapse threshold are constants of harmonize_study_lib.py (PRIMARY, ALPHA, COLLAPSED), fixed before any
run. `--cases`/`--records`/`--out` shrink the data and write elsewhere (the smoke test).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shlex
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import harmonize_study_lib as lib  # noqa: E402
from harmonize_study_lib import ALPHA, COLLAPSED, PRIMARY  # noqa: E402,F401  (the pre-registration, named here)

PAGE = lib.ROOT / "docs" / "results" / "harmonize.md"


def parser() -> argparse.ArgumentParser:
    """The options of the one command (its results page names them)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--severity", choices=sorted(lib.SEVERITIES), default="strong", help="the simulated scanner change")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help=f"training seeds (default {' '.join(map(str, lib.SEEDS))}; with --pilot "
                        f"{' '.join(map(str, lib.PILOT_SEEDS))})")
    p.add_argument("--conditions", nargs="+", default=list(lib.DEFAULT_CONDITIONS), choices=lib.CONDITIONS)
    p.add_argument("--width", type=int, default=lib.WIDTH, help="U-Net base width")
    p.add_argument("--iters", type=int, default=lib.ITERATIONS, help="training iterations per unit")
    p.add_argument("--cases", type=int, nargs=3, default=list(lib.CASES), metavar=("TEST", "TRAIN", "D1"),
                   help="how many volumes go to D0-test, D0-train and the D1 source")
    p.add_argument("--pilot", action="store_true", help="only the no-D1 units, then a summary (no page)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes, one torch thread each")
    p.add_argument("--rerun", action="store_true", help="recompute units whose record exists")
    p.add_argument("--page-only", action="store_true", help="compute nothing: render the page from the records")
    p.add_argument("--records", type=Path, default=None, help="records root (default benchmarks/results)")
    p.add_argument("--out", type=Path, default=PAGE, help="results page; the figure is written beside it")
    return p


def command(args: argparse.Namespace) -> str:
    """The one command that (re)makes the page, as run (without where its outputs go or how many jobs)."""
    parts = ["python", "benchmarks/harmonize_study.py"]
    if args.severity != "strong":
        parts += ["--severity", args.severity]
    if tuple(args.seeds) != lib.SEEDS:
        parts += ["--seeds", *map(str, args.seeds)]
    if tuple(args.conditions) != lib.DEFAULT_CONDITIONS:
        parts += ["--conditions", *args.conditions]
    if args.width != lib.WIDTH:
        parts += ["--width", str(args.width)]
    if args.iters != lib.ITERATIONS:
        parts += ["--iters", str(args.iters)]
    if tuple(args.cases) != lib.CASES:
        parts += ["--cases", *map(str, args.cases)]
    return shlex.join(parts)


def _init_worker(path: str) -> None:
    import torch

    sys.path.insert(0, path)
    torch.set_num_threads(1)


def run(units: list[tuple[str, int]], budget: lib.Budget, *, jobs: int, records: Path | None, on_record) -> None:
    """Run ``(condition, seed)`` units, writing each record (and calling ``on_record``) as it finishes.

    An error in ``on_record`` (the page) is logged and the units go on: their records are already written.
    """
    def done(cond: str, seed: int, data: dict) -> None:
        _common.write_record(budget.study, lib.unit_name(cond, seed), data, script=__file__, root=records,
                             code_used=data["code_used"])
        log(f"done {lib.unit_name(cond, seed)}: Dice {data['class_dice'][0]:.3f} / {data['class_dice'][1]:.3f}, "
            f"{data['cpu_seconds']['total']:.0f} CPU-s")
        try:
            on_record()
        except Exception as err:  # noqa: BLE001 - a page that fails must not stop the units still to run
            log(f"page not rendered after {lib.unit_name(cond, seed)} ({type(err).__name__}: {err}); the units go on")

    if jobs == 1:
        for cond, seed in units:
            log(f"start {lib.unit_name(cond, seed)}")
            done(cond, seed, lib.run_unit(cond, seed, budget))
        return
    failed = []
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(str(BENCH),)) as pool:
        pending = {pool.submit(lib.run_unit, cond, seed, budget): (cond, seed) for cond, seed in units}
        log(f"{len(pending)} units queued on {jobs} workers")
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                cond, seed = pending.pop(fut)
                try:
                    data = fut.result()
                except Exception as err:  # noqa: BLE001 - one unit's failure must not lose the others' records
                    failed.append(f"{lib.unit_name(cond, seed)}: {type(err).__name__}: {err}")
                    continue
                done(cond, seed, data)
    if failed:
        from knotwork._errors import RunError

        raise RunError("units failed: " + "; ".join(failed))


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = list(lib.PILOT_SEEDS if args.pilot else lib.SEEDS)
    if args.pilot:
        args.conditions = ["no-D1"]
    if min(args.width, args.iters, args.jobs, *args.cases) < 1 or sum(args.cases) > 260:
        p.error("--width, --iters, --jobs and every --cases count must be >= 1, and --cases may use at most 260 volumes")
    if not lib.DATA.is_dir():
        p.error(f"the hippocampus data is not at {lib.DATA}; see shared/data/README.md")
    import harmonize_study_report as report

    budget = lib.Budget(severity=args.severity, width=args.width, iterations=args.iters, cases=tuple(args.cases))

    def collect() -> report.Study:
        return report.collect(_common.load_records(budget.study, root=args.records), budget, args.conditions,
                              args.seeds)

    def render() -> None:
        if args.pilot:
            return
        recs = _common.load_records(budget.study, root=args.records)
        st = report.collect(recs, budget, args.conditions, args.seeds)
        report.render(st, command=command(args), page=args.out, script=__file__, records=recs)
        log(f"wrote {args.out} ({len(st.missing)} units unfinished)")

    todo = []
    if not args.page_only:
        have = set() if args.rerun else {lib.unit_name(c, s) for c, by in collect().runs.items() for s in by}
        todo = [(c, s) for s in args.seeds for c in args.conditions if lib.unit_name(c, s) not in have]
        log(f"{budget.study}: {len(todo)} units to run, {len(args.seeds) * len(args.conditions) - len(todo)} done")
        run(todo, budget, jobs=args.jobs, records=args.records, on_record=render)
    if args.pilot:
        print("\n".join(report.pilot_summary(collect())))
    else:  # again after the last unit: unguarded, so a page that cannot be rendered ends with its error
        render()
    return 0


if __name__ == "__main__":
    _common.run_main(main)
