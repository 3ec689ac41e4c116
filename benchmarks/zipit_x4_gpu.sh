#!/usr/bin/env bash
# ZipIt! at the paper's training recipe on a lent GPU machine: docs/results/zipit-paper.md.
#
# ResNet-20x4, one pair (class split 0), base models trained as the paper's train_cliphead does (100 epochs,
# SGD lr 0.4, momentum 0.9, weight decay 5e-4, 5 warm-up epochs then linear decay, batch 500, crop + flip), but on
# the shared CIFAR-10 subset: 8,000 training images per task, not the paper's 25,000. Every merging method, the
# full 10,000-image test set. Prepared as ONE command; run it only where a device machine is lent (its time is
# not measured yet: the x4 training is about 2 x 100 epochs x 16 steps of batch 500, then one merge unit).
#
# Time budget. A task is lent 15 minutes (900 s) of device time in all, machine start (a minute or two), idle and
# transfers included. The study command is stopped after STUDY_TIMEOUT_S (default 420 s), so one call takes at most
# about 450 s (the preflight's imports, then at most 420 s of study), and after a start of 60-120 s some 330-390 s
# are left for a rerun: rerun with STUDY_TIMEOUT_S=300 (or what status's budget_left_s allows, less 30 s). A
# stopped study loses only the unit it was running: records are written as units finish, and they and the base
# models' weights are kept in .knotwork-cache/zipit-x4 (ignored by git, so kept between calls while the machine
# stays warm); a rerun on the warm machine resumes there. Every exit copies the records to $OUT (the page and the
# log are written there).
#
# 1. Here, once (CPU, a few minutes): the data re-encoded as lossless WebP (about 42 MB, under the device's
#    64 MiB working-tree limit; the shared npz is 71 MB) and the MiniLM class vectors (no MiniLM there):
#        python benchmarks/zipit_study.py --pack-carry .knotwork-cache/zipit-carry
# 2. On the device, one call (records come back under files_at/records/zipit-paper/, with the page and a log):
#        run(command="bash benchmarks/zipit_x4_gpu.sh", carry=[".knotwork-cache/zipit-carry"], timeout_s=460)
#    If it stopped with units missing (exit 124), call it again at once while the machine is warm, with
#        run(command="STUDY_TIMEOUT_S=300 bash benchmarks/zipit_x4_gpu.sh", carry=[...], timeout_s=340)
#    else give_back.
# 3. Back here: commit the records, and render the page from them with the command the page names:
#        mkdir -p benchmarks/results/zipit-paper
#        cp <files_at>/records/zipit-paper/*.json benchmarks/results/zipit-paper/
#        python benchmarks/zipit_study.py --recipe paper --widths 4 --pairs 1 --device cuda \
#            --data .knotwork-cache/zipit-carry/cifar10-webp.npz \
#            --vectors .knotwork-cache/zipit-carry/cifar10_class_vectors.npy --page-only
set -euo pipefail
CARRY=.knotwork-cache/zipit-carry
STATE=.knotwork-cache/zipit-x4
STUDY_TIMEOUT_S=${STUDY_TIMEOUT_S:-420}
OUT=${OUT:-/tmp/zipit-x4}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$STATE/records"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
trap 'mkdir -p "$OUT/records" && cp -r "$STATE/records/." "$OUT/records/" || true' EXIT
for f in "$CARRY/cifar10-webp.npz" "$CARRY/cifar10_class_vectors.npy"; do
    [[ -f $f ]] || { echo "error: $f is missing: run step 1 here and carry $CARRY" >&2; exit 2; }
done
nvidia-smi -L || true
# Preflight, before any training: every package the run imports (the study's modules and the ones they import
# only when needed: safetensors to save and load weights, scipy for the matching, matplotlib for the curve).
$PY - <<'EOF'
import importlib
import sys

sys.path.insert(0, "benchmarks")
for name in ("numpy", "torch", "PIL.Image", "PIL.features", "safetensors", "safetensors.torch", "scipy.optimize",
             "scipy.stats", "matplotlib", "matplotlib.pyplot", "tqdm.auto", "knotwork.zipit", "knotwork.zipit.io",
             "knotwork.zipit.training", "knotwork._io", "knotwork._provenance", "_common", "zipit_data",
             "zipit_study_lib", "zipit_study_page", "zipit_study"):
    importlib.import_module(name)
import PIL.features
import torch

assert torch.cuda.is_available(), "no CUDA device"
assert PIL.features.check("webp"), "this Pillow cannot decode WebP"
print("preflight: imports fine; torch", torch.__version__, "on", torch.cuda.get_device_name(0))
EOF
set +e
timeout --signal=INT --kill-after=20 "$STUDY_TIMEOUT_S" \
    $PY benchmarks/zipit_study.py --recipe paper --widths 4 --pairs 1 --device cuda --threads 8 \
    --data "$CARRY/cifar10-webp.npz" --vectors "$CARRY/cifar10_class_vectors.npy" \
    --cache "$STATE/cache" --records "$STATE/records" --out "$OUT/zipit-paper.md" 2>&1 | tee "$OUT/log.txt"
status=${PIPESTATUS[0]}
set -e
if [[ $status == 124 ]]; then
    echo "stopped after ${STUDY_TIMEOUT_S}s; finished units are kept: call the script again to resume" | tee -a "$OUT/log.txt"
fi
exit "$status"
