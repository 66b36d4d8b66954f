"""The policy interface: given a query and the two models, decide slm | hint(n) | llm.

A policy only decides; the runner carries the decision out. Policies that must look at SLM answers
first (reactive, cascades) call the models through the context and hand back what they spent, so
nothing is paid for twice and every token lands in the answer's usage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..agreement import task_for, task_name_of  # noqa: F401  (their home is shepherd.agreement)
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


class Policy(ABC):
    name: ClassVar[str] = "policy"

    @abstractmethod
    async def decide(self, ctx: PolicyContext) -> Decision: ...

    def describe(self) -> dict[str, Any]:
        """Settings to record with results, so a run can be repeated exactly."""
        return {"name": self.name}
