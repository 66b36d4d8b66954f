#!/bin/bash
# The study's sweeps (issue 8), each resumable: run it again after a stop and it continues where it was,
# never paying for a stored call twice. Long: run it in the background,
#   nohup bash benchmarks/study_sweeps.sh > runs/study_sweeps.log 2>&1 &
# then pack the stores into traces/ (bash traces/pack.sh) and regenerate docs/results.md
# (shepherd study traces/study.toml --out docs).
# LANES=2 (default; any N works): sweep processes side by side, each model on 1 thread, all working down the
#   same list; the store's claims give each item to one of them. On the 2-core machine two give 20-30% more
#   tokens per second in all than one process on 2 threads (0.5B: 52 vs 43 tok/s, 1.5B: 33 vs 26;
#   python benchmarks/sweep_lanes.py). LANES=1: one process on all cores.
# CONFIG: a TOML with the model pair and threads (default: the embedded default pair, 1 thread a model
#   with two lanes, all cores with one).
set -u
cd "$(dirname "$0")/.."
LANES=${LANES:-2}
CONFIG=${CONFIG:-}
if [ -z "$CONFIG" ] && [ "$LANES" != 1 ]; then
  mkdir -p runs
  CONFIG=runs/one_thread.toml
  cat > "$CONFIG" <<'TOML'
[slm]
model = "qwen2.5-coder-0.5b-instruct-q4_k_m"
n_threads = 1
[llm]
model = "qwen2.5-coder-1.5b-instruct-q4_k_m"
n_threads = 1
price = { input = 0.59, output = 0.79 }
TOML
fi
run() {
  echo "=== $(date -u +%T) $*"
  shepherd sweep run "$@" ${CONFIG:+--config "$CONFIG"} || echo "=== failed: $*"
}
queue() {
  # training traces: labels only need the first passing level (--early-stop)
  run gsm8k --split train --limit 300 --early-stop --store runs/gsm8k_train.sqlite
  # test traces: the full grid, for every policy's replay
  run gsm8k --split test --limit 300 --seed 0 --store runs/gsm8k_test.sqlite
  run humaneval --store runs/humaneval.sqlite
  run mbpp --split test --limit 200 --seed 0 --store runs/mbpp.sqlite
  run cnk12 --seed 0 --store runs/cnk12.sqlite
}
for lane in $(seq 1 "$LANES"); do
  queue > >(sed -u "s/^/[lane $lane] /") 2>&1 &
  sleep 5  # let the first lane claim its first item
done
wait
echo "=== done $(date -u +%T)"
