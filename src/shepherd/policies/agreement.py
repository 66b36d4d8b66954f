"""When two sampled answers agree: the one definition that agreement-based policies (reactive shepherding,
reactive-fixed, ABC) share, so that they are compared on equal terms.

- math and other answer tasks: the task's extracted final answer, canonical (`normalize_extracted`);
- code: what the program does on the example calls its prompt shows (`CodeTask.behaviour`), so that two
  programs written differently but computing the same results agree; a program that does not load or
  raises on every example agrees with no one. A prompt without examples falls back to equal syntax trees;
- no task item (a live query): a fenced program's syntax tree, else the task-free `normalize_answer`.

Training and diagnostic examples read from a sweep (`predictor.data.samples_of`) use these same keys when the
task items can be read (`predictor.data.sweep_task_items`); without them, code samples compare by syntax tree.
"""

from __future__ import annotations

from typing import Any


def agreement_key(task: Any, item: Any, text: str) -> str | None:
    """A key that is equal for two answers that agree; None for an answer that agrees with no one."""
    from ..predictor.data import normalize_extracted
    from ..predictor.features import normalize_answer

    code = getattr(task, "kind", None) == "code" if task is not None else "```" in text
    if item is None or task is None:
        if code:  # a live query: compare the fenced program's syntax tree, never a number inside it
            from ..tasks.code_extract import extract_code

            return normalize_extracted(extract_code(text), "code")
        return normalize_answer(text)
    if code:
        probes = getattr(task, "probes", None)
        if probes is not None and probes(item):
            b = task.behaviour(item, text)
            return None if b is None else "run:" + b
        return normalize_extracted(task.extract(item, text), "code")
    extract = getattr(task, "extract", None) or (lambda it, t: task.grade(it, t).extracted)
    return normalize_extracted(extract(item, text))
