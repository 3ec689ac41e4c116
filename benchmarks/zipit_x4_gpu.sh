#!/usr/bin/env bash
# ZipIt! at the paper's training recipe on a lent GPU machine: docs/results/zipit-paper.md.
#
# ResNet-20x4, one pair (class split 0), base models trained as the paper's train_cliphead does (100 epochs,
# SGD lr 0.4, momentum 0.9, weight decay 5e-4, 5 warm-up epochs then linear decay, batch 500, crop + flip), but on
# the shared CIFAR-10 subset: 8,000 training images per task, not the paper's 25,000. Every merging method, the
# full 10,000-image test set. Prepared as ONE command; run it only where a device machine is lent (its time is
# not measured yet: expected a few minutes, the x4 training being about 2 x 100 epochs x 16 steps of batch 500).
#
# 1. Here, once (CPU, a few minutes): the data re-encoded as lossless WebP (about 42 MB, under the device's
#    64 MiB working-tree limit; the shared npz is 71 MB) and the MiniLM class vectors (no MiniLM there):
#        python benchmarks/zipit_study.py --pack-carry .knotwork-cache/zipit-carry
# 2. On the device, one call (records come back under files_at/records/zipit-paper/, with the page and a log):
#        run(command="bash benchmarks/zipit_x4_gpu.sh", carry=[".knotwork-cache/zipit-carry"], timeout_s=570)
#    A unit that finished before a timeout still comes back (records are written as units finish).
# 3. Back here: commit the records, and render the page from them with the command the page names:
#        mkdir -p benchmarks/results/zipit-paper
#        cp <files_at>/records/zipit-paper/*.json benchmarks/results/zipit-paper/
#        python benchmarks/zipit_study.py --recipe paper --widths 4 --pairs 1 --device cuda \
#            --data .knotwork-cache/zipit-carry/cifar10-webp.npz \
#            --vectors .knotwork-cache/zipit-carry/cifar10_class_vectors.npy --page-only
set -euo pipefail
CARRY=.knotwork-cache/zipit-carry
OUT=${OUT:-/tmp/zipit-x4}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
for f in "$CARRY/cifar10-webp.npz" "$CARRY/cifar10_class_vectors.npy"; do
    [[ -f $f ]] || { echo "error: $f is missing: run step 1 here and carry $CARRY" >&2; exit 2; }
done
nvidia-smi -L || true
$PY - <<'EOF'
import PIL.features
import torch

assert torch.cuda.is_available(), "no CUDA device"
assert PIL.features.check("webp"), "this Pillow cannot decode WebP"
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
EOF
$PY benchmarks/zipit_study.py --recipe paper --widths 4 --pairs 1 --device cuda --threads 8 \
    --data "$CARRY/cifar10-webp.npz" --vectors "$CARRY/cifar10_class_vectors.npy" \
    --cache /tmp/zipit-x4-cache --records "$OUT/records" --out "$OUT/zipit-paper.md" 2>&1 | tee "$OUT/log.txt"
