"""Numbers from a finished sweep store: time per item, the hint-level accuracy curve, label distribution,
what early stop would have saved (from the recorded latency of every call), and the oracle costs.

usage: python benchmarks/sweep_store_report.py runs/gsm8k_train.sqlite [--task gsm8k] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shepherd.evaluation.replay import oracle_report
from shepherd.traces.cli import load_task
from shepherd.traces.labels import label_item, label_stats
from shepherd.traces.store import TraceStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    store = TraceStore(args.store)
    task = load_task(args.task)
    sweeps = store.item_sweeps(args.task)
    info = store.resolve_sweep(args.task)
    latency = {c["key"]: c["latency_s"] for c in store.call_log()}
    rows = store._query("SELECT item_id, kind, fraction, trial, key FROM rows WHERE sweep = ?", (info.sweep,))
    by_item: dict[str, list] = {}
    for r in rows:
        by_item.setdefault(r["item_id"], []).append(r)

    full_s = early_s = 0.0
    full_calls = early_calls = 0
    llm_s = slm_s = 0.0
    for s in sweeps:
        lab = label_item(s)
        stop = lab.hint_fraction if lab.kind in ("none", "hint") else None
        for r in by_item.get(s.item_id, []):
            sec = latency.get(r["key"], 0.0) if r["key"] else 0.0
            called = r["key"] in latency
            full_s += sec
            full_calls += called
            if r["kind"] == "llm_full":
                llm_s += sec
            else:
                slm_s += sec
            if r["kind"] != "hint" or stop is None or r["fraction"] <= stop + 1e-9:
                early_s += sec
                early_calls += called
    n = len(sweeps)
    stats = label_stats(sweeps)
    oracles = oracle_report(task, store, sweep=info.sweep)
    out = {
        "sweep": info.sweep, "items": n,
        "seconds_per_item": full_s / n if n else None,
        "llm_seconds_per_item": llm_s / n if n else None,
        "slm_seconds_per_item": slm_s / n if n else None,
        "calls_per_item": full_calls / n if n else None,
        "early_stop": {"calls": early_calls, "full_calls": full_calls, "seconds": early_s, "full_seconds": full_s,
                       "speedup": full_s / early_s if early_s else None},
        "level_accuracy": stats.level_accuracy, "labels": stats.kinds, "label_by_fraction": stats.by_fraction,
        "kept_by_filter": stats.kept, "llm_accuracy": stats.llm_accuracy, "slm_accuracy": stats.slm_accuracy,
        "sample_accuracy": stats.sample_accuracy, "mean_full_tokens": stats.mean_full_tokens,
        "oracles": {k: {m: v[m] for m in ("accuracy", "cost_usd", "cost_ratio", "llm_calls")}
                    for k, v in oracles["strategies"].items()},
        "oracle_notes": oracles["notes"],
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
