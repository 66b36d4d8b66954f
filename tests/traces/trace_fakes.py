"""A tiny arithmetic task and scripted models whose SLM follows a hint once it is long enough.

Item i asks "What is a + b?". The LLM answers in 15 words (wrong on every fifth item). The SLM, given a
hint of at least `need(i)` words of the LLM's answer, continues the LLM's answer; with less it answers
wrongly. So each item's label is known in advance: the smallest grid level whose hint has need(i) words.
"""

from __future__ import annotations

import re

from shepherd.models.base import GenerationRequest
from shepherd.models.scripted import ScriptedBackend
from shepherd.tasks.base import Grade, Item
from shepherd.traces.executor import LocalExecutor
from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep


class FakeTask:
    name = "fake-add"
    default_split = "test"
    max_tokens = 64

    def __init__(self, n: int = 8):
        self.items = [Item(f"fake/{i}", f"What is {i} + {2 * i + 3}?", str(3 * i + 3), {"index": i})
                      for i in range(n)]

    def load(self, split=None, limit=None, seed=None, ids=None):
        if ids is not None:
            by = {it.id: it for it in self.items}
            return [by[i] for i in ids]
        return self.items[: limit or len(self.items)]

    def messages(self, item):
        return [{"role": "user", "content": item.question}]

    def grade(self, item, response: str) -> Grade:
        nums = re.findall(r"-?\d+", response)
        if not nums:
            return Grade(False, None, "no number")
        return Grade(nums[-1] == item.reference, nums[-1], "compared")


#: the assistant prefix of the completion-style variant (`StubTask`): the models' answers continue it
STUB = "Working :\n"


class StubTask(FakeTask):
    """The same items in completion style: every assistant turn starts with STUB, which is input (the
    prompt), not part of any answer; hints are cut from what follows it."""

    name = "fake-add-stub"
    prompt_style = "completion"

    def prefix(self, item):
        return STUB


def _stub(request: GenerationRequest) -> str:
    return STUB if request.prefix.startswith(STUB) else ""


def _index(request: GenerationRequest) -> int:
    q = request.messages[-1][1]
    return int(re.search(r"What is (\d+)", q).group(1))


def llm_answer(request: GenerationRequest) -> str:
    i = _index(request)
    a, b = i, 2 * i + 3
    s = a + b + (1 if i % 5 == 4 else 0)
    return f"{_stub(request)}First take {a} . Then add {b} to it . Adding them gives {s} in total . The answer is {s}."


def need(i: int) -> int:
    """Words of the LLM's answer the SLM needs to get item i right (0: right alone; 99: never)."""
    return [0, 2, 5, 9, 3, 99, 13, 1][i % 8]


def slm_answer(request: GenerationRequest) -> str:
    i = _index(request)
    words = len(request.prefix.split()) - len(_stub(request).split())
    if words >= need(i):
        return llm_answer(request)  # follows the hint: continues the LLM's answer
    return f"I think it is about {i} . The answer is {i + 1000}."


def models(delay_s: float = 0.0):
    slm = ScriptedBackend(slm_answer, model_id="fake-slm", delay_s=delay_s)
    llm = ScriptedBackend(llm_answer, model_id="fake-llm", delay_s=delay_s)
    return slm, llm


def run_fake_sweep(store, task, plan=None, n=None, parallel_calls=False, delay_s=0.0, max_tokens=64):
    slm, llm = models(delay_s)
    plan = plan or SweepPlan(trials=1, samples=2, temperature=0.7)
    cfg = SweepConfig(task=task.name, slm=slm.model_id, llm=llm.model_id, max_tokens=max_tokens)
    register_sweep(store, cfg, plan, "test")
    ex = LocalExecutor(slm, llm, task, store, parallel_calls=parallel_calls)
    results = list(ex.run(make_units(task, task.load(limit=n), cfg, plan, "test")))
    return results, slm, llm, cfg
