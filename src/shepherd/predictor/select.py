"""Choose the predictor's recipe (featurizer, trunk width, L2) by cross-validation on the training items.

With a hundred-odd labelled queries the recipe matters as much as the data, and picking it on the test
benchmarks would leak: the choice here sees the training items only. Each candidate is scored by its
out-of-fold AUC of "is a hint needed?" (mean over the modes it can train, proactive and reactive),
averaged over a few fold assignments so that one lucky split does not decide. Ties keep the earlier
candidate, so listing the default first makes it win unless another is strictly better.

AUC ranks queries; the policies use the predictor at one operating point. So each candidate also gets a
decision-aware score when its items carry their sweeps: the cost (a share of LLM-only cost) of the cheapest
threshold and hint scale that reach a target share of LLM-only accuracy on the same out-of-fold predictions,
the way the study calibrates the chosen one. `by="cost"` chooses by it (lower is better) instead of AUC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..costs import PAPER_LLM_PRICE, Price
from .data import Example
from .train import TrainSettings, cross_validate

SIZE_TARGETS = ("fraction", "log_tokens")


@dataclass(frozen=True)
class Candidate:
    featurizer: str = "lexical"
    hidden: int = 16
    l2: float = 0.1
    #: what the size head regresses: "fraction" (n*/L) or "log_tokens" (log(1 + n*), the paper's); None: the
    #: base settings' (`--size-target`)
    size_target: str | None = None

    def __post_init__(self) -> None:
        if not self.featurizer or self.hidden < 0 or not self.l2 >= 0:
            raise ValueError(f"bad predictor candidate {self.label}: needs a featurizer, hidden >= 0 and l2 >= 0")
        if self.size_target is not None and self.size_target not in SIZE_TARGETS:
            raise ValueError(f"bad predictor candidate {self.label}: size_target must be one of "
                             f"{', '.join(SIZE_TARGETS)}")

    @property
    def label(self) -> str:
        tail = f", size {self.size_target}" if self.size_target else ""
        return f"{self.featurizer}, hidden {self.hidden}, l2 {self.l2:g}{tail}"

    def settings(self, base: TrainSettings) -> TrainSettings:
        same = self.featurizer == base.featurizer  # keep the base's featurizer settings for its own featurizer
        return replace(base, featurizer=self.featurizer, featurizer_config=base.featurizer_config if same else {},
                       model=replace(base.model, hidden=self.hidden, l2=self.l2,
                                     size_target=self.size_target or base.model.size_target))


@dataclass
class CandidateScore:
    candidate: Candidate
    #: mode -> out-of-fold AUC, averaged over the fold assignments
    auc: dict[str, float]
    #: the selection criterion: mean AUC over modes (by="auc", higher is better) or minus the mean cost share
    #: over the modes in which some candidate reaches the target (by="cost")
    score: float
    #: mode -> cost share of LLM-only at the cheapest setting reaching the accuracy target out of fold,
    #: averaged over the fold assignments (None: the target was not reached on some assignment)
    cost: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        cand = asdict(self.candidate)
        if cand["size_target"] is None:  # unset (the base's) is left out: earlier reports read the same
            del cand["size_target"]
        return {**cand, "label": self.candidate.label,
                "auc": {m: round(v, 4) for m, v in self.auc.items()}, "score": round(self.score, 4),
                "cost": {m: None if v is None else round(v, 4) for m, v in self.cost.items()}}


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

    by: str = "auc"
    #: the accuracy target (share of LLM-only) of the cost score; None when no cost was computed
    target: float | None = None
    #: the candidate the other criterion (cost when choosing by AUC, and vice versa) would have chosen; None
    #: when no cost was computed. Reported so a reader can see whether the choice hinges on the criterion.
    alternative: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.best.label, "folds": self.folds, "repeats": self.repeats, "items": self.items,
                "by": self.by, "target": self.target, "alternative": self.alternative,
                "candidates": [s.to_dict() for s in self.scores], "notes": list(self.notes)}


def parse_candidates(text: str) -> list[Candidate]:
    """`"lexical:16:0.1,minilm:0:1:log_tokens"` (featurizer[:hidden[:l2[:size_target]]], comma-separated)
    -> candidates."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        bits = part.split(":")
        if len(bits) > 4 or not bits[0]:
            raise ValueError(f"bad predictor candidate {part!r}: expected featurizer[:hidden[:l2[:size_target]]]")
        try:
            hidden = int(bits[1]) if len(bits) > 1 else Candidate.hidden
            l2 = float(bits[2]) if len(bits) > 2 else Candidate.l2
        except ValueError:
            raise ValueError(f"bad predictor candidate {part!r}: hidden must be an integer, l2 a number") from None
        out.append(Candidate(bits[0], hidden, l2, bits[3] if len(bits) > 3 else Candidate.size_target))  # checks
    if not out:
        raise ValueError("no predictor candidates given")
    return out


def oof_cost(examples: Sequence[Example], cv: dict[str, Any], size_target: str, target: float, *,
             scales: Sequence[float] = (1.0, 2.0, 3.0), llm_price: Price = PAPER_LLM_PRICE) -> dict[str, float | None]:
    """Mode -> cost share of LLM-only at the cheapest (threshold, scale) reaching `target` x LLM-only accuracy
    on `examples`, from cross_validate's out-of-fold predictions (None where no setting reaches it)."""
    import numpy as np

    from .calibrate import calibrate
    from .data import label_grid
    from .features import get_featurizer
    from .predictor import DecisionRule, Predictor

    modes = [m for m in cv.get("oof", {}) if m in ("proactive", "reactive")]
    med_L = float(np.median([e.full_tokens for e in examples]))
    rules = {m: DecisionRule(constant_length=med_L) for m in modes}
    # hint fractions snap up to the label grid, as a trained predictor's do (its grid: the swept levels)
    grid = label_grid(e.sweep for e in examples)
    shell = Predictor(featurizer=get_featurizer("lexical", n_features=0), models={}, rules=rules,
                      size_target=size_target, grid=grid)  # rules and size semantics; predictions come from cv
    out: dict[str, float | None] = {}
    for mode in modes:
        o = cv["oof"][mode]
        if [e.item_id for e in examples] != list(o["item_ids"]):
            raise ValueError("out-of-fold predictions do not belong to these examples")
        raw = {key: np.asarray(o[key], dtype=np.float64) for key in ("prob", "size", "loglen")}
        choice, _ = calibrate(shell, mode, examples, "accuracy", target, scales=scales, raw=raw, llm_price=llm_price)
        out[mode] = choice.cost / choice.llm_cost if choice.feasible and choice.llm_cost else None
    return out


def select(examples: Sequence[Example], candidates: Sequence[Candidate], base: TrainSettings | None = None, *,
           k: int = 5, repeats: int = 3, by: str = "auc", target: float | None = 0.9,
           scales: Sequence[float] = (1.0, 2.0, 3.0), llm_price: Price = PAPER_LLM_PRICE) -> Selection:
    """Score every candidate out of fold on `examples` and pick the best (ties: the earliest): by mean AUC
    (`by="auc"`) or by the mean cost share at the accuracy `target` (`by="cost"`; needs the items' sweeps).
    With `target` set and sweeps at hand, the cost is reported either way."""
    if not candidates:
        raise ValueError("no predictor candidates to choose from")
    if k < 2 or repeats < 1:
        raise ValueError(f"need k >= 2 folds and repeats >= 1 (got k={k}, repeats={repeats})")
    if by not in ("auc", "cost"):
        raise ValueError(f"select by 'auc' or 'cost', not {by!r}")
    base = base or TrainSettings()
    examples = list(examples)
    with_cost = target is not None and bool(examples) and all(e.sweep is not None for e in examples)
    if by == "cost" and not with_cost:
        raise ValueError("choosing by cost needs an accuracy target and the items' sweeps (load them from a store)")
    scores: list[CandidateScore] = []
    notes: list[str] = []
    for cand in candidates:
        per_mode: dict[str, list[float]] = {}
        costs: dict[str, list[float | None]] = {}
        for r in range(repeats):
            s = replace(cand.settings(base), seed=base.seed + r)
            cv = cross_validate(examples, s, k=k)
            for mode, m in cv.items():
                if isinstance(m, dict) and "auc" in m and m["auc"] is not None and math.isfinite(m["auc"]):
                    per_mode.setdefault(mode, []).append(float(m["auc"]))
            if with_cost:
                for mode, c in oof_cost(examples, cv, s.model.size_target, float(target), scales=scales,
                                        llm_price=llm_price).items():
                    costs.setdefault(mode, []).append(c)
        auc = {mode: sum(v) / len(v) for mode, v in per_mode.items()}
        cost = {mode: None if any(c is None for c in v) else sum(v) / len(v) for mode, v in costs.items()}
        if not auc:
            notes.append(f"{cand.label}: no out-of-fold AUC (one class in every fold?)")
        scores.append(CandidateScore(cand, auc, sum(auc.values()) / len(auc) if auc else -math.inf, cost))
    auc_scores = [sc.score for sc in scores]
    if with_cost:
        cost_scores, cost_notes = _cost_scores(scores)
        if by == "cost":
            for sc, v in zip(scores, cost_scores, strict=True):
                sc.score = v
            notes += cost_notes
    chosen = _argmax([sc.score for sc in scores])
    if not math.isfinite(scores[chosen].score):
        raise ValueError("no candidate could be scored: " + "; ".join(notes))
    alternative = None  # what the other criterion would have chosen (reported, never used)
    if with_cost:
        other = cost_scores if by == "auc" else auc_scores
        if any(math.isfinite(v) for v in other):
            alternative = scores[_argmax(other)].candidate.label
    return Selection(scores, chosen, k, repeats, len(examples), notes, by=by,
                     target=float(target) if with_cost else None, alternative=alternative)


def _argmax(values: Sequence[float]) -> int:
    """The best score's index; ties keep the earliest candidate."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def _cost_scores(scores: Sequence[CandidateScore]) -> tuple[list[float], list[str]]:
    """Minus the mean cost share over the modes in which some candidate reaches the target; a candidate
    missing one of those modes scores -inf (with a note saying why)."""
    modes = sorted({m for sc in scores for m, c in sc.cost.items() if c is not None})
    out: list[float] = []
    notes: list[str] = []
    for sc in scores:
        if modes and all(sc.cost.get(m) is not None for m in modes):
            out.append(-sum(sc.cost[m] for m in modes) / len(modes))
        else:
            out.append(-math.inf)
            missed = ", ".join(m for m in modes if sc.cost.get(m) is None) or "any mode"
            notes.append(f"{sc.candidate.label}: the accuracy target was not reached out of fold in {missed}")
    return out, notes
