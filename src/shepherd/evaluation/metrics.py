"""Evaluation metrics as small pure functions: numbers in, numbers out, no trace store, no models.

Conventions used throughout:
- an *operating point* is (cost, accuracy) of one policy setting on one benchmark; cost is in dollars
  (total or per query, as long as all points of one comparison use the same one);
- the *SLM* point is SLM-only, the *LLM* point is LLM-only (the two references every metric needs);
- *normalised cost* x = (C - C_slm) / (C_llm - C_slm): 0 at SLM-only, 1 at LLM-only. With the SLM free
  (the paper's accounting) and a pure router it is the share of LLM spend, the analogue of RouteLLM's
  "% calls to the strong model" (the same up to per-query length differences).

Everything returns `None` rather than raising where a metric is undefined (a zero denominator, a target
never reached), so a report can print "n/a" instead of crashing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Estimate",
    "OperatingPoint",
    "accuracy",
    "accuracy_ci",
    "ace",
    "aiq",
    "apgr",
    "bootstrap_ci",
    "cheapest_at_fraction",
    "cheapest_reaching",
    "cost_reduction",
    "cpt",
    "mixed_curve",
    "non_decreasing_hull",
    "normalised_cost",
    "paired_difference_ci",
    "pareto_front",
    "per_query_cost",
    "pgr",
    "total_cost",
]


# --------------------------------------------------------------------------- accuracy and its uncertainty


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a (percentile bootstrap) confidence interval."""

    value: float
    low: float
    high: float
    level: float = 0.95
    n: int = 0

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "level": self.level, "n": self.n}


def accuracy(correct: Sequence[bool | float]) -> float:
    """Share of correct answers. An empty sequence has no accuracy (ValueError: a silent 0 would lie)."""
    if len(correct) == 0:
        raise ValueError("accuracy of no items is undefined")
    return sum(float(c) for c in correct) / len(correct)


def bootstrap_ci(values: Sequence[float], *, statistic: Callable[[Any], float] | None = None,
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` (default: the mean) over items resampled with
    replacement. Deterministic for a given seed. One item (or a constant sample) gives a zero-width
    interval, which is the honest answer of the bootstrap, not a claim of certainty."""
    import numpy as np

    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap of no items is undefined")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    if statistic is None:
        stats = x[idx].mean(axis=1)
    else:
        stats = np.array([statistic(x[row]) for row in idx])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def accuracy_ci(correct: Sequence[bool | float], *, n_boot: int = 2000, level: float = 0.95,
                seed: int = 0) -> Estimate:
    lo, hi = bootstrap_ci([float(c) for c in correct], n_boot=n_boot, level=level, seed=seed)
    return Estimate(accuracy(correct), lo, hi, level, len(correct))


def paired_difference_ci(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000,
                         level: float = 0.95, seed: int = 0) -> Estimate:
    """mean(a) - mean(b) over the same items, with a paired bootstrap interval (items resampled
    together): the right interval for "policy vs LLM-only on the same queries"."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    lo, hi = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
    return Estimate(sum(d) / len(d), lo, hi, level, len(d))


def matched_cost_ratio_ci(llm_correct: Sequence[bool | float],
                          shepherding: Sequence[tuple[Sequence[bool | float], Sequence[float]]],
                          baselines: Sequence[tuple[Sequence[bool | float], Sequence[float]]], fraction: float,
                          *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Any] | None:
    """How sure is "the cheapest baseline costs r times the cheapest shepherding policy at `fraction` of
    LLM-only accuracy"? Items are resampled with replacement; on each resample the target accuracy, the
    cheapest point of each side reaching it and the ratio of their costs are found again (the operating
    point is chosen anew, as the headline chooses it). Points are (per-item correctness, per-item cost)
    over the same items as `llm_correct`.

    Returns the percentile interval of the ratio over the resamples where both sides reach the target,
    the share of resamples in which shepherding is strictly cheaper (`p_shepherding_cheaper`, among
    those), and how many resamples that was. None when fewer than half the resamples have both sides.
    """
    import numpy as np

    n = len(llm_correct)
    if n == 0 or not shepherding or not baselines:
        return None

    def stack(points):
        a = np.asarray([[float(c) for c in p[0]] for p in points])
        c = np.asarray([[float(x) for x in p[1]] for p in points])
        if a.shape[1] != n or c.shape[1] != n:
            raise ValueError("every point must cover the same items as llm_correct")
        return a, c

    (sa, sc), (ba, bc) = stack(shepherding), stack(baselines)
    llm = np.asarray([float(c) for c in llm_correct])
    rng = np.random.default_rng(seed)
    ratios, cheaper = [], 0
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        target = fraction * llm[idx].mean() - 1e-12
        cs = [c for a, c in zip(sa[:, idx].mean(1), sc[:, idx].mean(1)) if a >= target]
        cb = [c for a, c in zip(ba[:, idx].mean(1), bc[:, idx].mean(1)) if a >= target]
        if not cs or not cb or min(cs) <= 0:
            continue
        ratios.append(min(cb) / min(cs))
        cheaper += min(cs) < min(cb)
    if len(ratios) < n_boot / 2:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    return {"low": float(lo), "high": float(hi), "p_shepherding_cheaper": cheaper / len(ratios),
            "resamples": len(ratios), "level": level}


# --------------------------------------------------------------------------- cost


def crossfit_matched_cost(llm_correct: Sequence[bool | float],
                          sides: dict[str, Sequence[tuple[Sequence[bool | float], Sequence[float]]]],
                          fraction: float, *, splits: int = 100, seed: int = 0) -> dict[str, Any] | None:
    """Knobs chosen out of sample: on each random half of the items, every side (a group of operating
    points, e.g. "shepherding" and "baseline") picks its cheapest point reaching `fraction` of LLM-only
    accuracy on that half; the point is then scored on the other half, and the halves swap. A point that got
    lucky on the half it was chosen on misses the target on the other: the share of held-out halves where a
    side's choice still reaches the target says how far its best-case operating point can be trusted.

    Returns, per side, the mean held-out cost per query (and its 2.5-97.5% range over splits), the mean
    held-out accuracy over the LLM-only accuracy, the share of held-out halves meeting the target, and the
    share of choices where no point reached the target on the choosing half; and the held-out cost ratio of
    every other side over the first side (its median and 95% range over the halves where both chose a point).
    None without items or sides."""
    import numpy as np

    n = len(llm_correct)
    names = list(sides)
    if n < 4 or not names or any(not sides[k] for k in names):
        return None
    llm = np.asarray([float(c) for c in llm_correct])
    acc = {k: np.asarray([[float(c) for c in p[0]] for p in sides[k]]) for k in names}
    cost = {k: np.asarray([[float(x) for x in p[1]] for p in sides[k]]) for k in names}
    rng = np.random.default_rng(seed)
    held: dict[str, list[tuple[float, float, bool]]] = {k: [] for k in names}
    missed = dict.fromkeys(names, 0)
    ratios: dict[str, list[float]] = {k: [] for k in names[1:]}
    for _ in range(splits):
        perm = rng.permutation(n)
        halves = (perm[: n // 2], perm[n // 2:])
        for a, b in (halves, halves[::-1]):
            target_a = fraction * llm[a].mean() - 1e-12
            target_b = fraction * llm[b].mean() - 1e-12
            chosen: dict[str, float] = {}
            for k in names:
                ok = acc[k][:, a].mean(1) >= target_a
                if not ok.any():
                    missed[k] += 1
                    continue
                costs_a = np.where(ok, cost[k][:, a].mean(1), np.inf)
                j = int(np.argmin(costs_a))
                cb, ab = float(cost[k][j, b].mean()), float(acc[k][j, b].mean())
                held[k].append((cb, ab / llm[b].mean() if llm[b].mean() else 0.0, ab >= target_b))
                chosen[k] = cb
            for k in names[1:]:
                if k in chosen and names[0] in chosen and chosen[names[0]] > 0:
                    ratios[k].append(chosen[k] / chosen[names[0]])
    out: dict[str, Any] = {"fraction": fraction, "splits": splits, "halves": 2 * splits, "sides": {}}
    for k in names:
        h = held[k]
        out["sides"][k] = None if not h else {
            "cost_per_query": float(np.mean([x[0] for x in h])),
            "cost_range": [float(v) for v in np.quantile([x[0] for x in h], [0.025, 0.975])],
            "accuracy_over_llm": float(np.mean([x[1] for x in h])),
            "target_met_share": float(np.mean([x[2] for x in h])),
            "not_reached_share": missed[k] / (2 * splits),
        }
    out["ratio_over_" + names[0]] = {k: None if len(r) < splits else {
        "median": float(np.median(r)), "low": float(np.quantile(r, 0.025)), "high": float(np.quantile(r, 0.975)),
        "halves": len(r)} for k, r in ratios.items()}
    return out


def total_cost(costs: Sequence[float]) -> float:
    return float(sum(costs))


def per_query_cost(costs: Sequence[float]) -> float:
    if len(costs) == 0:
        raise ValueError("per-query cost of no items is undefined")
    return float(sum(costs)) / len(costs)


def cost_reduction(cost: float, llm_cost: float) -> float | None:
    """1 - C / C_llm: 0 for LLM-only, 1 for a free policy, negative when dearer than LLM-only."""
    if llm_cost == 0:
        return None
    return 1.0 - cost / llm_cost


def normalised_cost(cost: float, slm_cost: float, llm_cost: float) -> float | None:
    """(C - C_slm) / (C_llm - C_slm): 0 at SLM-only, 1 at LLM-only."""
    if llm_cost == slm_cost:
        return None
    return (cost - slm_cost) / (llm_cost - slm_cost)


# --------------------------------------------------------------------------- accuracy per cost


def ace(acc: float, cost: float, slm_acc: float, slm_cost: float, llm_acc: float, llm_cost: float) -> float | None:
    """Accuracy-per-cost efficiency relative to LLM-only:

        ACE = ((A - A_slm) / (C - C_slm)) / ((A_llm - A_slm) / (C_llm - C_slm))

    1 for LLM-only (and for any point on the straight line between SLM-only and LLM-only, such as
    random mixing in expectation); > 1 buys accuracy more cheaply than the LLM does. Undefined (None)
    when the point costs what SLM-only costs, or the LLM is no better than the SLM.
    """
    if cost == slm_cost or llm_cost == slm_cost or llm_acc == slm_acc:
        return None
    return ((acc - slm_acc) / (cost - slm_cost)) / ((llm_acc - slm_acc) / (llm_cost - slm_cost))


def pgr(acc: float, slm_acc: float, llm_acc: float) -> float | None:
    """Performance gap recovered: (A - A_slm) / (A_llm - A_slm)."""
    if llm_acc == slm_acc:
        return None
    return (acc - slm_acc) / (llm_acc - slm_acc)


def best_ace(points: Sequence[OperatingPoint], slm_acc: float, slm_cost: float, llm_acc: float, llm_cost: float,
             *, min_gap_recovered: float = 0.5) -> float | None:
    """The highest ACE among the points that recover at least `min_gap_recovered` of the SLM-LLM accuracy gap.

    Without the floor the maximum is set by a point that costs barely more than SLM-only and is one item
    better: a tiny cost difference in the denominator makes its ACE huge without saying anything about
    buying accuracy. None when no point reaches the floor (or ACE is undefined everywhere).
    """
    aces = []
    for p in points:
        g = pgr(p.accuracy, slm_acc, llm_acc)
        a = ace(p.accuracy, p.cost, slm_acc, slm_cost, llm_acc, llm_cost)
        if g is not None and g >= min_gap_recovered - 1e-12 and a is not None and math.isfinite(a):
            aces.append(a)
    return max(aces) if aces else None


# --------------------------------------------------------------------------- operating points


@dataclass(frozen=True)
class OperatingPoint:
    cost: float
    accuracy: float
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"cost": self.cost, "accuracy": self.accuracy, "label": self.label}


def _points(points: Sequence[OperatingPoint | tuple[float, float]]) -> list[OperatingPoint]:
    return [p if isinstance(p, OperatingPoint) else OperatingPoint(float(p[0]), float(p[1])) for p in points]


def cheapest_reaching(points: Sequence[OperatingPoint | tuple[float, float]], target_accuracy: float,
                      *, tol: float = 1e-12) -> OperatingPoint | None:
    """The cheapest measured point with accuracy >= target (ties on cost: the more accurate one)."""
    ok = [p for p in _points(points) if p.accuracy >= target_accuracy - tol]
    if not ok:
        return None
    return min(ok, key=lambda p: (p.cost, -p.accuracy))


def cheapest_at_fraction(points: Sequence[OperatingPoint | tuple[float, float]], llm_accuracy: float,
                         fraction: float) -> OperatingPoint | None:
    """The cheapest point reaching `fraction` (e.g. 0.9, 1.0) of the LLM-only accuracy."""
    return cheapest_reaching(points, fraction * llm_accuracy)


def pareto_front(points: Sequence[OperatingPoint | tuple[float, float]]) -> list[OperatingPoint]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by cost."""
    pts = sorted(_points(points), key=lambda p: (p.cost, -p.accuracy))
    front: list[OperatingPoint] = []
    for p in pts:
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


# --------------------------------------------------------------------------- RouteLLM: APGR and CPT


def _sorted_xy(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    if len(xs) != len(ys):
        raise ValueError(f"x and y differ in length: {len(xs)} vs {len(ys)}")
    if not xs:
        raise ValueError("a curve needs at least one point")
    return sorted(zip(map(float, xs), map(float, ys)))


def _trapezoid(xy: Sequence[tuple[float, float]]) -> float:
    return sum((x1 - x0) * (y0 + y1) / 2.0 for (x0, y0), (x1, y1) in itertools.pairwise(xy))


def mixed_curve(xs: Sequence[float], accs: Sequence[float], slm_acc: float, llm_acc: float,
                x_range: tuple[float, float] = (0.0, 1.0)) -> list[tuple[float, float]]:
    """A curve restricted to `x_range` (normalised cost), its ends filled by what any deployment can
    do: mixing the policy at random with SLM-only (at x=lo) below its cheapest point, and with
    LLM-only (at x=hi, if that is better than staying put) above its dearest point. Points beyond the
    range are cut off at its edge (by interpolation)."""
    lo, hi = x_range
    xy = _sorted_xy(xs, accs)
    xy = _clip(xy, lo, hi)
    if not xy:  # every point lies outside the range
        return [(lo, slm_acc), (hi, llm_acc)]
    if xy[0][0] > lo:
        xy.insert(0, (lo, slm_acc))
    if xy[-1][0] < hi:
        xy.append((hi, max(xy[-1][1], llm_acc)))
    return xy


def _clip(xy: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):
        for edge in (lo, hi):  # a segment crossing an edge contributes the crossing point
            if x0 < edge < x1:
                out.append((edge, y0 + (edge - x0) * (y1 - y0) / (x1 - x0)))
    out.extend(p for p in xy if lo <= p[0] <= hi)
    return sorted(set(out))


def apgr(xs: Sequence[float], accs: Sequence[float], slm_acc: float, llm_acc: float, *,
         x_range: tuple[float, float] | None = None) -> float | None:
    """Average performance gap recovered (RouteLLM, Ong et al. 2024).

    `xs` is the cost axis in [0, 1] (RouteLLM: share of calls to the strong model; here normalised
    cost), `accs` the accuracy at each setting. As in RouteLLM's evaluation code, the area under the
    piecewise-linear curve (trapezoid rule over the measured x span) is normalised by the areas of the
    SLM's and the LLM's constant accuracies over the same span:

        APGR = (AUC - A_slm * span) / ((A_llm - A_slm) * span)  ==  mean PGR over the span.

    A curve from (0, A_slm) straight to (1, A_llm) (random mixing) scores 0.5; an oracle that reaches
    A_llm at x* and stays there scores 1 - x*/2.

    With `x_range` (e.g. (0, 1)) the curve is first made comparable across policies whose knobs span
    different ranges: see `mixed_curve`. Without it, RouteLLM's definition over the measured span.
    """
    if llm_acc == slm_acc:
        return None
    xy = mixed_curve(xs, accs, slm_acc, llm_acc, x_range) if x_range else _sorted_xy(xs, accs)
    span = xy[-1][0] - xy[0][0]
    if span <= 0:
        return None
    auc = _trapezoid(xy)
    return (auc - slm_acc * span) / ((llm_acc - slm_acc) * span)


def cpt(xs: Sequence[float], accs: Sequence[float], slm_acc: float, llm_acc: float,
        level: float, *, x_range: tuple[float, float] | None = None) -> float | None:
    """Call-performance threshold CPT(level) (RouteLLM): the smallest x at which the curve reaches
    PGR = level, i.e. accuracy A_slm + level * (A_llm - A_slm), walking the piecewise-linear curve by
    increasing x and interpolating inside the first segment that crosses. None if never reached.

    (RouteLLM's code uses np.interp(accuracy -> x), which assumes a monotone curve; walking by x gives
    the same answer on monotone curves and the first crossing on the others.)
    """
    target = slm_acc + level * (llm_acc - slm_acc)
    xy = mixed_curve(xs, accs, slm_acc, llm_acc, x_range) if x_range else _sorted_xy(xs, accs)
    eps = 1e-12
    if xy[0][1] >= target - eps:
        return xy[0][0]
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):
        if y1 >= target - eps:
            if y1 == y0:
                return x1
            return x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return None


# --------------------------------------------------------------------------- RouterBench: AIQ


def non_decreasing_hull(costs: Sequence[float], quals: Sequence[float]) -> list[tuple[float, float]]:
    """The non-decreasing convex hull of a cost-quality curve (RouterBench, Hu et al. 2024): the upper
    hull of the points (any two operating points can be mixed at random, so every point on a chord is
    reachable), cut at its best quality so that paying more never lowers quality. Sorted by cost."""
    pts = sorted(set(_sorted_xy(costs, quals)))
    # keep the best quality per cost
    best: dict[float, float] = {}
    for c, q in pts:
        best[c] = max(q, best.get(c, -math.inf))
    pts = sorted(best.items())
    hull: list[tuple[float, float]] = []
    for p in pts:  # Andrew's monotone chain, upper part
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point if it lies on or below the chord from hull[-2] to p
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    # non-decreasing: stop at the (first) best quality; beyond it the curve stays flat
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    return hull[: top + 1]


def aiq(costs: Sequence[float], quals: Sequence[float], *, c_min: float = 0.0,
        c_max: float | None = None) -> float | None:
    """Average improvement in quality (RouterBench): the area under the non-decreasing convex hull,
    normalised by the cost range,

        AIQ = 1 / (c_max - c_min) * integral_{c_min}^{c_max} R~(c) dc,

    where R~ is 0 below the cheapest point (the policy cannot operate there), follows the hull, and
    stays at its best quality up to c_max. Compare policies on one benchmark with a common
    [c_min, c_max] (default: 0 to this curve's dearest point; `shepherd eval` passes the LLM-only cost).
    A quality in [0, 1] gives an AIQ in [0, 1].
    """
    hull = non_decreasing_hull(costs, quals)
    if c_max is None:
        c_max = max(costs)
    if c_max <= c_min:
        return None

    def r(c: float) -> float:
        if c < hull[0][0]:
            return 0.0
        if c >= hull[-1][0]:
            return hull[-1][1]
        for (x0, y0), (x1, y1) in itertools.pairwise(hull):
            if x0 <= c <= x1:
                return y0 + (c - x0) * (y1 - y0) / (x1 - x0)
        return hull[-1][1]  # pragma: no cover

    # integrate the piecewise-linear R~ exactly over [c_min, c_max] at its breakpoints
    knots = sorted({c_min, c_max, *(x for x, _ in hull if c_min < x < c_max)})
    area = 0.0
    for a, b in itertools.pairwise(knots):
        if a < hull[0][0]:
            continue  # R~ is 0 up to the cheapest point (a knot itself when inside the range)
        else:
            area += (b - a) * (r(a) + r(b)) / 2.0
    return area / (c_max - c_min)
