"""GSM8K grading: every gold answer grades as correct in every usual format; perturbed answers do not."""

from __future__ import annotations

from fractions import Fraction

import pytest

from shepherd.tasks import Item
from shepherd.tasks.math_grading import extract_number, parse_number


def test_all_test_items_load(gsm8k):
    items = gsm8k.load()
    assert len(items) == 1319
    assert all(i.reference.lstrip("-").isdigit() for i in items)


def test_every_gold_solution_grades_correct(gsm8k):
    items = gsm8k.load()
    failures = [i.id for i in items if not gsm8k.grade(i, i.metadata["solution"]).correct]
    assert failures == []


def _with_commas(n: int) -> str:
    return f"{n:,}"


def test_every_gold_answer_grades_correct_in_model_formats(gsm8k):
    failures = []
    for item in gsm8k.load():
        n = int(item.reference)
        responses = [
            f"Let me think. 3 apples and 4 pears.\nThe answer is {n}.",
            f"So the total is \\boxed{{{n}}}.",
            f"Step 1: 12 + 7 = 19\n#### {_with_commas(n)}",
            f"The answer is {_with_commas(n)}.00",
            f"The answer is ${n} dollars.",
        ]
        for response in responses:
            if not gsm8k.grade(item, response).correct:
                failures.append((item.id, response))
    assert failures == []


def test_perturbed_answers_grade_wrong(gsm8k):
    accepted = []
    for item in gsm8k.load():
        n = int(item.reference)
        for wrong in {n + 1, n - 1, n * 10 + 1, -n if n else 7}:
            grade = gsm8k.grade(item, f"The answer is {wrong}.")
            if grade.correct:
                accepted.append((item.id, wrong))
    assert accepted == []


ITEM = Item("gsm8k/test/x", "q", "18")


@pytest.mark.parametrize("response", [
    "The answer is 18.", "The answer is 18.00.", "The answer is $18.", "The answer is 18 dollars.",
    "Final answer: 18", "The answer is: **18**", "so she makes \\boxed{18} dollars", "#### 18",
    "First 9 + 9 = 18. She has 18 eggs left", "The answer is \\boxed{18}.",
    "She pays 20 - 2 = 18.\nThe answer is 18", "The answer is 18.0",
])
def test_formats_of_a_correct_answer(gsm8k, response):
    grade = gsm8k.grade(ITEM, response)
    assert grade.correct, grade
    assert grade.extracted == "18"


@pytest.mark.parametrize("response", [
    "The answer is 19.", "The answer is 1.8", "The answer is -18.", "The answer is 180.",
    "18 eggs at first, then 3 broke. The answer is 15.", "The answer is 18.5",
])
def test_formats_of_a_wrong_answer(gsm8k, response):
    assert not gsm8k.grade(ITEM, response).correct


def test_negative_and_thousands():
    assert gsm8k_grade("-3", "The answer is -3.")
    assert gsm8k_grade("-3", "The temperature drops to −3 degrees.\nThe answer is −3")
    assert not gsm8k_grade("-3", "The answer is 3.")
    assert gsm8k_grade("1450000", "The answer is 1,450,000.")
    assert gsm8k_grade("1450000", "The answer is $1,450,000.00")


def gsm8k_grade(reference: str, response: str) -> bool:
    from shepherd.tasks.gsm8k import GSM8K

    return GSM8K().grade(Item("x", "q", reference), response).correct


def test_last_marker_wins_and_no_number_is_explained(gsm8k):
    assert gsm8k.grade(ITEM, "The answer is 12. Wait, I made a mistake. The answer is 18.").correct
    assert not gsm8k.grade(ITEM, "\\boxed{18} ... on reflection the answer is 20").correct
    grade = gsm8k.grade(ITEM, "I do not know.")
    assert not grade.correct and grade.extracted is None and "no number" in grade.reason


def test_parse_number():
    assert parse_number("1,234.50") == Fraction("1234.5")
    assert parse_number("3/4") == Fraction(3, 4)
    assert parse_number("\\frac{3}{4}") == Fraction(3, 4)
    assert parse_number("-$5") == -5
    assert parse_number("no digits") is None
    assert extract_number("a 5 b 6 c")[0] == 6
