"""Replay a set of policies on a test trace store and measure every operating point.

The flow for one benchmark (task):
  1. its swept test items (`TraceStore.item_sweeps`), loaded once as task items;
  2. for each policy *family* (a baseline, a shepherding policy, a reference) and each value of its knob,
     `shepherd.evaluation.replay.replay(policy, task, items, store)`: the policy runs unchanged through the
     runner against the store, no model is called;
  3. each answer's usage (prompt / completion tokens per model) is kept, so its cost can be priced
     under every price scenario afterwards (the SLM free, as in the paper; the SLM priced);
  4. per point: accuracy with a bootstrap interval, cost; per family: the curve metrics (APGR, CPT,
     AIQ, cheapest point at 90% / 100% of LLM-only accuracy, ACE there).

Grades are memoised per (item, answer text) and seeded from the sweep's own grades, so code tasks do not
rerun the sandbox for an answer already graded.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..costs import FREE, PAPER_LLM_PRICE, Price
from ..policies.base import Policy
from . import metrics as M

#: the priced-SLM scenario's default: Groq's list price for Llama-3.1-8B-Instant (USD per 1M tokens in /
#: out), a stand-in for what a small hosted model costs
DEFAULT_SLM_PRICE = Price(input=0.05, output=0.08)

GROUPS = ("reference", "baseline", "shepherding", "oracle")


@dataclass(frozen=True)
class Scenario:
    name: str
    llm: Price
    slm: Price

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "llm": self.llm.model_dump(), "slm": self.slm.model_dump()}


def scenarios(llm_price: Price = PAPER_LLM_PRICE, slm_price: Price = DEFAULT_SLM_PRICE) -> list[Scenario]:
    return [Scenario("slm-free", llm_price, FREE), Scenario("slm-priced", llm_price, slm_price)]


# ----------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------


@dataclass
class ItemOutcome:
    item_id: str
    correct: bool
    decision: str
    llm_prompt: int
    llm_completion: int
    slm_prompt: int
    slm_completion: int
    llm_calls: int
    slm_calls: int
    mapped_hints: int = 0
    #: model time this answer took when its calls were made (sum of the stored latencies, serial; a hint's
    #: LLM time is its share n/L of the full answer's): the policy's wall-clock per query on the sweep's machine
    seconds: float = 0.0
    #: of llm_prompt / slm_prompt, the tokens re-read from the model's cache (a hint extended)
    llm_cached: int = 0
    slm_cached: int = 0

    def cost(self, s: Scenario) -> float:
        return (s.llm.cost(self.llm_prompt, self.llm_completion, self.llm_cached)
                + s.slm.cost(self.slm_prompt, self.slm_completion, self.slm_cached))

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("llm_cached", "slm_cached"):  # only where a hint was extended: older results stay as they were
            if not d[k]:
                del d[k]
        return d


@dataclass
class Point:
    """One policy setting on one benchmark."""

    family: str
    knob: Any
    label: str
    policy: dict[str, Any]
    outcomes: list[ItemOutcome] = field(default_factory=list)
    error: str | None = None
    #: filled by `summarize`
    accuracy: M.Estimate | None = None
    cost: dict[str, float] = field(default_factory=dict)  # scenario -> mean $ per query

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.outcomes)

    def decisions(self) -> dict[str, int]:
        return dict(Counter(o.decision.split("(")[0] for o in self.outcomes))

    def seconds_per_query(self) -> float | None:
        return sum(o.seconds for o in self.outcomes) / len(self.outcomes) if self.outcomes else None

    def mapped(self) -> int:
        return sum(o.mapped_hints for o in self.outcomes)

    def to_dict(self, outcomes: bool = True) -> dict[str, Any]:
        d = {"family": self.family, "knob": self.knob, "label": self.label, "policy": self.policy,
             "error": self.error, "accuracy": self.accuracy.to_dict() if self.accuracy else None,
             "cost_per_query": self.cost, "decisions": self.decisions(), "mapped_hints": self.mapped(),
             "llm_calls": sum(o.llm_calls for o in self.outcomes),
             "seconds_per_query": self.seconds_per_query(),
             "slm_calls": sum(o.slm_calls for o in self.outcomes)}
        if outcomes:
            d["items"] = [o.to_dict() for o in self.outcomes]
        return d


@dataclass
class Family:
    """A policy with one knob: `make(value)` builds the policy at that knob value."""

    name: str
    group: str
    knob: str
    values: list[Any]
    make: Callable[[Any], Policy]
    note: str = ""
    label: Callable[[Any], str] | None = None
    #: the knob value the policy would use as configured (marked in the report), if any
    default: Any = None

    def point_label(self, v: Any) -> str:
        if self.label is not None:
            return self.label(v)
        if self.knob == "-":
            return self.name
        return f"{self.name} {self.knob}={_fmt(v)}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_fmt(x) for x in v) + ")"
    return str(v)


@dataclass
class FamilyResult:
    name: str
    group: str
    knob: str
    note: str
    points: list[Point]
    default: Any = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # scenario -> metric -> value


@dataclass
class TaskResult:
    task: str
    sweep: str
    item_ids: list[str]
    families: list[FamilyResult]
    references: dict[str, Any]  # scenario -> {"slm": (acc, cost), "llm": (acc, cost)}
    hint_curve: list[dict[str, Any]]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def family(self, name: str) -> FamilyResult | None:
        return next((f for f in self.families if f.name == name), None)


# ----------------------------------------------------------------------------------------------------
# grading memo
# ----------------------------------------------------------------------------------------------------


class _Grade(NamedTuple):
    correct: bool
    extracted: str | None
    reason: str


class MemoTask:
    """A task whose `grade` remembers (item id, text) -> grade, seeded from a sweep's stored grades."""

    def __init__(self, task: Any) -> None:
        self._task = task
        self._memo: dict[tuple[str, str], Any] = {}
        self.graded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def seed(self, sweeps: Sequence[Any]) -> None:
        for s in sweeps:
            full = s.llm_full
            self._memo[(s.item_id, full.generation.text)] = _Grade(full.correct, full.extracted, "stored (sweep)")
            for lv in s.levels:
                for t in lv.trials:
                    text = lv.hint_text + t.generation.text if t.generation.text else None
                    if text is not None:
                        self._memo.setdefault((s.item_id, text), _Grade(t.correct, t.extracted, "stored (sweep)"))
            for g in s.samples:
                self._memo.setdefault((s.item_id, g.generation.text), _Grade(g.correct, g.extracted, "stored (sweep)"))

    def grade(self, item: Any, response: str):
        key = (str(item.id), response)
        g = self._memo.get(key)
        if g is None:
            g = self._task.grade(item, response)
            self.graded += 1
            self._memo[key] = g
        return g


# ----------------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------------


def run_point(family: Family, value: Any, task: MemoTask, items: Sequence[Any], store: Any, sweep: str,
              llm_price: Price) -> Point:
    from ..traces.cached import MissingGeneration
    from .replay import replay

    label = family.point_label(value)
    try:
        policy = family.make(value)
    except (ValueError, LookupError) as exc:
        return Point(family.name, value, label, {}, error=f"cannot build the policy: {exc}")
    desc = policy.describe()
    try:
        records = replay(policy, task, list(items), store, sweep=sweep, llm_price=llm_price, slm_price=FREE)
    except MissingGeneration as exc:
        return Point(family.name, value, label, desc, error=f"missing generation: {exc}")
    outcomes = []
    for r in records:
        u = r.answer.usage
        outcomes.append(ItemOutcome(
            item_id=r.item_id, correct=bool(r.correct), decision=r.answer.decision.label,
            llm_prompt=u["llm"].prompt_tokens, llm_completion=u["llm"].completion_tokens,
            slm_prompt=u["slm"].prompt_tokens, slm_completion=u["slm"].completion_tokens,
            llm_calls=u["llm"].calls, slm_calls=u["slm"].calls, mapped_hints=len(r.mapped),
            seconds=round(sum(g.latency_s for _, g in r.answer.generations), 4),
            llm_cached=u["llm"].cached_prompt_tokens, slm_cached=u["slm"].cached_prompt_tokens))
    return Point(family.name, value, label, desc, outcomes)


def summarize_point(p: Point, scens: Sequence[Scenario], *, n_boot: int, seed: int) -> None:
    if not p.ok:
        return
    p.accuracy = M.accuracy_ci([o.correct for o in p.outcomes], n_boot=n_boot, seed=seed)
    p.cost = {s.name: M.per_query_cost([o.cost(s) for o in p.outcomes]) for s in scens}


def family_metrics(fam: FamilyResult, slm: Point, llm: Point, scens: Sequence[Scenario]) -> None:
    """Curve metrics of one family under each price scenario (on its successful points)."""
    pts = [p for p in fam.points if p.ok]
    a_s, a_l = slm.accuracy.value, llm.accuracy.value
    for s in scens:
        c_s, c_l = slm.cost[s.name], llm.cost[s.name]
        ops = [M.OperatingPoint(p.cost[s.name], p.accuracy.value, p.label) for p in pts]
        out: dict[str, Any] = {"points": len(pts)}
        if pts:
            xs = [M.normalised_cost(p.cost[s.name], c_s, c_l) for p in pts]
            accs = [p.accuracy.value for p in pts]
            ok_x = [(x, a) for x, a in zip(xs, accs) if x is not None]
            if ok_x:
                X, A = [x for x, _ in ok_x], [a for _, a in ok_x]
                out["apgr"] = M.apgr(X, A, a_s, a_l, x_range=(0.0, 1.0))
                out["cpt50"] = M.cpt(X, A, a_s, a_l, 0.5, x_range=(0.0, 1.0))
                out["cpt80"] = M.cpt(X, A, a_s, a_l, 0.8, x_range=(0.0, 1.0))
                out["x_span"] = [min(X), max(X)]
            out["aiq"] = M.aiq([o.cost for o in ops], [o.accuracy for o in ops], c_min=0.0, c_max=c_l) \
                if c_l > 0 else None
            for frac, key in ((0.9, "at90"), (1.0, "at100")):
                best = M.cheapest_at_fraction(ops, a_l, frac)
                if best is None:
                    out[key] = None
                    continue
                out[key] = {"label": best.label, "accuracy": best.accuracy, "cost_per_query": best.cost,
                            "cost_reduction": M.cost_reduction(best.cost, c_l),
                            "ace": M.ace(best.accuracy, best.cost, a_s, c_s, a_l, c_l)}
            out["best_ace"] = M.best_ace(ops, a_s, c_s, a_l, c_l)
        fam.metrics[s.name] = out


def hint_curve(sweeps: Sequence[Any]) -> list[dict[str, Any]]:
    """Accuracy against hint fraction, straight from the sweep: the greedy SLM continuation (trial 0)
    and the majority over trials, per grid fraction; 1.0 is the LLM's own answer.

    `cut_off_share` is the share of those greedy answers that stopped at the sweep's token cap
    (finish reason "length"): a cut-off answer usually never states its result, so where the share is
    high the accuracies measure the pair under that budget as much as the models."""
    fracs = sorted({lv.fraction for s in sweeps for lv in s.levels if not lv.by_tokens})
    out = []
    for f in fracs:
        g, maj, n, toks, cut = 0, 0, 0, 0, 0
        for s in sweeps:
            lv = s.level(f)
            if lv is None or not lv.trials:
                continue
            n += 1
            g += bool(lv.trials[0].correct)
            maj += bool(lv.passed)
            toks += lv.hint_tokens
            cut += lv.trials[0].generation.cut_off
        if n:
            out.append({"fraction": f, "items": n, "greedy_accuracy": g / n, "majority_accuracy": maj / n,
                        "mean_hint_tokens": toks / n, "cut_off_share": cut / n})
    if sweeps:
        n = len(sweeps)
        acc = sum(bool(s.llm_full.correct) for s in sweeps) / n
        done = [s for s in sweeps if not s.llm_full.generation.cut_off]
        out.append({"fraction": 1.0, "items": n, "greedy_accuracy": acc, "majority_accuracy": acc,
                    "mean_hint_tokens": sum(s.full_tokens for s in sweeps) / n,
                    "cut_off_share": 1 - len(done) / n,
                    # the LLM's accuracy on the answers that ended within the cap (easier ones, so an upper bound)
                    "finished_accuracy": sum(bool(s.llm_full.correct) for s in done) / len(done) if done else None})
    return out


def evaluate_task(task: Any, store: Any, sweeps: Sequence[Any], families: Sequence[Family], *,
                  sweep: str, scens: Sequence[Scenario], n_boot: int = 2000, seed: int = 0,
                  progress: Callable[[str], None] | None = None) -> TaskResult:
    """Replay every family's points on the given swept items of one task."""
    t0 = time.perf_counter()
    memo = MemoTask(task)
    memo.seed(sweeps)
    ids = [s.item_id for s in sweeps]
    items = task.load(sweeps[0].split if sweeps and sweeps[0].split else None, ids=ids) if ids else []
    llm_price = scens[0].llm
    fams: list[FamilyResult] = []
    for fam in families:
        pts = []
        for v in fam.values:
            p = run_point(fam, v, memo, items, store, sweep, llm_price)
            summarize_point(p, scens, n_boot=n_boot, seed=seed)
            pts.append(p)
            if progress:
                progress(f"{task.name}: {p.label}: " + (f"acc {p.accuracy.value:.3f}" if p.ok else f"ERROR {p.error}"))
        fams.append(FamilyResult(fam.name, fam.group, fam.knob, fam.note, pts, default=fam.default))
    slm = _single(fams, "slm-only")
    llm = _single(fams, "llm-only")
    notes = []
    refs: dict[str, Any] = {}
    if slm is None or llm is None:
        notes.append("slm-only or llm-only failed: no relative metrics")
    else:
        for f in fams:
            family_metrics(f, slm, llm, scens)
        for s in scens:
            refs[s.name] = {"slm": {"accuracy": slm.accuracy.value, "cost_per_query": slm.cost[s.name]},
                            "llm": {"accuracy": llm.accuracy.value, "cost_per_query": llm.cost[s.name]}}
    mapped = sum(p.mapped() for f in fams for p in f.points)
    if mapped:
        notes.append(f"{mapped} replayed hint requests fell between swept grid points and were served at the "
                     "next grid point at or above them (each point's `mapped_hints` counts them)")
    if memo.graded:
        notes.append(f"{memo.graded} answers were not graded in the sweep and were graded here")
    return TaskResult(task.name, sweep, ids, fams, refs, hint_curve(sweeps), time.perf_counter() - t0, notes)


def _single(fams: Sequence[FamilyResult], name: str) -> Point | None:
    f = next((f for f in fams if f.name == name), None)
    if f is None:
        return None
    return next((p for p in f.points if p.ok), None)


# ----------------------------------------------------------------------------------------------------
# knob values
# ----------------------------------------------------------------------------------------------------


def thresholds_from_scores(scores: Sequence[float], max_points: int = 21) -> list[float]:
    """Knob values for a "score > threshold -> LLM" policy that realise every split of the given
    (label-free) scores, thinned to at most `max_points` evenly over the sorted distinct scores:
    one value below them all (everything to the LLM) and the largest (nothing to the LLM)."""
    u = sorted({float(s) for s in scores})
    if not u:
        return [0.5]
    cuts = u
    if len(u) + 1 > max_points:
        k = max_points - 1
        cuts = sorted({u[round(i * (len(u) - 1) / (k - 1))] for i in range(k)})
    return [u[0] - 1.0] + cuts


def split_items(ids: Sequence[str], test_fraction: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded split of item ids into (train, test), keeping the given order inside each part."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    k = max(1, round(len(order) * test_fraction)) if len(order) > 1 else 0
    test = set(order[:k])
    return [i for i in ids if i not in test], [i for i in ids if i in test]
