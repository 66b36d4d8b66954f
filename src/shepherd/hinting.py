"""How a hint is bought: the one home of the shepherding protocol.

hint(n): the LLM writes exactly n tokens of its answer (fewer only if it finished first), then the SLM
continues the same assistant turn from them, within what is left of the answer budget. The answer is hint
+ continuation. This module owns:

- the requests: `hint_request` (the LLM's n tokens), `continuation_request` (the SLM continuing a hint),
  `extension_request` (the LLM extending its own hint to n tokens), `full_request` (the LLM request a hint
  request was cut from, which is how replay recognises one); sweeps, the trace cache and the runner all
  build them here, so a replay finds what a sweep stored;
- rescues (a decision with a `rescue`): the SLM writes; where the policy finds its confidence fell, its text
  is cut back to a clean boundary, the LLM continues the SLM's own partial answer for n tokens
  (`rescue_request`) and the SLM takes over again. Each SLM segment is judged before it is shown; the
  answer's `segments` say who wrote what;
- hints bought a piece at a time (a decision with a `ladder`): the SLM's continuation is judged before
  anyone sees it; if the policy does not accept it, the LLM extends its hint to the next size (its input
  is the prompt and the hint it wrote, which it has read before: priced as cached input) and the SLM
  continues again. Only the accepted continuation is streamed; the rejected ones stay in the usage;
- `HintExecutor`, which carries a decision out: with a listener (`emit`) it streams every piece of text as
  it arrives; without one it is the same code with nobody listening. Its fallbacks continue from the text
  already produced: when the LLM dies 5 tokens into a hint of 16, the SLM continues from those 5 (streamed
  text cannot be taken back); when the SLM dies mid-continuation, the LLM finishes. A model that fails
  before writing anything is simply replaced by the other one;
- the accounting: usage per model, dollars, the LLM-only counterfactual, and how the hint was taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from .answer import Answer
from .costs import Price, breakdown
from .decision import Decision
from .models.base import Backend, BackendError, Generation, GenerationRequest, PromptTooLong, Usage

Emit = Callable[[str, str], None]  # (source: "llm" | "slm" | "policy", text)
Fallback = Literal["fail", "slm", "llm"]


# -- the requests --------------------------------------------------------------------------------------

def hint_request(request: GenerationRequest, n: int) -> GenerationRequest:
    """The LLM's request for a hint of n tokens: the query's own request, cut to n tokens."""
    return replace(request, max_tokens=n)


def full_request(hint: GenerationRequest, cap: int | None) -> GenerationRequest:
    """The full-answer request that `hint` was cut from (its budget `cap`): `hint_request`'s inverse."""
    return replace(hint, max_tokens=cap)


def rest_budget(cap: int | None, used: int) -> int | None:
    """What is left of an answer budget after `used` tokens (at least one token)."""
    return None if cap is None else max(cap - used, 1)


def continuation_request(request: GenerationRequest, hint_text: str, hint_tokens: int) -> GenerationRequest:
    """The request that continues `hint_text` (hint_tokens long) in the assistant turn, within the rest of
    the query's budget. Nothing to continue: the query's own request."""
    if not hint_text and hint_tokens == 0:
        return request
    return replace(request, prefix=request.prefix + hint_text,
                   max_tokens=rest_budget(request.max_tokens, hint_tokens))


def extension_request(request: GenerationRequest, hint_text: str, hint_tokens: int,
                      total: int | None) -> GenerationRequest:
    """The LLM's request to extend its hint (`hint_text`, hint_tokens long) to `total` tokens (None: to the
    end of its answer, within the query's budget)."""
    cont = continuation_request(request, hint_text, hint_tokens)
    return cont if total is None else replace(cont, max_tokens=max(total - hint_tokens, 1))


def rescue_request(request: GenerationRequest, text: str, text_tokens: int, n: int) -> GenerationRequest:
    """The LLM's request to continue the answer written so far (`text`, text_tokens long, the SLM's and any
    earlier rescue's) for n tokens."""
    return extension_request(request, text, text_tokens, text_tokens + n)


# -- carrying a decision out ---------------------------------------------------------------------------

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


class HintExecutor:
    """Carries out decisions through the two models. `fallback(failed_role)` names the model that takes
    over when one fails (None: the error is raised)."""

    def __init__(self, slm: Backend, llm: Backend, fallback: Callable[[str], str | None]) -> None:
        self.slm, self.llm, self.fallback = slm, llm, fallback
        #: who wrote which part of the last answer carried out, where it alternated (a rescue)
        self.segments: list[tuple[str, str, int]] = []

    def backend(self, role: str) -> Backend:
        return self.llm if role == "llm" else self.slm

    async def carry_out(self, decision: Decision, request: GenerationRequest, gens: list, notes: list[str],
                        emit: Emit | None = None) -> tuple[str, str, int, bool]:
        """(answer text, hint text, hint tokens, degraded); every generation made is appended to `gens`."""
        if decision.answer_text is not None:
            if decision.answer_text and emit is not None:
                emit("policy", decision.answer_text)
            return decision.answer_text, "", 0, False
        if decision.kind == "slm" and decision.rescue is not None:
            return await self._rescued(request, decision.rescue, gens, notes, emit)
        if decision.kind in ("llm", "slm"):
            text, degraded = await self._continue(decision.kind, request, "", 0, gens, notes, emit)
            return text, "", 0, degraded
        return await self._hinted(request, decision, gens, notes, emit)

    # -- legs ----------------------------------------------------------------------------------------
    async def _leg(self, role: str, request: GenerationRequest, emit: Emit | None) -> Generation:
        """One call, streamed when someone listens; on failure raise _LegFailed carrying what it delivered."""
        backend = self.backend(role)
        t0 = time.perf_counter()
        if emit is None:
            try:
                (gen,) = await backend.agenerate(request)
            except BackendError as exc:
                raise _LegFailed(role, exc, self._partial(backend, request, "", t0)) from exc
            return gen
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
                          completion_tokens=backend.count_tokens(text) if text else 0, finish_reason=finish,
                          latency_s=time.perf_counter() - t0, model=backend.model_id)

    async def _continue(self, role: str, request: GenerationRequest, prefix: str, prefix_tokens: int,
                        gens: list, notes: list[str], emit: Emit | None) -> tuple[str, bool]:
        """`role` writes the answer after `prefix`; if it fails, the fallback continues from the text made."""
        try:
            gen = await self._leg(role, continuation_request(request, prefix, prefix_tokens), emit)
        except _LegFailed as failed:
            other = self.fallback(role)
            if other is None:
                raise failed.error from None
            sent = failed.partial
            if sent.text:
                gens.append((role, sent))
                notes.append(f"{role} failed ({failed.error}) after {sent.completion_tokens} tokens; "
                             f"the {other} continued")
            else:
                notes.append(f"{role} failed ({failed.error}); answered by the {other}")
            try:
                gen2 = await self._leg(other, continuation_request(request, prefix + sent.text,
                                                                   prefix_tokens + sent.completion_tokens), emit)
            except _LegFailed as failed2:
                raise _both_failed(f"{role}: {failed.error}; {other}: {failed2.error}", failed2.error) from None
            gens.append((other, gen2))
            return sent.text + gen2.text, True
        gens.append((role, gen))
        return gen.text, False

    async def _hinted(self, request: GenerationRequest, decision: Decision, gens: list, notes: list[str],
                      emit: Emit | None) -> tuple[str, str, int, bool]:
        cap, n = request.max_tokens, decision.hint_tokens
        if cap is not None and n >= cap:
            notes.append(f"a hint of {n} tokens is the whole answer budget: the LLM answers in full")
            text, degraded = await self._continue("llm", request, "", 0, gens, notes, emit)
            last = gens[-1][1]
            return text, ("" if degraded else text), (0 if degraded else last.completion_tokens), degraded
        try:
            hint = await self._leg("llm", hint_request(request, n), emit)
        except _LegFailed as failed:
            if self.fallback("llm") != "slm":
                raise failed.error from None
            sent = failed.partial
            if sent.text:
                gens.append(("llm", sent))
            notes.append(f"llm failed while buying the hint ({failed.error}) after {sent.completion_tokens} "
                         "tokens; the SLM continued from them" if sent.text else
                         f"llm failed while buying the hint ({failed.error}); answered SLM-only")
            try:
                cont = await self._leg("slm", continuation_request(request, sent.text, sent.completion_tokens),
                                       emit)
            except _LegFailed as failed2:
                raise _both_failed(f"llm: {failed.error}; slm: {failed2.error}", failed2.error) from None
            gens.append(("slm", cont))
            return sent.text + cont.text, sent.text, sent.completion_tokens, True
        gens.append(("llm", hint))
        hint_text, hint_tokens, seen = hint.text, hint.completion_tokens, hint.prompt_tokens
        rungs = list(decision.ladder)
        last = hint

        def reread(gen: Generation) -> Generation:  # the LLM has read the prompt and its hint so far before
            return replace(gen, cached_prompt_tokens=min(gen.prompt_tokens, seen + hint_tokens))
        while True:
            if last.finished:
                notes.append("the LLM finished within the hint: its answer is complete")
                return hint_text, hint_text, hint_tokens, False
            if decision.accept is None or (not rungs and decision.exhausted == "slm"):
                text, degraded = await self._continue("slm", request, hint_text, hint_tokens, gens, notes, emit)
                return hint_text + text, hint_text, hint_tokens, degraded
            # a piece at a time: judge the SLM's continuation before anyone sees it
            cont, rest = await self._judged(request, hint_text, hint_tokens, gens, notes, emit)
            if cont is None:
                return hint_text + rest, hint_text, hint_tokens, True
            if decision.accept(cont):
                if emit is not None and cont.text:
                    emit("slm", cont.text)
                return hint_text + cont.text, hint_text, hint_tokens, False
            total = rungs.pop(0) if rungs else None
            if total is not None and cap is not None and total >= cap:
                total = None
            notes.append(f"the SLM's continuation of a {hint_tokens}-token hint was not accepted: the LLM "
                         + (f"extends it to {total} tokens" if total is not None else "finishes its answer"))
            try:
                ext = await self._leg("llm", extension_request(request, hint_text, hint_tokens, total), emit)
            except _LegFailed as failed:
                if self.fallback("llm") != "slm":
                    raise failed.error from None
                sent = failed.partial
                if not sent.text:  # nothing new was shown: the SLM's continuation, already made, stands
                    notes.append(f"llm failed extending the hint ({failed.error}); the SLM's continuation stands")
                    if emit is not None and cont.text:
                        emit("slm", cont.text)
                    return hint_text + cont.text, hint_text, hint_tokens, True
                gens.append(("llm", reread(sent)))
                notes.append(f"llm failed extending the hint ({failed.error}) after {sent.completion_tokens} "
                             "tokens; the SLM continued from them")
                hint_text, hint_tokens = hint_text + sent.text, hint_tokens + sent.completion_tokens
                text, _ = await self._continue("slm", request, hint_text, hint_tokens, gens, notes, emit)
                return hint_text + text, hint_text, hint_tokens, True
            last = reread(ext)  # that input is served from the LLM's cache
            gens.append(("llm", last))
            hint_text, hint_tokens = hint_text + ext.text, hint_tokens + ext.completion_tokens
            if total is None:  # the LLM wrote the rest of the answer
                return hint_text, hint_text, hint_tokens, False

    async def _judged(self, request: GenerationRequest, prefix: str, prefix_tokens: int, gens: list,
                      notes: list[str], emit: Emit | None) -> tuple[Generation | None, str]:
        """The SLM's continuation of `prefix`, made without showing it (the policy judges it first):
        (generation, ""). If the SLM fails, the LLM finishes the answer from `prefix` when the fallback
        allows it, shown as it comes: (None, the LLM's text)."""
        try:
            gen = await self._leg("slm", continuation_request(request, prefix, prefix_tokens), None)
        except _LegFailed as failed:
            if failed.partial.text:
                gens.append(("slm", failed.partial))
            if self.fallback("slm") != "llm":
                raise failed.error from None
            notes.append(f"slm failed ({failed.error}); the LLM finished the answer")
            rest, _ = await self._continue("llm", request, prefix, prefix_tokens, gens, notes, emit)
            return None, rest
        gens.append(("slm", gen))
        return gen, ""

    async def _rescued(self, request: GenerationRequest, rescue: Any, gens: list, notes: list[str],
                       emit: Emit | None) -> tuple[str, str, int, bool]:
        """The SLM writes; each segment is judged before it is shown; where `rescue.cut` finds doubt, the
        text is cut back, the LLM writes `rescue.tokens` tokens from there, and the SLM goes on."""
        text, tokens, llm_text, llm_tokens, done = "", 0, "", 0, 0

        def show(role: str, piece: str, n: int) -> None:
            if piece:
                self.segments.append((role, piece, n))
                if emit is not None:
                    emit(role, piece)

        while True:
            gen, rest = await self._judged(request, text, tokens, gens, notes, emit)
            if gen is None:
                self.segments.append(("llm", rest, gens[-1][1].completion_tokens))
                return text + rest, llm_text + rest, llm_tokens + gens[-1][1].completion_tokens, True
            cut = rescue.cut(gen) if done < rescue.max_rescues else None
            if cut is None or not 0 <= cut < len(gen.text):
                show("slm", gen.text, gen.completion_tokens)
                return text + gen.text, llm_text, llm_tokens, False
            kept = gen.text[:cut]
            kept_tokens = tokens_before(gen, cut, self.slm)
            show("slm", kept, kept_tokens)
            text, tokens = text + kept, tokens + kept_tokens
            notes.append(f"the SLM lost confidence after {tokens} tokens: the LLM writes {rescue.tokens} from there")
            try:
                hint = await self._leg("llm", rescue_request(request, text, tokens, rescue.tokens), emit)
            except _LegFailed as failed:
                if self.fallback("llm") != "slm":
                    raise failed.error from None
                sent = failed.partial
                if sent.text:  # shown already: the SLM goes on from it
                    gens.append(("llm", sent))
                    self.segments.append(("llm", sent.text, sent.completion_tokens))
                    notes.append(f"llm failed mid-rescue ({failed.error}) after {sent.completion_tokens} tokens; "
                                 "the SLM went on from them")
                    rest, _ = await self._continue("slm", request, text + sent.text,
                                                   tokens + sent.completion_tokens, gens, notes, emit)
                    self.segments.append(("slm", rest, gens[-1][1].completion_tokens))
                    return (text + sent.text + rest, llm_text + sent.text, llm_tokens + sent.completion_tokens,
                            True)
                notes.append(f"llm failed mid-rescue ({failed.error}); the SLM's own answer stands")
                show("slm", gen.text[cut:], gen.completion_tokens - kept_tokens)
                return text + gen.text[cut:], llm_text, llm_tokens, True
            gens.append(("llm", hint))
            self.segments.append(("llm", hint.text, hint.completion_tokens))
            text, tokens = text + hint.text, tokens + hint.completion_tokens
            llm_text, llm_tokens, done = llm_text + hint.text, llm_tokens + hint.completion_tokens, done + 1
            if hint.finished or (request.max_tokens is not None and tokens >= request.max_tokens):
                return text, llm_text, llm_tokens, False


def tokens_before(gen: Generation, cut: int, backend: Backend) -> int:
    """How many of the generation's tokens end at or before character `cut` (its log-probabilities carry
    each token's end offset; without them, the backend counts the text)."""
    if gen.logprobs is not None and gen.logprobs.ends:
        return sum(1 for e in gen.logprobs.ends if e <= cut)
    return backend.count_tokens(gen.text[:cut]) if cut else 0


# -- accounting ----------------------------------------------------------------------------------------

def account(*, text: str, decision: Decision, hint_text: str, hint_tokens: int, gens: list[tuple[str, Generation]],
            request: GenerationRequest, started: float, degraded: bool, notes: list[str], policy: str,
            slm: Backend, llm: Backend, slm_price: Price, llm_price: Price,
            segments: list[tuple[str, str, int]] | None = None) -> Answer:
    """Turn what was generated into an `Answer`: usage per model, dollars, the LLM-only cost, the hint mode."""
    usage = {"llm": Usage(), "slm": Usage()}
    for role, gen in gens:
        usage[role].add(gen)
    # the hint was continued by the model of the last generation (the SLM, or the LLM as its fallback)
    continued = bool(hint_text) and len(text) > len(hint_text) and bool(gens)
    hint_mode = (llm if gens[-1][0] == "llm" else slm).hint_mode if continued else None
    return Answer(text=text, decision=decision, hint_text=hint_text, hint_tokens=hint_tokens, usage=usage,
                  cost=breakdown(usage["llm"], usage["slm"], llm_price, slm_price),
                  llm_only_cost_usd=llm_only_cost(request, text, gens, llm, llm_price),
                  latency_s=time.perf_counter() - started, generations=gens, degraded=degraded, notes=notes,
                  policy=policy, hint_mode=hint_mode, segments=list(segments or []))


def llm_only_cost(request: GenerationRequest, text: str, gens: list[tuple[str, Generation]], llm: Backend,
                  llm_price: Price) -> float:
    """What the LLM alone would have cost: its real call if one answered the whole query, else the LLM's
    prompt plus an answer as long as the delivered one, in the LLM's tokenizer."""
    first = next((g for r, g in gens if r == "llm"), None)  # a later LLM call extends a hint: not the whole answer
    if first is not None and not request.prefix and first.finished:
        return llm_price.cost(first.prompt_tokens, first.completion_tokens)
    prompt_tokens = first.prompt_tokens if first is not None else None
    if prompt_tokens is None:
        prompt_tokens = llm.count_prompt_tokens(request)
    return llm_price.cost(prompt_tokens, llm.count_tokens(text))


def describe_fallback(settings: Any, failed: str) -> str | None:
    """The model that answers when `failed` is down, per `on_llm_error` / `on_slm_error`; None: raise."""
    if failed == "llm" and getattr(settings, "on_llm_error", "fail") == "slm":
        return "slm"
    if failed == "slm" and getattr(settings, "on_slm_error", "fail") == "llm":
        return "llm"
    return None
