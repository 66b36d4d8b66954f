"""Every metric on hand-computed cases."""

import math

import pytest

from shepherd.evaluation import metrics as m
from shepherd.evaluation.metrics import OperatingPoint as P

# a two-model world used by several tests: SLM 40% at $0, LLM 80% at $10
A_S, C_S, A_L, C_L = 0.4, 0.0, 0.8, 10.0


def test_accuracy_and_empty():
    assert m.accuracy([True, False, True, True]) == 0.75
    with pytest.raises(ValueError):
        m.accuracy([])


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    xs = [1, 0] * 50
    est = m.accuracy_ci(xs, n_boot=500, seed=3)
    assert est.value == 0.5 and est.n == 100
    assert est.low < 0.5 < est.high
    # binomial sd at n=100 is 0.05 -> a 95% interval is about +-0.1
    assert 0.07 < est.high - 0.5 < 0.13 and 0.07 < 0.5 - est.low < 0.13
    assert m.accuracy_ci(xs, n_boot=500, seed=3) == est
    # constant sample: zero-width interval
    assert m.accuracy_ci([1, 1, 1]).low == m.accuracy_ci([1, 1, 1]).high == 1.0


def test_paired_difference_ci():
    a = [1, 1, 1, 0]
    b = [1, 1, 0, 0]
    est = m.paired_difference_ci(a, b, n_boot=500)
    assert est.value == pytest.approx(0.25)
    assert est.low >= 0.0  # the difference is never negative on any resample
    with pytest.raises(ValueError):
        m.paired_difference_ci([1], [1, 0])


def test_costs_and_reduction():
    assert m.total_cost([1.0, 2.0, 3.0]) == 6.0
    assert m.per_query_cost([1.0, 2.0, 3.0]) == 2.0
    assert m.cost_reduction(2.5, 10.0) == 0.75
    assert m.cost_reduction(10.0, 10.0) == 0.0
    assert m.cost_reduction(12.0, 10.0) == pytest.approx(-0.2)
    assert m.cost_reduction(1.0, 0.0) is None
    assert m.normalised_cost(5.0, 2.0, 8.0) == 0.5


def test_ace_of_llm_only_is_one():
    assert m.ace(A_L, C_L, A_S, C_S, A_L, C_L) == pytest.approx(1.0)
    # also with a priced SLM
    assert m.ace(0.8, 12.0, 0.4, 2.0, 0.8, 12.0) == pytest.approx(1.0)


def test_ace_hand_computed():
    # 0.7 accuracy for $2.5: slope (0.3 / 2.5) over the LLM's (0.4 / 10) = 0.12 / 0.04 = 3
    assert m.ace(0.7, 2.5, A_S, C_S, A_L, C_L) == pytest.approx(3.0)
    # random mixing at half: (0.6, 5) lies on the line -> 1
    assert m.ace(0.6, 5.0, A_S, C_S, A_L, C_L) == pytest.approx(1.0)
    # undefined at the SLM's cost and when the LLM is no better
    assert m.ace(0.4, 0.0, A_S, C_S, A_L, C_L) is None
    assert m.ace(0.5, 1.0, 0.4, 0.0, 0.4, 10.0) is None


def test_pgr():
    assert m.pgr(0.6, A_S, A_L) == pytest.approx(0.5)
    assert m.pgr(0.9, A_S, A_L) == pytest.approx(1.25)
    assert m.pgr(0.5, 0.5, 0.5) is None


def test_cheapest_operating_points():
    pts = [P(0.0, 0.4, "slm"), P(3.0, 0.72, "a"), P(5.0, 0.81, "b"), P(4.0, 0.75, "c"), P(10.0, 0.8, "llm")]
    at90 = m.cheapest_at_fraction(pts, A_L, 0.9)  # target 0.72
    assert at90.label == "a"
    at100 = m.cheapest_at_fraction(pts, A_L, 1.0)  # target 0.8: b at $5 beats the LLM at $10
    assert at100.label == "b"
    assert m.cheapest_reaching(pts, 0.95) is None
    # tuples work too
    assert m.cheapest_reaching([(1.0, 0.5), (0.5, 0.5)], 0.5).cost == 0.5


def test_pareto_front():
    pts = [P(0, 0.4), P(3, 0.7), P(4, 0.65), P(5, 0.8), P(10, 0.8)]
    assert [(p.cost, p.accuracy) for p in m.pareto_front(pts)] == [(0, 0.4), (3, 0.7), (5, 0.8)]


def test_apgr_of_random_mixing_is_half():
    xs = [0.0, 0.25, 0.5, 0.75, 1.0]
    accs = [A_S + x * (A_L - A_S) for x in xs]
    assert m.apgr(xs, accs, A_S, A_L) == pytest.approx(0.5)


def test_apgr_of_the_oracle():
    # the oracle router calls the LLM only for the 25% of queries the SLM fails and the LLM passes:
    # its knob traces (0, A_slm) -> (0.25, A_llm) -> (1, A_llm); APGR = 1 - 0.25 / 2 = 0.875
    xs, accs = [0.0, 0.25, 1.0], [A_S, A_L, A_L]
    assert m.apgr(xs, accs, A_S, A_L) == pytest.approx(0.875)
    # an oracle that needs no LLM call at all recovers the whole gap at every x
    assert m.apgr([0.0, 1.0], [A_L, A_L], A_S, A_L) == pytest.approx(1.0)
    # order of points does not matter; degenerate inputs give None
    assert m.apgr([1.0, 0.0, 0.25], [A_L, A_S, A_L], A_S, A_L) == pytest.approx(0.875)
    assert m.apgr([0.5], [0.6], A_S, A_L) is None
    assert m.apgr([0.0, 1.0], [0.5, 0.5], 0.5, 0.5) is None


def test_cpt():
    xs, accs = [0.0, 0.25, 1.0], [A_S, A_L, A_L]
    # PGR 50% = accuracy 0.6, reached halfway along the first segment
    assert m.cpt(xs, accs, A_S, A_L, 0.5) == pytest.approx(0.125)
    assert m.cpt(xs, accs, A_S, A_L, 0.8) == pytest.approx(0.2)
    assert m.cpt(xs, accs, A_S, A_L, 1.0) == pytest.approx(0.25)
    # random mixing: CPT(p) = p
    lin = [0.0, 1.0]
    assert m.cpt(lin, [A_S, A_L], A_S, A_L, 0.8) == pytest.approx(0.8)
    # never reached
    assert m.cpt([0.0, 1.0], [0.4, 0.5], A_S, A_L, 0.8) is None
    # reached at the first point already
    assert m.cpt([0.1, 1.0], [0.9, 0.9], A_S, A_L, 0.5) == pytest.approx(0.1)


def test_non_decreasing_hull():
    # (0.5, 0.6) lies below the chord (0, 0.5)-(1, 1): dropped; (2, 0.8) is after the best: dropped
    hull = m.non_decreasing_hull([0, 0.5, 1, 2], [0.5, 0.6, 1.0, 0.8])
    assert hull == [(0.0, 0.5), (1.0, 1.0)]
    # a concave curve keeps every point
    hull = m.non_decreasing_hull([0, 1, 2], [0.0, 0.8, 1.0])
    assert hull == [(0.0, 0.0), (1.0, 0.8), (2.0, 1.0)]
    # duplicate costs keep the best quality
    assert m.non_decreasing_hull([0, 0, 1], [0.2, 0.4, 0.5]) == [(0.0, 0.4), (1.0, 0.5)]


def test_aiq_of_known_curves():
    # straight line from (0, 0.5) to (1, 1): area 0.75 over a range of 1
    assert m.aiq([0, 1], [0.5, 1.0]) == pytest.approx(0.75)
    # a point under the chord does not count
    assert m.aiq([0, 0.5, 1], [0.5, 0.6, 1.0]) == pytest.approx(0.75)
    # past its best point the curve stays flat up to c_max: (0.75 * 1 + 1.0 * 1) / 2
    assert m.aiq([0, 1, 2], [0.5, 1.0, 0.8]) == pytest.approx(0.875)
    assert m.aiq([0, 1], [0.5, 1.0], c_max=2.0) == pytest.approx(0.875)
    # a policy that cannot go below $1 scores 0 on [0, 1): (0 + (0.5 + 1) / 2 * 1) / 2
    assert m.aiq([1, 2], [0.5, 1.0], c_min=0.0, c_max=2.0) == pytest.approx(0.375)
    # a single free point of quality q: AIQ = q
    assert m.aiq([0], [0.7], c_max=5.0) == pytest.approx(0.7)
    assert m.aiq([0], [0.7]) is None  # no cost range
    # concave curve: trapezoids (0,0)-(1,0.8): 0.4, (1,0.8)-(2,1.0): 0.9 -> 1.3 / 2
    assert m.aiq([0, 1, 2], [0.0, 0.8, 1.0]) == pytest.approx(0.65)
    assert not math.isnan(m.aiq([0, 1], [0.0, 0.0]))


def test_mixed_curve_fills_the_ends_by_mixing():
    # a policy whose knob spans x in [0.2, 0.5]: below it, mix with SLM-only; above it, with LLM-only
    xy = m.mixed_curve([0.2, 0.5], [0.6, 0.7], A_S, A_L)
    assert xy == [(0.0, A_S), (0.2, 0.6), (0.5, 0.7), (1.0, A_L)]
    # better than the LLM already: stays flat
    assert m.mixed_curve([0.0, 0.5], [0.4, 0.9], A_S, A_L)[-1] == (1.0, 0.9)
    # points beyond the range are cut at its edge
    assert m.mixed_curve([0.0, 2.0], [0.4, 0.8], A_S, A_L) == [(0.0, 0.4), (1.0, pytest.approx(0.6))]
    # APGR on the filled curve: area 0.2*0.1 + 0.3*0.25 + 0.5*0.45... computed via PGR
    got = m.apgr([0.2, 0.5], [0.6, 0.7], A_S, A_L, x_range=(0.0, 1.0))
    pgr_area = 0.2 * (0 + 0.5) / 2 + 0.3 * (0.5 + 0.75) / 2 + 0.5 * (0.75 + 1.0) / 2
    assert got == pytest.approx(pgr_area)
    # the oracle measured at x* only: filled in, it gives 1 - x*/2 again
    assert m.apgr([0.25], [A_L], A_S, A_L, x_range=(0.0, 1.0)) == pytest.approx(0.875)
    assert m.cpt([0.25], [A_L], A_S, A_L, 0.5, x_range=(0.0, 1.0)) == pytest.approx(0.125)


def test_best_ace_ignores_points_that_recover_too_little():
    # (0.45, $0.1): barely above SLM-only, ACE = (0.05/0.1)/(0.4/10) = 12.5 -- the floor drops it
    pts = [P(0.1, 0.45, "tiny"), P(2.5, 0.7, "good"), P(10.0, 0.8, "llm")]
    assert m.ace(0.45, 0.1, A_S, C_S, A_L, C_L) == pytest.approx(12.5)
    assert m.best_ace(pts, A_S, C_S, A_L, C_L) == pytest.approx(3.0)
    assert m.best_ace(pts, A_S, C_S, A_L, C_L, min_gap_recovered=0.0) == pytest.approx(12.5)
    # nothing reaches the floor; undefined ACE is skipped
    assert m.best_ace([P(0.1, 0.45), P(0.0, 0.9)], A_S, C_S, A_L, C_L) is None


def test_matched_cost_ratio_ci_picks_points_again_on_each_resample():
    rng = __import__("random").Random(0)
    n = 200
    llm = [1.0] * n
    # shepherding: as accurate as the LLM at cost 1; a cheaper point (0.5) that is only 60% right
    sh = [([1.0] * n, [1.0] * n), ([float(rng.random() < 0.6) for _ in range(n)], [0.5] * n)]
    # baseline: as accurate as the LLM at cost 2
    bl = [([1.0] * n, [2.0] * n)]
    ci = m.matched_cost_ratio_ci(llm, sh, bl, 0.9, n_boot=300)
    assert ci["low"] == ci["high"] == pytest.approx(2.0)  # the 60% point never reaches 90%
    assert ci["p_shepherding_cheaper"] == 1.0 and ci["resamples"] == 300
    # the same two policies with noisy, overlapping costs: an interval around 1 and a split verdict
    noisy_s = [([1.0] * n, [rng.uniform(0, 2) for _ in range(n)])]
    noisy_b = [([1.0] * n, [rng.uniform(0, 2) for _ in range(n)])]
    ci = m.matched_cost_ratio_ci(llm, noisy_s, noisy_b, 1.0, n_boot=300)
    assert ci["low"] < 1.0 < ci["high"] and 0.05 < ci["p_shepherding_cheaper"] < 0.95
    # a side that never reaches the target: no interval
    assert m.matched_cost_ratio_ci(llm, [([0.0] * n, [1.0] * n)], bl, 0.9, n_boot=50) is None
    with pytest.raises(ValueError):
        m.matched_cost_ratio_ci(llm, [([1.0], [1.0])], bl, 0.9)


def test_crossfit_scores_each_halfs_choice_on_the_other_half():
    """A point that reaches the target only by luck on some items is chosen where it looks good and
    misses on the other half; a steady point meets it everywhere. Costs are scored on the held-out half."""
    import numpy as np

    from shepherd.evaluation.metrics import crossfit_matched_cost

    n = 200
    rng = np.random.default_rng(1)
    llm = [1.0] * n
    steady = ([1.0] * n, [2.0] * n)                             # always right, costs 2
    lucky = (list((rng.random(n) < 0.9).astype(float)), [1.0] * n)  # 90% right, costs 1
    never = ([0.0] * n, [0.1] * n)
    out = crossfit_matched_cost(llm, {"shepherding": [steady, never], "baseline": [lucky]}, 0.9, splits=50)
    sh, bl = out["sides"]["shepherding"], out["sides"]["baseline"]
    assert sh["cost_per_query"] == 2.0 and sh["target_met_share"] == 1.0 and sh["not_reached_share"] == 0
    # the 90%-right point reaches 90% on about half the halves it is chosen on, and then misses on the other
    # half about half the time
    assert 0.2 < bl["not_reached_share"] < 0.8 and 0.2 < bl["target_met_share"] < 0.8
    r = out["ratio_over_shepherding"]["baseline"]
    assert r is None or r["median"] == 0.5
    assert crossfit_matched_cost([1.0, 1.0], {"a": [steady]}, 0.9) is None  # too few items
