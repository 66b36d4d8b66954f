"""The shepherding call: a policy decides, the hint protocol (`shepherd.hinting`) carries the decision out
through the two models, and the answer says what it used and cost. `Runner` holds the models, prices and
settings; it streams when given a listener (`emit`), and is the same code without one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .answer import Answer
from .costs import FREE, PAPER_LLM_PRICE, Price
from .hinting import Emit, Fallback, HintExecutor, account, describe_fallback
from .models.base import Backend, Generation, GenerationRequest, Message
from .policies.base import Policy, PolicyContext


@dataclass
class RunSettings:
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    system_prompt: str | None = None
    #: what to do when the LLM fails: "fail" raises, "slm" answers SLM-only (flagged degraded)
    on_llm_error: Fallback = "fail"
    #: what to do when the SLM fails: "fail" raises, "llm" answers with the LLM (flagged degraded)
    on_slm_error: Fallback = "fail"

    @classmethod
    def from_config(cls, run: Any, **overrides: Any) -> RunSettings:
        """The settings of a config's `[run]` section (`shepherd.config.RunConfig`), field for field, with
        `overrides` on top (the server caps max_tokens and has its own fallbacks)."""
        names = ("max_tokens", "temperature", "seed", "system_prompt", "on_llm_error", "on_slm_error")
        return cls(**{**{n: getattr(run, n) for n in names}, **overrides})


class Runner:
    """Carries out decisions. Stateless apart from its models, prices and settings."""

    def __init__(
        self,
        slm: Backend,
        llm: Backend,
        *,
        slm_price: Price = FREE,
        llm_price: Price = PAPER_LLM_PRICE,
        settings: RunSettings | None = None,
    ) -> None:
        self.slm = slm
        self.llm = llm
        self.slm_price = slm_price
        self.llm_price = llm_price
        self.settings = settings or RunSettings()

    def build_request(self, query: str | Sequence[Message], **overrides: Any) -> GenerationRequest:
        s = self.settings
        messages = query
        if isinstance(query, str) and s.system_prompt:
            messages = [{"role": "system", "content": s.system_prompt}, {"role": "user", "content": query}]
        return GenerationRequest.create(
            messages,
            max_tokens=overrides.get("max_tokens", s.max_tokens),
            temperature=overrides.get("temperature", s.temperature),
            seed=overrides.get("seed", s.seed),
            stop=overrides.get("stop", s.stop),
        )

    async def answer(self, query: str | Sequence[Message] | GenerationRequest, policy: Policy,
                     item: Any = None, emit: Emit | None = None) -> Answer:
        """Decide and carry the decision out; with `emit(source, text)`, every piece of text is handed over
        as it arrives (source "llm", "slm", or "policy" for an answer the policy already had)."""
        t0 = time.perf_counter()
        request = query if isinstance(query, GenerationRequest) else self.build_request(query)
        ctx = PolicyContext(request=request, slm=self.slm, llm=self.llm, item=item)
        decision = await policy.decide(ctx)
        gens: list[tuple[str, Generation]] = list(decision.spent)
        notes: list[str] = []
        executor = HintExecutor(self.slm, self.llm, self.fallback_role)
        text, hint_text, hint_tokens, degraded = await executor.carry_out(decision, request, gens, notes, emit)
        return account(text=text, decision=decision, hint_text=hint_text, hint_tokens=hint_tokens, gens=gens,
                       request=request, started=t0, degraded=degraded, notes=notes, policy=policy.name,
                       slm=self.slm, llm=self.llm, slm_price=self.slm_price, llm_price=self.llm_price,
                       segments=executor.segments)

    def fallback_role(self, failed: str) -> str | None:
        """The model that answers when `failed` is down, per the settings; None means raise."""
        return describe_fallback(self.settings, failed)

    async def answer_many(self, queries: Sequence[Any], policy: Policy, concurrency: int = 4) -> list[Answer]:
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(q):
            async with sem:
                return await self.answer(q, policy)

        return list(await asyncio.gather(*(one(q) for q in queries)))
