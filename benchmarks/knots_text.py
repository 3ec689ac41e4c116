"""KnOTS on MiniLM-L6 text tasks: LoRA adapters over several training seeds, TA/TIES/DARE-TIES/KnOTS merges
searched on the full val splits and scored on the full test splits, paired tests, CKA.

Three pages, one command each (every unit's record goes to benchmarks/results/<page>/ as it finishes):

    python benchmarks/knots_text.py --config text  --seeds 0 1 2          # docs/results/knots-text.md
    python benchmarks/knots_text.py --config mixed --seeds 0 1 2          # docs/results/knots-text-mixed.md
    python benchmarks/knots_text.py --config text  --seeds 0 1 2 --r 4    # docs/results/knots-text-r4.md

`--config text mixed` runs both task sets seed by seed, sharing the four adapters they have in common (the cheap
order when a session cannot finish every seed). Units (adapter training, the probe, zero-shot, fine-tuned rows,
one search per merge method, CKA) run in `--jobs` single-threaded worker processes; a unit whose record exists is
skipped, so an interrupted study resumes (adapters are cached under .knotwork-cache/knots-text/ and retrained
deterministically on a new machine). The page is rendered from the records alone after every seed; a seed with
unfinished units is listed as partial and left out of the tables. `--page-only` only renders. `--verify UNIT...`
recomputes units from scratch and compares them with their records (e.g. after a change of code or machine). `--smoke` runs the
whole pipeline at a tiny budget into a temporary folder: a check, not a result.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import knots_text_lib as lib  # noqa: E402
import knots_text_page as pages  # noqa: E402

CONFIGS = {"text": ("mr", "subj", "cr", "mpqa", "trec", "sst2"),
           "mixed": ("sst2", "mr", "subj", "trec", "sick", "cola")}
KINDS = {"text": "six sentence tasks, four of them sentiment polarity (MR, CR, MPQA, SST-2) plus subjectivity (SUBJ) "
                 "and question type (TREC)",
         "mixed": "six tasks of five kinds: sentiment (SST-2, MR), subjectivity (SUBJ), question type (TREC), "
                  "sentence-pair inference (SICK: entailment / neutral / contradiction) and grammatical "
                  "acceptability (CoLA)"}
SMOKE = {"tasks": 2, "train": {"epochs": None, "max_steps": 2, "batch_size": 4, "max_length": 16, "patience": None},
         "limit": 4, "grids": {"scale": (0.5, 1.0), "topk": (20.0, 100.0), "drop_rate": (0.5, 0.1)}}


def page_name(config: str, r: int) -> str:
    return "knots-text" + ("" if config == "text" else f"-{config}") + ("" if r == 16 else f"-r{r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=["text"],
                   help="Task set(s): 'text' (six sentence tasks) and/or 'mixed' (five kinds of task).")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="Training seeds, run in this order.")
    p.add_argument("--r", type=int, default=16, help="LoRA rank (alpha = r); the paper's ablation uses 4.")
    p.add_argument("--jobs", type=int, default=2, help="Worker processes (1 thread each); 1 runs in-process.")
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="Folder holding text/<task>/ (see shared/data/README.md).")
    p.add_argument("--cache", type=Path, default=None, help="Adapters and evaluation caches "
                   "(default .knotwork-cache/knots-text).")
    p.add_argument("--records", type=Path, default=None,
                   help="Folder of the result records (default benchmarks/results); one sub-folder per page.")
    p.add_argument("--out-dir", type=Path, default=None, help="Folder of the pages (default docs/results).")
    p.add_argument("--page-only", action="store_true", help="Compute nothing: render the pages from the records.")
    p.add_argument("--rerun", action="store_true", help="Recompute units whose record exists (the cache is kept).")
    p.add_argument("--verify", nargs="+", metavar="UNIT", default=None,
                   help="Recompute these units of the (first) --config page from scratch (no evaluation cache; "
                        "adapters from the cache or retrained) and compare with their records: shows whether "
                        "records made by different code or on another machine agree. Writes nothing.")
    p.add_argument("--smoke", action="store_true", help="Two tasks, two steps, four examples, short grids, into a "
                   "temporary folder (unless --records/--cache/--out-dir are given): a check, not a result.")
    args = p.parse_args(argv)
    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix="knots-text-smoke-"))
        args.records = args.records or tmp / "records"
        args.cache = args.cache or tmp / "cache"
        args.out_dir = args.out_dir or tmp / "pages"
    args.cache = args.cache or Path(".knotwork-cache/knots-text")
    args.out_dir = args.out_dir or Path("docs/results")
    return args


def page_specs(args: argparse.Namespace) -> list[lib.PageSpec]:
    specs = []
    for config in dict.fromkeys(args.config):
        tasks = CONFIGS[config][:SMOKE["tasks"]] if args.smoke else CONFIGS[config]
        extra: dict[str, Any] = ({"val_limit": SMOKE["limit"], "test_limit": SMOKE["limit"], "grids": SMOKE["grids"],
                                  "train_overrides": SMOKE["train"], "cka_texts_per_task": 2} if args.smoke else {})
        specs.append(lib.PageSpec(page_name(config, args.r), tasks, args.r, args.data, args.cache, **extra))
    return specs


# ------------------------------------------------------------------------------------------------ running units

def _init_worker(path: str) -> None:
    import torch

    sys.path.insert(0, path)
    torch.set_num_threads(1)


def _call(name: str, args: tuple) -> dict:
    return getattr(lib, name)(*args)


class Runner:
    """Runs units in worker processes (or in-process with one job) and writes each record as it finishes."""

    def __init__(self, jobs: int, log: Callable[[str], None]):
        self.log = log
        self.pool = (ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                         initargs=(str(Path(__file__).resolve().parent),)) if jobs > 1 else None)

    def run(self, units: Sequence[tuple[str, str, str, tuple]]) -> None:
        """Run ``(page, unit, function name, args)`` units; write ``benchmarks/results/<page>/<unit>.json``."""
        if not units:
            return
        pending: list[tuple[str, str, Future | dict]] = []
        for page, unit, fn, fargs in units:
            self.log(f"start {page}/{unit}")
            pending.append((page, unit, self.pool.submit(_call, fn, fargs) if self.pool else _call(fn, fargs)))
        failed = []
        for page, unit, fut in pending:
            try:
                data = fut.result() if isinstance(fut, Future) else fut
            except Exception as err:  # noqa: BLE001 - one unit's failure must not lose the others' records
                failed.append(f"{page}/{unit}: {type(err).__name__}: {err}")
                continue
            _common.write_record(page, unit, data, script=__file__, code_used=data.get("code_used"))
            self.log(f"done {page}/{unit} ({data.get('cpu_seconds', 0) / 60:.1f} CPU-min)")
        if failed:
            from knotwork._errors import RunError

            raise RunError("units failed: " + "; ".join(failed))

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()


def run_seed(specs: Sequence[lib.PageSpec], seed: int, runner: Runner, *, rerun: bool) -> None:
    """Every unit of one training seed for every page: adapters (and the seed-free probe and zero-shot rows),
    then the fine-tuned rows, then the searches and CKA."""
    def missing(spec: lib.PageSpec, unit: str) -> bool:
        return rerun or not _common.record_path(spec.page, unit).is_file()

    def seed_units(spec: lib.PageSpec) -> list[str]:
        return [*(f"seed{seed}-adapter-{t}" for t in spec.tasks), *(f"seed{seed}-{m}" for m in lib.MERGE_METHODS),
                f"seed{seed}-cka"]

    # Each shared adapter is trained once, and again (deterministically, from the cache when present) whenever a
    # unit of a page that merges it is missing: the caches do not survive a move to another machine.
    adapters = {t: spec for spec in specs for t in spec.tasks}
    first: list[tuple[str, str, str, tuple]] = [
        (spec.page, f"_train-seed{seed}-{t}", "train_unit", (spec, seed, t)) for t, spec in adapters.items()
        if any(missing(s, u) for s in specs if t in s.tasks for u in seed_units(s))]
    probes = {t: spec for spec in specs for t in spec.tasks if missing(spec, f"probe-{t}")}
    first += [(spec.page, f"probe-{t}", "probe_unit", (spec, t)) for t, spec in probes.items()]
    first += [(spec.page, "zero-shot", "zeroshot_unit", (spec,)) for spec in specs if missing(spec, "zero-shot")]
    _run_first(first, specs, runner)
    runner.run([(spec.page, f"seed{seed}-adapter-{t}", "finetuned_unit", (spec, seed, t))
                for spec in specs for t in spec.tasks if missing(spec, f"seed{seed}-adapter-{t}")])
    last = []
    for spec in specs:
        recs = _common.load_records(spec.page)
        ft_val = {t: recs[f"seed{seed}-adapter-{t}"]["data"]["accuracy"]["val"] for t in spec.tasks}
        last += [(spec.page, f"seed{seed}-{m}", "method_unit", (spec, seed, m, ft_val))
                 for m in lib.MERGE_METHODS if missing(spec, f"seed{seed}-{m}")]
        if missing(spec, f"seed{seed}-cka"):
            last.append((spec.page, f"seed{seed}-cka", "cka_unit", (spec, seed)))
    runner.run(last)


def _run_first(units, specs, runner: Runner) -> None:
    """Training units leave adapters in the cache, not records; a probe serves every page that has its task."""
    train = [u for u in units if u[2] == "train_unit"]
    rest = [u for u in units if u[2] != "train_unit"]
    if train:  # run, but record nothing: the fine-tuned unit records the training run with its accuracies
        futs = [(u, runner.pool.submit(_call, u[2], u[3]) if runner.pool else _call(u[2], u[3])) for u in train]
        runner.run(rest)
        for u, f in futs:
            meta = f.result() if isinstance(f, Future) else f
            runner.log(f"adapter {u[1]}: {'cached' if meta['cached'] else 'trained'} "
                       f"({meta['cpu_seconds'] / 60:.1f} CPU-min, {meta['result']['steps']} steps)")
    else:
        runner.run(rest)
    for spec in specs:  # copy each probe record into every page that uses the task
        for t in spec.tasks:
            dst = _common.record_path(spec.page, f"probe-{t}")
            if not dst.is_file():
                src = next((_common.record_path(s.page, f"probe-{t}") for s in specs
                            if _common.record_path(s.page, f"probe-{t}").is_file()), None)
                if src is not None:
                    import json

                    body = json.loads(src.read_text())
                    _common.write_record(spec.page, f"probe-{t}", body["data"], script=__file__,
                                         code_used=body["data"].get("code_used"))


#: Fields of a unit's data that measure the run, not its result (left out of --verify's comparison).
RUN_FIELDS = {"cpu_seconds", "wall_seconds", "threads", "code_used", "cached", "seconds", "resumed_from",
              "evaluations"}


def unit_call(spec: lib.PageSpec, unit: str) -> tuple[str, tuple]:
    """The unit function and arguments that compute the record ``unit`` of `spec`'s page."""
    if unit == "zero-shot":
        return "zeroshot_unit", (spec,)
    if unit.startswith("probe-"):
        return "probe_unit", (spec, unit[len("probe-"):])
    head, _, rest = unit.partition("-")
    if not (head.startswith("seed") and head[4:].isdigit() and rest):
        from knotwork._errors import MergeError

        raise MergeError(f"{unit}: not a unit of this study (zero-shot, probe-<task>, seed<k>-adapter-<task>, "
                         f"seed<k>-<method>, seed<k>-cka)")
    seed = int(head[4:])
    if rest.startswith("adapter-"):
        return "finetuned_unit", (spec, seed, rest[len("adapter-"):])
    if rest == "cka":
        return "cka_unit", (spec, seed)
    recs = _common.load_records(spec.page)
    ft_val = {t: recs[f"seed{seed}-adapter-{t}"]["data"]["accuracy"]["val"] for t in spec.tasks}
    return "method_unit", (spec, seed, rest, ft_val)


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two records' data differ (numbers exactly), ignoring :data:`RUN_FIELDS`."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in RUN_FIELDS:
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'the record' if k in a else 'the recomputation'}")
            else:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)  # NaN equals NaN here
    return [] if same else [f"{path}: {a!r} vs {b!r}"]


def verify(spec: lib.PageSpec, units: Sequence[str], log: Callable[[str], None]) -> int:
    """Recompute `units` without the evaluation cache and compare with their records; exit 1 on a difference."""
    import dataclasses
    import json
    import shutil

    fresh = dataclasses.replace(spec, page=f"{spec.page}-verify")  # evaluation caches are keyed by page
    bad = 0
    try:
        for unit in units:
            path = _common.record_path(spec.page, unit)
            if not path.is_file():
                log(f"{unit}: no record to compare with ({path})")
                bad += 1
                continue
            fn, fargs = unit_call(spec, unit)
            data = json.loads(json.dumps(_call(fn, (fresh, *fargs[1:]))))
            diffs = differences(json.loads(path.read_text())["data"], data)
            bad += bool(diffs)
            log(f"{unit}: " + ("identical to its record" if not diffs else
                               f"{len(diffs)} difference(s): " + "; ".join(diffs[:5])))
    finally:
        shutil.rmtree(Path(spec.cache) / "evals" / fresh.page, ignore_errors=True)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    saved = _common.RESULTS
    try:
        return _main(argv)
    finally:
        _common.RESULTS = saved


def _main(argv: list[str] | None) -> int:
    from knotwork._errors import MergeError, check_positive_int

    args = parse_args(argv)
    for name in ("r", "jobs"):
        check_positive_int(getattr(args, name), "--" + name, error=MergeError)
    if args.records is not None:
        _common.RESULTS = args.records
    specs = page_specs(args)
    for spec in specs:
        lib.load_task_dirs(args.data / "text", spec.tasks)
    log = lambda m: print(time.strftime("%H:%M:%S ") + m, file=sys.stderr, flush=True)  # noqa: E731
    configs = list(dict.fromkeys(args.config))

    def write_pages() -> None:
        for spec, config in zip(specs, configs, strict=True):
            other = None
            if config == "mixed":  # the mixed page compares itself with the text page at the same rank
                tasks = CONFIGS["text"][:SMOKE["tasks"]] if args.smoke else CONFIGS["text"]
                other = lib.PageSpec(page_name("text", spec.r), tasks, spec.r, args.data, args.cache)
            elif spec.r != 16:  # a rank ablation compares itself with the same tasks at the paper's r = 16
                other = lib.PageSpec(page_name(config, 16), spec.tasks, 16, args.data, args.cache)
            if other is not None and not _common.record_path(other.page, "zero-shot").is_file():
                other = None  # that page has not been run here
            cmd = ["--config", config, "--seeds", *map(str, args.seeds)] + (["--r", str(spec.r)] if spec.r != 16
                                                                              else []) + (["--smoke"] if args.smoke else [])
            out = pages.render(spec, kind=KINDS[config], command=shlex.join(["python", "benchmarks/knots_text.py", *cmd]),
                              data=args.data, out_dir=args.out_dir, smoke=args.smoke, other=other,
                               planned=args.seeds)
            log(f"wrote {out}")

    import torch

    # The units' setting, which the page header reports (also when only rendering), and which --verify must share:
    # with more threads the BLAS reductions sum in another order and results differ in the last bits.
    torch.set_num_threads(1)
    if args.verify:
        return verify(specs[0], args.verify, log)
    if not args.page_only:
        runner = Runner(args.jobs, log)
        try:
            for seed in args.seeds:
                run_seed(specs, seed, runner, rerun=args.rerun)
                write_pages()
        finally:
            runner.close()
    else:
        write_pages()
    return 0


if __name__ == "__main__":
    _common.run_main(main)
