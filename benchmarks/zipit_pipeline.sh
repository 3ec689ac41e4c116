#!/usr/bin/env bash
# Evaluate each experiment as soon as its cached base models exist (run after/alongside zipit_train.py).
# Usage: nohup nice -n 10 bash benchmarks/zipit_pipeline.sh > .knotwork-cache/zipit/pipeline.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.knotwork-cache/zipit
until [ -f "$cache/mnist/pair2_B.safetensors" ]; do sleep 20; done
python benchmarks/zipit_experiment.py mnist --force
until [ -f "$cache/cifar10/pair0_B.safetensors" ]; do sleep 20; done
python benchmarks/zipit_experiment.py mnist cifar10 --force
