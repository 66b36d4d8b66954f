"""Benchmarks as tasks: load items, build the chat messages, grade a response.

Light to import: the loaders, math-verify (grading runs it in worker processes) and `datasets` (hub
loading) are imported only when used.
"""

from __future__ import annotations

from .base import Dropped, Grade, Item, Task
from .parallel import grade_many
from .registry import get_task, list_tasks, register_task

__all__ = ["Dropped", "Grade", "Item", "Task", "get_task", "grade_many", "list_tasks", "register_task"]
