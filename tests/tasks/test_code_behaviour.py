"""Behaviour keys: what a sampled program computes on the example calls its prompt shows, run in the
sandbox. Agreement-based policies compare code samples by them."""

from __future__ import annotations

import pytest

from shepherd.tasks.code_task import assert_calls, doctest_calls
from shepherd.tasks.registry import get_task


def test_example_calls_come_from_the_prompt_only():
    prompt = 'def f(x):\n    """Twice.\n    >>> f(2)\n    4\n    >>> import os\n    >>>   f(-1)\n    -2\n    """\n'
    assert doctest_calls(prompt) == ["f(2)", "f(-1)"]  # statements (import) are not calls to compare
    # other example styles, with the entry point: literal arguments only, expected values dropped
    prompt = ('def g(s, k=1):\n    """For example:\n    g("ab", k=2) == "ba"\n    g([1, -2]) ==> 3\n'
              '    g(x) => 1\n    >>> g(3) == 4\n    True\n    eg(1) ➞ 2\n    """\n')
    assert doctest_calls(prompt, "g") == ["g(3)", "g('ab', k=2)", "g([1, -2])"]
    assert assert_calls(["assert f(2) == 4", "assert math.isclose(g(1), 3.1, rel_tol=0.01)", "assert not h(0)",
                         "assert k([1, 2])", "x = 1", "assert broken("]) == ["f(2)", "g(1)", "h(0)", "k([1, 2])"]


@pytest.fixture(scope="module")
def humaneval():
    task = get_task("humaneval")
    return task, task.load(limit=3)


def fence(code: str) -> str:
    return f"```python\n{code}\n```"


def test_programs_that_compute_the_same_behave_the_same(humaneval):
    task, items = humaneval
    item = items[0]  # has_close_elements, two doctest examples
    canonical = task.behaviour(item, fence(item.metadata["prompt"] + item.reference))
    assert canonical == "False\nTrue"  # the docstring's own expected outputs
    brute = ("def has_close_elements(numbers, threshold):\n"
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])")
    assert task.behaviour(item, fence(brute)) == canonical
    assert task.behaviour(item, fence("def has_close_elements(numbers, threshold):\n    return False")) == "False\nFalse"


def test_programs_that_do_not_run_agree_with_no_one(humaneval):
    task, items = humaneval
    item = items[0]
    head = "def has_close_elements(numbers, threshold):\n"
    assert task.behaviour(item, fence(head + "    raise ValueError('x')")) is None  # every call raises
    assert task.behaviour(item, fence(head + "    while True:\n        pass")) is None  # times out
    assert task.behaviour(item, fence("import os\nos._exit(0)\n" + head + "    return 1")) is None  # exits early
    assert task.behaviour(item, "no code here") is None


def test_mbpp_probes_use_the_prompts_asserts_without_their_expected_values():
    task = get_task("mbpp")
    item = task.load("test", limit=1)[0]
    assert all("==" not in p for p in task.probes(item))
    right = task.behaviour(item, fence(item.reference))
    assert right is not None and len(right.splitlines()) == len(task.probes(item))
    wrong = f"def {item.metadata['entry_point']}(*a):\n    return None"
    assert task.behaviour(item, fence(wrong)) == "\n".join(["None"] * len(task.probes(item)))


def test_the_same_program_behaves_the_same_on_every_run(humaneval):
    """A study replays samples and compares the documents byte for byte: a program's key must not change
    with the hash seed (sets of strings), `random`, or memory addresses in reprs."""
    task, items = humaneval
    item = items[0]
    code = fence("import random\n"
                 "def has_close_elements(numbers, threshold):\n"
                 "    words = list({'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'})\n"
                 "    return (words, random.random(), object())")
    keys = set()
    for _ in range(4):
        task.__dict__.pop("_behaviour_cache", None)
        keys.add(task.behaviour(item, code))
    assert len(keys) == 1 and None not in keys
    assert "0x" not in keys.pop()


def test_a_fixed_hash_seed_is_honoured_by_the_sandbox():
    from shepherd.tasks.sandbox import SandboxOptions, run_python

    prog = "print(hash('shepherd'))"
    fixed = {run_python(prog, options=SandboxOptions(hash_seed=0)).stdout for _ in range(3)}
    free = {run_python(prog).stdout for _ in range(3)}
    assert len(fixed) == 1 and len(free) == 3
