"""Pick the decision threshold (and hint-size scale) that meets a target on held-out traces.

Each held-out item's outcome under a decision is read off its sweep, the way a replay through the
runner and the trace store's replay backends would produce it:
  slm       -> the SLM's greedy answer at level 0;
  hint(n)   -> the smallest swept level with at least n tokens (short of the whole answer): its greedy
               trial; past the last swept level the replayed LLM serves its whole answer, so the
               outcome is the LLM's full answer at the full LLM price. (A sweep run with early_stop
               has no trials above its first passing level: those levels are assumed to pass too.)
  llm       -> the LLM's full answer.
Costs use the LLM's prompt tokens + the hint (or answer) tokens at the LLM price, and the SLM's tokens
(continuation, or the reactive policy's samples) at the SLM price (free by default, as in the paper).
The reactive policy first pays for its samples; when they agree it answers with the first sample of
the consensus.

Targets: `accuracy` (a fraction of the LLM-only accuracy on the same items, e.g. 0.9 or 1.0): the
cheapest setting that reaches it; `budget` (USD per query) or `budget_ratio` (a fraction of the
LLM-only cost): the most accurate setting within it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..costs import FREE, PAPER_LLM_PRICE, Price
from .data import Example
from .features import SampleFeaturizer
from .predictor import DecisionRule, Predictor


@dataclass
class Outcome:
    correct: bool
    cost: float
    llm_tokens: int
    kind: str


def _level_for(sweep: Any, n: int):
    L = int(sweep.full_tokens)
    for lv in sorted(sweep.levels, key=lambda lv: lv.hint_tokens):
        if lv.hint_tokens >= n and 0 < lv.hint_tokens < L and lv.trials:
            return lv
    return None


def _early_stopped_level(sweep: Any, n: int):
    """For a sweep that stopped at its first passing level: the grid level >= n it skipped, as
    (hint tokens, the passing level's greedy trial) -- larger hints are assumed to pass too."""
    settings = getattr(sweep, "sweep", {}) or {}
    if not settings.get("early_stop"):
        return None
    passed = [lv for lv in sweep.levels if lv.trials and lv.passed and lv.hint_tokens > 0]
    if not passed:
        return None
    L = int(sweep.full_tokens)
    for f in sorted(settings.get("grid") or []):
        tok = min(L, int(f * L + 0.5))
        if tok >= n and 0 < tok < L:
            return tok, passed[0].trials[0]
    return None


def llm_only(sweep: Any, llm_price: Price) -> Outcome:
    g = sweep.llm_full[0]
    return Outcome(bool(sweep.llm_full[1]), llm_price.cost(g.prompt_tokens, g.completion_tokens),
                   int(g.completion_tokens), "llm")


def outcome(sweep: Any, kind: str, n: int, llm_price: Price = PAPER_LLM_PRICE, slm_price: Price = FREE) -> Outcome:
    """What a decision yields on one swept item (see the module docstring)."""
    full = sweep.llm_full[0]
    if kind == "llm":
        return llm_only(sweep, llm_price)
    if kind == "slm" or n <= 0:
        g = sweep.slm_greedy
        if g is None:
            raise ValueError(f"item {sweep.item_id} has no level-0 (SLM alone) trial")
        return Outcome(bool(g[1]), slm_price.cost(g[0].prompt_tokens, g[0].completion_tokens), 0, "slm")
    lv = _level_for(sweep, n)
    if lv is None:
        guess = _early_stopped_level(sweep, n)
        if guess is not None:  # an early-stopped sweep never tried this level: assume it passes
            tok, t = guess
            cost = llm_price.cost(full.prompt_tokens, tok) + slm_price.cost(t[0].prompt_tokens,
                                                                            t[0].completion_tokens)
            return Outcome(True, cost, tok, "hint(assumed)")
        # past the last swept level: the replayed LLM hands over its whole answer
        o = llm_only(sweep, llm_price)
        return Outcome(o.correct, o.cost, o.llm_tokens, "hint->llm")
    t = lv.trials[0]
    cost = llm_price.cost(full.prompt_tokens, lv.hint_tokens) + slm_price.cost(t[0].prompt_tokens,
                                                                               t[0].completion_tokens)
    return Outcome(bool(t[1]), cost, int(lv.hint_tokens), "hint")


def sample_cost(sweep: Any, slm_price: Price) -> float:
    return sum(slm_price.cost(g[0].prompt_tokens, g[0].completion_tokens) for g in sweep.samples)


@dataclass
class Curve:
    """Accuracy and cost of every (threshold, scale) setting on the held-out items."""

    thresholds: np.ndarray
    scales: np.ndarray
    accuracy: np.ndarray  # (scales, thresholds)
    cost: np.ndarray
    llm_accuracy: float
    llm_cost: float
    slm_accuracy: float
    n_items: int


def simulate(predictor: Predictor, mode: str, examples: Sequence[Example], *, thresholds: Sequence[float],
             scales: Sequence[float], raw: dict[str, np.ndarray] | None = None, consensus_skip: bool = True,
             llm_price: Price = PAPER_LLM_PRICE, slm_price: Price = FREE) -> Curve:
    if raw is None:
        X = predictor.inputs(mode, [e.text for e in examples], [e.samples for e in examples])
        raw = predictor.raw(mode, X)
    base = predictor.rules[mode]
    sweeps = [e.sweep for e in examples]
    if any(s is None for s in sweeps):
        raise ValueError("calibration needs the examples' sweeps (load them from a trace store)")
    agreed = np.zeros(len(examples), dtype=bool)
    agreed_ok = np.zeros(len(examples), dtype=bool)
    pre_cost = np.zeros(len(examples))
    if mode == "reactive":
        for i, e in enumerate(examples):
            pre_cost[i] = sample_cost(e.sweep, slm_price)
            ans, top = SampleFeaturizer.consensus(e.samples)
            if consensus_skip and e.samples and ans is not None and top == len(e.samples):
                agreed[i] = True
                first = next(j for j, s in enumerate(e.samples) if s.answer == ans)
                agreed_ok[i] = bool(e.sweep.samples[first][1])
    acc = np.zeros((len(scales), len(thresholds)))
    cost = np.zeros_like(acc)
    cache: dict[tuple[int, str, int], Outcome] = {}
    for si, scale in enumerate(scales):
        rule = base.with_overrides(scale=float(scale))
        frac, L = predictor.fractions(raw, rule)
        for ti, thr in enumerate(thresholds):
            rule_t = rule.with_overrides(threshold=float(thr))
            ok = cst = 0.0
            for i, s in enumerate(sweeps):
                if agreed[i]:
                    ok += agreed_ok[i]
                    cst += pre_cost[i]
                    continue
                p = predictor.apply_rule(float(raw["prob"][i]), float(frac[i]), float(L[i]), rule_t)
                key = (i, p.kind, p.hint_tokens)
                o = cache.get(key)
                if o is None:
                    o = cache[key] = outcome(s, p.kind, p.hint_tokens, llm_price, slm_price)
                ok += o.correct
                cst += o.cost + pre_cost[i]
            acc[si, ti] = ok / len(sweeps)
            cost[si, ti] = cst / len(sweeps)
    llm = [llm_only(s, llm_price) for s in sweeps]
    slm = [s.slm_greedy for s in sweeps]
    return Curve(np.asarray(thresholds, dtype=float), np.asarray(scales, dtype=float), acc, cost,
                 float(np.mean([o.correct for o in llm])), float(np.mean([o.cost for o in llm])),
                 float(np.mean([bool(g[1]) for g in slm if g is not None])) if slm else 0.0, len(sweeps))


def default_thresholds(probs: np.ndarray) -> list[float]:
    """Every distinct cut the held-out scores allow, plus 0 (always hint) and a value above 1 (never)."""
    ps = sorted({round(float(p), 6) for p in probs})
    cuts = {0.0, 0.5}
    cuts.update(ps)
    return sorted(c for c in cuts if c <= 1.0) + [1.0 + 1e-9]


@dataclass
class Choice:
    threshold: float
    scale: float
    accuracy: float
    cost: float
    feasible: bool
    target: str
    value: float
    llm_accuracy: float
    llm_cost: float
    slm_accuracy: float
    n_items: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["relative_accuracy"] = self.accuracy / self.llm_accuracy if self.llm_accuracy else None
        d["relative_cost"] = self.cost / self.llm_cost if self.llm_cost else None
        return {k: (round(v, 8) if isinstance(v, float) else v) for k, v in d.items()}


def choose(curve: Curve, target: str, value: float) -> Choice:
    """The setting that meets the target (see the module docstring); infeasible -> the most accurate."""
    A, C = curve.accuracy, curve.cost
    eps = 1e-12
    if target == "accuracy":
        need = value * curve.llm_accuracy
        ok = A >= need - eps
        # cheapest; ties: more accurate, then the higher threshold (fewer hints)
        score = np.where(ok, -C, -np.inf)
        tie = A
    elif target in ("budget", "budget_ratio"):
        limit = value if target == "budget" else value * curve.llm_cost
        ok = C <= limit + eps
        score = np.where(ok, A, -np.inf)
        tie = -C
    else:
        raise ValueError("target must be 'accuracy', 'budget' or 'budget_ratio'")
    feasible = bool(ok.any())
    if not feasible:
        score, tie = A, -C
    best = None
    for si in range(A.shape[0]):
        for ti in range(A.shape[1]):
            cand = (score[si, ti], tie[si, ti], curve.thresholds[ti], -abs(curve.scales[si] - 1.0))
            if best is None or cand > best[0]:
                best = (cand, si, ti)
    _, si, ti = best
    return Choice(threshold=float(curve.thresholds[ti]), scale=float(curve.scales[si]),
                  accuracy=float(A[si, ti]), cost=float(C[si, ti]), feasible=feasible, target=target,
                  value=float(value), llm_accuracy=curve.llm_accuracy, llm_cost=curve.llm_cost,
                  slm_accuracy=curve.slm_accuracy, n_items=curve.n_items)


def calibrate(predictor: Predictor, mode: str, examples: Sequence[Example], target: str, value: float, *,
              scales: Sequence[float] = (1.0,), raw: dict[str, np.ndarray] | None = None,
              consensus_skip: bool = True, llm_price: Price = PAPER_LLM_PRICE,
              slm_price: Price = FREE) -> tuple[Choice, Curve]:
    if not examples:
        raise ValueError("no held-out items to calibrate on")
    if raw is None:
        X = predictor.inputs(mode, [e.text for e in examples], [e.samples for e in examples])
        raw = predictor.raw(mode, X)
    thresholds = default_thresholds(raw["prob"])
    curve = simulate(predictor, mode, examples, thresholds=thresholds, scales=scales, raw=raw,
                     consensus_skip=consensus_skip, llm_price=llm_price, slm_price=slm_price)
    return choose(curve, target, value), curve


def oof_raw(predictor: Predictor, examples: Sequence[Example], k: int = 5) -> dict[str, dict[str, np.ndarray]]:
    """Out-of-fold raw predictions for every item, refitting the artifact's recipe (featurizer, model
    settings, seed) on k folds: each item is scored by a model that never saw it. Lets a small store
    calibrate on all its items instead of one small validation split."""
    from .model import NetConfig
    from .train import TrainSettings, cross_validate

    st = predictor.manifest.get("training", {}).get("settings")
    if not st:
        raise ValueError("the artifact does not record its training settings: retrain it to use held-out=oof")
    settings = TrainSettings(featurizer=st["featurizer"]["name"], featurizer_config=st["featurizer"].get("config", {}),
                             model=NetConfig(**st["model"]), seed=int(st.get("seed", 0)),
                             reactive=bool(st.get("reactive", True)))
    cv = cross_validate(examples, settings, featurizer_spec=st["featurizer"], k=k)
    out = {}
    for mode, o in cv["oof"].items():
        idx = {iid: i for i, iid in enumerate(o["item_ids"])}
        order = [idx[e.item_id] for e in examples]
        out[mode] = {key: np.asarray(o[key], dtype=np.float64)[order] for key in ("prob", "size", "loglen")}
    return out


def apply_choice(predictor: Predictor, mode: str, choice: Choice, source: dict[str, Any]) -> DecisionRule:
    rule = predictor.rules[mode].with_overrides(threshold=choice.threshold, scale=choice.scale)
    predictor.rules[mode] = rule
    cal = dict(predictor.manifest.get("calibration", {}))
    cal[mode] = {**choice.to_dict(), **source}
    predictor.manifest["calibration"] = cal
    return rule
