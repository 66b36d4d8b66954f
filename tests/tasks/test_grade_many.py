"""grade_many: order, isolation of failures, parallelism."""

from __future__ import annotations

import threading
import time

import pytest

from shepherd.tasks import Grade, Item, Task, grade_many


class Slow(Task):
    name = "slow"
    description = "test double"
    kind = "math"
    splits = ("test",)
    default_split = "test"

    def _load_split(self, split):
        return [Item(str(i), "q", str(i)) for i in range(8)]

    def messages(self, item):
        return [{"role": "user", "content": item.question}]

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def grade(self, item, response):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.2)
        with self._lock:
            self.active -= 1
        if response == "boom":
            raise RuntimeError("grader exploded")
        return Grade(response == item.reference, response, threading.current_thread().name)


def test_grades_come_back_in_item_order_and_in_parallel():
    task = Slow()
    items = task.load()
    responses = [str(i) if i % 2 == 0 else "wrong" for i in range(8)]
    done = []
    grades = grade_many(task, items, responses, workers=4, on_done=lambda i, g: done.append(i))
    assert task.max_active > 1  # graders overlapped: the work ran in parallel
    assert [g.correct for g in grades] == [i % 2 == 0 for i in range(8)]
    assert sorted(done) == list(range(8))


def test_a_grader_error_fails_only_that_item():
    task = Slow()
    items = task.load()[:3]
    grades = grade_many(task, items, ["0", "boom", "2"], workers=2)
    assert [g.correct for g in grades] == [True, False, True]
    assert "grader exploded" in grades[1].reason


def test_lengths_must_match():
    with pytest.raises(ValueError):
        grade_many(Slow(), Slow().load(), ["1"])
