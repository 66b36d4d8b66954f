"""Replay from the store: policies run unchanged through the runner; hints map up to the swept grid;
missing generations fail loudly (or are generated when asked); oracle costs are ordered."""

import pytest
from trace_fakes import models

from shepherd.costs import Price
from shepherd.evaluation.replay import oracle_report, replay, summarize
from shepherd.models.base import GenerationRequest
from shepherd.policies import FixedHint, LLMOnly, SLMOnly
from shepherd.policies.oracles import OracleShepherd
from shepherd.runner import Runner, RunSettings
from shepherd.traces.cached import CachedBackend, MissingGeneration
from shepherd.traces.labels import label_item


def test_replay_calls_no_model_and_matches_the_sweep(swept_store):
    store, task = swept_store
    sweeps = {s.item_id: s for s in store.item_sweeps(task.name)}
    slm_recs = replay(SLMOnly(), task, None, store)
    llm_recs = replay(LLMOnly(), task, None, store)
    assert len(slm_recs) == len(llm_recs) == 8
    for r in slm_recs:
        assert r.answer.text == sweeps[r.item_id].slm_greedy.generation.text
        assert r.correct == sweeps[r.item_id].slm_greedy.correct
        assert all(g.cached for _, g in r.answer.generations)
    for r in llm_recs:
        assert r.answer.text == sweeps[r.item_id].llm_full.generation.text
        assert r.answer.cost.total == pytest.approx(r.llm_only_cost_usd)


def test_hint_on_a_grid_level_is_served_exactly(swept_store):
    store, task = swept_store
    s = store.item_sweeps(task.name)[3]
    level = s.level(0.5)
    (rec,) = replay(FixedHint(tokens=level.hint_tokens), task, [s.item_id], store)
    assert rec.mapped == []
    assert rec.answer.hint_text == level.hint_text
    assert rec.answer.text == level.hint_text + level.trials[0].generation.text
    assert rec.correct == level.trials[0].correct
    # paid: the LLM prompt + n hint tokens
    llm = rec.answer.usage["llm"]
    assert llm.completion_tokens == level.hint_tokens and llm.calls == 1


def test_hint_between_grid_levels_maps_up_to_the_next_level(swept_store):
    store, task = swept_store
    s = store.item_sweeps(task.name)[3]  # L = 21: grid tokens 0, 2, 4, 6, 8, 11, 13, 15, 17, 19
    assert s.grid_tokens == [0, 2, 4, 6, 8, 11, 13, 15, 17, 19]
    (rec,) = replay(FixedHint(tokens=9), task, [s.item_id], store)
    (m,) = rec.mapped
    assert (m.requested_tokens, m.served_tokens, m.fraction, m.full_tokens) == (9, 11, 0.5, 21)
    assert rec.answer.hint_tokens == 11
    assert rec.answer.text == s.level(0.5).hint_text + s.level(0.5).trials[0].generation.text
    # past the last level, the whole answer is the hint: no SLM call
    (rec,) = replay(FixedHint(tokens=20), task, [s.item_id], store)
    assert rec.mapped[0].served_tokens == 21 and rec.mapped[0].fraction == 1.0
    assert rec.answer.text == s.llm_full.generation.text
    assert rec.answer.usage["slm"].calls == 0


def test_missing_generation_names_model_item_and_request(swept_store):
    store, task = swept_store
    import asyncio
    from dataclasses import replace

    slm = CachedBackend(None, store, model_id="fake-slm", generate_missing=False)
    base = store.item_entries(store.resolve_sweep(task.name).sweep)[2].request
    with pytest.raises(MissingGeneration) as err:
        asyncio.run(slm.agenerate(replace(base, temperature=1.3, seed=7)))
    msg = str(err.value)
    assert "fake-slm" in msg and "fake-add/fake/2" in msg and "temperature=1.3" in msg and "seed=7" in msg
    assert err.value.item == "fake-add/fake/2"
    # a prompt no sweep has seen
    with pytest.raises(MissingGeneration, match="not swept"):
        asyncio.run(slm.agenerate(GenerationRequest.create("unknown question", max_tokens=64)))
    # not a BackendError: the runner's fallbacks must not hide a gap in the data
    from shepherd.models.base import BackendError

    assert not isinstance(err.value, BackendError)


def test_replay_of_unswept_requests_fails_unless_asked_to_generate(swept_store):
    store, task = swept_store

    class Samples(SLMOnly):
        name = "samples"

        async def decide(self, ctx):
            from dataclasses import replace

            from shepherd.policies import Decision

            gens = await ctx.slm.agenerate(replace(ctx.request, temperature=0.7), n=self.n)
            return Decision("slm", spent=[("slm", g) for g in gens], answer_text=gens[0].text)

        def __init__(self, n):
            self.n = n

    # the two swept samples (seeds 0, 1) are served as they are
    recs = replay(Samples(2), task, ["fake/0"], store)
    assert recs[0].answer.usage["slm"].calls == 2
    with pytest.raises(MissingGeneration, match="seed=2"):
        replay(Samples(3), task, ["fake/0"], store)
    slm, llm = models()
    recs = replay(Samples(3), task, ["fake/0"], store, generate=True, slm=slm, llm=llm)
    assert len(slm.calls) == 1 and llm.calls == []  # only the missing one was generated, and stored
    recs = replay(Samples(3), task, ["fake/0"], store)
    assert recs[0].answer.usage["slm"].calls == 3


def test_live_runner_over_the_store_reuses_the_sweep(swept_store):
    """Live mode: the same CachedBackend with the real models behind it; grid-level hints and their
    continuations come from the store, anything else is generated once and stored."""
    store, task = swept_store
    slm, llm = models()
    runner = Runner(CachedBackend(slm, store), CachedBackend(llm, store), settings=RunSettings(max_tokens=64))
    item = task.items[3]
    s = store.item_sweeps(task.name)[3]
    import asyncio

    a = asyncio.run(runner.answer(task.messages(item), FixedHint(tokens=s.level(0.5).hint_tokens), item))
    assert slm.calls == [] and llm.calls == []
    assert a.text == s.level(0.5).hint_text + s.level(0.5).trials[0].generation.text
    asyncio.run(runner.answer(task.messages(item), FixedHint(tokens=9), item))  # off the grid: generated
    assert len(llm.calls) == 1 and len(slm.calls) == 1
    asyncio.run(runner.answer(task.messages(item), FixedHint(tokens=9), item))  # and now stored
    assert len(llm.calls) == 1 and len(slm.calls) == 1


def test_oracle_costs_are_ordered(swept_store):
    store, task = swept_store
    rep = oracle_report(task, store)
    st = rep["strategies"]
    cost = {k: v["cost_usd"] for k, v in st.items()}
    acc = {k: v["accuracy"] for k, v in st.items()}
    assert cost["oracle-shepherd"] <= cost["oracle-routing"] <= cost["oracle-cascade"] <= cost["llm-only"]
    assert cost["oracle-shepherd"] < cost["oracle-routing"]  # some items are fixed by a short hint
    assert acc["oracle-shepherd"] >= acc["oracle-routing"] == acc["oracle-cascade"] >= acc["llm-only"]
    assert cost["slm-only"] == 0.0
    # with a priced SLM, cascading pays for both models on the escalated items
    priced = oracle_report(task, store, slm_price=Price(input=0.1, output=0.2))["strategies"]
    assert (priced["oracle-shepherd"]["cost_usd"] <= priced["oracle-routing"]["cost_usd"]
            < priced["oracle-cascade"]["cost_usd"])


def test_oracle_shepherd_follows_the_labels(swept_store):
    store, task = swept_store
    sweeps = store.item_sweeps(task.name)
    recs = replay(OracleShepherd(sweeps), task, None, store)
    for r, s in zip(recs, sweeps):
        lab = label_item(s)
        if lab.kind == "hint":
            assert r.answer.decision.kind == "hint" and r.answer.hint_tokens == lab.hint_tokens and r.correct
            assert r.mapped == []
        elif lab.kind == "none":
            assert r.answer.decision.kind == "slm" and r.correct
        else:
            assert r.answer.decision.kind == "llm"
    summary = summarize(recs)
    assert summary["items"] == 8 and summary["mapped_hints"] == 0


def test_a_truncated_full_answer_served_as_hint_ends_the_answer(tmp_path):
    """The LLM's full answer hit the budget: a hint past the last level is that whole answer, and the
    SLM has nothing left to continue (no missing 1-token continuation)."""
    from trace_fakes import FakeTask, run_fake_sweep

    from shepherd.traces.store import TraceStore
    from shepherd.traces.sweep import SweepPlan

    store = TraceStore(tmp_path / "t.sqlite")
    task = FakeTask(2)
    run_fake_sweep(store, task, SweepPlan(grid=(0.0, 0.5), samples=0), max_tokens=10)
    s = store.item_sweeps(task.name)[1]
    assert s.llm_full.generation.finish_reason == "length" and s.full_tokens == 10
    (rec,) = replay(FixedHint(tokens=8), task, [s.item_id], store)
    assert rec.answer.text == s.llm_full.generation.text and rec.answer.usage["slm"].calls == 0
    assert rec.mapped[0].served_tokens == 10


class _LadderByGrade:
    """A hint bought a piece at a time, judged by the grade of each continuation (a stand-in for a
    confidence judge, so the test knows which rung should stand)."""

    name = "ladder-by-grade"

    def __init__(self, task, sweep, exhausted="slm"):
        self.task, self.sweep, self.exhausted = task, sweep, exhausted

    async def decide(self, ctx):
        from shepherd.decision import Decision

        toks = [self.sweep.level(f).hint_tokens for f in (0.1, 0.3, 0.5)]
        return Decision("hint", hint_tokens=toks[0], ladder=tuple(toks[1:]), exhausted=self.exhausted,
                        accept=lambda g: bool(self.task.grade(ctx.item, g.text).correct))

    def describe(self):
        return {"name": self.name}


@pytest.mark.parametrize("i", [1, 3, 5])
def test_a_hint_extended_a_piece_at_a_time_replays_as_it_runs_live(swept_store, i):
    """Replay serves each extension from the stored full answer (up to the next swept level), and the
    SLM's continuation of the longer hint from the sweep: the same text, tokens and cached input as the
    live run on the models themselves."""
    import asyncio

    store, task = swept_store
    s = store.item_sweeps(task.name)[i]
    item = task.items[i]
    (rec,) = replay(_LadderByGrade(task, s, exhausted="llm"), task, [s.item_id], store)
    slm, llm = models()
    live = asyncio.run(Runner(slm, llm, settings=RunSettings(max_tokens=64)).answer(
        task.messages(item), _LadderByGrade(task, s, exhausted="llm"), item))
    assert rec.answer.text == live.text and rec.answer.hint_tokens == live.hint_tokens
    for role in ("llm", "slm"):
        r, l = rec.answer.usage[role], live.usage[role]
        assert (r.calls, r.prompt_tokens, r.completion_tokens, r.cached_prompt_tokens) == \
               (l.calls, l.prompt_tokens, l.completion_tokens, l.cached_prompt_tokens)
    rungs = [s.level(f).hint_tokens for f in (0.1, 0.3, 0.5)]
    if i == 1:  # need 2 words: the first rung stands
        assert rec.answer.usage["llm"].calls == 1 and rec.correct
    if i == 3:  # need 9 words: 2 and 6 rejected, 11 stands; the LLM paid 11 output tokens in all
        assert rec.answer.usage["llm"].calls == 3 and rec.answer.usage["llm"].completion_tokens == rungs[2]
        assert rec.answer.usage["llm"].cached_prompt_tokens > 0 and rec.correct
    if i == 5:  # never: past the last rung the LLM finishes its own answer, served from the stored one
        assert rec.answer.text == s.llm_full.generation.text
        assert rec.answer.usage["llm"].completion_tokens == s.llm_full.generation.completion_tokens
