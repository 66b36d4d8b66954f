"""The policy interface: given a query and the two models, decide slm | hint(n) | llm.

A policy only decides; the runner carries the decision out. Policies that must look at SLM answers
first (reactive, cascades) call the models through the context and hand back what they spent, so
nothing is paid for twice and every token lands in the answer's usage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from ..agreement import task_for, task_name_of  # noqa: F401  (their home is shepherd.agreement)
from ..decision import Decision, DecisionKind  # noqa: F401  (its home is shepherd.decision)
from ..models.base import Backend, GenerationRequest


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
