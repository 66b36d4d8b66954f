"""Choose the predictor's recipe (featurizer, trunk width, L2) by cross-validation on the training items.

With a hundred-odd labelled queries the recipe matters as much as the data, and picking it on the test
benchmarks would leak: the choice here sees the training items only. Each candidate is scored by its
out-of-fold AUC of "is a hint needed?" (mean over the modes it can train, proactive and reactive),
averaged over a few fold assignments so that one lucky split does not decide. Ties keep the earlier
candidate, so listing the default first makes it win unless another is strictly better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .data import Example
from .train import TrainSettings, cross_validate


@dataclass(frozen=True)
class Candidate:
    featurizer: str = "lexical"
    hidden: int = 16
    l2: float = 0.1

    def __post_init__(self) -> None:
        if not self.featurizer or self.hidden < 0 or not self.l2 >= 0:
            raise ValueError(f"bad predictor candidate {self.label}: needs a featurizer, hidden >= 0 and l2 >= 0")

    @property
    def label(self) -> str:
        return f"{self.featurizer}, hidden {self.hidden}, l2 {self.l2:g}"

    def settings(self, base: TrainSettings) -> TrainSettings:
        same = self.featurizer == base.featurizer  # keep the base's featurizer settings for its own featurizer
        return replace(base, featurizer=self.featurizer, featurizer_config=base.featurizer_config if same else {},
                       model=replace(base.model, hidden=self.hidden, l2=self.l2))


@dataclass
class CandidateScore:
    candidate: Candidate
    #: mode -> out-of-fold AUC, averaged over the fold assignments
    auc: dict[str, float]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.candidate), "label": self.candidate.label,
                "auc": {m: round(v, 4) for m, v in self.auc.items()}, "score": round(self.score, 4)}


@dataclass
class Selection:
    scores: list[CandidateScore]
    chosen: int
    folds: int
    repeats: int
    items: int
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        return self.scores[self.chosen].candidate

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.best.label, "folds": self.folds, "repeats": self.repeats, "items": self.items,
                "candidates": [s.to_dict() for s in self.scores], "notes": list(self.notes)}


def parse_candidates(text: str) -> list[Candidate]:
    """`"lexical:16:0.1,minilm:0:1"` (featurizer[:hidden[:l2]], comma-separated) -> candidates."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        bits = part.split(":")
        if len(bits) > 3 or not bits[0]:
            raise ValueError(f"bad predictor candidate {part!r}: expected featurizer[:hidden[:l2]]")
        try:
            hidden = int(bits[1]) if len(bits) > 1 else Candidate.hidden
            l2 = float(bits[2]) if len(bits) > 2 else Candidate.l2
        except ValueError:
            raise ValueError(f"bad predictor candidate {part!r}: hidden must be an integer, l2 a number") from None
        out.append(Candidate(bits[0], hidden, l2))  # checks the ranges
    if not out:
        raise ValueError("no predictor candidates given")
    return out


def select(examples: Sequence[Example], candidates: Sequence[Candidate], base: TrainSettings | None = None, *,
           k: int = 5, repeats: int = 3) -> Selection:
    """Score every candidate by out-of-fold AUC on `examples` and pick the best (ties: the earliest)."""
    if not candidates:
        raise ValueError("no predictor candidates to choose from")
    if k < 2 or repeats < 1:
        raise ValueError(f"need k >= 2 folds and repeats >= 1 (got k={k}, repeats={repeats})")
    base = base or TrainSettings()
    examples = list(examples)
    scores: list[CandidateScore] = []
    notes: list[str] = []
    for cand in candidates:
        per_mode: dict[str, list[float]] = {}
        for r in range(repeats):
            s = replace(cand.settings(base), seed=base.seed + r)
            cv = cross_validate(examples, s, k=k)
            for mode, m in cv.items():
                if isinstance(m, dict) and "auc" in m and m["auc"] is not None and math.isfinite(m["auc"]):
                    per_mode.setdefault(mode, []).append(float(m["auc"]))
        auc = {mode: sum(v) / len(v) for mode, v in per_mode.items()}
        if not auc:
            notes.append(f"{cand.label}: no out-of-fold AUC (one class in every fold?)")
        scores.append(CandidateScore(cand, auc, sum(auc.values()) / len(auc) if auc else -math.inf))
    chosen = max(range(len(scores)), key=lambda i: (scores[i].score, -i))
    if not math.isfinite(scores[chosen].score):
        raise ValueError("no candidate could be scored: " + "; ".join(notes))
    return Selection(scores, chosen, k, repeats, len(examples), notes)
