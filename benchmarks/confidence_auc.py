"""How well does the SLM's own answer rank "this answer is wrong" and "a hint is needed"?

Reads trace stores whose SLM generations carry token log-probabilities (`shepherd sweep score` adds them to
stored traces), and reports, per benchmark, the AUC of each confidence feature of the SLM's greedy answer
(`shepherd.confidence.features`), of its samples' agreement with it, and of the samples' mean
log-probability, with a 95% bootstrap interval over items (1000 resamples). Nothing is fitted: each
feature is a score on its own (higher: more confident), so there is no knob to pick on the reported items.

    shepherd sweep unpack traces/gsm8k-test.jsonl.gz --store runs/scored/gsm8k-test.sqlite
    shepherd sweep score --store runs/scored/gsm8k-test.sqlite
    python benchmarks/confidence_auc.py runs/scored/gsm8k-test.sqlite [more stores] --json out.json

"wrong": the SLM's greedy answer without a hint is graded wrong (every item with a greedy answer).
"hint needed": the item's label is a hint (items the LLM gets wrong or no swept hint fixes dropped, as
the paper's labels; the SLM-alone items are the negatives).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from shepherd.agreement import normalize_extracted
from shepherd.confidence import FEATURE_NAMES, features
from shepherd.traces.store import TraceStore

EXTRA = ("samples_agree", "samples_mean_logprob")


def rows_of(store_path: Path) -> tuple[str, list[dict]]:
    store = TraceStore(store_path, readonly=True)
    (info,) = store.sweeps()
    labels = store.labels(info.task)
    out = []
    for it in store.item_sweeps(info.task):
        g = it.slm_greedy
        if g is None or g.generation.logprobs is None:
            continue
        row = {"item": it.item_id, "wrong": not g.correct}
        lab = labels.get(it.item_id)
        row["hint_needed"] = None if lab is None else lab.kind == "hint"
        row.update(features(g.generation.logprobs, g.generation.text, g.extracted))
        mine = normalize_extracted(g.extracted)
        scored = [s for s in it.samples if s.generation.logprobs is not None]
        row["samples_agree"] = (sum(normalize_extracted(s.extracted) == mine for s in it.samples) / len(it.samples)
                                if it.samples and mine is not None else (0.0 if it.samples else None))
        row["samples_mean_logprob"] = (sum(s.generation.logprobs.mean or 0.0 for s in scored) / len(scored)
                                       if scored else None)
        out.append(row)
    store.close()
    return info.task, out


def auc(pos_scores: list[float], neg_scores: list[float]) -> float | None:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney form of ROC AUC)."""
    if not pos_scores or not neg_scores:
        return None
    neg = sorted(neg_scores)
    import bisect

    total = 0.0
    for p in pos_scores:
        lo, hi = bisect.bisect_left(neg, p), bisect.bisect_right(neg, p)
        total += lo + 0.5 * (hi - lo)
    return total / (len(pos_scores) * len(neg_scores))


def auc_with_interval(rows: list[dict], target: str, feature: str, *, seed: int = 0,
                      resamples: int = 1000) -> dict | None:
    """AUC of `-feature` for `target` (low confidence should rank the positives first), with a bootstrap
    interval; items where the feature is undefined score as the least confident."""
    data = [(r[target], r[feature]) for r in rows if r.get(target) is not None]
    if not data:
        return None
    floor = min((v for _, v in data if v is not None), default=0.0) - 1.0
    data = [(y, -(v if v is not None else floor)) for y, v in data]

    def one(sample):
        return auc([s for y, s in sample if y], [s for y, s in sample if not y])

    point = one(data)
    if point is None:
        return None
    rng = random.Random(seed)
    boots = sorted(b for b in (one([rng.choice(data) for _ in data]) for _ in range(resamples)) if b is not None)
    return {"auc": point, "low": boots[int(0.025 * len(boots))], "high": boots[int(0.975 * len(boots)) - 1],
            "items": len(data), "positives": sum(y for y, _ in data),
            "undefined": sum(1 for r in rows if r.get(target) is not None and r[feature] is None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stores", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = {}
    for path in args.stores:
        task, rows = rows_of(path)
        report[path.stem] = {"task": task, "items": len(rows), "features": {
            f: {t: auc_with_interval(rows, t, f) for t in ("wrong", "hint_needed")} for f in FEATURE_NAMES + EXTRA}}
    for name, rep in report.items():
        print(f"\n## {name} ({rep['task']}, {rep['items']} items with a scored greedy answer)\n")
        print("| feature | AUC: SLM answer wrong | AUC: hint needed |\n|---|---|---|")
        for f, d in rep["features"].items():
            cells = []
            for t in ("wrong", "hint_needed"):
                a = d[t]
                cells.append("n/a" if a is None else f"{a['auc']:.2f} [{a['low']:.2f}, {a['high']:.2f}] "
                             f"(n={a['items']}, {a['positives']}+)")
            print(f"| `{f}` | {cells[0]} | {cells[1]} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
