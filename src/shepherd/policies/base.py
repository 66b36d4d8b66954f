"""The policy interface: given a query and the two models, decide slm | hint(n) | llm.

A policy only decides; the runner carries the decision out. Policies that must look at SLM answers
first (reactive, cascades) call the models through the context and hand back what they spent, so
nothing is paid for twice and every token lands in the answer's usage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..models.base import Backend, Generation, GenerationRequest

DecisionKind = Literal["slm", "hint", "llm"]


@dataclass
class Decision:
    kind: DecisionKind
    hint_tokens: int = 0
    reason: str = ""
    #: generations already paid for while deciding, as (role, generation) with role "slm" or "llm"
    spent: list[tuple[str, Generation]] = field(default_factory=list)
    #: set when deciding already produced the final answer (e.g. the SLM samples agreed)
    answer_text: str | None = None
    #: the predictor's score or other numbers worth keeping with the trace
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("slm", "hint", "llm"):
            raise ValueError(f"unknown decision kind {self.kind!r}")
        if self.hint_tokens < 0:
            raise ValueError("hint_tokens must be >= 0")
        if self.kind == "hint" and self.hint_tokens == 0:
            self.kind = "slm"

    @property
    def label(self) -> str:
        return f"hint({self.hint_tokens})" if self.kind == "hint" else self.kind


@dataclass
class PolicyContext:
    """What a policy sees: the request for the final answer and handles on both models."""

    request: GenerationRequest
    slm: Backend
    llm: Backend
    #: the task item when the query comes from a benchmark (oracles and replay use it)
    item: Any = None


def task_name_of(item: Any) -> str | None:
    """The benchmark an item belongs to: its metadata's `task`, else the prefix of ids like `gsm8k/...`."""
    if item is None:
        return None
    meta = getattr(item, "metadata", None) or {}
    if isinstance(meta, dict) and meta.get("task"):
        return str(meta["task"])
    iid = str(getattr(item, "id", ""))
    return iid.split("/", 1)[0].lower() if "/" in iid else None


_TASKS: dict[str, Any] = {}


def task_for(name: str | None) -> Any:
    """The grader-bearing Task for a name, loaded once per process; None when unknown or unavailable."""
    if not name:
        return None
    if name not in _TASKS:
        try:
            from ..tasks.registry import get_task

            _TASKS[name] = get_task(name)
        except (KeyError, ImportError, ValueError):
            return None  # not cached: a task registered later is still found
    return _TASKS[name]


class Policy(ABC):
    name: ClassVar[str] = "policy"

    @abstractmethod
    async def decide(self, ctx: PolicyContext) -> Decision: ...

    def describe(self) -> dict[str, Any]:
        """Settings to record with results, so a run can be repeated exactly."""
        return {"name": self.name}
