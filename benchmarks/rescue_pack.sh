#!/bin/bash
# Pack the rescue study's subset (docs/rescue.md) into a small trace file a clean clone can replay:
#   bash benchmarks/rescue_pack.sh runs/rescue_gsm8k.sqlite runs/gsm8k_seed0_40.ids traces/rescue-gsm8k-test.jsonl.gz
# A copy of the store in which only the subset's items count as finished (the packer takes finished items),
# packed as traces/README.md describes (version 2: the SLM's scored answers carry their log-probabilities).
set -eu
STORE=$1; IDS=$2; OUT=$3
TMP=$(mktemp -d)
python - "$STORE" "$TMP/subset.sqlite" "$IDS" <<'PY'
import sqlite3, sys
src, dst, ids = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().split()
a, b = sqlite3.connect(src), sqlite3.connect(dst)
a.backup(b)
b.execute("CREATE TEMP TABLE keep (id TEXT PRIMARY KEY)")
b.executemany("INSERT INTO keep VALUES (?)", [(i,) for i in ids])
b.execute("UPDATE sweep_items SET done_at = NULL WHERE item_id NOT IN (SELECT id FROM keep)")
b.commit()
PY
shepherd sweep pack "$OUT" --store "$TMP/subset.sqlite"
rm -rf "$TMP"
