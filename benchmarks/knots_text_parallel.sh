#!/usr/bin/env bash
# Regenerate docs/results/knots-text.md (default options) with the work spread over parallel processes:
# one per adapter, then one per merge method. Same numbers as `knotwork bench knots-text --force`: each process
# writes its own cache file under .knotwork-cache/knots-text/r16/; the last call only reads the caches, measures
# CKA and writes the page. Run from the repository root, with ../shared/data beside it.
set -euo pipefail
KW=(python -c "from knotwork.cli import main; main()")
LOG=.knotwork-cache/logs
mkdir -p "$LOG"
for t in mr subj cr mpqa trec sst2; do   # 1. adapters (skipped when cached)
  nice -n 10 "${KW[@]}" lora-train "../shared/data/text/$t" --out .knotwork-cache/knots-text/r16 \
    > "$LOG/train_$t.log" 2>&1 &
done
wait
nice -n 10 "${KW[@]}" bench knots-text --method none --no-page > "$LOG/bench_base.log" 2>&1   # 2. zero-shot, fine-tuned
pids=()
for m in ta ties dare-ties knots-ties knots-dare-ties; do   # 3. the five searches
  nice -n 10 "${KW[@]}" bench knots-text --method "$m" --no-page > "$LOG/bench_$m.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
nice -n 10 "${KW[@]}" bench knots-text --force   # 4. CKA and the page, from the caches
