"""CNK12: the loader's keep/leave-out decisions, and LaTeX grading through math-verify."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from shepherd.tasks import Item, grade_many
from shepherd.tasks.cnk12 import CNK12, classify
from shepherd.tasks.math_grading import (
    MathVerifier,
    choice_letters,
    extract_latex,
    latex_equal,
    parse_options,
)


def test_loader_keeps_and_leaves_out_with_reasons(cnk12):
    items = cnk12.load()
    dropped = {d.id: d.reason for d in cnk12.dropped}
    assert len(items) + len(dropped) == 246
    assert len(items) == 213
    assert dropped["cnk12/ed277eece7b7d882"] == "damaged option list: option D is empty"
    assert dropped["cnk12/21142f5ece3ce1ef"] == "no reference answer"
    assert "sentence" in dropped["cnk12/550ac56da9d9f0d8"]
    reasons = Counter(r.split(":")[0] for r in dropped.values())
    assert reasons["multi-part"] == 29
    assert all(i.metadata["kept"] for i in items)
    kinds = Counter(i.metadata["answer_type"] for i in items)
    assert kinds == {"choice": 130, "expression": 83}
    assert all(i.reference in {"A", "B", "C", "D", "AC", "BD"} for i in items if i.metadata["answer_type"] == "choice")


def test_every_kept_item_grades_correct_against_its_own_solution(cnk12):
    items = cnk12.load()
    grades = grade_many(cnk12, items, [i.metadata["solution"] for i in items], workers=2)
    wrong = [(i.id, i.reference, g.extracted, g.reason) for i, g in zip(items, grades) if not g.correct]
    assert wrong == []


def test_openr1_schema_rows():
    base = {"solution": "", "problem_type": "Algebra", "source": "cn_k12"}
    item, why = classify({**base, "problem": "Solve 2x=1.", "answer": "\\frac{1}{2}", "uuid": "a",
                          "question_type": "math-word-problem"})
    assert item is not None and item.reference == "\\frac{1}{2}" and why == "OpenR1 answer field"
    item, why = classify({**base, "problem": "Show that ...", "answer": "proof", "uuid": "b", "question_type": "proof"})
    assert item is None and "proof" in why
    item, why = classify({**base, "problem": "Which? A: 1 B: 2 C: 3 D: 4", "answer": "C", "uuid": "c",
                          "question_type": "MCQ"})
    assert item is not None and item.reference == "C" and item.metadata["choices"]["C"] == "3"
    item, why = classify({**base, "problem": "Which?\nA: 1\nB: 2", "answer": "D", "uuid": "d", "question_type": "MCQ"})
    assert item is None and "not among the options" in why


# (gold, prediction, equivalent?)
EQUIVALENCES = [
    ("\\frac{1}{2}", "0.5", True),
    ("\\dfrac{15}{16}", "\\frac{15}{16}", True),
    ("\\frac{3}{4}", "3/4", True),
    ("\\frac{1}{2}", "0.51", False),
    ("[-1, \\dfrac{1}{3}]", "[-1,\\frac{1}{3}]", True),
    ("[-1,2]", "(-1,2)", False),
    ("\\left[ \\frac{1}{2}, \\frac{2}{3} \\right)", "[0.5, \\frac{2}{3})", True),
    ("\\{1, 2, 5\\}", "\\{5, 1, 2\\}", True),
    ("\\{1, 2, 5\\}", "\\{1, 2\\}", False),
    ("2\\sqrt{6}", "\\sqrt{24}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\frac{4\\sqrt{3}}{3}", "\\frac{4}{\\sqrt{3}}", True),
    ("2\\sqrt{6}", "\\sqrt{6}", False),
    ("x=3", "3", True),
    ("n = 4", "4", True),
    ("x=3", "4", False),
    ("\\pm 2", "2 \\text{ or } -2", True),
    ("\\frac{\\pi}{4}", "\\frac{1}{4}\\pi", True),
    ("35\\pi", "35π", True),
    ("(-2, 0)", "(-2,0)", True),
    ("-1-i", "-i-1", True),
    ("4x + 3y - 4 = 0", "3y + 4x - 4 = 0", True),
    ("1.738\\times 10^{6}", "1738000", True),
    ("5 \\text{ cm}", "5", True),
    ("e - \\frac{1}{e}", "e - e^{-1}", True),
    ("-\\frac{2}{3}", "\\frac{2}{3}", False),
]


@pytest.mark.parametrize("gold, pred, expected", EQUIVALENCES)
def test_latex_equivalence(gold, pred, expected):
    equal, why = latex_equal(gold, pred)
    assert equal is expected, why


@pytest.mark.parametrize("answer, letters", [
    ("B", "B"), ("\\text{B}", "B"), ("(B)", "B"), ("B: 40", "B"), ("\\text{C: } y^2=-8x", "C"), ("C.", "C"),
    ("A and C", "AC"), ("BD", "BD"), ("$\\boxed{D}$", None), ("42", None), ("x > 1", None),
])
def test_choice_letters(answer, letters):
    assert choice_letters(answer) == letters


def test_parse_options():
    assert parse_options("Which one? ( )\nA: 1\nB: $\\frac{1}{2}$\nC: 3\nD: 4") == {
        "A": "1", "B": "$\\frac{1}{2}$", "C": "3", "D": "4"}
    assert parse_options("(A) yes (B) no") == {"A": "yes", "B": "no"}
    assert parse_options("Find x.") == {}


CHOICE = Item("cnk12/mc", "Which? A: 4019 B: $\\frac{1}{4019}$ C: 4021 D: $\\frac{1}{4021}$", "B",
              {"answer_type": "choice", "choices": {"A": "4019", "B": "\\frac{1}{4019}", "C": "4021",
                                                     "D": "\\frac{1}{4021}"}})


@pytest.mark.parametrize("response, correct", [
    ("... The answer is B.", True),
    ("Therefore the correct choice is $\\boxed{\\text{B}}$.", True),
    ("The answer is (B) $\\frac{1}{4019}$.", True),
    ("The answer is $\\frac{1}{4019}$.", True),  # the value instead of the letter
    ("The answer is A.", False),
    ("The answer is $\\frac{1}{4021}$.", False),
    ("I am not sure.", False),
])
def test_multiple_choice_grading(response, correct):
    assert CNK12().grade(CHOICE, response).correct is correct


EXPR = Item("cnk12/e", "Solve.", "\\frac{\\pi}{4}", {"answer_type": "expression"})


@pytest.mark.parametrize("response, correct", [
    ("So $\\theta = \\frac{\\pi}{4}$.\nThe answer is $\\frac{\\pi}{4}$.", True),
    ("Hence $\\boxed{\\dfrac{\\pi}{4}}$", True),
    ("The answer is $45^\\circ$... no: the answer is \\frac{\\pi}{3}.", False),
    ("We get $x = \\frac{\\pi}{4}$", True),
])
def test_expression_grading(response, correct):
    assert CNK12().grade(EXPR, response).correct is correct


def test_extract_latex():
    assert extract_latex("Thus the answer is $\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert extract_latex("so $y = 2$ and $\\boxed{x=3}$ holds") == "x=3"
    assert extract_latex("the answer is obtained by symmetry, so \\boxed{7}") == "7"


def test_grading_works_from_worker_threads():
    """math-verify's own timeout needs SIGALRM (main thread only); ours runs it out of process."""
    results = []

    def check(k: int) -> bool:
        assert threading.current_thread() is not threading.main_thread()
        return latex_equal(f"\\frac{{{k}}}{{2}}", f"{k / 2}")[0] and not latex_equal("\\sqrt{2}", f"{k}")[0]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(check, range(1, 13)))
    assert all(results)


def test_a_check_that_runs_too_long_is_stopped_and_graded_wrong():
    verifier = MathVerifier(max_workers=1, timeout_s=1.0)
    try:
        equal, why = verifier.equal("(x+1)^{10000}", "(x+2)^{10000}")
        assert equal is None and "timed out" in why
        # the pool recovers: a fresh worker answers the next check
        assert verifier.equal("\\frac{1}{2}", "0.5")[0] is True
        equal, why = latex_equal("(x+1)^{10000}", "(x+2)^{10000}", verifier=verifier, timeout_s=1.0)
        assert equal is False and "timed out" in why
    finally:
        verifier.close()
