"""What one greedy trial per hint level changes in the oracle labels (issue 23, part 4): on a named subset of
training items swept with 3 SLM trials per level (trial 0 greedy, trials 1-2 sampled at T=0.7; the paper takes
the majority), the labels from trial 0 alone against the labels from the majority of 3. A replay of stored
generations: no model is called.

    python benchmarks/majority_labels.py STORE --task gsm8k --split train [--ids @FILE] [--json OUT]

From a clean clone (the subset is packed in traces/gsm8k-train-trials3.jsonl.gz):

    shepherd sweep unpack traces/gsm8k-train-trials3.jsonl.gz --store runs/trials3.sqlite
    python benchmarks/majority_labels.py runs/trials3.sqlite --task gsm8k --split train

Only items whose every swept level has 3 trials count (a stopped sweep leaves the others out).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of k successes in n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return (max(0.0, c - h), min(1.0, c + h))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--split", default="train")
    ap.add_argument("--ids", default=None, help="comma-separated ids or @file (default: every finished item)")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from shepherd.traces.labels import keep, label_item
    from shepherd.traces.store import TraceStore

    ids = None
    if args.ids:
        ids = (Path(args.ids[1:]).read_text().split() if args.ids.startswith("@")
               else [i.strip() for i in args.ids.split(",") if i.strip()])
    with TraceStore(args.store, readonly=True) as st:
        sweeps = st.item_sweeps(args.task, args.split, item_ids=ids)
    full = [s for s in sweeps if s.levels and all(len(lv.trials) >= args.trials or lv.hint_tokens >= s.full_tokens
                                                  for lv in s.levels)]
    rows, per_level = [], {}
    for s in full:
        greedy = replace(s, levels=[replace(lv, trials=lv.trials[:1]) for lv in s.levels])
        g, m = label_item(greedy), label_item(s)
        rows.append({"item": s.item_id, "greedy": [g.kind, g.hint_fraction], "majority": [m.kind, m.hint_fraction],
                     "kept_greedy": keep(g), "kept_majority": keep(m)})
        for lv in s.levels:
            d = per_level.setdefault(round(lv.fraction, 6), {"n": 0, "greedy": 0, "majority": 0, "differ": 0,
                                                               "any_trial": 0})
            t0 = bool(lv.trials[0].correct)
            d["n"] += 1
            d["greedy"] += t0
            d["majority"] += lv.passed
            d["differ"] += t0 != lv.passed
            d["any_trial"] += any(t.correct for t in lv.trials)
    n = len(rows)
    both = [r for r in rows if r["kept_greedy"] and r["kept_majority"]]
    out = {
        "items": n, "item_ids": [r["item"] for r in rows],
        "same_label": sum(r["greedy"] == r["majority"] for r in rows),
        "same_kind": sum(r["greedy"][0] == r["majority"][0] for r in rows),
        "kept": {"greedy": sum(r["kept_greedy"] for r in rows), "majority": sum(r["kept_majority"] for r in rows),
                 "both": len(both)},
        "hint_needed_flips": sum((r["greedy"][0] == "hint") != (r["majority"][0] == "hint") for r in both),
        "n_star_moves": {"later": sum((r["majority"][1] or 0) > (r["greedy"][1] or 0) for r in both),
                         "earlier": sum((r["majority"][1] or 0) < (r["greedy"][1] or 0) for r in both)},
        "kinds": {"greedy": _count(r["greedy"][0] for r in rows), "majority": _count(r["majority"][0] for r in rows)},
        "per_level": per_level, "rows": rows,
    }
    print(f"{n} items with {args.trials} trials at every level")
    print(f"same label (kind and n*): {out['same_label']} of {n}; same kind: {out['same_kind']} of {n}")
    print(f"kinds, greedy: {out['kinds']['greedy']}; majority: {out['kinds']['majority']}")
    print(f"kept by the paper's filter: greedy {out['kept']['greedy']}, majority {out['kept']['majority']}, "
          f"both {len(both)}; of those, 'hint needed?' flips on {out['hint_needed_flips']}, n* moves later on "
          f"{out['n_star_moves']['later']} and earlier on {out['n_star_moves']['earlier']}")
    print("\n| hint fraction | items | greedy trial right | majority of 3 right | differ | any of 3 right |")
    print("|---|---|---|---|---|---|")
    for f, d in sorted(per_level.items()):
        lo, hi = wilson(d["greedy"], d["n"])
        lo2, hi2 = wilson(d["majority"], d["n"])
        print(f"| {f:.1f} | {d['n']} | {d['greedy'] / d['n']:.0%} [{lo:.0%}, {hi:.0%}] | "
              f"{d['majority'] / d['n']:.0%} [{lo2:.0%}, {hi2:.0%}] | {d['differ']} | {d['any_trial'] / d['n']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, sort_keys=True))


def _count(xs) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items()))


if __name__ == "__main__":
    main()
