"""Policies that decide from the SLM's own answer: how sure it was of the tokens it wrote.

`confidence`: the SLM answers first (greedy, log-probabilities recorded by its backend); when a confidence
feature of that answer (`shepherd.confidence`, higher = surer) reaches the threshold the answer stands,
else a hint of a fixed fraction of the LLM's answer is bought and the SLM answers again. Nothing is
trained beyond choosing the threshold. `confidence-cascade` is the same trigger with the LLM answering in
full instead of a hint: the comparison shows what the hint itself adds over a plain confidence cascade
(STEER, arXiv 2511.06190; EAD, arXiv 2502.06833).

With `llm_below`, the policy has three bands: confident answers stand, doubtful ones get the hint, and
answers below `llm_below` (the SLM was lost, a short hint will not rescue it) go to the LLM in full.

`confidence-ladder` buys the hint a piece at a time: a doubtful answer gets a hint of the first rung; when
the SLM's continuation of it is doubtful too, the LLM extends its own hint to the next rung (paying output
for the new tokens only, and the prompt and earlier hint at the cached-input rate), and so on; past the last
rung the LLM finishes its answer (or, with `finish="slm"`, the last continuation stands).

An answer without log-probabilities (a backend that gives none) counts as not confident: the policy
then always escalates, and says so in the decision's details, rather than guess.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from ..confidence import FEATURE_NAMES, features
from .base import Decision, Policy, PolicyContext, task_for, task_name_of
from .baselines import FixedRatio
from .registry import register_policy

#: the default bar for the lowest 16-token window mean log-probability of a GSM8K-length answer: about where
#: the 0.5B SLM's right and wrong answers separate (medians -0.27 and -0.35 on 189 GSM8K test answers, the same
#: items the replay reports on, so it is a starting value, not a tuned one; pick yours with `shepherd eval`)
DEFAULT_THRESHOLD = -0.3


def _check_bands(threshold: float, llm_below: float | None) -> None:
    if llm_below is not None and llm_below > threshold:
        raise ValueError(f"llm_below ({llm_below}) must not be above the threshold ({threshold})")


class ConfidencePolicy(Policy):
    name = "confidence"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, feature: str = "lowest_window16",
                 fraction: float = 0.3, llm_below: float | None = None, lengths: dict[str, int] | None = None,
                 expected_tokens: int = 256, task: str | None = None) -> None:
        if feature not in FEATURE_NAMES:
            raise ValueError(f"unknown confidence feature {feature!r}; known: {', '.join(FEATURE_NAMES)}")
        _check_bands(threshold, llm_below)
        self.threshold, self.feature, self.task = float(threshold), feature, task
        #: below this the LLM answers in full instead of a hint (None: every doubtful answer gets the hint)
        self.llm_below = None if llm_below is None else float(llm_below)
        self.hint = FixedRatio(fraction, lengths=lengths, expected_tokens=expected_tokens)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "feature": self.feature,
                "fraction": self.hint.fraction, "llm_below": self.llm_below,
                "expected_tokens": self.hint.expected_tokens, "lengths_from_sweep": bool(self.hint.lengths),
                "task": self.task}

    def with_threshold(self, threshold: float) -> ConfidencePolicy:
        _check_bands(threshold, self.llm_below)
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__, threshold=float(threshold))
        return other

    def score(self, ctx: PolicyContext, gen: Any) -> float | None:
        """The feature of the SLM's answer (None: no log-probabilities, or the feature is undefined)."""
        if gen.logprobs is None:
            return None
        answer = None
        if self.feature == "answer_logprob" and ctx.item is not None:
            task = task_for(self.task or task_name_of(ctx.item))
            answer = task.extract(ctx.item, gen.text) if task is not None else None
        return features(gen.logprobs, gen.text, answer)[self.feature]

    async def escalate(self, ctx: PolicyContext, score: float | None = None) -> Decision:
        if self.llm_below is not None and (score is None or score < self.llm_below):
            return Decision("llm", reason=f"below {self.llm_below:g}: the LLM answers in full")
        return await self.hint.decide(ctx)

    async def decide(self, ctx: PolicyContext) -> Decision:
        (gen,) = await ctx.slm.agenerate(ctx.request)
        score = self.score(ctx, gen)
        details = {"feature": self.feature, "score": score, "threshold": self.threshold,
                   "logprobs": gen.logprobs is not None}
        spent = [("slm", gen)]
        if score is not None and score >= self.threshold:
            return Decision("slm", reason=f"{self.name}: {self.feature} {score:.3f} >= {self.threshold:g}, "
                            "the SLM's answer stands", spent=spent, answer_text=gen.text, details=details)
        why = ("no log-probabilities" if gen.logprobs is None else "undefined" if score is None
               else f"{score:.3f} < {self.threshold:g}")
        d = await self.escalate(ctx, score)
        return Decision(d.kind, hint_tokens=d.hint_tokens, reason=f"{self.name}: {self.feature} {why}; {d.reason}",
                        spent=spent, details={**details, **d.details}, ladder=d.ladder, accept=d.accept,
                        exhausted=d.exhausted)


class ConfidenceCascade(ConfidencePolicy):
    """The same trigger; a doubtful SLM answer goes to the LLM, which answers in full."""

    name = "confidence-cascade"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, feature: str = "lowest_window16",
                 task: str | None = None) -> None:
        super().__init__(threshold, feature=feature, fraction=1.0, task=task)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "feature": self.feature, "task": self.task}

    async def escalate(self, ctx: PolicyContext, score: float | None = None) -> Decision:
        return Decision("llm", reason="the LLM answers in full")


class ConfidenceLadder(ConfidencePolicy):
    """The same trigger; the hint is bought a rung at a time while the SLM's continuations stay doubtful."""

    name = "confidence-ladder"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, feature: str = "lowest_window16",
                 rungs: tuple[float, ...] | list[float] = (0.1, 0.3, 0.6), finish: str = "llm",
                 lengths: dict[str, int] | None = None, expected_tokens: int = 256, task: str | None = None) -> None:
        rungs = tuple(float(r) for r in rungs)
        if not rungs or any(not 0.0 < r < 1.0 for r in rungs) or any(b <= a for a, b in pairwise(rungs)):
            raise ValueError(f"rungs must be rising fractions of the LLM's answer in (0, 1), got {rungs}")
        if finish not in ("llm", "slm"):
            raise ValueError(f"finish must be 'llm' or 'slm', got {finish!r}")
        super().__init__(threshold, feature=feature, fraction=rungs[0], lengths=lengths,
                         expected_tokens=expected_tokens, task=task)
        self.rungs, self.finish = rungs, finish

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rungs": list(self.rungs), "finish": self.finish}

    async def escalate(self, ctx: PolicyContext, score: float | None = None) -> Decision:
        first = await self.hint.decide(ctx)
        if first.kind != "hint":
            return first
        L = first.details["L"]
        sizes = []
        for r in self.rungs[1:]:
            n = int(r * L + 0.5)
            if n > (sizes[-1] if sizes else first.hint_tokens):
                sizes.append(n)

        def accept(cont: Any) -> bool:
            s = self.score(ctx, cont)
            return s is not None and s >= self.threshold

        return Decision("hint", hint_tokens=first.hint_tokens, reason=f"{first.reason}, then rungs {sizes}",
                        details={**first.details, "ladder": sizes}, ladder=tuple(sizes), accept=accept,
                        exhausted=self.finish)  # type: ignore[arg-type]


register_policy(ConfidencePolicy.name, ConfidencePolicy)
register_policy(ConfidenceCascade.name, ConfidenceCascade)
register_policy(ConfidenceLadder.name, ConfidenceLadder)
