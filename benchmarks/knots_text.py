"""Regenerate docs/results/knots-text.md: `python benchmarks/knots_text.py [options]` = `knotwork bench knots-text`.

Adapters are cached under .knotwork-cache/knots-text/r<rank>/<task>/ and every evaluation in evals.json there, so
re-running after a finished run only rewrites the page; an interrupted run resumes. The rank ablation of the
paper (r = 4) is `--r 4 --out docs/results/knots-text-r4.md`.
"""

from __future__ import annotations

import sys

from knotwork.cli import app

if __name__ == "__main__":
    app(["bench", "knots-text", *sys.argv[1:]], prog_name="knotwork")
