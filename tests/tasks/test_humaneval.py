"""HumanEval: the canonical solutions pass, and chat-style answers are graded the way they are meant."""

from __future__ import annotations

import pytest

from shepherd.tasks import grade_many


def test_all_164_canonical_solutions_pass(humaneval):
    items = humaneval.load()
    assert len(items) == 164
    grades = grade_many(humaneval, items, [i.reference for i in items], workers=2)
    assert [(i.id, g.reason) for i, g in zip(items, grades) if not g.correct] == []


def _item(humaneval, task_id):
    return next(i for i in humaneval.load() if i.id == task_id)


def test_chat_answer_repeating_the_whole_function_in_a_fence(humaneval):
    item = _item(humaneval, "HumanEval/0")
    full = item.metadata["prompt"] + item.reference
    response = f"Sure! Here is the implementation:\n\n```python\n{full}```\n\nIt compares every pair."
    grade = humaneval.grade(item, response)
    assert grade.correct, grade.reason


def test_a_helper_from_the_prompt_stays_available(humaneval):
    item = _item(humaneval, "HumanEval/38")  # decode_cyclic uses encode_cyclic, defined in the prompt
    response = ("```python\ndef decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n```")
    assert humaneval.grade(item, response).correct


def test_body_lines_without_indentation(humaneval):
    item = _item(humaneval, "HumanEval/23")  # strlen
    assert humaneval.grade(item, "```python\nreturn len(string)\n```").correct


def test_wrong_code_fails_with_the_reason(humaneval):
    item = _item(humaneval, "HumanEval/23")
    grade = humaneval.grade(item, "```python\ndef strlen(string: str) -> int:\n    return len(string) + 1\n```")
    assert not grade.correct and "AssertionError" in grade.reason


@pytest.mark.parametrize("response, reason", [
    ("I cannot help with that.", "no code"),
    ("```python\ndef strlen(string):\n    return len(\n```", "SyntaxError"),
    ("", "no code"),
])
def test_no_usable_code(humaneval, response, reason):
    grade = humaneval.grade(_item(humaneval, "HumanEval/23"), response)
    assert not grade.correct and reason in grade.reason


def test_hinted_answer_is_graded_as_a_whole(humaneval):
    item = _item(humaneval, "HumanEval/23")
    hint = "```python\ndef strlen(string: str) -> int:\n"
    continuation = "    return len(string)\n```"
    assert humaneval.grade(item, hint + continuation).correct
