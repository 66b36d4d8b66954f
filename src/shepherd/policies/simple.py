"""The policies that need no predictor: SLM-only, LLM-only and a fixed hint."""

from __future__ import annotations

from typing import Any

from .base import Decision, Policy, PolicyContext


class SLMOnly(Policy):
    name = "slm-only"

    async def decide(self, ctx: PolicyContext) -> Decision:
        return Decision("slm", reason="policy: always the SLM")


class LLMOnly(Policy):
    name = "llm-only"

    async def decide(self, ctx: PolicyContext) -> Decision:
        return Decision("llm", reason="policy: always the LLM")


class FixedHint(Policy):
    """Buy the same hint for every query: `tokens` LLM tokens, or `fraction` of an expected length."""

    name = "fixed-hint"

    def __init__(self, tokens: int | None = None, fraction: float | None = None, expected_tokens: int = 256):
        if (tokens is None) == (fraction is None):
            raise ValueError("FixedHint needs exactly one of tokens= or fraction=")
        if tokens is not None and tokens < 0:
            raise ValueError("tokens must be >= 0")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be in [0, 1]")
        if expected_tokens <= 0:
            raise ValueError("expected_tokens must be > 0")
        self.tokens = tokens
        self.fraction = fraction
        self.expected_tokens = expected_tokens

    def hint_tokens(self) -> int:
        if self.tokens is not None:
            return self.tokens
        return round(self.fraction * self.expected_tokens)

    async def decide(self, ctx: PolicyContext) -> Decision:
        if self.fraction is not None and self.fraction >= 1.0:
            return Decision("llm", reason="policy: fixed hint of 100% is the LLM's whole answer")
        n = self.hint_tokens()
        return Decision("hint", hint_tokens=n, reason=f"policy: fixed hint of {n} tokens")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "tokens": self.tokens, "fraction": self.fraction,
                "expected_tokens": self.expected_tokens}
