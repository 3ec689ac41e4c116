"""Time and memory of one DBA step against a plain optimizer step on the same MLP (pools of 100 and 600).

Usage (from the repository root)::

    python benchmarks/dba_step_cost.py --steps 3 --rounds 20 --force   # writes docs/results/dba_step_cost.md

Time: for each pool setting one process builds every configuration (each with its own copy of the model) and
times their steps round-robin, so that the load of other jobs on this shared machine hits all of them alike;
the ratio to the plain step is the median over rounds of the per-round ratio. The same steps also time DBA's
phases (Gram matrices, subset search, subset gradients; the rest is the forward and backward pass, the
wrapped optimizer and bookkeeping), which the page uses to say where a step's time goes. Memory: each
configuration runs a few steps in a fresh subprocess, whose peak resident memory (``getrusage``) minus the
resident memory just before the first step is the step's transient memory. Jobs run one after another, so
only one CPU-heavy job of this study runs at a time.

One result record per (pool, reused or fresh, configuration) goes to ``benchmarks/results/dba_step_cost/``;
a setting whose records all exist and carry the current code fingerprint is not measured again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

# This checkout's benchmarks and package come first (an installed knotwork may be another checkout); the
# worker subprocesses run this file too.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "src")]
import _common  # noqa: E402
from _common import ROOT, header, write_atomic, write_record  # noqa: E402

STUDY = "dba_step_cost"
SCRIPT = "benchmarks/dba_step_cost.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "vision" / "mnist.npz"

# key -> (name on the page, DBA keyword arguments; None = the plain optimizer)
CONFIGS = {
    "plain": ("plain Adam", None),
    "snr": ("DBA (snr, backward)", {"metric": "snr", "search": "backward"}),
    "snr-min": ("DBA (snr, backward, min 0.5P)", {"metric": "snr", "search": "backward", "min_frac": 0.5}),
    "vom-topk": ("DBA (var_of_mean, topk)", {"metric": "var_of_mean", "search": "topk"}),
    "all": ("DBA (select all)", {"search": "all"}),
}


# (pool, fresh, configuration) -> largest step time allowed, in plain steps (issue 14)
TARGETS = {(600, True, "snr"): 3.0, (100, True, "snr"): 2.0}
PHASE_NAMES = {"gram": "Gram matrices", "search": "subset search", "subset_gradient": "subset gradients",
               "rest": "the rest"}


def _pools(data: Path, pool: int, fresh: bool):
    import numpy as np

    from knotwork.train.io import load_mnist, to_tensors
    from knotwork.train.mlp import balanced_subset

    arrays = load_mnist(data)
    rng = np.random.default_rng(0)
    pools = []
    for _ in range(2 if fresh else 1):
        idx = balanced_subset(arrays["y_train"], pool // 10, rng)
        pools.append(to_tensors(arrays["x_train"][idx], arrays["y_train"][idx]))
    return pools


def _make(key: str, pool: int):
    import torch
    import torch.nn.functional as F

    from knotwork.train import DBA
    from knotwork.train.mlp import make_mlp

    model = make_mlp(256, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    options = CONFIGS[key][1]
    dba = None
    if options is not None:
        options = dict(options)
        frac = options.pop("min_frac", 0.0)
        dba = DBA(model, opt, min_size=max(1, round(frac * pool)), **options)

    def step(x, y) -> None:
        if dba is None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        else:
            dba.step(lambda: F.cross_entropy(model(x), y, reduction="none"))

    return step, dba


def worker_memory(key: str, pool: int, fresh: bool, steps: int, data: Path) -> dict:
    """Extra peak resident memory of ``steps`` steps of one configuration (run in a fresh process)."""
    import torch

    torch.set_num_threads(1)
    pools = _pools(data, pool, fresh)
    step, dba = _make(key, pool)
    step(*pools[0])  # warm-up (allocations, first-call overheads)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(1, steps + 1):
        step(*pools[i % len(pools)])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"extra_peak_mib": max(0, peak - rss_before) / 1024}
    if dba is not None:
        result["mean_sizes"] = {k: float(v.mean()) for k, v in dba.subset_sizes().items()}
    return result


PHASES = ("gram", "search", "subset_gradient")


def _time_phases(dba, current: list) -> None:
    """Make ``dba`` add the seconds it spends in each phase of :data:`PHASES` to the dict ``current[0]``.

    The search and the input Gram matrix are methods of the instance; ``layer_gram`` and ``subset_gradient``
    are looked up in ``knotwork.train.dba`` at each step, so they are wrapped there once per process (this
    worker's own process).
    """
    import knotwork.train.dba as dba_module

    def timed(fn, phase):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if current[0] is not None:
                    current[0][phase] += time.perf_counter() - start

        wrapper.timed = True
        return wrapper

    dba._search = timed(dba._search, "search")
    dba._input_gram = timed(dba._input_gram, "gram")
    for name, phase in (("layer_gram", "gram"), ("subset_gradient", "subset_gradient")):
        if not getattr(getattr(dba_module, name), "timed", False):
            setattr(dba_module, name, timed(getattr(dba_module, name), phase))


def worker_time(keys: list[str], pool: int, fresh: bool, rounds: int, data: Path) -> dict:
    """Median step time of every configuration in ``keys``, timed round-robin in this one process, with the
    median time of each DBA phase."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    pools = _pools(data, pool, fresh)
    current: list = [None]
    steps = {}
    for key in keys:
        steps[key], dba = _make(key, pool)
        if dba is not None:
            _time_phases(dba, current)
    for step in steps.values():
        step(*pools[0])  # warm-up
    times = {key: [] for key in keys}
    phases = {key: {phase: [] for phase in PHASES} for key in keys if CONFIGS[key][1] is not None}
    for r in range(1, rounds + 1):
        x, y = pools[r % len(pools)]
        for key, step in steps.items():
            spent = current[0] = dict.fromkeys(PHASES, 0.0)
            t = time.perf_counter()
            step(x, y)
            times[key].append(time.perf_counter() - t)
            current[0] = None
            for phase, seconds in spent.items():
                if key in phases:
                    phases[key][phase].append(seconds)
    plain = np.array(times["plain"])
    out = {}
    for key, t in times.items():
        out[key] = {"median_s": float(np.median(t)), "ratio": float(np.median(np.array(t) / plain))}
        if key in phases:
            parts = {phase: np.array(v) for phase, v in phases[key].items()}
            parts["rest"] = np.array(t) - sum(parts.values())
            out[key]["phases_s"] = {phase: float(np.median(v)) for phase, v in parts.items()}
            out[key]["phases_ratio"] = {phase: float(np.median(v / plain)) for phase, v in parts.items()}
    return out


def _worker(args, *job: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", *job, "--steps", str(args.steps), "--rounds", str(args.rounds),
           "--data", str(args.data), "--configs", *args.configs]
    # One thread for NumPy's BLAS as for torch (torch.set_num_threads(1) in the workers): its idle threads
    # would otherwise spin beside torch's on a shared machine.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MNIST-format .npz.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "dba_step_cost.md", help="Results page.")
    parser.add_argument("--records", type=Path, default=_common.RESULTS,
                        help="Root of the result records; this study's go to RECORDS/dba_step_cost/.")
    parser.add_argument("--steps", type=int, default=3, help="Steps per memory subprocess.")
    parser.add_argument("--rounds", type=int, default=20, help="Round-robin timing rounds per pool setting.")
    parser.add_argument("--pools", type=int, nargs="+", default=[100, 600], help="Pool sizes (multiples of 10).")
    parser.add_argument("--kinds", nargs="+", choices=["reused", "fresh"], default=["reused", "fresh"],
                        help="Pool settings: one pool reused every step, and/or two pools alternating.")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help="Configurations to measure ('plain' is always measured: it is the reference).")
    parser.add_argument("--force", action="store_true", help="Replace an existing page.")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "POOL", "FRESH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.configs = ["plain", *[k for k in args.configs if k != "plain"]]
    if args.steps < 1 or args.rounds < 1:
        parser.error(f"--steps and --rounds must be >= 1; got {args.steps} and {args.rounds}")
    if any(p < 10 or p % 10 for p in args.pools):
        parser.error(f"--pools must be multiples of 10 (class-balanced pools of digits 0-9); got {args.pools}")
    if not args.data.is_file():
        parser.error(f"MNIST file not found: {args.data}")
    if not args.worker and args.out.exists() and not args.force:
        parser.error(f"{args.out} exists; pass --force to replace it")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        kind, pool, fresh = args.worker
        if kind == "time":
            print(json.dumps(worker_time(args.configs, int(pool), fresh == "1", args.rounds, args.data)))
        else:
            print(json.dumps(worker_memory(kind, int(pool), fresh == "1", args.steps, args.data)))
        return

    import torch

    from knotwork._progress import progress_bar

    torch.set_num_threads(1)  # as in the workers, so the page's machine line names what was measured
    _common.RESULTS = args.records  # record_path() reads it: --records redirects every record of this run
    settings = [(pool, kind == "fresh") for pool in args.pools for kind in ("reused", "fresh") if kind in args.kinds]

    def unit(pool: int, fresh: bool, key: str) -> str:
        return f"pool{pool}-{'fresh' if fresh else 'reused'}-{key}"

    current = _common.fingerprint(__file__)
    used: dict[str, dict] = {}
    loads = []
    with progress_bar(total=len(settings) * (1 + len(args.configs)), desc="step cost", unit="job") as bar:
        for pool, fresh in settings:
            paths = {key: _common.record_path(STUDY, unit(pool, fresh, key)) for key in args.configs}
            fresh_records = all(p.is_file() and json.loads(p.read_text(encoding="utf-8"))["fingerprint"] == current
                                for p in paths.values())
            if not fresh_records:  # missing, or measured with other code: measure the whole setting again
                loads.append(os.getloadavg()[0])
                timing = _worker(args, "time", str(pool), "1" if fresh else "0")
                bar.update(1)
                for key in args.configs:
                    memory = _worker(args, key, str(pool), "1" if fresh else "0")
                    data = {"pool": pool, "fresh": fresh, "config": CONFIGS[key][0], "steps": args.steps,
                            "rounds": args.rounds, "load_1min": loads[-1], **timing[key], **memory}
                    write_record(STUDY, unit(pool, fresh, key), data, script=__file__)
                    bar.update(1)
            else:
                bar.update(1 + len(args.configs))
            for key, path in paths.items():
                used[unit(pool, fresh, key)] = json.loads(path.read_text(encoding="utf-8"))

    load = f"{max(loads):.1f}" if loads else "not measured (every record existed)"
    head = header(
        "DBA step cost: time and memory against a plain optimizer step",
        command="python " + shlex.join([SCRIPT, *argv]),
        script=__file__,
        records=used,
        data=f"class-balanced MNIST training images from `{os.path.relpath(args.data, ROOT)}`; fresh-pool rows alternate between two "
        "different pools so that no input is reused from one step to the next.",
        extra=[
            "- Model: 784 → 256 → 10 MLP (ReLU), Adam lr 1e-3; one thread (torch, and NumPy's BLAS).",
            f"- Load average (1 min) when measuring began: {load}; absolute times are inflated and noisy when it "
            f"exceeds the {os.cpu_count()} cores.",
            f"- Time: every configuration of one pool setting lives in one process and steps round-robin for "
            f"{args.rounds} rounds; '× plain' is the median over rounds of (its step time / the plain step time of "
            "the same round). Memory: peak resident memory of a fresh process during "
            f"{args.steps} steps minus its resident memory before them. The jobs run one after another.",
            "- Targets from the issue: a DBA step (snr metric, backward search, fresh pool) at most "
            + " and ".join(f"{t:g}× a plain step at pool {p}" for (p, _, _), t in TARGETS.items()) + ".",
        ],
    )
    lines = [
        "| pool | pool reused every step | configuration | median step time (ms) | × plain | extra peak memory (MiB) | mean |S| (hidden / output) |",
        "|---|---|---|---|---|---|---|",
    ]
    for pool, fresh in settings:
        for key in args.configs:
            row = used[unit(pool, fresh, key)]["data"]
            sizes = row.get("mean_sizes")
            size = " / ".join(f"{v:.0f}" for v in sizes.values()) if sizes else "all"
            lines.append(
                f"| {pool} | {'no' if fresh else 'yes'} | {row['config']} | {1000 * row['median_s']:.1f} | "
                f"{row['ratio']:.2f} | {row['extra_peak_mib']:.1f} | {size} |"
            )
    lines += ["", "## Targets", ""]
    for (pool, fresh, key), target in TARGETS.items():
        name = unit(pool, fresh, key)
        if name not in used:
            lines.append(f"- Pool {pool}, {'fresh' if fresh else 'reused'}, {CONFIGS[key][0]}: not measured in this run.")
            continue
        row = used[name]["data"]
        parts = ", ".join(f"{PHASE_NAMES[k]} {v:.2f}×" for k, v in row["phases_ratio"].items())
        verdict = ("**met**" if row["ratio"] <= target else
                   f"**missed** by {row['ratio'] - target:.2f}× ({100 * (row['ratio'] / target - 1):.0f}% over)")
        lines.append(f"- Pool {pool}, fresh, {CONFIGS[key][0]}: {row['ratio']:.2f}× a plain step (target ≤ {target:g}×): "
                     f"{verdict}. Where the time goes, in plain steps (medians per phase): {parts}.")
    lines += [
        "",
        "## Where a DBA step's time goes",
        "",
        "| pool | pool reused every step | configuration | Gram matrices | subset search | subset gradients | rest |",
        "|---|---|---|---|---|---|---|",
    ]
    for pool, fresh in settings:
        for key in args.configs:
            row = used[unit(pool, fresh, key)]["data"]
            if "phases_ratio" in row:
                cells = " | ".join(f"{1000 * row['phases_s'][k]:.1f} ms ({row['phases_ratio'][k]:.2f}×)" for k in PHASE_NAMES)
                lines.append(f"| {pool} | {'no' if fresh else 'yes'} | {row['config']} | {cells} |")
    lines += [
        "",
        "Each cell is the median over rounds of that phase's time, and in brackets its ratio to the plain step of "
        "the same round; 'rest' is the step time minus the three phases: the forward pass and the backward pass "
        "to the layer outputs (hooks record each layer's inputs and output gradients), the wrapped Adam step and "
        "bookkeeping. The plain step is the forward pass, the full backward pass and the Adam step.",
        "",
        "Reading the tables: the Gram matrices cost P² (d_in + d_out) multiply-adds per layer, (D Dᵀ) ⊙ (X Xᵀ) + D Dᵀ, "
        "against P · d_in · d_out for a layer's forward product; for the 784 → 256 layer X Xᵀ alone is P/256 "
        "forward products' worth at full size; for pools above 320 the products are computed only on and above "
        "the diagonal (symmetric blocks). With a reused pool (full-batch training on a small data "
        "set, the paper's setting) each layer's X Xᵀ of an unchanged input is computed once and cached; the first "
        "layer's input never changes, so one of the two large products disappears. The greedy backward search "
        "removes one sample per iteration, each iteration a fixed handful of NumPy calls on length-P arrays "
        "(its cost is per-call overhead, not arithmetic), so its cost grows with the number of samples removed. "
        "The subset gradient is one product over the chosen rows only.",
    ]
    write_atomic(args.out, head + "\n" + "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
