"""Orchestration of the shepherding call, on scripted backends (no model involved)."""

import pytest

from shepherd.costs import Price
from shepherd.models.base import BackendError, GenerationRequest
from shepherd.models.scripted import ScriptedBackend
from shepherd.policies import Decision, FixedHint, LLMOnly, Policy, SLMOnly
from shepherd.runner import Runner, RunSettings

LLM_ANSWER = "Step one add three and four to get seven . Step two double it to get fourteen . The answer is 14."
SLM_ANSWER = "I think it is twelve . The answer is 12."
LLM_PRICE = Price(input=1_000_000.0, output=2_000_000.0)  # $1 per input token, $2 per output token


def make_runner(**settings):
    slm = ScriptedBackend(SLM_ANSWER, model_id="slm")
    llm = ScriptedBackend(LLM_ANSWER, model_id="llm")
    return Runner(slm, llm, llm_price=LLM_PRICE, settings=RunSettings(**settings)), slm, llm


async def test_hint_buys_exactly_n_tokens_and_slm_continues():
    runner, slm, llm = make_runner()
    ans = await runner.answer("What is (3+4)*2?", FixedHint(tokens=5))
    assert ans.hint_tokens == 5
    assert ans.hint_text == "Step one add three and"
    assert ans.text.startswith(ans.hint_text)
    assert llm.calls[0].max_tokens == 5
    assert slm.calls[0].prefix == ans.hint_text
    assert ans.decision.kind == "hint"
    # LLM paid: prompt (3 words) at $1 + 5 output tokens at $2
    assert ans.usage["llm"].completion_tokens == 5
    assert ans.cost.llm_input == pytest.approx(3.0)
    assert ans.cost.llm_output == pytest.approx(10.0)
    assert ans.cost.slm == 0.0


async def test_every_answer_says_how_the_hint_was_taken():
    """hint_mode: "prefix" where the SLM continues the assistant turn, "user_prompt" where an API without
    prefill reads the hint in the user turn, None where no hint was continued."""
    runner, slm, _llm = make_runner()
    ans = await runner.answer("What is (3+4)*2?", FixedHint(tokens=5))
    assert ans.hint_mode == "prefix" and ans.to_json()["hint_mode"] == "prefix"
    slm.hint_mode = "user_prompt"  # what OpenAICompatibleBackend(prefix_route="user_hint") reports
    assert (await runner.answer("What is (3+4)*2?", FixedHint(tokens=5))).hint_mode == "user_prompt"
    assert (await runner.answer("What is (3+4)*2?", SLMOnly())).hint_mode is None
    assert (await runner.answer("What is (3+4)*2?", FixedHint(tokens=500))).hint_mode is None  # LLM finished


async def test_hint_of_zero_is_slm_only():
    runner, _slm, llm = make_runner()
    ans = await runner.answer("What is (3+4)*2?", FixedHint(tokens=0))
    assert ans.decision.kind == "slm"
    assert llm.calls == []
    assert ans.text == SLM_ANSWER
    assert ans.cost.total == 0.0


async def test_llm_finishing_inside_the_hint_returns_its_answer_without_slm():
    runner, slm, _llm = make_runner()
    ans = await runner.answer("q", FixedHint(tokens=500))
    assert ans.text == LLM_ANSWER
    assert slm.calls == []


async def test_llm_only_counterfactual_equals_real_cost_for_llm_only():
    runner, _, _ = make_runner()
    ans = await runner.answer("What is (3+4)*2?", LLMOnly())
    assert ans.llm_only_cost_usd == pytest.approx(ans.cost.total)
    hinted = await runner.answer("What is (3+4)*2?", FixedHint(tokens=3))
    assert hinted.cost.total < hinted.llm_only_cost_usd


async def test_slm_only_has_counterfactual_but_no_llm_call():
    runner, _, llm = make_runner()
    ans = await runner.answer("What is (3+4)*2?", SLMOnly())
    assert llm.calls == []
    assert ans.llm_only_cost_usd > 0


async def test_llm_failure_falls_back_to_slm_when_configured():
    runner, _slm, llm = make_runner(on_llm_error="slm")
    llm.fail = BackendError("connection refused")
    ans = await runner.answer("q", FixedHint(tokens=3))
    assert ans.degraded and ans.text == SLM_ANSWER
    assert "connection refused" in ans.notes[0]


async def test_llm_failure_raises_by_default():
    runner, _, llm = make_runner()
    llm.fail = BackendError("down")
    with pytest.raises(BackendError):
        await runner.answer("q", FixedHint(tokens=3))


async def test_slm_failure_falls_back_to_llm():
    runner, slm, _ = make_runner(on_slm_error="llm")
    slm.fail = BackendError("oom")
    ans = await runner.answer("q", SLMOnly())
    assert ans.degraded and ans.text == LLM_ANSWER


async def test_policy_spent_generations_are_counted():
    class SampleThenAnswer(Policy):
        name = "sample-then-answer"

        async def decide(self, ctx):
            gens = await ctx.slm.agenerate(ctx.request, n=3)
            return Decision("slm", spent=[("slm", g) for g in gens], answer_text=gens[0].text)

    runner, slm, _ = make_runner()
    ans = await runner.answer("q", SampleThenAnswer())
    assert ans.usage["slm"].calls == 3 and len(slm.calls) == 3
    assert ans.text == SLM_ANSWER


@pytest.mark.parametrize("bad", ["", "   ", [], [{"role": "user", "content": ""}], [{"role": "x", "content": "a"}]])
async def test_empty_or_malformed_question_is_rejected(bad):
    runner, _, _ = make_runner()
    with pytest.raises(ValueError):
        await runner.answer(bad, SLMOnly())


def test_request_key_is_stable_and_sensitive():
    a = GenerationRequest.create("hi", max_tokens=5)
    b = GenerationRequest.create([{"role": "user", "content": "hi"}], max_tokens=5)
    assert a.key("m") == b.key("m")
    assert a.key("m") != a.key("other")
    assert a.key("m") != GenerationRequest.create("hi", max_tokens=6).key("m")
    # greedy ignores the seed; sampling does not
    assert a.key("m") == GenerationRequest.create("hi", max_tokens=5, seed=7).key("m")
    s1 = GenerationRequest.create("hi", temperature=0.7, seed=1)
    s2 = GenerationRequest.create("hi", temperature=0.7, seed=2)
    assert s1.key("m") != s2.key("m")


def test_fixed_hint_validates_settings():
    with pytest.raises(ValueError):
        FixedHint()
    with pytest.raises(ValueError):
        FixedHint(tokens=3, fraction=0.2)
    with pytest.raises(ValueError):
        FixedHint(fraction=1.5)
    assert FixedHint(fraction=0.25, expected_tokens=200).hint_tokens() == 50


async def test_scripted_backend_draws_n_samples_with_consecutive_seeds():
    from shepherd.models.base import GenerationRequest
    from shepherd.models.scripted import ScriptedBackend

    b = ScriptedBackend(lambda r: f"seed {r.seed}", model_id="s")
    gens = await b.agenerate(GenerationRequest.create("hi", temperature=0.7, seed=5), n=3)
    assert [g.text for g in gens] == ["seed 5", "seed 6", "seed 7"]
    assert [c.seed for c in b.calls] == [5, 6, 7]
