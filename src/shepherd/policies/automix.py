"""`automix`: AutoMix-style self-verification (arXiv 2310.12963) as a cascade.

The SLM answers (greedy, paid); then the SLM itself is asked whether that answer is correct
(`shepherd.verification`: the question, its answer, "Is this answer correct? Answer Yes or No.", one token).
With P(yes) at or above the threshold the answer stands; below it the query goes to the LLM in full. The
verification is an ordinary SLM call: it is billed to the SLM (its prompt at the SLM's input price; free where
the SLM is, as in the paper's pricing), stored in the trace store under its content key, and served from
there in replay. AutoMix's POMDP meta-verifier over several verification samples is left out: one greedy
verdict and one threshold knob, as the other cascades here have.
"""

from __future__ import annotations

from typing import Any

from ..verification import ESTIMATES, p_yes, verify
from .base import Decision, Policy, PolicyContext
from .registry import register_policy

__all__ = ["AutoMixPolicy"]


class AutoMixPolicy(Policy):
    name = "automix"

    def __init__(self, threshold: float = 0.5, *, estimate: str = "top2") -> None:
        if estimate not in ESTIMATES:
            raise ValueError(f"automix: unknown P(yes) estimate {estimate!r}; known: {', '.join(ESTIMATES)}")
        self.threshold, self.estimate = float(threshold), estimate

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "estimate": self.estimate}

    def with_threshold(self, threshold: float) -> AutoMixPolicy:
        return AutoMixPolicy(threshold, estimate=self.estimate)

    async def decide(self, ctx: PolicyContext) -> Decision:
        (gen,) = await ctx.slm.agenerate(ctx.request)
        check = await verify(ctx.slm, ctx.request, gen.text)
        p = p_yes(check, self.estimate)
        spent = [("slm", gen), ("slm", check)]
        details = {"p_yes": p, "threshold": self.threshold, "verdict": check.text}
        if p is not None and p >= self.threshold:
            return Decision("slm", reason=f"automix: P(yes) {p:.3f} >= {self.threshold:g}, the SLM's answer stands",
                            spent=spent, answer_text=gen.text, details=details)
        why = f"{p:.3f} < {self.threshold:g}" if p is not None else f"no Yes/No verdict ({check.text!r})"
        return Decision("llm", reason=f"automix: P(yes) {why}; the LLM answers in full", spent=spent,
                        details=details)


register_policy(AutoMixPolicy.name, AutoMixPolicy)
