"""The `automix` self-verification cascade: P(yes) read off one verification token, the orchestration on a
scripted pair (orchestration only: the scripted backend is not a model), and the check on the real 0.5B SLM."""

from __future__ import annotations

import math

import pytest

from shepherd.costs import Price
from shepherd.models.base import Generation, GenerationRequest, TokenLogprobs
from shepherd.models.scripted import ScriptedBackend
from shepherd.policies.registry import make_policy, policy_names
from shepherd.runner import Runner, RunSettings
from shepherd.verification import VERIFY_QUESTION, p_yes, verification_request, verify


def _check(word: str, logprob: float = -0.2, margin: float = 2.0) -> Generation:
    lp = TokenLogprobs([logprob], [0.7], [margin], [len(word)])
    return Generation(word, 30, 1, "length", 0.0, "s", lp.mean, logprobs=lp)


def test_p_yes_reads_the_verdict_token_both_ways():
    sig = 1 / (1 + math.exp(-2.0))
    assert p_yes(_check("Yes")) == pytest.approx(sig)
    assert p_yes(_check("No")) == pytest.approx(1 - sig)
    assert p_yes(_check(" yes", logprob=-0.5), "chosen") == pytest.approx(math.exp(-0.5))
    assert p_yes(_check("No", logprob=-0.5), "chosen") == pytest.approx(1 - math.exp(-0.5))
    assert p_yes(_check("The")) is None and p_yes(_check("Nothing")) is None
    assert p_yes(Generation("Yes", 30, 1, "stop", 0.0)) == 1.0  # no log-probabilities: the word alone
    assert p_yes(Generation("No", 30, 1, "stop", 0.0)) == 0.0
    with pytest.raises(ValueError, match="unknown P\\(yes\\) estimate"):
        p_yes(_check("Yes"), "vibes")
    with pytest.raises(ValueError, match="unknown P\\(yes\\) estimate"):
        make_policy("automix", estimate="vibes")
    assert "automix" in policy_names()


def test_the_verification_request_holds_the_question_and_the_answer_and_asks_for_one_token():
    req = GenerationRequest.create([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "What is 2 + 2?"}], max_tokens=64)
    v = verification_request(req, "5")
    ((role, content),) = v.messages
    assert role == "user" and "What is 2 + 2?" in content and "\n5\n" in content
    assert content.endswith(VERIFY_QUESTION) and "Be brief." not in content
    assert v.max_tokens == 1 and v.greedy
    assert v.key("m") == verification_request(req, "5").key("m") != verification_request(req, "4").key("m")


class Verifier(ScriptedBackend):
    """Answers questions from a script, and a verification request with one Yes token of the given margin."""

    def __init__(self, answer: str, margin: float):
        super().__init__(answer, model_id="slm")
        self.margin = margin

    async def agenerate(self, request, n=1):
        if request.messages[-1][1].endswith(VERIFY_QUESTION):
            self.calls.append(request)
            lp = TokenLogprobs([-0.1], [0.6], [self.margin], [3])
            return [Generation("Yes", 40, 1, "length", 0.0, "slm", lp.mean, logprobs=lp)]
        return await super().agenerate(request, n)


@pytest.mark.parametrize(("margin", "threshold", "kind"), [(3.0, 0.9, "slm"), (0.5, 0.9, "llm"), (0.5, 0.6, "slm")])
async def test_a_doubtful_verdict_escalates_a_sure_one_stands_and_the_check_is_billed_to_the_slm(margin, threshold,
                                                                                                  kind):
    slm, llm = Verifier("The answer is 4.", margin), ScriptedBackend("2 + 2 = 4. The answer is 4.", model_id="llm")
    price = Price(input=1.0, output=2.0)
    runner = Runner(slm, llm, slm_price=price, llm_price=Price(input=10.0, output=20.0),
                    settings=RunSettings(max_tokens=64))
    ans = await runner.answer("What is 2 + 2?", make_policy("automix", threshold=threshold))
    assert ans.decision.kind == kind
    assert ans.decision.details["p_yes"] == pytest.approx(1 / (1 + math.exp(-margin)))
    assert ans.usage["slm"].calls == 2  # the answer and its check, both paid
    assert len(slm.calls) == 2 and slm.calls[1].max_tokens == 1
    answer_gen = next(g for r, g in ans.generations if r == "slm")
    assert ans.usage["slm"].prompt_tokens == answer_gen.prompt_tokens + 40
    assert ans.cost.slm_input == pytest.approx(price.input * (answer_gen.prompt_tokens + 40) / 1e6)
    if kind == "slm":
        assert ans.text == "The answer is 4." and ans.usage["llm"].calls == 0 and ans.cost.llm == 0
    else:
        assert ans.text == "2 + 2 = 4. The answer is 4." and ans.usage["llm"].calls == 1 and ans.cost.llm > 0


async def test_no_verdict_escalates():
    class Mumbler(Verifier):
        async def agenerate(self, request, n=1):
            if request.messages[-1][1].endswith(VERIFY_QUESTION):
                return [Generation("Maybe", 40, 1, "length", 0.0, "slm")]
            return await ScriptedBackend.agenerate(self, request, n)

    slm, llm = Mumbler("The answer is 4.", 0.0), ScriptedBackend("The answer is 4.", model_id="llm")
    ans = await Runner(slm, llm).answer("What is 2 + 2?", make_policy("automix", threshold=0.0))
    assert ans.decision.kind == "llm" and "no Yes/No verdict" in ans.decision.reason


# -- the real 0.5B SLM ----------------------------------------------------------------------------------

CASES = [("What is 7 + 5? Give only the number.", "12", "15"),
         ("What is 9 * 6? Give only the number.", "54", "56")]


@pytest.mark.slow
async def test_the_real_slm_verifies_its_answers_and_replay_serves_the_same_check(slm_backend, tmp_path):
    """The 0.5B coder model's P(yes) for a right and a wrong answer to simple arithmetic. It does NOT reliably
    rate the wrong one lower (on the probes it sat near 0.5 for both, sometimes the wrong one higher), so this
    asserts only what holds: a Yes/No verdict, P(yes) in [0, 1], the check stored, and replay equal to live."""
    from shepherd.traces.cached import CachedBackend
    from shepherd.traces.store import TraceStore

    store = TraceStore(tmp_path / "v.sqlite")
    live = CachedBackend(slm_backend, store)
    seen = {}
    for q, right, wrong in CASES:
        req = GenerationRequest.create(q, max_tokens=16)
        for a in (right, wrong):
            gen = await verify(live, req, a)
            p = p_yes(gen)
            assert gen.text.strip() in ("Yes", "No") and gen.completion_tokens == 1 and gen.logprobs is not None
            assert p is not None and 0.0 <= p <= 1.0
            seen[(q, a)] = (p, gen)
    assert live.misses == 4 and len(store.call_log()) == 4
    replay = CachedBackend(None, store, model_id=slm_backend.model_id)
    for (q, a), (p, gen) in seen.items():
        again = await verify(replay, GenerationRequest.create(q, max_tokens=16), a)
        assert again.text == gen.text and p_yes(again) == pytest.approx(p, abs=2e-3)  # float16 in the store
    print({a: round(p, 3) for (_, a), (p, _) in seen.items()})

    # the whole policy: live through the store, then replayed from it alone, decides the same
    llm = ScriptedBackend("12", model_id="llm")
    q = CASES[0][0]
    settings = RunSettings(max_tokens=16)
    policy = make_policy("automix", threshold=0.5)
    a_live = await Runner(live, CachedBackend(llm, store), settings=settings).answer(q, policy)
    a_replay = await Runner(replay, CachedBackend(None, store, model_id="llm"), settings=settings).answer(q, policy)
    assert a_live.decision.kind == a_replay.decision.kind and a_live.text == a_replay.text
    assert a_live.decision.details["p_yes"] == pytest.approx(a_replay.decision.details["p_yes"], abs=2e-3)
    assert a_replay.usage["slm"].calls == 2 and not store.duplicate_calls()
