"""The proactive and reactive policies: built from settings, run through the runner live and in replay.

Replay uses the trace store's replay backends with no model behind them (a request the sweep did not
store raises `MissingGeneration`), so these tests also prove the policies ask for exactly what the sweep
stores: the base request, hints cut at grid levels, and the samples (temperature 0.7, seeds 0, 1, 2).
The store is the signal store of tests/predictor/signal_store.py (real GSM8K questions, scripted models).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "predictor"))

from signal_store import FAST_MODEL, build_store

from shepherd.models.scripted import ScriptedBackend
from shepherd.policies.base import PolicyContext
from shepherd.policies.registry import make_policy, policy_names
from shepherd.runner import Runner

N = 80  # items in this module's store (the replay loops stay quick)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("pstore") / "gsm8k_signal.sqlite", n_items=N)


@pytest.fixture(scope="module")
def data(store_path):
    from shepherd.predictor.data import load_store

    return load_store(store_path, "gsm8k")


@pytest.fixture(scope="module")
def artifact(data, tmp_path_factory):
    from shepherd.predictor.model import NetConfig
    from shepherd.predictor.train import TrainSettings, train

    pred, _ = train(data.examples, TrainSettings(featurizer_config={"n_features": 128},
                                                 model=NetConfig(**FAST_MODEL)),
                    grid=data.grid, sweep_settings=data.sweep_settings,
                    source={"store": str(data.store), "task": "gsm8k", "filter": True})
    out = tmp_path_factory.mktemp("pa") / "predictor"
    pred.save(out)
    return out


@pytest.fixture(scope="module")
def items(data):
    from shepherd.tasks.registry import get_task

    task = get_task("gsm8k")
    by_id = {it.id: it for it in task.load(split="train", limit=N, seed=0)}
    return task, by_id


def replay_runner(store_path):
    from shepherd.traces.cached import CachedBackend
    from shepherd.traces.store import TraceStore

    store = TraceStore(store_path, readonly=True)
    slm = CachedBackend(None, store, model_id="scripted-slm", generate_missing=False)
    llm = CachedBackend(None, store, model_id="scripted-llm", generate_missing=False, map_hints=True)
    return Runner(slm, llm), store


def test_registered_and_built_from_settings(artifact, monkeypatch):
    assert {"proactive", "reactive"} <= set(policy_names())
    p = make_policy("proactive", artifact=str(artifact), threshold=0.3)
    assert p.name == "proactive" and p.rule.threshold == 0.3
    d = p.describe()
    assert d["artifact"] == str(artifact.resolve()) and len(d["fingerprint"]) == 64
    r = make_policy("reactive", artifact=str(artifact), consensus_skip=False)
    assert (r.samples, r.temperature, r.consensus_skip) == (3, 0.7, False)  # the sweep's sample settings
    with pytest.raises(ValueError, match="bad settings"):
        make_policy("proactive", artifact=str(artifact), bogus=1)
    monkeypatch.delenv("SHEPHERD_PREDICTOR", raising=False)
    with pytest.raises(ValueError, match="needs a trained predictor"):
        make_policy("proactive")
    monkeypatch.setenv("SHEPHERD_PREDICTOR", str(artifact))
    assert make_policy("proactive").artifact == str(artifact.resolve())
    with pytest.raises(ValueError, match="not a predictor artifact"):
        make_policy("proactive", artifact=str(artifact.parent / "missing"))


async def test_proactive_replay_matches_prediction_and_simulation(store_path, data, artifact, items):
    """Every item replays from the store; decisions are the predictor's; outcomes and costs are exactly
    what calibration's simulation reads off the sweep."""
    from shepherd.predictor.calibrate import outcome
    from shepherd.predictor.predictor import load_predictor

    task, by_id = items
    pred = load_predictor(artifact)
    runner, store = replay_runner(store_path)
    policy = make_policy("proactive", artifact=str(artifact))
    kinds = set()
    try:
        for e in data.examples:
            item = by_id[e.item_id]
            ans = await runner.answer(task.messages(item), policy, item=item)
            want = pred.decide(e.text, mode="proactive")
            assert (ans.decision.kind, ans.decision.hint_tokens) == (want.kind, want.hint_tokens)
            assert ans.decision.details["p_hint"] == round(want.prob, 4)
            sim = outcome(e.sweep, want.kind, want.hint_tokens)
            assert task.grade(item, ans.text).correct == sim.correct, e.item_id
            assert ans.cost_usd == pytest.approx(sim.cost, rel=1e-9, abs=1e-15)
            kinds.add(ans.decision.kind)
    finally:
        store.close()
    assert {"slm", "hint"} <= kinds


async def test_reactive_replay_pays_for_samples(store_path, data, artifact, items):
    from shepherd.predictor.features import SampleFeaturizer

    task, by_id = items
    runner, store = replay_runner(store_path)
    policy = make_policy("reactive", artifact=str(artifact))
    skipped = predicted = 0
    try:
        for e in data.examples[:40]:
            item = by_id[e.item_id]
            ans = await runner.answer(task.messages(item), policy, item=item)
            d = ans.decision
            samples = [g for role, g in d.spent if role == "slm"]
            assert len(samples) == 3 and all(g.cached for g in samples)
            assert ans.usage["slm"].calls >= 3
            assert ans.usage["slm"].completion_tokens >= sum(g.completion_tokens for g in samples)
            _, top = SampleFeaturizer.consensus(e.samples)  # the stored samples' answers
            if top == 3:
                skipped += 1
                assert d.details["consensus_skip"] is True and d.kind == "slm"
                assert ans.text == samples[0].text and ans.usage["llm"].calls == 0
            else:
                predicted += 1
                assert d.details["consensus_skip"] is False and "p_hint" in d.details
    finally:
        store.close()
    assert skipped and predicted


async def test_reactive_without_consensus_skip_always_predicts(store_path, data, artifact, items):
    task, by_id = items
    runner, store = replay_runner(store_path)
    policy = make_policy("reactive", artifact=str(artifact), consensus_skip=False)
    try:
        for e in data.examples[:10]:
            item = by_id[e.item_id]
            ans = await runner.answer(task.messages(item), policy, item=item)
            assert ans.decision.details["consensus_skip"] is False
            assert ans.decision.answer_text is None
            assert len(ans.decision.spent) == 3
    finally:
        store.close()


async def test_reactive_live_sample_requests(artifact):
    """Live, with no task item: three sampled SLM calls at the sweep's temperature and seeds; answers
    compared by the normalised final number."""
    from shepherd.models.base import GenerationRequest

    slm = ScriptedBackend("We add them. The answer is 7.", model_id="s")
    llm = ScriptedBackend("Add 3 and 4 to get 7. The answer is 7.", model_id="l")
    policy = make_policy("reactive", artifact=str(artifact))
    req = GenerationRequest.create("What is 3 + 4?", max_tokens=64)
    d = await policy.decide(PolicyContext(request=req, slm=slm, llm=llm))
    assert d.kind == "slm" and d.answer_text == "We add them. The answer is 7." and len(d.spent) == 3
    assert [(c.temperature, c.seed) for c in slm.calls] == [(0.7, 0), (0.7, 1), (0.7, 2)]  # n=3: seeds 0, 1, 2
    assert policy.sample_requests(PolicyContext(request=req, slm=slm, llm=llm)).max_tokens == 64

    # disagreeing samples go to the predictor, and the runner carries its decision out
    answers = iter(["The answer is 1.", "The answer is 2.", "The answer is 3."] + ["The answer is 7."] * 10)
    slm2 = ScriptedBackend(lambda r: next(answers), model_id="s")
    runner = Runner(slm2, llm)
    ans = await runner.answer("A train leaves at 3 pm and travels 4 hours. When does it arrive?", policy)
    assert ans.decision.details["consensus_skip"] is False and ans.decision.details["agreeing"] == 1
    assert ans.usage["slm"].calls >= 3


async def test_proactive_live_through_api(artifact, tmp_path):
    from shepherd.api import Shepherd
    from shepherd.config import parse_config

    sh = Shepherd(slm=ScriptedBackend("The answer is 5.", model_id="s"),
                  llm=ScriptedBackend("First 2 then 3 makes 5. The answer is 5.", model_id="l"),
                  policy="proactive", policy_settings={"artifact": str(artifact)})
    ans = await sh.aanswer("Tom has 2 apples and buys 3 more. How many apples does he have?")
    assert ans.policy == "proactive" and ans.decision.kind in ("slm", "hint", "llm")
    assert "p_hint" in ans.decision.details

    cfg = parse_config({
        "slm": {"backend": "scripted", "model": "s", "script": "The answer is 5."},
        "llm": {"backend": "scripted", "model": "l", "script": "2 plus 3 is 5. The answer is 5."},
        "policy": {"name": "reactive", "settings": {"artifact": str(artifact), "threshold": 0.0}},
    })
    sh = Shepherd.from_config(cfg)
    assert sh.policy.name == "reactive" and sh.policy.rule.threshold == 0.0
    ans = await sh.aanswer("Tom has 2 apples and buys 3 more. How many apples does he have?")
    assert ans.decision.details["consensus_skip"] is True  # scripted samples all agree


def test_ask_cli_with_config(artifact, tmp_path):
    from typer.testing import CliRunner

    from shepherd.cli import app

    cfg = tmp_path / "shepherd.toml"
    cfg.write_text(f"""
[slm]
backend = "scripted"
model = "s"
script = "The answer is 5."

[llm]
backend = "scripted"
model = "l"
script = "2 plus 3 is 5. The answer is 5."

[policy]
name = "proactive"
settings = {{ artifact = "{artifact}", threshold = 0.0 }}
""")
    res = CliRunner().invoke(app, ["ask", "--config", str(cfg), "--json", "What is 2 + 3?"])
    assert res.exit_code == 0, res.output
    assert '"policy": "proactive"' in res.output and '"p_hint"' in res.output


async def test_reactive_fixed_replays_the_sweep_and_hints_where_samples_disagree(store_path, data, items):
    """No predictor: agreement answers; every other item gets the swept hint of fraction f, and its outcome
    and cost are the sweep's own level f (what the runner pays is the samples on top)."""
    from shepherd.predictor.calibrate import outcome
    from shepherd.predictor.features import SampleFeaturizer
    from shepherd.traces.hints import hint_tokens_for

    task, by_id = items
    runner, store = replay_runner(store_path)
    lengths = {e.item_id: e.sweep.full_tokens for e in data.examples}
    policy = make_policy("reactive-fixed", fraction=0.3, lengths=lengths)
    assert policy.describe()["lengths_from_sweep"] is True
    kinds = set()
    try:
        for e in data.examples[:40]:
            item = by_id[e.item_id]
            ans = await runner.answer(task.messages(item), policy, item=item)
            d = ans.decision
            assert len([g for role, g in d.spent if role == "slm"]) == 3
            _, top = SampleFeaturizer.consensus(e.samples)
            if top == 3:
                assert d.kind == "slm" and d.details["consensus_skip"] is True
                continue
            n = hint_tokens_for(0.3, e.sweep.full_tokens)
            assert (d.kind, d.hint_tokens) == ("hint", n) if n else d.kind == "slm"
            sim = outcome(e.sweep, d.kind, d.hint_tokens)
            assert task.grade(item, ans.text).correct == sim.correct, e.item_id
            assert ans.usage["llm"].completion_tokens == d.hint_tokens
            kinds.add(d.kind)
    finally:
        store.close()
    assert "hint" in kinds


async def test_reactive_fixed_live_and_its_bad_settings():
    from shepherd.models.base import GenerationRequest

    answers = iter(["The answer is 1.", "The answer is 2.", "The answer is 3."])
    slm = ScriptedBackend(lambda r: next(answers, "so it is 7. The answer is 7."), model_id="s")
    llm = ScriptedBackend("Add 3 and 4 to get 7. The answer is 7.", model_id="l")
    policy = make_policy("reactive-fixed", fraction=0.25, expected_tokens=40)
    req = GenerationRequest.create("What is 3 + 4?", max_tokens=64)
    d = await policy.decide(PolicyContext(request=req, slm=slm, llm=llm))
    assert (d.kind, d.hint_tokens) == ("hint", 10) and d.details["agreeing"] == 1 and len(d.spent) == 3
    assert d.details["L_source"] == "expected"
    # f = 1: disagreement goes to the LLM in full (ABC with t = 1)
    answers = iter(["The answer is 1.", "The answer is 2.", "The answer is 3."])
    d = await make_policy("reactive-fixed", fraction=1.0).decide(PolicyContext(request=req, slm=slm, llm=llm))
    assert d.kind == "llm"
    for bad in ({"fraction": 1.5}, {"samples": 0}, {"temperature": 0.0}, {"agree": 4}, {"agree": 2 / 3}):
        with pytest.raises(ValueError):
            make_policy("reactive-fixed", **bad)


@pytest.mark.parametrize("policy", ["reactive", "reactive-fixed"])
async def test_agreeing_samples_are_counted_k_of_m(policy, artifact):
    """`agree=2`: two of three samples agreeing answer with the SLM (the first of the two); the default
    (all three) sends the same samples on to the hint decision."""
    from shepherd.models.base import GenerationRequest

    texts = ["so The answer is 5.", "so The answer is 7.", "hence The answer is 7."]
    slm = ScriptedBackend(lambda r: texts[r.seed % 3], model_id="s")
    llm = ScriptedBackend("Add 3 and 4 to get 7. The answer is 7.", model_id="l")
    settings = {"artifact": str(artifact)} if policy == "reactive" else {"fraction": 0.3}
    req = GenerationRequest.create("What is 3 + 4?", max_tokens=64)
    d = await make_policy(policy, agree=2, **settings).decide(PolicyContext(request=req, slm=slm, llm=llm))
    assert d.kind == "slm" and d.answer_text == "so The answer is 7." and d.details["agreeing"] == 2
    assert d.details["agree"] == 2 and "2 of 3" in d.reason
    d = await make_policy(policy, **settings).decide(PolicyContext(request=req, slm=slm, llm=llm))
    assert d.details["consensus_skip"] is False and d.details["agree"] == 3


@pytest.mark.parametrize("policy", ["reactive", "reactive-fixed"])
async def test_the_greedy_answer_can_vote_with_the_samples(policy, artifact):
    """3 of 4: the greedy answer plus three samples; it is asked for as the query's own (greedy) request,
    and its answer is the one that stands when its group wins. The predictor still reads the samples only."""
    from shepherd.models.base import GenerationRequest

    texts = ["so The answer is 5.", "so The answer is 7.", "hence The answer is 7."]
    slm = ScriptedBackend(lambda r: "thus The answer is 7." if r.greedy else texts[r.seed % 3], model_id="s")
    llm = ScriptedBackend("Add 3 and 4 to get 7. The answer is 7.", model_id="l")
    settings = {"artifact": str(artifact)} if policy == "reactive" else {"fraction": 0.3}
    req = GenerationRequest.create("What is 3 + 4?", max_tokens=64)
    ctx = PolicyContext(request=req, slm=slm, llm=llm)
    d = await make_policy(policy, agree=3, greedy_voter=True, **settings).decide(ctx)
    assert d.kind == "slm" and d.answer_text == "thus The answer is 7." and d.details["agreeing"] == 3
    assert len(d.spent) == 4 and d.spent[0][1].text == "thus The answer is 7."
    d = await make_policy(policy, agree=3, **settings).decide(ctx)  # the samples alone: 2 of 3
    assert d.details["consensus_skip"] is False and len(d.spent) == 3
    with pytest.raises(ValueError):
        make_policy(policy, agree=5, greedy_voter=True, **settings)


class _Verbatim(ScriptedBackend):
    """Returns the given texts as they are, one per call (the scripted backend rejoins words, which
    flattens code onto one line)."""

    def __init__(self, texts):
        super().__init__(model_id="s")
        self.texts = iter(texts)

    async def agenerate(self, request, n=1):
        from shepherd.models.base import Generation

        return [Generation(text=next(self.texts), prompt_tokens=1, completion_tokens=1, finish_reason="stop",
                           latency_s=0.0, model=self.model_id) for _ in range(n)]


@pytest.mark.parametrize("policy", ["reactive", "reactive-fixed"])
async def test_code_samples_agree_when_their_programs_compute_the_same(policy, artifact):
    """Reactive agreement on code runs the samples on the prompt's example calls (as ABC does): programs
    written differently but computing the same agree; a different result, or a program that only raises,
    does not. Never the last number in the code (which once made `return 1` and `return x + 1` agree)."""
    from shepherd.models.base import GenerationRequest
    from shepherd.tasks.registry import get_task

    item = get_task("humaneval").load(limit=1)[0]
    entry = item.metadata["entry_point"]
    prog = lambda body: f"```python\ndef {entry}(*args):\n{body}\n```"
    one, one_too = prog("    return 1"), prog("    x = 0\n    # same result, other code\n    return x + 1")
    two, boom = prog("    return 2"), prog("    raise ValueError('no')")
    # three different programs that all fail; each text ends on the number 200 (mbpp/20 once "agreed" so)
    fails = [prog(f"    raise ValueError({body!r})  # 200") for body in ("a", "b", "c")]
    settings = {"artifact": str(artifact)} if policy == "reactive" else {"fraction": 0.3}
    llm = ScriptedBackend("def f(): pass", model_id="l")
    for texts, agree, top in (([one, one_too, one], True, 3), ([one, two, one], False, 2),
                              ([boom, boom, boom], False, 0), (fails, False, 0)):
        req = GenerationRequest.create(item.metadata["prompt"], max_tokens=64)
        ctx = PolicyContext(request=req, slm=_Verbatim(texts), llm=llm, item=item)
        d = await make_policy(policy, **settings).decide(ctx)
        assert (d.details["consensus_skip"], d.details["agreeing"]) == (agree, top), texts


async def test_reactive_live_code_samples_agree_by_what_they_compute(artifact):
    """A live code query that shows example calls: differently written programs computing the same results
    agree, so reactive answers with the SLM (shepherd/agreement.py runs them in the sandbox)."""
    from shepherd.models.base import GenerationRequest

    query = "Write `double(x)`.\n>>> double(3)\n6\nassert double(-1) == -2\n"
    texts = ["```python\ndef double(x):\n    return 2 * x\n```", "```python\ndef double(x):\n    return x + x\n```",
             "```python\ndef double(x):\n    y = x\n    return x + y\n```"]
    slm = ScriptedBackend(lambda r: texts[r.seed % 3], model_id="s", verbatim=True)
    llm = ScriptedBackend(texts[0], model_id="l")
    policy = make_policy("reactive", artifact=str(artifact))
    d = await policy.decide(PolicyContext(request=GenerationRequest.create(query, max_tokens=64), slm=slm, llm=llm))
    assert d.kind == "slm" and d.details["agreeing"] == 3 and d.answer_text == texts[0]
    # the same samples for a query without examples: three syntax trees, so the predictor decides
    d = await policy.decide(PolicyContext(request=GenerationRequest.create("Write `double(x)`.", max_tokens=64),
                                          slm=slm, llm=llm))
    assert d.details["agreeing"] == 1 and d.details["consensus_skip"] is False
