"""The shepherding call, streamed: the hint's tokens as the LLM writes them, then the SLM's continuation.

Carries out a decision exactly like `Runner.answer` (same decision, same hint arithmetic, same
`Answer`), but through `astream`, handing each piece of text to `emit(source, text)` as it arrives.

Fallbacks continue from what the client already has: text that was sent cannot be taken back, so when
a model fails mid-stream the other one (if the settings allow) continues the assistant turn from the
text sent so far, as if it were a hint. When the LLM dies 5 tokens into a hint of 16, the SLM
continues from those 5 tokens; when the SLM dies mid-continuation, the LLM finishes the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..answer import Answer
from ..models.base import Backend, BackendError, Generation, GenerationRequest, PromptTooLong
from ..policies.base import Policy, PolicyContext
from ..runner import Runner

Emit = Callable[[str, str], None]  # (source: "llm" | "slm" | "policy", text)


class BackendsUnavailable(BackendError):
    """The model asked for and its fallback both failed (or no fallback is configured)."""


def _both_failed(message: str, last: BackendError) -> BackendError:
    """A prompt the fallback cannot fit either is the request's fault (400), not an outage (503)."""
    return PromptTooLong(message) if isinstance(last, PromptTooLong) else BackendsUnavailable(message)


class _LegFailed(Exception):
    def __init__(self, role: str, error: BackendError, partial: Generation) -> None:
        super().__init__(str(error))
        self.role = role
        self.error = error
        self.partial = partial


class StreamingRunner:
    """Streams what `Runner.answer` returns whole. Uses the runner's models, prices and settings."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def _backend(self, role: str) -> Backend:
        return self.runner.llm if role == "llm" else self.runner.slm

    def _fallback(self, failed: str) -> str | None:
        return self.runner.fallback_role(failed)

    async def answer(self, request: GenerationRequest, policy: Policy, emit: Emit, item: Any = None) -> Answer:
        t0 = time.perf_counter()
        ctx = PolicyContext(request=request, slm=self.runner.slm, llm=self.runner.llm, item=item)
        decision = await policy.decide(ctx)
        gens: list[tuple[str, Generation]] = list(decision.spent)
        notes: list[str] = []
        hint_text, hint_tokens, degraded = "", 0, False

        if decision.answer_text is not None:
            text = decision.answer_text
            if text:
                emit("policy", text)
        elif decision.kind in ("llm", "slm"):
            text, degraded = await self._continue(decision.kind, request, "", request.max_tokens, gens, notes, emit)
        else:
            text, hint_text, hint_tokens, degraded = await self._hinted(request, decision.hint_tokens, gens,
                                                                        notes, emit)
        return self.runner.account(text, decision, hint_text, hint_tokens, gens, request, t0, degraded, notes,
                             policy.name)

    # -- legs ----------------------------------------------------------------------------------------
    async def _leg(self, role: str, request: GenerationRequest, emit: Emit) -> Generation:
        """Stream one call; on failure raise _LegFailed carrying what it delivered before failing."""
        backend = self._backend(role)
        t0 = time.perf_counter()
        parts: list[str] = []
        final: Generation | None = None
        stream = backend.astream(request)
        try:
            async for chunk in stream:
                if chunk.generation is not None:
                    final = chunk.generation
                elif chunk.text:
                    parts.append(chunk.text)
                    emit(role, chunk.text)
        except BackendError as exc:
            raise _LegFailed(role, exc, self._partial(backend, request, "".join(parts), t0)) from exc
        finally:
            await stream.aclose()
        if final is None:
            final = self._partial(backend, request, "".join(parts), t0, finish="stop")
        return final

    @staticmethod
    def _partial(backend: Backend, request: GenerationRequest, text: str, t0: float,
                 finish: str = "error") -> Generation:
        return Generation(text=text, prompt_tokens=backend.count_prompt_tokens(request) if text else 0,
                          completion_tokens=backend.count_tokens(text), finish_reason=finish,
                          latency_s=time.perf_counter() - t0, model=backend.model_id)

    async def _continue(self, role: str, request: GenerationRequest, prefix: str, cap: int | None,
                        gens: list, notes: list[str], emit: Emit) -> tuple[str, bool]:
        """`role` writes the answer after `prefix`; if it fails, the fallback continues from the text sent."""
        try:
            gen = await self._leg(role, replace(request, prefix=request.prefix + prefix, max_tokens=cap), emit)
        except _LegFailed as failed:
            other = self._fallback(role)
            if other is None:
                raise failed.error from None
            sent = failed.partial
            if sent.text:
                gens.append((role, sent))
            notes.append(f"{role} failed ({failed.error}) after {sent.completion_tokens} tokens; "
                         f"the {other} continued")
            rest = None if cap is None else max(cap - sent.completion_tokens, 1)
            try:
                gen2 = await self._leg(other, replace(request, prefix=request.prefix + prefix + sent.text,
                                                      max_tokens=rest), emit)
            except _LegFailed as failed2:
                raise _both_failed(f"{role}: {failed.error}; {other}: {failed2.error}", failed2.error) from None
            gens.append((other, gen2))
            return sent.text + gen2.text, True
        gens.append((role, gen))
        return gen.text, False

    async def _hinted(self, request: GenerationRequest, n: int, gens: list, notes: list[str], emit: Emit):
        cap = request.max_tokens
        if cap is not None and n >= cap:
            notes.append(f"a hint of {n} tokens is the whole answer budget: the LLM answers in full")
            text, degraded = await self._continue("llm", request, "", cap, gens, notes, emit)
            last = gens[-1][1]
            return text, ("" if degraded else text), (0 if degraded else last.completion_tokens), degraded
        try:
            hint = await self._leg("llm", replace(request, max_tokens=n), emit)
        except _LegFailed as failed:
            if self.runner.settings.on_llm_error != "slm":
                raise failed.error from None
            sent = failed.partial
            if sent.text:
                gens.append(("llm", sent))
            notes.append(f"llm failed while buying the hint ({failed.error}) after {sent.completion_tokens} "
                         "tokens; the SLM continued from them" if sent.text else
                         f"llm failed while buying the hint ({failed.error}); answered SLM-only")
            rest = None if cap is None else max(cap - sent.completion_tokens, 1)
            try:
                cont = await self._leg("slm", replace(request, prefix=request.prefix + sent.text,
                                                      max_tokens=rest), emit)
            except _LegFailed as failed2:
                raise _both_failed(f"llm: {failed.error}; slm: {failed2.error}", failed2.error) from None
            gens.append(("slm", cont))
            return sent.text + cont.text, sent.text, sent.completion_tokens, True
        gens.append(("llm", hint))
        if hint.finished:
            notes.append("the LLM finished within the hint: its answer is complete")
            return hint.text, hint.text, hint.completion_tokens, False
        rest = None if cap is None else max(cap - hint.completion_tokens, 1)
        text, degraded = await self._continue("slm", request, hint.text, rest, gens, notes, emit)
        return hint.text + text, hint.text, hint.completion_tokens, degraded

