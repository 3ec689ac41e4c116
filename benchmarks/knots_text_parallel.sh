#!/usr/bin/env bash
# Regenerate docs/results/knots-text.md (default options) with the work spread over parallel processes:
# one per adapter, then one per merge method. Same numbers as `python benchmarks/knots_text.py --force`: each
# process writes its own cache file under .knotwork-cache/knots-text/r16/; the last call only reads the caches,
# measures CKA, writes the result records and the page. Run from the repository root, with ../shared/data beside it.
set -euo pipefail
KT=(python benchmarks/knots_text.py)
LOG=.knotwork-cache/logs
mkdir -p "$LOG"
for t in mr subj cr mpqa trec sst2; do   # 1. adapters (skipped when cached)
  nice -n 10 "${KT[@]}" --task "$t" --train-only > "$LOG/train_$t.log" 2>&1 &
done
wait
nice -n 10 "${KT[@]}" --method none --no-page > "$LOG/bench_base.log" 2>&1   # 2. zero-shot, fine-tuned
pids=()
for m in ta ties dare-ties knots-ties knots-dare-ties; do   # 3. the five searches
  nice -n 10 "${KT[@]}" --method "$m" --no-page > "$LOG/bench_$m.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
nice -n 10 "${KT[@]}" --force   # 4. CKA, records and the page, from the caches
