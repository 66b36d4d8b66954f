"""The confidence policies, live with the real local pair: the SLM answers with its token log-probabilities,
and its own confidence decides whether that answer stands, a hint is bought, or the LLM answers."""

from __future__ import annotations

import pytest

from shepherd.confidence import features
from shepherd.policies.base import PolicyContext
from shepherd.policies.registry import make_policy, policy_names
from shepherd.runner import Runner, RunSettings

Q = "A farmer has 17 cows and buys 8 more, then sells 5. How many cows are left? Finish with 'The answer is N.'"


def test_the_policies_are_registered_and_refuse_an_unknown_feature():
    assert {"confidence", "confidence-cascade"} <= set(policy_names())
    with pytest.raises(ValueError, match="unknown confidence feature"):
        make_policy("confidence", feature="vibes")
    p = make_policy("confidence", threshold=-2.0, fraction=0.2)
    assert p.with_threshold(-0.5).threshold == -0.5 and p.threshold == -2.0
    assert p.describe()["fraction"] == 0.2


async def test_an_answer_without_logprobs_is_not_trusted():
    from shepherd.models.scripted import ScriptedBackend

    slm, llm = ScriptedBackend("The answer is 20."), ScriptedBackend("17 + 8 - 5 = 20. The answer is 20.")
    ctx = PolicyContext(request=Runner(slm, llm).build_request(Q), slm=slm, llm=llm)
    for name, kind in (("confidence", "hint"), ("confidence-cascade", "llm")):
        d = await make_policy(name, threshold=-100.0).decide(ctx)
        assert d.kind == kind and d.details["logprobs"] is False and d.spent[0][0] == "slm"


@pytest.mark.slow
async def test_the_threshold_decides_between_the_slms_answer_a_hint_and_the_llm(slm_backend, llm_backend):
    runner = Runner(slm_backend, llm_backend, settings=RunSettings(max_tokens=80))
    stands = await runner.answer(Q, make_policy("confidence", threshold=-100.0))
    assert stands.decision.kind == "slm" and stands.cost.llm_output == 0 and stands.usage["llm"].calls == 0
    score = stands.decision.details["score"]
    (slm_gen,) = [g for r, g in stands.generations if r == "slm"]
    assert score == pytest.approx(features(slm_gen.logprobs, slm_gen.text)["lowest_window16"])
    assert score < 0  # a window mean of log-probabilities
    # (a little above it: the same greedy answer scores a little differently once the prompt is cached)
    hinted = await runner.answer(Q, make_policy("confidence", threshold=score + 0.1, fraction=0.3,
                                                expected_tokens=40))
    assert hinted.decision.kind == "hint" and hinted.hint_tokens == 12
    assert hinted.usage["slm"].calls == 2  # its doubted answer (paid) and the continuation of the hint
    cascade = await runner.answer(Q, make_policy("confidence-cascade", threshold=score + 0.1))
    assert cascade.decision.kind == "llm" and cascade.usage["slm"].calls == 1 and cascade.usage["llm"].calls == 1


async def test_three_bands_send_the_least_confident_answers_to_the_llm():
    from shepherd.models.base import Generation, TokenLogprobs
    from shepherd.models.scripted import ScriptedBackend

    class Sure(ScriptedBackend):  # a generation whose log-probabilities are given
        def __init__(self, lp: float):
            super().__init__(model_id="s")
            self.lp = lp

        async def agenerate(self, request, n=1):
            t = TokenLogprobs([self.lp] * 20, [0.1] * 20, [1.0] * 20, list(range(1, 21)))
            return [Generation("x" * 20, 5, 20, "stop", 0.0, "s", t.mean, logprobs=t)]

    llm = ScriptedBackend("17 + 8 - 5 = 20. The answer is 20.")
    policy = make_policy("confidence", threshold=-0.5, llm_below=-2.0, fraction=0.5, expected_tokens=20)
    kinds = []
    for lp in (-0.1, -1.0, -3.0):
        ctx = PolicyContext(request=Runner(Sure(lp), llm).build_request(Q), slm=Sure(lp), llm=llm)
        kinds.append((await policy.decide(ctx)).kind)
    assert kinds == ["slm", "hint", "llm"]
    with pytest.raises(ValueError, match="llm_below"):
        make_policy("confidence", threshold=-2.0, llm_below=-1.0)


@pytest.mark.slow
async def test_the_ladder_extends_the_llms_own_hint_on_the_real_pair(slm_backend, llm_backend):
    """confidence-ladder on the local pair with a bar no answer clears: the SLM's answer, then each of its
    continuations, are doubted; the LLM extends its own hint rung by rung and finally finishes its answer,
    which is then the LLM's own greedy answer, bought in pieces (the later pieces' input re-read from its
    KV cache, priced as cached input)."""
    from shepherd.models.base import GenerationRequest

    runner = Runner(slm_backend, llm_backend, settings=RunSettings(max_tokens=60))
    policy = make_policy("confidence-ladder", threshold=10.0, rungs=(0.1, 0.3), expected_tokens=40)
    ans = await runner.answer(Q, policy)
    assert ans.decision.kind == "hint" and ans.decision.details["ladder"] == [12]
    llm_calls = [g for r, g in ans.generations if r == "llm"]
    assert len(llm_calls) == 3  # the 4-token hint, its extension to 12, and the rest
    assert [g.completion_tokens for g in llm_calls[:2]] == [4, 8]
    assert ans.usage["slm"].calls == 3  # its answer and two doubted continuations, all kept in the usage
    direct = (await llm_backend.agenerate(GenerationRequest.create(Q, max_tokens=60)))[0]
    assert ans.text == direct.text
    assert ans.usage["llm"].completion_tokens == direct.completion_tokens
    assert ans.usage["llm"].cached_prompt_tokens == (llm_calls[0].prompt_tokens + 4) + (llm_calls[0].prompt_tokens + 12)
    # a bar every continuation clears: the first rung's continuation stands
    ok = await runner.answer(Q, make_policy("confidence-ladder", threshold=-100.0, rungs=(0.1, 0.3),
                                            expected_tokens=40))
    assert ok.decision.kind == "slm"  # (its own answer already clears it)
