"""The paper's size recipe: the size head regresses log(1 + n*) in tokens with a Huber loss, and the
policies turn its prediction into a hint of that many tokens (no predicted length, no grid in between),
with the LLM answering in full once the hint reaches the request's answer budget."""

import asyncio
import math
import random

import numpy as np
import pytest

from shepherd.models.base import GenerationRequest
from shepherd.policies.base import PolicyContext
from shepherd.policies.shepherding import ProactivePolicy
from shepherd.predictor.data import Example
from shepherd.predictor.model import NetConfig, TwoStageModel
from shepherd.predictor.predictor import DecisionRule, load_predictor
from shepherd.predictor.train import TrainSettings, _targets, train

SHORT, LONG = 8, 96  # n* of the two kinds of query


def _examples(n=80, seed=0):
    """Queries about "apples" need 8 tokens of hint, about "rockets" 96; the LLM's answer length L is
    drawn independently (150-400), so n*/L carries L's noise while n* itself is a clean function of the
    query. A quarter of the queries need no hint."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        long_ = i % 2 == 1
        L = rng.randint(150, 400)
        need = i % 4 != 0
        topic = "rockets orbit fuel" if long_ else "apples basket fruit"
        tok = (LONG if long_ else SHORT) if need else 0
        out.append(Example(item_id=f"s/{i}", text=f"{topic} question {rng.randint(100_000, 999_999)}",
                           kind="hint" if need else "none", y=int(need), fraction=tok / L, tokens=tok,
                           full_tokens=L))
    return out


def _settings(size_target):
    return TrainSettings(featurizer="lexical", featurizer_config={"n_features": 64}, reactive=False,
                         model=NetConfig(hidden=0, l2=0.01, size_target=size_target), seed=0)


@pytest.fixture(scope="module")
def log_predictor():
    pred, _ = train(_examples(), _settings("log_tokens"))
    return pred


def test_the_size_target_is_log1p_of_the_hint_tokens():
    ex = _examples(8)
    _, size, loglen = _targets(ex, "log_tokens")
    assert size.tolist() == pytest.approx([math.log1p(e.tokens) for e in ex])
    assert loglen.tolist() == pytest.approx([math.log1p(e.full_tokens) for e in ex])
    _, frac, _ = _targets(ex, "fraction")
    assert frac.tolist() == pytest.approx([e.fraction for e in ex])


def test_log_tokens_recipe_learns_the_hint_size_in_tokens(log_predictor):
    pred = log_predictor
    assert pred.size_target == "log_tokens" and pred.models["proactive"].config.size_target == "log_tokens"
    rule = DecisionRule(threshold=0.0)  # always hint: read the size head
    for topic, want in (("apples basket fruit", SHORT), ("rockets orbit fuel", LONG)):
        for q in range(500_000, 500_005):  # six digits, as the training questions' numbers
            p = pred.decide(f"{topic} question {q}", mode="proactive", rule=rule)
            assert p.kind == "hint" and p.tokens == pytest.approx(want, rel=0.35), (topic, p)
            # the hint is the predicted tokens themselves: not a grid fraction of the predicted length
            assert p.hint_tokens == max(1, math.ceil(p.tokens - 1e-9))
            assert p.details()["pred_tokens"] == round(p.tokens, 1)
            # the scale multiplies tokens; a hint reaching the answer budget is the LLM's whole answer
            p2 = pred.decide(f"{topic} question {q}", mode="proactive", rule=rule.with_overrides(scale=2.0))
            assert p2.hint_tokens == math.ceil(2 * p.tokens - 1e-9)
            p3 = pred.decide(f"{topic} question {q}", mode="proactive", rule=rule, budget=40)
            assert p3.kind == ("llm" if want == LONG else "hint")


def test_the_fraction_recipe_keeps_its_old_decisions():
    """The default recipe is untouched: its hint is ceil(f * L^) with f snapped to the grid."""
    pred, _ = train(_examples(), _settings("fraction"), grid=[0.1, 0.2, 0.5, 1.0])
    assert pred.size_target == "fraction"
    p = pred.decide("rockets orbit fuel question 500003", mode="proactive", rule=DecisionRule(threshold=0.0),
                    budget=1)  # the budget only caps a token-sized hint
    assert p.tokens is None and p.hint_fraction in (0.1, 0.2, 0.5) and p.kind == "hint"
    assert p.hint_tokens == math.ceil(p.hint_fraction * p.expected_tokens - 1e-9)


def test_the_size_loss_is_huber_on_log1p_tokens():
    """One far outlier among positives: Huber (delta 1) puts the size head's bias near the others'
    log1p(n*) (9 (b - log 8) = 1 at the optimum), a squared loss at their mean (3.0 here)."""
    tokens = [7] * 9 + [100_000]
    ex = [Example(item_id=f"h/{i}", text="q", kind="hint", y=1, fraction=0.1, tokens=t, full_tokens=200)
          for i, t in enumerate(tokens)] + [Example(item_id="h/n", text="q", kind="none", y=0, fraction=0.0,
                                                    tokens=0, full_tokens=200)]
    y, size, loglen = _targets(ex, "log_tokens")
    m = TwoStageModel(NetConfig(hidden=0, epochs=1500, lr=0.01, size_target="log_tokens"))
    m.fit(np.zeros((len(ex), 1)), y, size, loglen)
    huber_opt = math.log1p(7) + 1.0 / 9
    assert float(m.params["bs"]) == pytest.approx(huber_opt, abs=0.05)
    assert abs(float(m.params["bs"]) - float(np.mean(size[:10]))) > 0.7  # far from the squared-loss optimum


def test_log_tokens_artifact_round_trip_and_policy(log_predictor, tmp_path):
    out = log_predictor.save(tmp_path / "pred")
    back = load_predictor(out, cached=False)
    assert back.size_target == "log_tokens" and back.manifest["size_target"] == "log_tokens"
    assert back.models["proactive"].config.size_target == "log_tokens"
    rule = DecisionRule(threshold=0.0)
    for q in ("apples basket fruit question 500001", "rockets orbit fuel question 500002"):
        a = log_predictor.decide(q, mode="proactive", rule=rule)
        b = back.decide(q, mode="proactive", rule=rule)
        assert (a.kind, a.hint_tokens) == (b.kind, b.hint_tokens) and a.tokens == pytest.approx(b.tokens)

    # the policy hands the request's max_tokens on as the budget
    def decide(q, max_tokens):
        req = GenerationRequest.create([{"role": "user", "content": q}], max_tokens=max_tokens)
        return asyncio.run(ProactivePolicy(back, threshold=0.0).decide(PolicyContext(req, None, None)))

    want = back.decide("rockets orbit fuel question 500002", mode="proactive", rule=rule).hint_tokens
    d = decide("rockets orbit fuel question 500002", 512)
    assert d.kind == "hint" and d.hint_tokens == want and "pred_tokens" in d.details
    assert decide("rockets orbit fuel question 500002", want).kind == "llm"
    assert decide("apples basket fruit question 500001", want).kind == "hint"


def test_a_study_candidate_carries_the_size_target():
    from pydantic import ValidationError

    from shepherd.evaluation.study import PredictorCandidate
    from shepherd.predictor.select import Candidate

    c = Candidate(**PredictorCandidate(featurizer="minilm", hidden=0, l2=1.0, size_target="log_tokens").model_dump())
    assert c.settings(_settings("fraction")).model.size_target == "log_tokens"
    plain = Candidate(**PredictorCandidate(featurizer="minilm").model_dump())
    assert plain.size_target is None and plain.label == "minilm, hidden 16, l2 0.1"  # reports read as before
    with pytest.raises(ValidationError):
        PredictorCandidate(size_target="tokens")
