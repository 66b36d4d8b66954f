"""A small trace store whose every outcome is known in advance, written by the project's own sweep
driver into a real SQLite `TraceStore` with scripted models (no model is involved; nothing here shows a
model working, only that the baselines and the evaluation read and replay a store correctly).

Item i of the fake task "fakemath" is easy or hard, and says so in its wording ("Simple sum" vs "Tricky
multi-step"), so a router can learn it from the query:
  - the LLM answers right (in 16 words), except items with i % 7 == 6;
  - the SLM alone answers easy items right ("The answer is N.") and hard ones wrong, hedging ("I am not
    sure ..."); given a hint of at least 5 words of the LLM's answer it continues the LLM's answer;
  - sampled SLM answers (temperature > 0) agree on the right number for easy items; for hard items they
    scatter (the seed shifts the number), except items with i % 6 == 5, where they agree on a wrong one.
"""

from __future__ import annotations

import re

from shepherd.models.base import GenerationRequest
from shepherd.models.scripted import ScriptedBackend
from shepherd.tasks.base import Grade, Item

HINT_WORDS = 5




def is_hard(i: int) -> bool:
    return i % 2 == 1


def llm_wrong(i: int) -> bool:
    return i % 7 == 6


def samples_agree_wrong(i: int) -> bool:
    return is_hard(i) and i % 6 == 5


class FakeMath:
    name = "fakemath"
    kind = "math"
    default_split = "test"
    splits = ("test",)
    max_tokens = 64

    def __init__(self, data=None, *, source: str = "auto", n: int = 24):
        self.items = []
        for i in range(n):
            a, b = i + 2, 3 * i + 1
            if is_hard(i):
                q = f"Tricky multi-step puzzle {i}: a crate holds {a} boxes of {b} apples; how many apples?"
                ref = a * b
            else:
                q = f"Simple sum {i}: what is {a} plus {b}?"
                ref = a + b
            self.items.append(Item(f"fakemath/{i}", q, str(ref), {"index": i}))
        self.grades = 0

    def load(self, split=None, limit=None, seed=None, ids=None):
        if ids is not None:
            by = {it.id: it for it in self.items}
            return [by[i] for i in ids]
        return self.items[: limit or len(self.items)]

    def messages(self, item):
        return [{"role": "user", "content": item.question}]

    def grade(self, item, response: str) -> Grade:
        self.grades += 1
        nums = re.findall(r"-?\d+", response)
        if not nums:
            return Grade(False, None, "no number")
        return Grade(nums[-1] == item.reference, nums[-1], "compared")


_TASK = FakeMath(n=64)


def _item(request: GenerationRequest) -> tuple[int, Item]:
    q = request.messages[-1][1]
    i = int(re.search(r"(?:puzzle|sum) (\d+)", q).group(1))
    return i, _TASK.items[i]


def llm_answer(request: GenerationRequest) -> str:
    i, it = _item(request)
    ans = int(it.reference) + (1 if llm_wrong(i) else 0)
    return f"Let us work it out carefully . First read the numbers . Then combine them : The answer is {ans}."


def slm_answer(request: GenerationRequest) -> str:
    i, it = _item(request)
    ref = int(it.reference)
    words = len(request.prefix.split())
    if words >= HINT_WORDS:
        return llm_answer(request)
    if request.temperature > 0 and not request.prefix:  # a sampled answer
        if not is_hard(i):
            return f"Adding up gives {ref} . The answer is {ref}."
        if samples_agree_wrong(i):
            return f"Maybe it is {ref + 7} . The answer is {ref + 7}."
        return f"Hmm it could be {ref + 1 + (request.seed or 0)} . The answer is {ref + 1 + (request.seed or 0)}."
    if not is_hard(i):
        return f"Adding up gives {ref} . The answer is {ref}."
    return f"I am not sure , maybe {ref + 1} . The answer is {ref + 1}."


def models():
    return (ScriptedBackend(slm_answer, model_id="fake-slm"), ScriptedBackend(llm_answer, model_id="fake-llm"))


def build_store(path, n: int = 24, samples: int = 3):
    """Sweep `n` items of FakeMath into a new store at `path`; returns (store, task, sweep_id)."""
    from shepherd.traces.executor import LocalExecutor
    from shepherd.traces.store import TraceStore
    from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep

    store = TraceStore(path)
    task = FakeMath(n=n)
    slm, llm = models()
    plan = SweepPlan(trials=1, samples=samples, temperature=0.7)
    cfg = SweepConfig(task=task.name, slm=slm.model_id, llm=llm.model_id, max_tokens=64)
    sweep = register_sweep(store, cfg, plan, "test")
    ex = LocalExecutor(slm, llm, task, store, parallel_calls=False)
    results = list(ex.run(make_units(task, task.load(), cfg, plan, "test")))
    errors = [r.error for r in results if r.error]
    assert not errors, errors
    return store, task, sweep
