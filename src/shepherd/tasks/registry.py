"""Task names -> task classes. Modules are imported on first use, so listing names stays cheap."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import Source, Task

_TASKS: dict[str, str] = {
    "gsm8k": "shepherd.tasks.gsm8k:GSM8K",
    "cnk12": "shepherd.tasks.cnk12:CNK12",
    "humaneval": "shepherd.tasks.humaneval:HumanEval",
    "humaneval-completion": "shepherd.tasks.humaneval:HumanEvalCompletion",
    "mbpp": "shepherd.tasks.mbpp:MBPP",
}


def list_tasks() -> list[str]:
    """Names of the known tasks."""
    return list(_TASKS)


def task_class(name: str) -> type[Task]:
    try:
        module, attr = _TASKS[name.lower()].split(":")
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(_TASKS)}") from None
    return getattr(importlib.import_module(module), attr)


def get_task(name: str, data: str | Path | None = None, *, source: Source = "auto", **kwargs: Any) -> Task:
    """A task instance by name ("gsm8k", "cnk12", "humaneval", "mbpp")."""
    return task_class(name)(data, source=source, **kwargs)


def register_task(name: str, target: str) -> None:
    """Add a task ("module:Class") so that get_task and the CLI know it."""
    _TASKS[name.lower()] = target
