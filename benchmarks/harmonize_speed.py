"""Speed and memory of exact histogram matching: knotwork vs scikit-image vs SimpleITK, side by side.

    python benchmarks/harmonize_speed.py            # writes docs/results/harmonize_speed.md

Case 1: a synthetic CT-like int16 volume of 512 x 512 x 200 voxels (52 M) matched to another.
Case 2: the 260 real MSD hippocampus MR volumes, each matched to the first one.
Each method runs in its own child process, so its peak memory (VmHWM, reset before the call) is
its own; wall time and CPU time are both reported because the machine is shared.
SimpleITK's HistogramMatchingImageFilter is a different, approximate algorithm (histogram bins and
match points); it is timed with 1024 levels and 15 match points, and its deviation is reported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
HIPPO = ROOT.parent / "shared" / "data" / "med" / "hippocampus" / "imagesTr"
if not HIPPO.is_dir():
    HIPPO = Path("/work/shared/data/med/hippocampus/imagesTr")
LOAD = [0.0]
SHAPE = (200, 512, 512)  # (z, y, x): 512 x 512 in-plane, 200 slices


def ct_like(seed: int, shape=SHAPE) -> np.ndarray:
    """Air, a body ellipse of soft tissue with fat and lungs, and bone, in HU with noise (int16)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    yy, xx = (y - shape[1] / 2) / (shape[1] * 0.42), (x - shape[2] / 2) / (shape[2] * 0.36)
    body = (yy**2 + xx**2) < 1
    vol = np.full(shape, -1000, dtype=np.int16)
    vol[np.broadcast_to(body, shape)] = 40
    lungs = (((yy + 0.1) ** 2 / 0.25 + (np.abs(xx) - 0.45) ** 2 / 0.08) < 1) & body
    vol[np.broadcast_to(lungs, shape)] = -820
    spine = ((yy - 0.6) ** 2 + xx**2) < 0.02
    vol[np.broadcast_to(spine, shape)] = 700
    vol += (rng.normal(0, 25 + 5 * seed, shape) + 10 * seed).astype(np.int16)
    vol += (20 * np.sin(z / 15.0 + seed)).astype(np.int16)
    return vol


def _peak_reset():
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def _methods():
    from skimage.exposure import match_histograms as sk

    from knotwork.harmonize import match_histograms as kw

    def sitk_match(src, ref):
        import SimpleITK as sitk

        s = sitk.GetImageFromArray(src.astype(np.float32))
        r = sitk.GetImageFromArray(ref.astype(np.float32))
        out = sitk.HistogramMatching(s, r, numberOfHistogramLevels=1024, numberOfMatchPoints=15,
                                     thresholdAtMeanIntensity=True)
        return sitk.GetArrayFromImage(out)

    return {"knotwork": kw, "scikit-image": sk, "SimpleITK": sitk_match}


def _child(case, method, conn):
    try:
        conn.send(_run_child(case, method))
    except BaseException as exc:  # the parent must never wait forever on a crashed child
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _run_child(case, method):
    if case == "ct":
        pairs = [(ct_like(1), ct_like(2))]
    else:
        import nibabel as nib

        files = sorted(HIPPO.glob("*.nii.gz"))
        vols = [np.asanyarray(nib.load(str(f)).dataobj) for f in files]
        pairs = [(v, vols[0]) for v in vols]
    fn = _methods()[method]
    rss0 = _rss("VmRSS")
    _peak_reset()
    t0, c0 = time.perf_counter(), time.process_time()
    outs = [fn(s, r) for s, r in pairs]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _rss("VmHWM") - rss0
    res = {"wall_s": wall, "cpu_s": cpu, "peak_extra_bytes": peak, "input_bytes": sum(s.nbytes for s, _ in pairs)}
    if case == "ct":
        np.save(ROOT / ".knotwork-cache" / f"speed_{method}.npy", outs[0])
    else:
        np.save(ROOT / ".knotwork-cache" / f"speed_hippo_{method}.npy", np.concatenate([o.ravel() for o in outs]))
    return res


def measure(case, method, repeats):
    runs = []
    for _ in range(repeats):
        parent, child = mp.Pipe()
        p = mp.get_context("fork").Process(target=_child, args=(case, method, child))
        p.start()
        res = parent.recv()
        p.join()
        if "error" in res:
            raise RuntimeError(f"{method} on {case} failed: {res['error']}")
        runs.append(res)
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "harmonize_speed.md")
    args = ap.parse_args(argv)
    (ROOT / ".knotwork-cache").mkdir(exist_ok=True)
    try:
        import SimpleITK  # noqa: F401

        methods = ["knotwork", "scikit-image", "SimpleITK"]
    except ImportError:
        methods = ["knotwork", "scikit-image"]
    LOAD[0] = __import__("os").getloadavg()[0]
    results = {}
    for case in ("ct", "hippocampus"):
        for m in methods:
            results[(case, m)] = measure(case, m, args.repeats)
            print(case, m, json.dumps(results[(case, m)]), flush=True)
    checks = {}
    for case, prefix in (("ct", "speed_"), ("hippocampus", "speed_hippo_")):
        ours = np.load(ROOT / ".knotwork-cache" / f"{prefix}knotwork.npy")
        for m in methods[1:]:
            other = np.load(ROOT / ".knotwork-cache" / f"{prefix}{m}.npy")
            checks[(case, m)] = (bool(np.array_equal(ours, other)), float(np.abs(ours - other.astype(np.float64)).max()))
    write_report(args.out, results, checks, methods, args.repeats)


def _git_commit():
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def write_report(path, results, checks, methods, repeats):
    import os

    import numpy
    import skimage

    import knotwork

    lines = [
        "# Exact histogram matching: speed and memory",
        "",
        f"Command: `python benchmarks/harmonize_speed.py --repeats {repeats}`",
        "",
        f"- knotwork {knotwork.__version__}, commit {_git_commit()}",
        f"- numpy {numpy.__version__}, scikit-image {skimage.__version__}"
        + (f", SimpleITK {__import__('SimpleITK').Version.VersionString()}" if "SimpleITK" in methods else
           ", SimpleITK not installed (skipped)"),
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores **shared with about seven other jobs** "
        f"(1-minute load average {LOAD[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end), "
        f"Python {platform.python_version()}; run under `nice -n 10`",
        "- data: (1) synthetic CT-like int16 volume 512 x 512 x 200 (52.4 M voxels, `ct_like(1)` matched to "
        "`ct_like(2)`, seeded); (2) the 260 MSD hippocampus MR volumes (`../shared/data/med/hippocampus/imagesTr`, "
        "uint8 or float32, 31x40x24 to 43x59x47), each matched to hippocampus_001.",
        "- each method runs in a fresh child process; times are the median (min-max) over the repeats; "
        "'extra memory' is the peak resident memory during the call above what the inputs already used.",
        "",
        "| case | method | wall time (s) | CPU time (s) | speed-up vs scikit-image (CPU) | extra memory (MB) "
        "| same result as scikit-image |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in ("ct", "hippocampus"):
        sk_cpu = np.median([r["cpu_s"] for r in results[(case, "scikit-image")]])
        for m in methods:
            rs = results[(case, m)]
            w = [r["wall_s"] for r in rs]
            c = [r["cpu_s"] for r in rs]
            mem = np.median([r["peak_extra_bytes"] for r in rs]) / 2**20
            if m == "knotwork":
                same = "yes (bit-identical)" if checks[(case, "scikit-image")][0] else (
                    f"no, max diff {checks[(case, 'scikit-image')][1]:.3g}")
            elif m == "scikit-image":
                same = "(reference)"
            else:
                same = f"no (approximate algorithm), max abs diff {checks[(case, m)][1]:.3g}"
            lines.append(
                f"| {'CT 512x512x200 int16' if case == 'ct' else 'hippocampus, 260 volumes'} | {m} "
                f"| {np.median(w):.2f} ({min(w):.2f}-{max(w):.2f}) | {np.median(c):.2f} ({min(c):.2f}-{max(c):.2f}) "
                f"| {sk_cpu / np.median(c):.1f}x | {mem:.0f} | {same} |"
            )
    lines += [
        "",
        "Why it is faster: integer volumes are counted with `np.bincount` after shifting to start at zero (linear "
        "time), where scikit-image sorts signed integers with `np.unique(..., return_inverse=True)`; the per-voxel "
        "lookup runs in 4 M-voxel chunks so the int64 index temporaries stay at 32 MB. Float volumes take the same "
        "sorting path as scikit-image, so the hippocampus float32 volumes gain little; the uint8 ones gain from counting.",
        "",
        "Output dtype follows scikit-image (float64 for integer input) so the results can be compared bit for bit; "
        "`match_histograms(..., dtype=np.float32)` halves the output memory.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
