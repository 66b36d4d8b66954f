"""The shepherding call: run a policy's decision through the two models and account for it.

hint(n): the LLM generates exactly n tokens (fewer only if it finished first); the SLM gets the query
with that hint as the start of its own assistant turn and completes it. The answer is hint + rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .answer import Answer
from .costs import FREE, PAPER_LLM_PRICE, Price, breakdown
from .models.base import Backend, BackendError, Generation, GenerationRequest, Message, Usage
from .policies.base import Policy, PolicyContext

Fallback = Literal["fail", "slm", "llm"]


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
                     item: Any = None) -> Answer:
        t0 = time.perf_counter()
        request = query if isinstance(query, GenerationRequest) else self.build_request(query)
        ctx = PolicyContext(request=request, slm=self.slm, llm=self.llm, item=item)
        decision = await policy.decide(ctx)
        gens: list[tuple[str, Generation]] = list(decision.spent)
        notes: list[str] = []
        degraded = False
        hint_text, hint_tokens = "", 0

        if decision.answer_text is not None:
            text = decision.answer_text
        elif decision.kind == "llm":
            text, degraded = await self._whole("llm", request, gens, notes)
        elif decision.kind == "slm":
            text, degraded = await self._whole("slm", request, gens, notes)
        else:
            text, hint_text, hint_tokens, degraded = await self._hinted(request, decision.hint_tokens, gens, notes)

        return self.account(text, decision, hint_text, hint_tokens, gens, request, t0, degraded, notes,
                             policy.name)

    async def _whole(self, role: str, request: GenerationRequest, gens: list, notes: list[str]):
        backend = self.llm if role == "llm" else self.slm
        try:
            (gen,) = await backend.agenerate(request)
        except BackendError as exc:
            other = self.fallback_role(role)
            if other is None:
                raise
            notes.append(f"{role} failed ({exc}); answered by the {other}")
            (gen,) = await (self.llm if other == "llm" else self.slm).agenerate(request)
            gens.append((other, gen))
            return gen.text, True
        gens.append((role, gen))
        return gen.text, False

    def fallback_role(self, failed: str) -> str | None:
        """The model that answers when `failed` is down, per the settings; None means raise."""
        s = self.settings
        if failed == "llm" and s.on_llm_error == "slm":
            return "slm"
        if failed == "slm" and s.on_slm_error == "llm":
            return "llm"
        return None

    async def _hinted(self, request: GenerationRequest, n: int, gens: list, notes: list[str]):
        cap = request.max_tokens
        if cap is not None and n >= cap:
            notes.append(f"a hint of {n} tokens is the whole answer budget: the LLM answers in full")
            text, degraded = await self._whole("llm", request, gens, notes)
            last = gens[-1][1]
            return text, ("" if degraded else text), (0 if degraded else last.completion_tokens), degraded
        try:
            (hint,) = await self.llm.agenerate(replace(request, max_tokens=n))
        except BackendError as exc:
            if self.settings.on_llm_error != "slm":
                raise
            notes.append(f"llm failed while buying the hint ({exc}); answered SLM-only")
            (gen,) = await self.slm.agenerate(request)
            gens.append(("slm", gen))
            return gen.text, "", 0, True
        gens.append(("llm", hint))
        if hint.finished:
            notes.append("the LLM finished within the hint: its answer is complete")
            return hint.text, hint.text, hint.completion_tokens, False
        rest_cap = None if cap is None else max(cap - hint.completion_tokens, 1)
        try:
            (cont,) = await self.slm.agenerate(replace(request, prefix=request.prefix + hint.text,
                                                       max_tokens=rest_cap))
        except BackendError as exc:
            if self.settings.on_slm_error != "llm":
                raise
            notes.append(f"slm failed while continuing the hint ({exc}); the LLM finished the answer")
            (cont,) = await self.llm.agenerate(replace(request, prefix=request.prefix + hint.text,
                                                       max_tokens=rest_cap))
            gens.append(("llm", cont))
            return hint.text + cont.text, hint.text, hint.completion_tokens, True
        gens.append(("slm", cont))
        return hint.text + cont.text, hint.text, hint.completion_tokens, False

    def account(self, text, decision, hint_text, hint_tokens, gens, request, t0, degraded, notes,
                policy_name) -> Answer:
        """Turn what was generated into an `Answer`: usage per model, dollars, the LLM-only cost."""
        usage = {"llm": Usage(), "slm": Usage()}
        for role, gen in gens:
            usage[role].add(gen)
        # the hint was continued by the model of the last generation (the SLM, or the LLM as its fallback)
        continued = bool(hint_text) and len(text) > len(hint_text) and bool(gens)
        hint_mode = (self.llm if gens[-1][0] == "llm" else self.slm).hint_mode if continued else None
        cost = breakdown(usage["llm"], usage["slm"], self.llm_price, self.slm_price)
        return Answer(
            text=text,
            decision=decision,
            hint_text=hint_text,
            hint_tokens=hint_tokens,
            usage=usage,
            cost=cost,
            llm_only_cost_usd=self.llm_only_cost(request, text, gens),
            latency_s=time.perf_counter() - t0,
            generations=gens,
            degraded=degraded,
            notes=notes,
            policy=policy_name,
            hint_mode=hint_mode,
        )

    def llm_only_cost(self, request: GenerationRequest, text: str, gens: list[tuple[str, Generation]]) -> float:
        """What the LLM alone would have cost: its real call if one answered the whole query, else
        the LLM's prompt plus an answer as long as the delivered one, in the LLM's tokenizer."""
        for role, gen in gens:
            if role == "llm" and not request.prefix and gen.finished:
                return self.llm_price.cost(gen.prompt_tokens, gen.completion_tokens)
        prompt_tokens = next((g.prompt_tokens for r, g in gens if r == "llm"), None)
        if prompt_tokens is None:
            prompt_tokens = self.llm.count_prompt_tokens(request)
        return self.llm_price.cost(prompt_tokens, self.llm.count_tokens(text))

    async def answer_many(self, queries: Sequence[Any], policy: Policy, concurrency: int = 4) -> list[Answer]:
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(q):
            async with sem:
                return await self.answer(q, policy)

        return list(await asyncio.gather(*(one(q) for q in queries)))
