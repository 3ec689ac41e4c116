"""ZipIt! on CIFAR-10 (5+5) with ResNet-20: base models trained on all 8,000 images of each task, every merging
method on several class splits, paired tests, the partial-zip curve; one record per unit, the page from records.

Commands (from the repository root, with ../shared/data beside it):

    # 1. first, on a quiet machine: the per-image rates the page's cost table extrapolates from (minutes)
    python benchmarks/zipit_study.py --time-only --widths 1 2 4
    # 2. the study: x1 on 6 class splits, then x2 on 2 (docs/results/zipit.md); resumes where it stopped
    python benchmarks/zipit_study.py --widths 1 2 --pairs 6 2 --jobs 2
    # 3. only where a GPU machine is lent: x4 with the paper's recipe, one pair (docs/results/zipit-paper.md);
    #    see benchmarks/zipit_x4_gpu.sh for the one prepared command
    python benchmarks/zipit_study.py --recipe paper --widths 4 --pairs 1 --device cuda ...

Units: ``base-<pair>-<task>-w<width>`` trains one base model (weights to --cache, never committed) and records its
own-task accuracy, epochs and CPU time; ``merge-<pair>-w<width>`` runs every method on one pair (the two models,
W. Avg, Git Re-Basin, Permute, ZipIt!, partial zips at three stop points, the ensemble) and records joint and
per-task accuracy, MACs, merge time and which test images each method got right. Records go to
benchmarks/results/zipit-cifar/ (``--recipe paper``: zipit-paper/) as each unit finishes; a unit whose record
exists is skipped (``--rerun`` runs it again), and a merge unit whose base models are not in the cache trains them
again from their seeds, so the study resumes across sessions on a new machine. Base records (and cached weights)
name the sha256 of the class vectors they were trained with; one trained with other vectors than this run's is
refused in one line, so a new machine never mixes in other heads silently: take the vectors file along
(``--vectors``; by default the MiniLM vectors are made once into the records folder,
benchmarks/results/zipit-cifar/cifar10_class_vectors.npy, and committed with the records, because MiniLM may embed
a little differently on another machine). The page is
rendered from the records after every merge unit and at the end, unfinished units listed; a failure to render is
logged and the study goes on (the run then exits 1 naming it; ``--page-only`` renders again). ``--jobs N`` runs units in N single-threaded worker
processes (``--threads`` each); ``--jobs 1`` runs them in this process. ``--page-only`` only renders.
``--smoke`` runs the whole pipeline at a tiny budget into a temporary folder: a check, not a result.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shlex
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import zipit_study_lib as lib  # noqa: E402
import zipit_study_page as page  # noqa: E402

STUDIES = {"cpu": ("zipit-cifar", "zipit.md"), "paper": ("zipit-paper", "zipit-paper.md")}
TITLES = {"cpu": "ZipIt! on CIFAR-10 (5+5): merging ResNet-20s trained on disjoint tasks",
          "paper": "ZipIt! on CIFAR-10 (5+5) at the paper's training recipe (GPU)"}
SMOKE = {"epochs": 1, "train_per_task": 48, "test_images": 120, "merge_images": 32, "random_vectors": True}
DEFAULT_MERGE_IMAGES = lib.Spec(1).merge_images
PACKED = "cifar10-webp.npz"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[1], help="ResNet-20 width multipliers, run in order.")
    p.add_argument("--pairs", type=int, nargs="+", default=[6],
                   help="Class splits per width (one number for all widths, or one per width); pairs 0..n-1.")
    p.add_argument("--recipe", choices=sorted(lib.RECIPES), default="cpu",
                   help="Base-model training: 'cpu' (20 epochs, batch 128, lr 0.1) or 'paper' (100 epochs, "
                        "batch 500, lr 0.4, 5 warm-up epochs).")
    p.add_argument("--epochs", type=int, default=None, help="Override the recipe's epochs.")
    p.add_argument("--jobs", type=int, default=1, help="Worker processes; 1 runs units in this process.")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (or this process).")
    p.add_argument("--device", default="cpu", help="Where training, data passes and evaluation run (cpu, cuda).")
    p.add_argument("--data", type=Path, default=lib.DATA, help="cifar10.npz, or a --pack-carry file.")
    p.add_argument("--vectors", type=Path, default=None,
                   help="Class vectors .npy (default <records>/<study>/cifar10_class_vectors.npy, made with MiniLM if "
                        "absent; commit it with the records).")
    p.add_argument("--cache", type=Path, default=None,
                   help="Base-model weights (default .knotwork-cache/zipit-study; never committed).")
    p.add_argument("--records", type=Path, default=None, help="Folder of the records (default benchmarks/results).")
    p.add_argument("--out", type=Path, default=None, help="The page (default docs/results/zipit.md, or "
                   "zipit-paper.md with --recipe paper); its curve PNG is written beside it.")
    p.add_argument("--test-images", type=int, default=None, help="First N test images (default all 10,000).")
    p.add_argument("--merge-images", type=int, default=DEFAULT_MERGE_IMAGES,
                   help=f"Augmented training images for statistics and BN resets (default {DEFAULT_MERGE_IMAGES}).")
    p.add_argument("--train-per-task", type=int, default=None,
                   help="Cap on training images per task (default: all 8,000).")
    p.add_argument("--rerun", action="store_true", help="Run units whose record exists again.")
    p.add_argument("--page-only", action="store_true", help="Compute nothing; render the page from the records.")
    p.add_argument("--time-only", action="store_true",
                   help="Measure seconds per image of training and of a forward pass at each width (records "
                        "timing-w<width>, shown in the page's cost section at its next render), and stop.")
    p.add_argument("--time-images", type=int, default=512, help="Images for --time-only (default 512).")
    p.add_argument("--pack-carry", type=Path, default=None, metavar="DIR",
                   help="Write DIR/cifar10-webp.npz (the data, lossless WebP, small enough for the device "
                        "machine's 64 MiB) and DIR/cifar10_class_vectors.npy, then stop.")
    p.add_argument("--smoke", action="store_true",
                   help="1 epoch on 48 images per task, 120 test images, random class vectors, into a temporary "
                        "folder unless --records/--cache/--out are given: a check, not a result.")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from knotwork._errors import InputError, check_positive_int

    args = parser().parse_args(argv)
    for name in ("jobs", "threads", "merge_images", "time_images", *(("epochs",) if args.epochs else ()),
                 *(("test_images",) if args.test_images else ()), *(("train_per_task",) if args.train_per_task else ())):
        check_positive_int(getattr(args, name), "--" + name.replace("_", "-"), error=InputError)
    for n in [*args.widths, *args.pairs]:
        check_positive_int(n, "--widths/--pairs", error=InputError)
    if len(args.pairs) not in (1, len(args.widths)):
        raise InputError(f"--pairs needs one number or one per width ({len(args.widths)}); got {len(args.pairs)}")
    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix="zipit-study-smoke-"))
        args.records, args.cache = args.records or tmp / "records", args.cache or tmp / "cache"
        args.out = args.out or tmp / "zipit.md"
    args.cache = args.cache or _common.ROOT / ".knotwork-cache" / "zipit-study"
    args.out = args.out or _common.ROOT / "docs" / "results" / STUDIES[args.recipe][1]
    return args


def default_vectors(args: argparse.Namespace) -> Path:
    """The class vectors beside the study's records: committed with them, so every machine trains the same heads."""
    return _common.record_path(STUDIES[args.recipe][0], "_", root=args.records).parent / "cifar10_class_vectors.npy"


def make_spec(args: argparse.Namespace, width: int) -> lib.Spec:
    spec = lib.Spec(width, recipe=args.recipe, epochs=args.epochs, data=str(args.data), cache=str(args.cache),
                    vectors=str(args.vectors or default_vectors(args)), train_per_task=args.train_per_task,
                    test_images=args.test_images, merge_images=args.merge_images, device=args.device)
    if args.smoke:  # the smoke budget, except where an option was given
        given = {"epochs": args.epochs, "train_per_task": args.train_per_task, "test_images": args.test_images,
                 "merge_images": None if args.merge_images == DEFAULT_MERGE_IMAGES else args.merge_images}
        spec = replace(spec, **{k: given.get(k) or v for k, v in SMOKE.items()})
    return spec


def plan(args: argparse.Namespace) -> list[tuple[int, list[int]]]:
    counts = args.pairs * len(args.widths) if len(args.pairs) == 1 else args.pairs
    return [(w, list(range(n))) for w, n in zip(args.widths, counts, strict=True)]


def page_command(args: argparse.Namespace) -> str:
    """The page's one command: what decides the numbers (not --jobs, --threads or where outputs go)."""
    cmd = ["python", "benchmarks/zipit_study.py", "--widths", *map(str, args.widths), "--pairs", *map(str, args.pairs)]
    if args.recipe != "cpu":
        cmd += ["--recipe", args.recipe]
    for name, default in (("epochs", None), ("device", "cpu"), ("data", lib.DATA), ("vectors", None),
                          ("test_images", None), ("merge_images", DEFAULT_MERGE_IMAGES), ("train_per_task", None)):
        value = getattr(args, name)
        if value != default:
            cmd += ["--" + name.replace("_", "-"), str(value)]
    return shlex.join(cmd + (["--smoke"] if args.smoke else []))


# ------------------------------------------------------------------------------------------------ running units

def _init_worker(path: str, threads: int) -> None:
    import torch

    sys.path.insert(0, path)
    torch.set_num_threads(threads)


def _call(name: str, args: tuple) -> dict:
    return getattr(lib, name)(*args)


@dataclass
class Job:
    unit: str
    fn: str
    args: tuple
    deps: list[str] = field(default_factory=list)


def _other_vectors(what: str, trained: dict, spec: lib.Spec, fix: str) -> None:
    """Refuse, in one line, a base model trained with other class vectors than ``spec``'s."""
    from knotwork._errors import InputError

    have, want = trained.get("vectors_sha256"), lib.spec_vectors_sha256(spec)
    if have is not None and have != want:
        raise InputError(f"{what} was trained with other class vectors (sha256 {have[:12]}…) than {spec.vectors_source()} "
                         f"(sha256 {want[:12]}…); pass the vectors it was trained with (--vectors), or {fix}")


def _check_record(path: Path, spec: lib.Spec) -> None:
    """A record made with other training settings (other class vectors included) must not be mixed in silently."""
    from knotwork._errors import InputError

    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    fix = "--rerun to replace it, or --records for another folder"
    _other_vectors(str(path), data.get("training") or {}, spec, fix)
    for key, want in (("training", spec.training_record(lib.spec_vectors_sha256(spec))),
                      ("settings", spec.merge_settings())):
        if (key == "training" or data.get("unit") == "merge") and data.get(key) != want:
            raise InputError(f"{path} was made with other {key} ({data.get(key)}); pass {fix}")


def jobs_for(spec: lib.Spec, pairs: list[int], study: str, root: Path | None, rerun: bool) -> list[Job]:
    """The units of one width that have no record yet; a merge waits for the base units of its pair. Records, and
    cached base models, made with other class vectors are refused (unless ``rerun``)."""
    def missing(unit: str) -> bool:
        path = _common.record_path(study, unit, root=root)
        if path.is_file() and not rerun:
            _check_record(path, spec)
            return False
        return True

    jobs = []
    for p in pairs:
        if not rerun:
            for t in "AB":
                meta = lib.cached_meta(spec, p, t)
                if meta is not None:
                    _other_vectors(f"the cached base model {spec.ckpt(p, t)}", meta.get("training") or {}, spec,
                                   "--rerun to train it again")
        bases = [Job(lib.base_unit_name(p, t, spec.width), "base_unit", (spec, p, t)) for t in "AB"]
        bases = [j for j in bases if missing(j.unit)]
        jobs += bases
        merge = lib.merge_unit_name(p, spec.width)
        if missing(merge):
            jobs.append(Job(merge, "merge_unit", (spec, p), [j.unit for j in bases]))
    return jobs


def render_logged(render, log) -> str | None:
    """Run ``render`` (the page); a failure is logged as one line and returned, never raised: the records written so
    far stay and the study goes on (``--page-only`` renders the page again from them)."""
    try:
        render()
    except Exception as err:  # noqa: BLE001 - the page is made from the records; losing it must not lose them
        log(f"page not rendered: {type(err).__name__}: {err}")
        return f"{type(err).__name__}: {err}"
    return None


class Runner:
    """Runs jobs in worker processes (or in-process with one job), merges first once their bases are done, and
    writes each record as its unit finishes; ``on_record`` (the page) runs after each merge unit, and a failure of
    it is logged, not raised."""

    def __init__(self, jobs: int, threads: int, log, study: str, root: Path | None, on_record):
        import torch

        torch.set_num_threads(threads)
        self.slots, self.log, self.study, self.root, self.on_record = jobs, log, study, root, on_record
        self.pool = (ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                         initargs=(str(Path(__file__).resolve().parent), threads))
                     if jobs > 1 else None)

    def _submit(self, job: Job) -> Future:
        self.log(f"start {job.unit}")
        if self.pool is not None:
            return self.pool.submit(_call, job.fn, job.args)
        fut: Future = Future()
        try:
            fut.set_result(_call(job.fn, job.args))
        except Exception as err:  # noqa: BLE001 - reported with the unit's name below
            fut.set_exception(err)
        return fut

    def run(self, jobs: list[Job]) -> list[str]:
        """Run ``jobs``; returns the failures ("unit: error"), after running every job that could run."""
        pending, inflight, done, failed = list(jobs), {}, set(), []
        while pending or inflight:
            ready = sorted((j for j in pending if all(d in done for d in j.deps)), key=lambda j: j.fn != "merge_unit")
            while ready and len(inflight) < self.slots:
                job = ready.pop(0)
                pending.remove(job)
                inflight[self._submit(job)] = job
            if not inflight:
                failed += [f"{j.unit}: not run (a base unit of its pair failed)" for j in pending]
                break
            finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in finished:
                job = inflight.pop(fut)
                try:
                    data = fut.result()
                except Exception as err:  # noqa: BLE001 - one unit's failure must not lose the others' records
                    failed.append(f"{job.unit}: {type(err).__name__}: {err}")
                    self.log(f"FAILED {failed[-1]}")
                    continue
                _common.write_record(self.study, job.unit, data, script=__file__, root=self.root,
                                     code_used=data["code_used"])
                done.add(job.unit)
                self.log(f"done {job.unit} ({data['cpu_seconds'] / 60:.1f} CPU-min, {data['wall_seconds'] / 60:.1f} "
                         "wall-min)")
                if job.fn == "merge_unit":  # a finished pair changes the page; a base model alone barely
                    render_logged(self.on_record, self.log)
        return failed

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def main(argv: list[str] | None = None) -> int:
    from knotwork._errors import RunError

    args = parse_args(argv)
    study, _ = STUDIES[args.recipe]
    log = lambda m: print(time.strftime("%H:%M:%S ") + m, file=sys.stderr, flush=True)  # noqa: E731
    specs = {w: make_spec(args, w) for w, _ in plan(args)}
    first = next(iter(specs.values()))

    def render() -> None:
        recipe = first.train
        recipe_text = (f"{recipe.source}: SGD (momentum 0.9{', Nesterov' if recipe.nesterov else ''}), lr "
                       f"{recipe.lr}, weight decay {recipe.weight_decay}, batch {recipe.batch_size}, "
                       f"{recipe.warmup_epochs} warm-up epoch(s) then linear decay to 0, {recipe.epochs} epochs")
        data = f"`{args.data}`" + (
            " (JPEG re-encodings of CIFAR-10; the shared subset holds 1,600 training images per class, so 8,000 "
            "per 5-class task where the paper trains on 25,000; the full 10,000-image test set)"
            if args.data == lib.DATA or args.data.name == PACKED else " (not the shared CIFAR-10 file)")
        out = page.render(_common.load_records(study, root=args.records), plan(args), command=page_command(args),
                          script=__file__, out=args.out, title=TITLES[args.recipe] + (" [smoke]" if args.smoke else ""),
                          data=data, recipe_text=recipe_text, epochs=recipe.epochs)
        log(f"wrote {out}")

    if args.pack_carry is not None:
        import numpy as np

        info = lib.pack(args.data, args.pack_carry / PACKED)
        names = [str(n) for n in lib.read_arrays(args.data)["class_names"]]
        np.save(args.pack_carry / "cifar10_class_vectors.npy", lib.class_vectors(first, names).numpy())
        log(f"packed {info['images']} images into {info['bytes'] / 2**20:.1f} MiB under {args.pack_carry}")
        return 0
    if args.device.startswith("cuda"):
        import torch

        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    if args.time_only:
        import torch

        torch.set_num_threads(args.threads)
        for width, spec in specs.items():
            data = lib.timing_unit(spec, args.time_images)
            _common.write_record(study, f"timing-w{width}", data, script=__file__, root=args.records,
                                 code_used=data["code_used"])
            base, merge = page.estimate_minutes(data["train_seconds_per_image"], data["forward_seconds_per_image"],
                                                spec.train.epochs)
            log(f"x{width}: train {data['train_seconds_per_image'] * 1e3:.1f} ms/image, forward "
                f"{data['forward_seconds_per_image'] * 1e3:.1f} ms/image ({data['threads']} thread(s)); estimate: "
                f"a base model {base:.0f} min ({spec.train.epochs} epochs), a merge unit {merge:.0f} min")
        return 0  # the study's page shows the timing records at its next render
    failed = []
    if not args.page_only:
        runner = Runner(args.jobs, args.threads, log, study, args.records, render)
        try:
            for width, pairs in plan(args):
                failed += runner.run(jobs_for(specs[width], pairs, study, args.records, args.rerun))
        finally:
            runner.close()
    page_error = render_logged(render, log)
    problems = (["units failed: " + "; ".join(failed)] if failed else []) + (
        [f"the page was not rendered ({page_error}); the records are kept: render it with --page-only"]
        if page_error else [])
    if problems:
        raise RunError("; ".join(problems))
    return 0


if __name__ == "__main__":
    _common.run_main(main)
