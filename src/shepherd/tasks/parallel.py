"""Grade many responses at once.

Threads are enough: a code grade waits on its sandboxed subprocess and a LaTeX grade on a math-verify
worker process, so the GIL is not the bottleneck; `workers` bounds how many run at the same time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .base import Grade, Item, Task


def grade_many(task: Task, items: Sequence[Item], responses: Sequence[str], *, workers: int | None = None,
               on_done: Callable[[int, Grade], None] | None = None) -> list[Grade]:
    """Grades in the order of `items`. A grader that raises yields a failed Grade naming the error
    (one bad response never loses the others). `on_done(index, grade)` is called as each finishes."""
    if len(items) != len(responses):
        raise ValueError(f"{len(items)} items but {len(responses)} responses")
    workers = max(1, workers or os.cpu_count() or 1)

    def one(index: int) -> Grade:
        try:
            grade = task.grade(items[index], responses[index])
        except Exception as exc:  # noqa: BLE001 - reported in the grade
            grade = Grade(False, None, f"grader error: {type(exc).__name__}: {exc}")
        if on_done is not None:
            on_done(index, grade)
        return grade

    if workers == 1 or len(items) <= 1:
        return [one(i) for i in range(len(items))]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grade") as pool:
        return list(pool.map(one, range(len(items))))
