#!/bin/bash
# Study v2 (issue 23): the code benchmarks swept again with completion-style prompts (the assistant turn
# already starts with the stub, the LLM writes only the body, hints are cut from the body; see
# shepherd/tasks/humaneval.py). The same settings as the study's committed traces: grid 0..0.9, one greedy
# hinted continuation per level, 3 SLM samples at T=0.7, the batched llama.cpp engine, the local Qwen2.5-Coder
# 0.5B + 1.5B pair; the SLM's log-probabilities are recorded with every generation (the llama.cpp backend
# records them by default), so confidence policies can replay. Resumable: run it again and done items are
# skipped, a half-done item continues without repeating a stored call.
# Run it in the background (runs/<task>.sqlite, progress in runs/<task>.log), then pack the store into traces/
# (bash traces/pack.sh) and regenerate docs/results.md (shepherd study traces/study.toml --out docs):
#   nohup bash benchmarks/study_v2_sweeps.sh &
# TASKS="humaneval-completion" by default; "mbpp" with LIMIT unset would re-sweep all 500 MBPP test items (chat
# style: MBPP has no stub to put in the assistant's turn, see shepherd/tasks/mbpp.py).
# Measured on the 2-core machine: 27-37 s an item with little else running, 65-70 s next to other work.
set -eu
cd "$(dirname "$0")/.."
OUT=${OUT:-runs}
TASKS=${TASKS:-humaneval-completion}
mkdir -p "$OUT"
for task in $TASKS; do
  echo "=== $(date -u +%T) $task"
  PYTHONPATH=src python -c "from shepherd.cli import app; app()" sweep run "$task" \
    --store "$OUT/$task.sqlite" >> "$OUT/$task.log" 2>&1
done
echo "=== done $(date -u +%T)"
