"""MBPP: the reference solutions of the test split pass; known-broken items are listed, never skipped."""

from __future__ import annotations

from shepherd.tasks import grade_many
from shepherd.tasks.mbpp import BROKEN, QUIRKS, SPLITS


def test_splits_follow_upstream_task_ids(mbpp):
    for split, (low, high) in SPLITS.items():
        ids = [i.metadata["task_id"] for i in mbpp.load(split)]
        assert ids == list(range(low, high + 1)), split


def test_test_split_reference_solutions_pass(mbpp):
    items = mbpp.load("test")
    assert len(items) == 500
    grades = grade_many(mbpp, items, [i.reference for i in items], workers=2)
    failing = {i.metadata["task_id"]: g.reason for i, g in zip(items, grades) if not g.correct}
    assert set(failing) == set(BROKEN), failing


def test_broken_and_quirky_items_carry_a_reason():
    assert all(isinstance(k, int) and reason for k, reason in {**BROKEN, **QUIRKS}.items())


def test_messages_show_the_tests_and_ask_for_a_fenced_function(mbpp):
    item = mbpp.load(limit=1)[0]
    content = mbpp.messages(item)[0]["content"]
    assert item.question in content and item.metadata["test_list"][0] in content and "```python" in content


def test_chat_answer_with_demo_code(mbpp):
    item = next(i for i in mbpp.load() if i.metadata["task_id"] == 17)  # square perimeter
    response = ("Here's the function:\n```python\ndef square_perimeter(a):\n    return 4 * a\n\n"
                "print(square_perimeter(10))\nassert square_perimeter(1) == 5\n```")
    grade = mbpp.grade(item, response)
    assert grade.correct, grade.reason
    wrong = mbpp.grade(item, "```python\ndef square_perimeter(a):\n    return a * a\n```")
    assert not wrong.correct and "AssertionError" in wrong.reason


def test_setup_code_runs_after_the_solution(mbpp):
    item = next(i for i in mbpp.load() if i.metadata["task_id"] == 367)
    assert "Node(" in item.metadata["test_setup_code"]
    assert mbpp.grade(item, item.reference).correct
