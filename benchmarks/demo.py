"""Time `knotwork demo` and check its promise: `python benchmarks/demo.py [--out DIR] [--force] [--steps N]`.

Runs the command in this process and prints its CPU time (user + sys of this process and any children, the
measure the demo's budget of two CPU-minutes is stated in; robust to other load on the machine, unlike wall time)
and how far zero-shot is below the fine-tuned adapters on average (the demo promises at least 5 points).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from knotwork.cli import app

BUDGET_CPU_S = 120.0
MIN_GAP = 5.0


def cpu_seconds() -> float:
    """User + sys CPU seconds of this process and its waited-for children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def zero_shot_gap(results: dict) -> float:
    """Mean fine-tuned minus mean zero-shot test accuracy, in points."""
    tasks = results["tasks"]
    return 100 * sum(results["finetuned"][t] - results["zeroshot"][t] for t in tasks) / len(tasks)


if __name__ == "__main__":
    out_parser = argparse.ArgumentParser(add_help=False)
    out_parser.add_argument("--out", "-o", type=Path, default=Path("knotwork-demo"))
    out = out_parser.parse_known_args(sys.argv[1:])[0].out
    t0 = time.perf_counter()
    app(["demo", *sys.argv[1:]], prog_name="knotwork", standalone_mode=False)
    cpu, wall = cpu_seconds(), time.perf_counter() - t0
    gap = zero_shot_gap(json.loads((out / "results.json").read_text(encoding="utf-8")))
    print(f"demo CPU time (user + sys, whole process): {cpu:.1f} s (budget {BUDGET_CPU_S:.0f} s: "
          f"{'ok' if cpu < BUDGET_CPU_S else 'OVER'}); wall time {wall:.0f} s", file=sys.stderr)
    print(f"fine-tuned minus zero-shot, average test accuracy: {gap:.1f} points (needs >= {MIN_GAP:.0f}: "
          f"{'ok' if gap >= MIN_GAP else 'NOT MET'})", file=sys.stderr)
