"""HumanEval in completion style: the assistant turn starts with the stub, the answer is the body only.
The grader puts the stub back; a closing fence, prose after it, prose or demo code after the body, and an
answer that re-types the whole function after all are all read as a reader would."""

from __future__ import annotations

import pytest

from shepherd.tasks import get_task, grade_many


@pytest.fixture(scope="module")
def completion(data_dir):
    return get_task("humaneval-completion", data_dir, source="local")


def _item(task, task_id):
    return next(i for i in task.load() if i.id == task_id)


def test_the_stub_starts_the_assistant_turn_and_the_user_message_asks_for_the_body(completion, humaneval):
    item = _item(completion, "HumanEval/23")
    assert completion.prompt_style == "completion" and humaneval.prompt_style == "chat"
    assert completion.prefix(item) == "```python\n" + item.metadata["prompt"]
    assert humaneval.prefix(item) == ""
    (msg,) = completion.messages(item)
    assert item.metadata["prompt"].rstrip() in msg["content"] and "body only" in msg["content"]
    assert completion.messages(item) != humaneval.messages(item)


def test_every_canonical_body_passes_as_the_response(completion):
    items = completion.load()
    grades = grade_many(completion, items, [i.reference for i in items], workers=2)
    assert [(i.id, g.reason) for i, g in zip(items, grades) if not g.correct] == []


@pytest.mark.parametrize("tail", [
    "",
    "```",
    "```\n",
    "```\n\nThis function walks the list once and returns its length.",
    "\nThis function returns the length.",  # prose without a closing fence
    "\nprint(strlen('abc'))\nassert strlen('') == 0\n```",  # demo code after the body
])
def test_a_body_with_whatever_follows_it(completion, tail):
    item = _item(completion, "HumanEval/23")  # strlen
    grade = completion.grade(item, "    return len(string)\n" + tail)
    assert grade.correct, grade.reason
    assert grade.extracted == "    return len(string)\n"


def test_a_wrong_body_fails_and_a_broken_one_says_why(completion):
    item = _item(completion, "HumanEval/23")
    assert "AssertionError" in completion.grade(item, "    return len(string) + 1\n```").reason
    broken = completion.grade(item, "    if len(string:\n        return 0\n    return len(string)\n```")
    assert not broken.correct and "SyntaxError" in broken.reason


@pytest.mark.parametrize("response", [
    "def strlen(string: str) -> int:\n    return len(string)\n```\nDone.",  # re-typed the function
    "return len(string)\n```",  # a body line flush left
])
def test_an_answer_that_is_not_a_body_is_read_as_chat_style(completion, response):
    assert completion.grade(_item(completion, "HumanEval/23"), response).correct


@pytest.mark.parametrize("response", ["", "```", "I cannot help with that."])
def test_no_code(completion, response):
    grade = completion.grade(_item(completion, "HumanEval/23"), response)
    assert not grade.correct and "no code" in grade.reason


def test_a_hinted_body_is_graded_as_a_whole(completion):
    item = _item(completion, "HumanEval/0")
    body = item.reference
    hint, rest = body[:len(body) // 3], body[len(body) // 3:]
    assert completion.grade(item, hint + rest + "```\n").correct


def test_behaviour_of_body_only_samples(completion):
    """Agreement compares samples by what their code computes on the docstring's example calls: a body
    works as a whole function does."""
    item = _item(completion, "HumanEval/0")  # has_close_elements
    canonical = completion.behaviour(item, item.reference + "```")
    assert canonical == "False\nTrue"
    brute = ("    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
             "```\nA one-liner.")
    assert completion.behaviour(item, brute) == canonical
    assert completion.behaviour(item, "    return True\n```") == "True\nTrue"
    assert completion.behaviour(item, "") is None


@pytest.mark.slow
def test_real_models_write_the_body_and_the_slm_continues_stub_plus_hint(completion, slm_backend, llm_backend):
    """On the local Qwen pair: the LLM, its turn already holding the stub, writes the body only (no
    signature or docstring re-typed: fewer tokens than the stub alone); a 3-token hint cut from that body
    is continued by the SLM inside the same assistant turn (stub + hint), and the whole passes."""
    import asyncio

    from shepherd.models.base import GenerationRequest
    from shepherd.policies import FixedHint, LLMOnly
    from shepherd.runner import Runner, RunSettings
    from shepherd.tasks.code_extract import is_body

    item = _item(completion, "HumanEval/2")  # truncate_number
    stub = completion.prefix(item)
    request = GenerationRequest.create(completion.messages(item), prefix=stub, max_tokens=64)
    runner = Runner(slm_backend, llm_backend, settings=RunSettings(max_tokens=64))

    llm = asyncio.run(runner.answer(request, LLMOnly()))
    assert "def truncate_number" not in llm.text and '"""' not in llm.text and is_body(llm.text), llm.text
    stub_tokens = llm_backend.count_tokens(item.metadata["prompt"])
    assert llm.usage["llm"].completion_tokens < stub_tokens / 3  # a chat answer re-types all of them first
    assert llm.usage["llm"].prompt_tokens > stub_tokens  # the stub is input, billed as prompt
    assert completion.grade(item, llm.text).correct

    hinted = asyncio.run(runner.answer(request, FixedHint(tokens=3)))
    assert hinted.hint_tokens == 3 and llm.text.startswith(hinted.hint_text)
    (_, cont), = [(r, g) for r, g in hinted.generations if r == "slm"]
    assert cont.prompt_tokens >= llm.usage["llm"].prompt_tokens + 3  # it read the stub and the hint
    assert not cont.text.lstrip().startswith(("def ", "```", "from ", "import "))  # no restart
    assert hinted.text == hinted.hint_text + cont.text and is_body(hinted.text)
    assert completion.grade(item, hinted.text).correct, hinted.text
