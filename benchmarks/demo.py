"""Time `knotwork demo` (the offline pipeline check): `python benchmarks/demo.py [--out DIR]`."""

from __future__ import annotations

import sys
import time

from knotwork.cli import app

if __name__ == "__main__":
    t0 = time.perf_counter()
    try:
        app(["demo", *sys.argv[1:]], prog_name="knotwork", standalone_mode=False)
    finally:
        print(f"demo wall time: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
