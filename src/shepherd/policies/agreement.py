"""When two sampled answers agree: the one definition that agreement-based policies (reactive shepherding,
reactive-fixed, ABC) share, so that they are compared on equal terms.

- math and other answer tasks: the task's extracted final answer, canonical (`normalize_extracted`);
- code: what the program does on the example calls its prompt shows (`CodeTask.behaviour`), so that two
  programs written differently but computing the same results agree; a program that does not load or
  raises on every example agrees with no one. A prompt without examples falls back to equal syntax trees;
- no task item (a live query): code runs on the example calls the query itself shows (`>>> f(x)` lines and
  `assert f(x) == y` lines, expected values dropped: `live_probes`), as a benchmark's code does; a query
  without such calls compares the fenced program's syntax tree. Other answers: the task-free `normalize_answer`.

Training and diagnostic examples read from a sweep (`predictor.data.samples_of`) use these same keys when the
task items can be read (`predictor.data.sweep_task_items`); without them, code samples compare by syntax tree.
"""

from __future__ import annotations

import functools
from typing import Any


def agreeing_count(agree: int | None, samples: int, policy: str) -> int:
    """The whole number of samples that must give the same answer ("k of m"), checked against m; None means
    all of them. Why a count and not a share: a share such as round(2/3, 4) = 0.6667 exceeds 2/3, and 2 of 3
    agreeing samples would then never be enough."""
    if agree is None:
        return samples
    if isinstance(agree, bool) or not isinstance(agree, int) or not 1 <= agree <= samples:
        raise ValueError(f"{policy}: agree must be a whole number of samples from 1 to {samples}, not {agree!r}")
    return agree


def live_probes(prompt: str) -> list[str]:
    """The example calls a live query shows: its `>>> ...` expressions and what its `assert` lines evaluate,
    never the expected values. Why: with no task item, these are the only inputs both samples are asked about."""
    from ..tasks.code_task import MAX_PROBES, assert_calls, doctest_calls

    calls = doctest_calls(prompt)
    for call in assert_calls([ln for ln in prompt.splitlines() if ln.lstrip().startswith("assert ")]):
        if call not in calls:
            calls.append(call)
    return calls[:MAX_PROBES]


def live_prompt(ctx: Any, run_code: bool = True) -> str | None:
    """A live query's text (its user turns), where its example calls are written; None for a benchmark item,
    whose task knows its calls, and when the policy must not run live code (`run_code=False`)."""
    from ..predictor.features import query_text

    request = getattr(ctx, "request", None)
    if not run_code or getattr(ctx, "item", None) is not None or request is None:
        return None
    return query_text(request.messages) or None


def _route(task: Any, item: Any, prompt: str | None, text: str) -> tuple[str, list[str]]:
    """How answers like `text` are compared ("answer", "example calls" or "syntax tree") and, for a live
    code query, the calls its samples run. The one place that decides; keys and the reported basis follow it."""
    code = getattr(task, "kind", None) == "code" if task is not None else "```" in text
    if not code:
        return "answer", []
    if item is None or task is None:
        calls = live_probes(prompt) if prompt else []
        return ("example calls" if calls else "syntax tree"), calls
    probes = getattr(task, "probes", None)
    return ("example calls" if probes is not None and probes(item) else "syntax tree"), []


def agreement_basis(task: Any, item: Any, prompt: str | None, text: str) -> str:
    """How answers like `text` are compared, for a decision's details: "answer", "example calls" or
    "syntax tree"."""
    return _route(task, item, prompt, text)[0]


@functools.lru_cache(maxsize=256)
def _live_behaviour(program: str, calls: tuple[str, ...]) -> str | None:
    from ..tasks.code_task import run_probes

    return run_probes(program, list(calls))


def agreement_key(task: Any, item: Any, text: str, prompt: str | None = None) -> str | None:
    """A key that is equal for two answers that agree; None for an answer that agrees with no one.

    `prompt` (the query's text) is read only for a live code query: its example calls, if it shows any."""
    from ..predictor.data import normalize_extracted
    from ..predictor.features import normalize_answer

    basis, calls = _route(task, item, prompt, text)
    live = item is None or task is None
    if basis == "answer":
        if live:
            return normalize_answer(text)
        extract = getattr(task, "extract", None) or (lambda it, t: task.grade(it, t).extracted)
        return normalize_extracted(extract(item, text))
    if live:  # what the program does on the query's examples, else its syntax tree
        from ..tasks.code_extract import extract_code

        program = extract_code(text)
        if calls and program.strip():
            b = _live_behaviour(program, tuple(calls))
            return None if b is None else "run:" + b
        return normalize_extracted(program, "code")
    if basis == "example calls":
        b = task.behaviour(item, text)
        return None if b is None else "run:" + b
    return normalize_extracted(task.extract(item, text), "code")
