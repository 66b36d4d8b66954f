#!/bin/bash
# The study's sweeps (issue 8), one model job at a time, each resumable: run it again after a stop and
# it continues where it was, never paying for a stored call twice. Long: run it in the background,
#   nohup bash benchmarks/study_sweeps.sh > runs/study_sweeps.log 2>&1 &
# then pack the stores into traces/ (bash traces/pack.sh) and regenerate docs/results.md
# (shepherd study traces/study.toml --out docs).
# CONFIG: a TOML with the model pair and threads (default: the embedded default pair, all cores).
set -u
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-}
run() {
  echo "=== $(date -u +%T) $*"
  shepherd sweep run "$@" ${CONFIG:+--config "$CONFIG"} || echo "=== failed: $*"
}
# training traces: labels only need the first passing level (--early-stop)
run gsm8k --split train --limit 300 --early-stop --store runs/gsm8k_train.sqlite
# test traces: the full grid, for every policy's replay
run gsm8k --split test --limit 300 --seed 0 --store runs/gsm8k_test.sqlite
run humaneval --store runs/humaneval.sqlite
run mbpp --split test --limit 200 --seed 0 --store runs/mbpp.sqlite
run cnk12 --store runs/cnk12.sqlite
echo "=== done $(date -u +%T)"
