#!/bin/bash
# Study v2 (issue 23): the code benchmarks swept again with completion-style prompts (the assistant turn
# already starts with the stub, the LLM writes only the body, hints are cut from the body; see
# shepherd/tasks/humaneval.py). The same settings as the study's committed traces: grid 0..0.9, one greedy
# hinted continuation per level, 3 SLM samples at T=0.7, the batched llama.cpp engine, the local Qwen2.5-Coder
# 0.5B + 1.5B pair; the SLM's log-probabilities are recorded with every generation (the llama.cpp backend
# records them by default), so confidence policies can replay. Resumable: run it again and done items are
# skipped, a half-done item continues without repeating a stored call.
# The HumanEval sweep, as started (from the worktree, with the branch's code on PYTHONPATH):
#   cd /work/wt-code && source /work/venv/bin/activate && PYTHONPATH=src nohup python -c "from shepherd.cli import app; app()" sweep run humaneval-completion --store /work/runs-v2/humaneval-completion.sqlite > /work/runs-v2/humaneval-completion.log 2>&1 &
# This script runs the same (TASKS="humaneval-completion" by default; add mbpp once it has a completion
# style, or "mbpp" for a chat-style re-sweep of its 500 test items): nohup bash benchmarks/study_v2_sweeps.sh &
set -eu
cd "$(dirname "$0")/.."
OUT=${OUT:-/work/runs-v2}
TASKS=${TASKS:-humaneval-completion}
mkdir -p "$OUT"
for task in $TASKS; do
  echo "=== $(date -u +%T) $task"
  PYTHONPATH=src python -c "from shepherd.cli import app; app()" sweep run "$task" \
    --store "$OUT/$task.sqlite" >> "$OUT/$task.log" 2>&1
done
echo "=== done $(date -u +%T)"
