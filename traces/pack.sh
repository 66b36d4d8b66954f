#!/bin/bash
# Pack the study's trace stores (runs/*.sqlite, git-ignored) into the committed compact files here.
# Only finished items are packed; question texts are left out (rebuilt from the task data on unpack).
set -eu
cd "$(dirname "$0")/.."
pack() { [ -f "runs/$2.sqlite" ] && shepherd sweep pack "traces/$1.jsonl.gz" --store "runs/$2.sqlite" --task "$3" || echo "skip $1 (no runs/$2.sqlite)"; }
pack gsm8k-train gsm8k_train gsm8k
pack gsm8k-test gsm8k_test gsm8k
pack humaneval humaneval humaneval
pack humaneval-completion humaneval-completion humaneval-completion
pack mbpp mbpp mbpp
pack cnk12 cnk12 cnk12
