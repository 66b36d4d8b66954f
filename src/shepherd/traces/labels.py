"""Oracle labels from sweeps: n* per item, the paper's filter rule, and label statistics.

The rule: a grid level passes when a strict majority of its trials is correct; n* is the smallest
passing level. Level 0.0 (no hint: the SLM alone) passing gives kind "none"; a higher level gives
"hint"; no passing level gives "llm" when the LLM's own answer is right, else "unsolvable".
The filter (as in the paper) drops items the LLM gets wrong or that no swept hint fixes, i.e. keeps
only items with kind "none" or "hint" whose LLM answer is correct. An early-stopped sweep does not try
hints on an item the LLM gets wrong: its kind is then "none" or "unsolvable" (the LLM and the SLM alone are
wrong), and the filter drops it all the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .records import ItemSweep, Label


def label_item(sweep: ItemSweep) -> Label:
    llm_ok = bool(sweep.llm_full.correct)
    for level in sorted(sweep.levels, key=lambda lv: (lv.hint_tokens, lv.fraction)):
        if level.passed:
            if level.hint_tokens == 0:
                return Label(sweep.item_id, 0.0, 0, "none", llm_ok)
            return Label(sweep.item_id, level.fraction, level.hint_tokens, "hint", llm_ok)
    return Label(sweep.item_id, None, None, "llm" if llm_ok else "unsolvable", llm_ok)


def keep(label: Label) -> bool:
    """The paper's filter: the LLM is right and some swept hint (or none) makes the SLM right."""
    return label.llm_correct and label.kind in ("none", "hint")


def labels_from_sweeps(sweeps: Iterable[ItemSweep], filter: bool = True) -> dict[str, Label]:
    out = {}
    for s in sweeps:
        lab = label_item(s)
        if filter and not keep(lab):
            continue
        out[s.item_id] = lab
    return out


#: from this share of LLM answers cut off at the cap on, the stats carry a note about it
CUT_OFF_NOTE_SHARE = 0.1


@dataclass
class LabelStats:
    items: int
    kept: int
    kinds: dict[str, int]
    #: items whose n* is each grid fraction (kind "none" counts at 0.0)
    by_fraction: dict[float, int]
    llm_accuracy: float
    slm_accuracy: float
    #: accuracy of the SLM's greedy trial at each swept fraction (over items that reached it)
    level_accuracy: dict[float, float]
    level_counts: dict[float, int]
    sample_accuracy: float | None
    mean_full_tokens: float
    mean_label_tokens: float | None
    mean_label_fraction: float | None
    early_stopped: int = 0
    #: LLM answers that stopped at the sweep's token cap (finish reason "length"): graded wrong, they label
    #: their items "unsolvable" or "llm" whatever a larger cap would give
    llm_cut_off: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def label_stats(sweeps: list[ItemSweep]) -> LabelStats:
    labels = [label_item(s) for s in sweeps]
    kinds = Counter(lab.kind for lab in labels)
    kept = [lab for lab in labels if keep(lab)]
    by_fraction = Counter(lab.hint_fraction for lab in labels if lab.hint_fraction is not None)
    level_correct: Counter = Counter()
    level_counts: Counter = Counter()
    for s in sweeps:
        for lv in s.levels:
            if lv.trials and not lv.by_tokens:
                level_counts[lv.fraction] += 1
                level_correct[lv.fraction] += int(lv.trials[0].correct)
    samples = [g.correct for s in sweeps for g in s.samples]
    slm = [s.slm_greedy.correct for s in sweeps if s.slm_greedy is not None]
    grid = sorted({f for s in sweeps for f in (s.sweep.get("grid") or [])})
    early = sum(1 for s in sweeps if len([lv for lv in s.levels if lv.trials]) < len(grid))
    hinted = [lab for lab in labels if lab.kind in ("none", "hint")]
    n = len(sweeps)
    notes = []
    cut = sum(1 for s in sweeps if s.llm_full.generation.cut_off)
    if n and cut / n >= CUT_OFF_NOTE_SHARE:
        cap = next((s.sweep.get("max_tokens") for s in sweeps if s.sweep.get("max_tokens")), None)
        notes.append(f"{cut} of {n} LLM answers ({cut / n:.0%}) stopped at the sweep's "
                     f"{f'{cap}-token ' if cap else ''}cap and are graded wrong: a larger --max-tokens would "
                     "change their labels (benchmarks/token_cap.py measures by how much)")
    if early:
        notes.append(f"{early} items have fewer levels than the grid (early stop): level accuracies beyond "
                     "an item's first passing level do not count it")
    return LabelStats(
        items=n, kept=len(kept), kinds={k: kinds.get(k, 0) for k in ("none", "hint", "llm", "unsolvable")},
        by_fraction=dict(sorted(by_fraction.items())),
        llm_accuracy=sum(s.llm_full.correct for s in sweeps) / n if n else 0.0,
        slm_accuracy=sum(slm) / len(slm) if slm else 0.0,
        level_accuracy={f: level_correct[f] / level_counts[f] for f in sorted(level_counts)},
        level_counts=dict(sorted(level_counts.items())),
        sample_accuracy=sum(samples) / len(samples) if samples else None,
        mean_full_tokens=sum(s.full_tokens for s in sweeps) / n if n else 0.0,
        mean_label_tokens=(sum(lab.hint_tokens or 0 for lab in hinted) / len(hinted)) if hinted else None,
        mean_label_fraction=(sum(lab.hint_fraction or 0 for lab in hinted) / len(hinted)) if hinted else None,
        early_stopped=early, llm_cut_off=cut, notes=notes)
