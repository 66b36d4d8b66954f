"""The record a caller gets back: the text, what was decided, what it used and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .costs import CostBreakdown
from .decision import Decision
from .models.base import Generation, Usage


@dataclass
class Answer:
    text: str
    decision: Decision
    hint_text: str
    hint_tokens: int
    usage: dict[str, Usage]
    cost: CostBreakdown
    llm_only_cost_usd: float
    latency_s: float
    generations: list[tuple[str, Generation]] = field(default_factory=list)
    #: a fallback was used because a backend failed (see `notes`)
    degraded: bool = False
    notes: list[str] = field(default_factory=list)
    policy: str = ""
    #: how the model that continued the hint took it: "prefix" (it continued the assistant turn) or
    #: "user_prompt" (an API without prefill read the hint in the user turn); None when no hint was continued
    hint_mode: str | None = None
    #: who wrote which part of the text, in order, where the models alternated (a rescue): (role, text, tokens)
    segments: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return self.cost.total

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "decision": self.decision.label,
            "decision_kind": self.decision.kind,
            "reason": self.decision.reason,
            "policy": self.policy,
            "hint_tokens": self.hint_tokens,
            "hint_text": self.hint_text,
            "hint_mode": self.hint_mode,
            "cost_usd": self.cost.total,
            "llm_only_cost_usd": self.llm_only_cost_usd,
            "cost": self.cost.to_dict(),
            "usage": {
                role: {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                       "calls": u.calls}
                for role, u in self.usage.items()
            },
            "latency_s": self.latency_s,
            "degraded": self.degraded,
            "notes": self.notes,
            "details": self.decision.details,
            **({"segments": self.segment_dicts()} if self.segments else {}),
        }

    def segment_dicts(self) -> list[dict[str, Any]]:
        return [{"source": role, "text": text, "tokens": n} for role, text, n in self.segments]
