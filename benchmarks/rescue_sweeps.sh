#!/bin/bash
# The rescue measurement of docs/rescue.md (issue 24): the committed GSM8K test traces unpacked into a store,
# the SLM's no-hint answers of a named subset scored (log-probabilities by teacher forcing; nothing
# regenerated), then the same items swept again with rescues recorded. Every generation the study already
# paid for is a cache hit (same requests, same keys); only the rescues' LLM calls and the SLM's continuations
# after them are new. Grows in nested stages (the seeded samples of 20, 40, ... items), so a stopped run
# leaves a usable smaller subset; resumable (run it again: done items are skipped).
#   nohup bash benchmarks/rescue_sweeps.sh > runs/rescue_sweeps.log 2>&1 &
# STAGES: the subset sizes (default "20 40 60 80"); THRESHOLDS, TOKENS, WINDOW: the rescue grid.
# TASK, SPLIT, TRACE: another benchmark (docs/rescue.md's second one:
#   TASK=humaneval-completion TRACE=traces/humaneval-completion.jsonl.gz STORE=runs/rescue_hec.sqlite \
#   THRESHOLDS=-0.5,-0.35,-0.25 TOKENS=8,16,32,64 STAGES=30 bash benchmarks/rescue_sweeps.sh
# its traces carry the SLM's log-probabilities already, so the scoring step finds nothing to do).
set -eu
cd "$(dirname "$0")/.."
TASK=${TASK:-gsm8k}
SPLIT=${SPLIT:-test}
TRACE=${TRACE:-traces/gsm8k-test.jsonl.gz}
STORE=${STORE:-runs/rescue_gsm8k.sqlite}
STAGES=${STAGES:-20}
THRESHOLDS=${THRESHOLDS:--0.35,-0.5,-0.75}
TOKENS=${TOKENS:-8,16,32,128}
WINDOW=${WINDOW:-8}
mkdir -p runs
[ -f "$STORE" ] || shepherd sweep unpack "$TRACE" --store "$STORE"
for k in $STAGES; do
  ids="runs/${TASK}_seed0_$k.ids"
  python -c "from shepherd.tasks import get_task
print('\n'.join(i.id for i in get_task('$TASK').load('$SPLIT', limit=$k, seed=0)))" > "$ids"
  echo "=== $(date -u +%T) stage $k: score"
  shepherd sweep score "$TASK" --store "$STORE" --kinds hint0 --ids "@$ids"
  echo "=== $(date -u +%T) stage $k: sweep"
  shepherd sweep run "$TASK" --split "$SPLIT" --ids "@$ids" --store "$STORE" --engine batched ${CONFIG:+--config "$CONFIG"} \
    --rescue-thresholds "$THRESHOLDS" --rescue-tokens "$TOKENS" --rescue-window "$WINDOW"
done
echo "=== done $(date -u +%T)"
