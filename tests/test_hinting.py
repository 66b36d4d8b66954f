"""Hints bought a piece at a time: the executor extends the LLM's hint while the policy rejects the SLM's
continuation, pays the new output tokens only (the prompt and the earlier hint as cached input), streams
only the continuation that stands, and keeps what it already has when the LLM fails mid-extension.

Scripted backends (one word = one token): this is the orchestration; the real models are in
tests/policies/test_confidence_policies.py."""

from __future__ import annotations

import pytest

from shepherd.costs import Price
from shepherd.decision import Decision
from shepherd.hinting import extension_request
from shepherd.models.base import BackendError, GenerationRequest, StreamChunk, run_sync
from shepherd.models.scripted import ScriptedBackend
from shepherd.policies.base import Policy, PolicyContext
from shepherd.runner import Runner, RunSettings

LLM_ANSWER = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 The answer is 7."
SLM_ANSWER = "I think the answer is 3."


class Fixed(Policy):
    """Hands the runner a prepared decision."""

    name = "fixed"

    def __init__(self, decision_factory):
        self.make = decision_factory

    async def decide(self, ctx: PolicyContext) -> Decision:
        return self.make()


def long_enough(words: int):
    """Accept the SLM's continuation once the hint before it had at least `words` words."""
    def accept(gen) -> bool:
        return accept.prefix_words[-1] >= words
    accept.prefix_words = []
    return accept


class Watched(ScriptedBackend):
    """An SLM that records how long each hint it continued was (for `long_enough`)."""

    def __init__(self, accept, **kw):
        super().__init__(SLM_ANSWER, model_id="slm", **kw)
        self.accept = accept

    async def agenerate(self, request, n=1):
        self.accept.prefix_words.append(len(request.prefix.split()))
        return await super().agenerate(request, n)


class DiesOnExtension(ScriptedBackend):
    """An LLM that sells the first hint and fails every later call (with or without some words written)."""

    def __init__(self, words_before_dying: int = 0):
        super().__init__(LLM_ANSWER, model_id="llm")
        self.words_before_dying = words_before_dying

    async def agenerate(self, request, n=1):
        if request.prefix:
            self.calls.append(request)
            raise BackendError("llm died")
        return await super().agenerate(request, n)

    async def astream(self, request):
        if not request.prefix:
            async for c in super().astream(request):
                yield c
            return
        self.calls.append(request)
        words = LLM_ANSWER.split()[len(request.prefix.split()):][: self.words_before_dying]
        for w in words:
            yield StreamChunk(text=" " + w)
        raise BackendError("llm died mid-extension")


def run(slm, llm, decision_factory, emit=None, price=None, **settings):
    runner = Runner(slm, llm, settings=RunSettings(max_tokens=settings.pop("max_tokens", 40), **settings),
                    llm_price=price or Price(input=1.0, output=2.0))
    return run_sync(runner.answer("Q: what is it?", Fixed(decision_factory), emit=emit))


def test_the_extension_request_continues_the_hint_for_the_new_tokens_only():
    req = GenerationRequest.create("Q", max_tokens=40)
    ext = extension_request(req, "a b c", 3, 8)
    assert ext.prefix == "a b c" and ext.max_tokens == 5 and ext.messages == req.messages
    assert extension_request(req, "a b c", 3, None).max_tokens == 37  # to the end of the budget


def test_a_rejected_continuation_extends_the_hint_until_one_is_accepted():
    accept = long_enough(6)
    slm, llm = Watched(accept), ScriptedBackend(LLM_ANSWER, model_id="llm")
    ans = run(slm, llm, lambda: Decision("hint", hint_tokens=2, ladder=(4, 6, 8), accept=accept))
    # the LLM sold 2 tokens, then 2 more, then 2 more: each call continues its own hint
    assert [(c.prefix, c.max_tokens) for c in llm.calls] == [("", 2), ("w1 w2", 2), ("w1 w2 w3 w4", 2)]
    assert accept.prefix_words == [2, 4, 6]
    assert ans.hint_tokens == 6 and ans.hint_text == "w1 w2 w3 w4 w5 w6"
    assert ans.text == "w1 w2 w3 w4 w5 w6 " + SLM_ANSWER
    u = ans.usage["llm"]
    assert u.calls == 3 and u.completion_tokens == 6
    P = sum(len(c.split()) for _, c in llm.calls[0].messages)
    # the extensions re-read the prompt and the hint so far: that input is cached
    assert u.prompt_tokens == P + (P + 2) + (P + 4) and u.cached_prompt_tokens == (P + 2) + (P + 4)
    assert ans.usage["slm"].calls == 3  # two rejected continuations stay in the usage
    assert any("extends it to 4 tokens" in n for n in ans.notes)


def test_cached_input_is_priced_on_its_own_line():
    accept = long_enough(4)
    price = Price(input=1.0, output=2.0, cached_input=0.25)
    ans = run(Watched(accept), ScriptedBackend(LLM_ANSWER, model_id="llm"),
              lambda: Decision("hint", hint_tokens=2, ladder=(4,), accept=accept), price=price)
    u = ans.usage["llm"]
    fresh = u.prompt_tokens - u.cached_prompt_tokens
    assert ans.cost.llm_input == pytest.approx(fresh * 1.0 / 1e6)
    assert ans.cost.llm_cached_input == pytest.approx(u.cached_prompt_tokens * 0.25 / 1e6)
    assert ans.cost.llm == pytest.approx(price.cost(u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens))
    # without a cached rate, cached input costs the input rate (the paper's pricing): the same total as fresh
    plain = Price(input=1.0, output=2.0)
    assert plain.cost(100, 10, 60) == pytest.approx(plain.cost(100, 10))
    assert price.cost(100, 10, 60) < plain.cost(100, 10)


@pytest.mark.parametrize("exhausted", ["llm", "slm"])
def test_past_the_last_rung_the_llm_finishes_or_the_last_continuation_stands(exhausted):
    never = long_enough(10**6)
    llm = ScriptedBackend(LLM_ANSWER, model_id="llm")
    ans = run(Watched(never), llm,
              lambda: Decision("hint", hint_tokens=2, ladder=(4,), accept=never, exhausted=exhausted))
    if exhausted == "llm":
        assert ans.text == LLM_ANSWER and ans.hint_text == LLM_ANSWER
        assert ans.usage["llm"].completion_tokens == len(LLM_ANSWER.split())
        assert llm.calls[-1].prefix == "w1 w2 w3 w4" and llm.calls[-1].max_tokens == 36  # the rest of the budget
        # the LLM-only counterfactual is not the last call (it continued a hint): the whole answer, fresh
        P = sum(len(c.split()) for _, c in llm.calls[0].messages)
        assert ans.llm_only_cost_usd == pytest.approx(Price(input=1.0, output=2.0).cost(P, len(LLM_ANSWER.split())))
    else:
        assert ans.text == "w1 w2 w3 w4 " + SLM_ANSWER and ans.usage["llm"].calls == 2
    assert not ans.degraded


def test_only_the_accepted_continuation_is_streamed():
    accept = long_enough(4)
    pieces: list[tuple[str, str]] = []
    ans = run(Watched(accept), ScriptedBackend(LLM_ANSWER, model_id="llm"),
              lambda: Decision("hint", hint_tokens=2, ladder=(4,), accept=accept),
              emit=lambda src, text: pieces.append((src, text)))
    assert "".join(t for _, t in pieces) == ans.text
    # the rejected continuation (after 2 hint words) never reached the client: the SLM's text appears once
    assert "".join(t for s, t in pieces if s == "slm").strip() == SLM_ANSWER
    assert ans.text == "w1 w2 w3 w4 " + SLM_ANSWER and ans.usage["slm"].calls == 2


def test_an_llm_that_fails_mid_extension_leaves_the_answer_standing():
    never = long_enough(10**6)
    # nothing written by the extension: the SLM's continuation, already made, stands (flagged degraded)
    ans = run(Watched(never), DiesOnExtension(0),
              lambda: Decision("hint", hint_tokens=2, ladder=(4,), accept=never), on_llm_error="slm")
    assert ans.degraded and ans.text == "w1 w2 " + SLM_ANSWER and ans.usage["slm"].calls == 1
    # streamed, 1 word written before it died: the SLM continues from the text the client has seen
    pieces: list[str] = []
    ans = run(Watched(never), DiesOnExtension(1),
              lambda: Decision("hint", hint_tokens=2, ladder=(4,), accept=never), on_llm_error="slm",
              emit=lambda src, text: pieces.append(text))
    assert ans.degraded and ans.text.startswith("w1 w2 w3 ") and "".join(pieces) == ans.text
    assert ans.usage["llm"].completion_tokens == 3  # the hint and the word of the failed extension, paid
    # no fallback configured: the error is raised, not hidden
    with pytest.raises(BackendError, match="llm died"):
        run(Watched(never), DiesOnExtension(0), lambda: Decision("hint", hint_tokens=2, ladder=(4,), accept=never))


def test_a_ladder_must_rise_and_have_a_judge():
    with pytest.raises(ValueError, match="ladder"):
        Decision("hint", hint_tokens=4, ladder=(4, 8), accept=lambda g: True)
    with pytest.raises(ValueError, match="ladder"):
        Decision("hint", hint_tokens=2, ladder=(4,))
