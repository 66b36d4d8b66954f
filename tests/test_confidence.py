"""Answer-side confidence features: hand-built token log-probs with known answers."""

import ast
import math
from pathlib import Path

import pytest

from shepherd import confidence as c
from shepherd.models.base import TokenLogprobs


def _lp(logprobs, entropies=None, margins=None, ends=None, exact=True):
    n = len(logprobs)
    return TokenLogprobs(list(logprobs), list(entropies if entropies is not None else [0.5] * n),
                         list(margins if margins is not None else [1.0] * n),
                         list(ends if ends is not None else range(1, n + 1)), entropy_exact=exact)


EMPTY = _lp([])


def test_mean_min_and_entropies():
    lp = _lp([-0.1, -0.5, -2.0, -0.4], entropies=[0.2, 1.5, 0.1, 0.6], margins=[3.0, 0.1, 0.2, 0.3])
    assert c.mean_logprob(lp) == pytest.approx(-0.75)
    assert c.min_logprob(lp) == -2.0
    assert c.mean_entropy(lp) == pytest.approx(0.6)
    assert c.max_entropy(lp) == 1.5
    assert c.first_token_margin(lp) == 3.0


def test_quantiles_against_the_sorted_values():
    values = [-0.3, -4.0, -0.1, -1.0, -0.2, -2.0, -0.05, -0.5, -3.0, -0.7, -0.01]  # 11: positions exact at 0.1k
    lp = _lp(values)
    s = sorted(values)
    assert c.quantile_logprob(lp, 0.0) == s[0] == c.min_logprob(lp)
    assert c.quantile_logprob(lp, 1.0) == s[-1]
    assert c.quantile_logprob(lp, 0.1) == pytest.approx(s[1])
    assert c.quantile_logprob(lp, 0.5) == pytest.approx(s[5])
    # between two sorted values: linear interpolation (0.05 * 10 = 0.5, halfway between s[0] and s[1])
    assert c.quantile_logprob(lp, 0.05) == pytest.approx((s[0] + s[1]) / 2)
    assert c.quantile_logprob(_lp([-0.7]), 0.25) == -0.7
    with pytest.raises(ValueError):
        c.quantile_logprob(lp, 1.5)


def test_lowest_window_finds_the_dip_in_the_middle():
    xs = [-0.1] * 10 + [-3.0, -2.0, -4.0] + [-0.1] * 10
    lp = _lp(xs)
    assert c.lowest_window_mean(lp, 3) == pytest.approx(-3.0)
    # a window of 4 straddles the dip with one easy token; the best placement is still around the dip
    assert c.lowest_window_mean(lp, 4) == pytest.approx((-9.0 - 0.1) / 4)
    assert c.lowest_window_mean(lp, 1) == -4.0
    # brute force over every window agrees
    for w in (2, 5, 7):
        brute = min(sum(xs[i:i + w]) / w for i in range(len(xs) - w + 1))
        assert c.lowest_window_mean(lp, w) == pytest.approx(brute)
    # fewer tokens than the window: the mean of all
    assert c.lowest_window_mean(_lp([-1.0, -2.0]), 16) == pytest.approx(-1.5)
    assert c.lowest_window_mean(lp, len(xs)) == pytest.approx(c.mean_logprob(lp))
    with pytest.raises(ValueError):
        c.lowest_window_mean(lp, 0)


def test_empty_is_none_everywhere():
    for fn in (c.mean_logprob, c.min_logprob, c.lowest_window_mean, c.mean_entropy, c.max_entropy,
               c.first_token_margin):
        assert fn(EMPTY) is None
    assert c.quantile_logprob(EMPTY, 0.1) is None
    assert c.answer_confidence(EMPTY, "abc", (0, 3)) is None
    f = c.features(EMPTY, "The answer is 4", "4")
    assert set(f) == set(c.FEATURE_NAMES) and all(v is None for v in f.values())


def test_answer_confidence_picks_only_the_overlapping_tokens():
    text = "So x = 12. Answer: 42."
    #        tokens:  "So x = " | "12" | ". Answer: " | "4" | "2" | "."
    ends = [7, 9, 19, 20, 21, 22]
    lp = _lp([-0.1, -0.2, -0.3, -1.0, -3.0, -0.05], ends=ends)
    span = c.final_answer_span(text, "42")
    assert span == (19, 21) and text[slice(*span)] == "42"
    assert c.answer_confidence(lp, text, span) == pytest.approx(-2.0)
    # a span starting inside a token counts that token; touching a boundary does not
    assert c.answer_confidence(lp, text, (8, 9)) == pytest.approx(-0.2)
    assert c.answer_confidence(lp, text, (9, 10)) == pytest.approx(-0.3)
    assert c.answer_confidence(lp, text, (8, 11)) == pytest.approx(-0.25)
    assert c.answer_confidence(lp, text, None) is None
    # tokens that end before the span (the text runs on past the logged tokens): none overlap
    assert c.answer_confidence(_lp([-1.0], ends=[2]), text, (19, 21)) is None


def test_final_answer_span_is_the_last_occurrence_and_not_inside_a_longer_number():
    text = "First 42 apples, then 142 more, and 42."
    assert c.final_answer_span(text, "42") == (36, 38)
    assert c.final_answer_span("The total is 142.", "42") is None
    assert c.final_answer_span("It is 4, not 45 or 4.5 or 4,500", "4") == (6, 7)  # later numbers only start with 4
    assert c.final_answer_span("It costs 3.5 or 13.50", "3.5") == (9, 12)
    assert c.final_answer_span("no answer here", "7") is None
    assert c.final_answer_span("", "7") is None
    assert c.final_answer_span("x", None) is None
    assert c.final_answer_span("The answer is (B).", "(B)") == (14, 17)


def test_final_answer_span_tries_thousands_separators():
    text = "We get 1234 then, rounding, 1,234,000 wait no: 1,234"
    assert c.final_answer_span(text, "1234") == (47, 52)  # the grouped form, last, not the prefix of 1,234,000
    assert c.final_answer_span("so 1234567 in all", "1,234,567") == (3, 10)
    assert c.final_answer_span("so -1234.5", "-1,234.5") == (3, 10)


def _example(confident: bool) -> tuple[TokenLogprobs, str, str]:
    text = "Step one. Step two. The answer is 42."
    ends = [5, 9, 14, 19, 23, 30, 33, 36, 37]  # ... " is" | " 42" ends at 36 ...
    n = len(ends)
    if confident:
        return _lp([-0.05] * n, [0.1] * n, [4.0] * n, ends), text, "42"
    return (_lp([-0.4, -1.0, -2.0, -2.5, -0.6, -0.3, -0.5, -3.0, -0.2], [1.2, 2.0, 2.5, 1.0, 0.9, 0.8, 0.7, 3.0,
                                                                          0.4], [0.2] * n, ends), text, "42")


def test_features_keys_and_higher_means_more_confident():
    sure, shaky = c.features(*_example(True)), c.features(*_example(False))
    assert tuple(sure) == tuple(shaky) == c.FEATURE_NAMES
    assert len(set(c.FEATURE_NAMES)) == len(c.FEATURE_NAMES)
    for name in c.FEATURE_NAMES:
        assert sure[name] is not None and shaky[name] is not None, name
        assert sure[name] > shaky[name], name
    lp, _, _ = _example(False)
    assert shaky["answer_logprob"] == pytest.approx(-3.0)  # only the " 42" token
    assert shaky["neg_max_entropy"] == -3.0 and shaky["first_margin"] == 0.2
    assert shaky["lowest_window16"] == pytest.approx(c.mean_logprob(lp))  # 9 tokens < 16
    assert all(math.isfinite(v) for v in shaky.values())


def test_features_without_text_or_answer_leave_answer_logprob_none():
    lp, text, _ = _example(True)
    assert c.features(lp)["answer_logprob"] is None
    assert c.features(lp, text)["answer_logprob"] is None
    assert c.features(lp, text, "99")["answer_logprob"] is None
    assert c.features(lp)["mean_logprob"] == pytest.approx(-0.05)


def test_module_stays_light():
    """Plain Python: nothing from shepherd but the models' base types, and no numpy."""
    tree = ast.parse(Path(c.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] not in ("numpy", "shepherd") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.module != "numpy" and not (node.module or "").startswith("numpy")
            if node.level or (node.module or "").startswith("shepherd"):
                assert node.module in ("models.base", "shepherd.models.base"), node.module
