"""The sweep driver on scripted models: what it stores, that reruns pay for nothing, early stop, labels."""

import pytest
from trace_fakes import FakeTask, llm_answer, need, run_fake_sweep

from shepherd.models.base import GenerationRequest
from shepherd.models.scripted import ScriptedBackend
from shepherd.traces.hints import hint_tokens_for, token_cutter
from shepherd.traces.labels import label_item, label_stats
from shepherd.traces.store import TraceStore
from shepherd.traces.sweep import SweepPlan


def table(store):
    q = store._query
    return {
        "generations": [tuple(r) for r in q("SELECT key, model, text, prompt_tokens, completion_tokens, finish_reason, "
                                            "origin FROM generations ORDER BY key")],
        "rows": [tuple(r) for r in q("SELECT sweep, item_id, kind, fraction, trial, key, hint_tokens, correct, "
                                     "extracted FROM rows ORDER BY 1,2,3,4,5")],
        "hints": [tuple(r) for r in q("SELECT * FROM hints ORDER BY 1,2,3")],
        "items": [tuple(r) for r in q("SELECT sweep, item_id, full_key, full_tokens, plan FROM sweep_items "
                                      "ORDER BY 1,2")],
    }


def test_hint_fraction_rounding():
    assert hint_tokens_for(0.0, 15) == 0
    assert hint_tokens_for(0.1, 15) == 2  # 1.5 rounds half up
    assert hint_tokens_for(0.5, 5) == 3
    assert hint_tokens_for(0.9, 3) == 3
    with pytest.raises(ValueError):
        hint_tokens_for(1.5, 10)


def test_token_cut_by_count_tokens_fallback():
    b = ScriptedBackend("x", model_id="w")  # one word = one token
    text = "First take 3 . Then add 9"
    cut = token_cutter(b, text)
    assert cut.method == "count_tokens" and cut.length == 7
    assert [cut.cut(n) for n in (0, 1, 3, 7, 9)] == ["", "First", "First take 3", text, text]


def test_sweep_stores_one_full_answer_per_item_and_cuts_hints_from_it(swept_store):
    store, task = swept_store
    sweeps = store.item_sweeps(task.name)
    assert [s.item_id for s in sweeps] == [it.id for it in task.items]
    # exactly one LLM call per item: every hint is derived from the stored full answer
    llm_calls = [c for c in store.call_log() if c["model"] == "fake-llm"]
    assert len(llm_calls) == len(task.items)
    s = sweeps[3]
    full = s.llm_full.generation.text
    assert s.full_tokens == len(full.split()) == 21
    assert [lv.fraction for lv in s.levels] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    for lv in s.levels:
        assert lv.hint_tokens == hint_tokens_for(lv.fraction, 21)
        assert lv.hint_text == " ".join(full.split()[: lv.hint_tokens])
        assert len(lv.trials) == 1
    assert len(s.samples) == 2
    assert s.slm_greedy is s.levels[0].trials[0] or s.slm_greedy == s.levels[0].trials[0]
    assert s.messages == task.messages(task.items[3])
    assert s.sweep["grid"][0] == 0.0 and s.sweep["trials"] == 1


def test_labels_match_the_scripted_difficulty(swept_store):
    store, task = swept_store
    sweeps = store.item_sweeps(task.name)
    for s in sweeps:
        i = int(s.item_id.split("/")[1])
        lab = label_item(s)
        llm_ok = i % 5 != 4
        assert lab.llm_correct == llm_ok
        if need(i) == 0:
            assert lab.kind == "none" and lab.hint_tokens == 0
        elif need(i) == 99 or not llm_ok:  # following a wrong LLM answer stays wrong
            assert lab.kind == ("llm" if llm_ok else "unsolvable") and lab.hint_tokens is None
        else:
            # the smallest grid level whose hint has at least need(i) words
            expected = min(lv.fraction for lv in s.levels if lv.hint_tokens >= need(i))
            assert lab.kind == "hint" and lab.hint_fraction == expected, (i, lab)
    filtered = store.labels(task.name, filter=True)
    unfiltered = store.labels(task.name, filter=False)
    assert len(unfiltered) == len(sweeps)
    # the paper's filter: drop items the LLM gets wrong (4) or that no hint fixes (5)
    assert set(unfiltered) - set(filtered) == {"fake/4", "fake/5"}
    stats = label_stats(sweeps)
    assert stats.kinds == {"none": 1, "hint": 5, "llm": 1, "unsolvable": 0} or sum(stats.kinds.values()) == 8
    assert stats.level_accuracy[0.0] == pytest.approx(1 / 8)
    assert stats.level_accuracy[0.9] >= stats.level_accuracy[0.0]


def test_rerun_calls_no_model_and_changes_no_row(tmp_path):
    store = TraceStore(tmp_path / "s.sqlite")
    task = FakeTask(5)
    run_fake_sweep(store, task)
    before = table(store)
    results, slm, llm, _ = run_fake_sweep(store, task)
    assert slm.calls == [] and llm.calls == []
    assert all(r.skipped for r in results)
    assert table(store) == before
    # a finished item swept again with its done-mark removed still calls nothing (all cache hits)
    store._write("UPDATE sweep_items SET done_at = NULL")
    results, slm, llm, _ = run_fake_sweep(store, task)
    assert slm.calls == [] and llm.calls == [] and all(r.calls == 0 and r.hits > 0 for r in results)
    assert table(store) == before
    assert store.duplicate_calls() == []


def test_growing_the_plan_only_adds(tmp_path):
    store = TraceStore(tmp_path / "s.sqlite")
    task = FakeTask(3)
    run_fake_sweep(store, task, SweepPlan(grid=(0.0, 0.5), samples=1))
    n_calls = len(store.call_log())
    results, _slm, llm, _ = run_fake_sweep(store, task, SweepPlan(grid=(0.0, 0.25, 0.5), trials=2, samples=2))
    assert llm.calls == []  # the full answers are stored
    # new: level 0.25 (1 greedy + 1 sampled), sampled trials at 0.0 and 0.5, one more sample; the sampled
    # trial of level 0.0 is the same request as sample 0 and is not paid for twice
    assert len(store.call_log()) - n_calls == sum(r.calls for r in results) == 3 * 4
    assert store.duplicate_calls() == []
    s = store.item_sweeps(task.name)[0]
    assert [len(lv.trials) for lv in s.levels] == [2, 2, 2] and len(s.samples) == 2


def test_early_stop_stops_at_the_first_passing_level_and_gives_the_same_labels(tmp_path):
    full = TraceStore(tmp_path / "full.sqlite")
    early = TraceStore(tmp_path / "early.sqlite")
    task = FakeTask(8)
    run_fake_sweep(full, task)
    run_fake_sweep(early, task, SweepPlan(trials=1, samples=2, temperature=0.7, early_stop=True))
    assert full.labels(task.name) == early.labels(task.name)  # what the predictor trains on
    every_full = full.labels(task.name, filter=False)
    every_early = early.labels(task.name, filter=False)
    assert len(early.call_log()) < len(full.call_log())
    llm_wrong = 0
    for s in early.item_sweeps(task.name):
        lab = label_item(s)
        if not s.llm_full.correct:  # the filter drops it: no hint is tried
            llm_wrong += 1
            assert len(s.levels) == 1 and s.levels[0].fraction == 0.0 and len(s.samples) == 2
            assert lab.kind == ("none" if s.levels[0].passed else "unsolvable")
            continue
        assert lab == every_full[s.item_id] == every_early[s.item_id]
        if lab.kind in ("none", "hint"):
            assert s.levels[-1].fraction == lab.hint_fraction  # nothing swept past n*
        else:
            assert len(s.levels) == 10
    assert llm_wrong  # the fake task has items the LLM gets wrong


def test_parallel_calls_give_the_same_rows(tmp_path):
    a = TraceStore(tmp_path / "a.sqlite")
    b = TraceStore(tmp_path / "b.sqlite")
    task = FakeTask(6)
    run_fake_sweep(a, task)
    run_fake_sweep(b, task, parallel_calls=True, delay_s=0.001)
    ta, tb = table(a), table(b)
    assert ta["generations"] == tb["generations"]
    assert ta["rows"] == tb["rows"] and ta["hints"] == tb["hints"]


def test_concurrent_identical_requests_are_generated_once(tmp_path):
    import asyncio

    from shepherd.traces.cached import CachedBackend

    store = TraceStore(tmp_path / "c.sqlite")
    inner = ScriptedBackend("a b c", model_id="m", delay_s=0.05)
    cb = CachedBackend(inner, store)
    r = GenerationRequest.create("q", max_tokens=8)

    async def go():
        return await asyncio.gather(*(cb.agenerate(r) for _ in range(5)))

    outs = asyncio.run(go())
    assert len(inner.calls) == 1 and len(store.call_log()) == 1
    assert {o[0].text for o in outs} == {"a b c"}


def test_a_failing_item_does_not_stop_the_sweep(tmp_path):
    from trace_fakes import models

    from shepherd.traces.executor import LocalExecutor
    from shepherd.traces.sweep import SweepConfig, make_units, register_sweep

    store = TraceStore(tmp_path / "f.sqlite")
    task = FakeTask(3)
    slm, llm = models()

    def flaky(request):
        if "What is 1 +" in request.messages[-1][1]:
            raise RuntimeError("server on fire")
        return llm_answer(request)

    llm._answer = flaky
    plan = SweepPlan(samples=0)
    cfg = SweepConfig(task=task.name, slm="fake-slm", llm="fake-llm", max_tokens=64)
    register_sweep(store, cfg, plan)
    results = list(LocalExecutor(slm, llm, task, store).run(make_units(task, task.items, cfg, plan)))
    errors = [r for r in results if r.error]
    assert [r.item_id for r in errors] == ["fake/1"] and "server on fire" in errors[0].error
    assert len(store.item_sweeps(task.name)) == 2


def test_a_changed_prompt_is_refused_not_mixed_in(tmp_path):
    store = TraceStore(tmp_path / "p.sqlite")
    task = FakeTask(2)
    run_fake_sweep(store, task)

    class Reworded(FakeTask):
        def messages(self, item):
            return [{"role": "user", "content": item.question + " Think."}]

    results, *_ = run_fake_sweep(store, Reworded(2))
    assert all(r.error and "different request" in r.error for r in results)


def test_label_stats_flag_llm_answers_cut_off_at_the_cap():
    from shepherd.models.base import Generation
    from shepherd.traces.records import Graded, HintLevel, ItemSweep

    def item(i, reason):
        full = Generation("x " * 64, 5, 64, reason, 0.1)
        return ItemSweep("t", f"t/{i}", [], Graded(full, reason == "stop"), 64,
                         levels=[HintLevel(0.0, 0, "", [Graded(Generation("y", 5, 3, "stop", 0.1), False)])],
                         sweep={"max_tokens": 64, "grid": [0.0]})

    few = label_stats([item(i, "length" if i == 0 else "stop") for i in range(20)])
    assert few.llm_cut_off == 1 and not any("cap" in n for n in few.notes)  # 5%: below the note's threshold
    many = label_stats([item(i, "length" if i < 5 else "stop") for i in range(20)])
    assert many.llm_cut_off == 5
    assert any("5 of 20 LLM answers (25%) stopped at the sweep's 64-token cap" in n for n in many.notes)


def test_samples_at_hint_levels_are_stored_with_their_level_and_resume_exactly(tmp_path):
    """`samples_at`: the SLM's continuation of the hint at chosen levels is sampled too (seeds seed, seed+1,
    ...), each graded on hint + continuation; they come back on their level, never among the item's own
    samples; a plan without them records as before, and growing a plan to include them only adds."""
    store = TraceStore(tmp_path / "s.sqlite")
    task = FakeTask(4)
    assert "samples_at" not in SweepPlan().to_dict()  # finished items of older plans stay finished
    with pytest.raises(ValueError, match="samples_at"):
        SweepPlan(grid=(0.0, 0.5), samples_at=(0.3,))
    run_fake_sweep(store, task, SweepPlan(grid=(0.0, 0.2, 0.5), samples=2))
    n_calls = len(store.call_log())
    _, slm, llm, _ = run_fake_sweep(store, task, SweepPlan(grid=(0.0, 0.2, 0.5), samples=2, samples_at=(0.2,)))
    assert llm.calls == [] and len(store.call_log()) - n_calls == 4 * 2  # two new samples per item, only
    assert all(c.prefix and c.temperature == 0.7 for c in slm.calls)
    for s in store.item_sweeps(task.name):
        lv = {x.fraction: x for x in s.levels}
        assert len(s.samples) == 2
        assert len(lv[0.2].samples) == 2 and lv[0.5].samples == [] and lv[0.0].samples == []
        for g in lv[0.2].samples:
            assert g.correct == task.grade(task.items[int(s.item_id.split("/")[1])],
                                           lv[0.2].hint_text + g.generation.text).correct
    before = table(store)
    _, slm, llm, _ = run_fake_sweep(store, task, SweepPlan(grid=(0.0, 0.2, 0.5), samples=2, samples_at=(0.2,)))
    assert slm.calls == [] and table(store) == before


def test_a_token_grid_adds_short_hints_beside_the_fractions(tmp_path):
    """`token_grid`: levels at fixed token counts, stored at the item's fraction n / L and flagged, so labels
    can find a shorter n* while per-fraction tables and knob grids keep the fractions only."""
    from shepherd.evaluation.suite import build_families
    from shepherd.traces.labels import label_stats

    with pytest.raises(ValueError, match="token_grid"):
        SweepPlan(token_grid=(2.5,))
    assert "token_grid" not in SweepPlan().to_dict()
    store = TraceStore(tmp_path / "s.sqlite")
    task = FakeTask(8)
    run_fake_sweep(store, task, SweepPlan(grid=(0.0, 0.5), samples=0, temperature=0.7, token_grid=(1, 3, 500)))
    for s in store.item_sweeps(task.name):
        L = s.full_tokens
        toks = [(lv.hint_tokens, lv.by_tokens) for lv in s.levels]
        assert toks == sorted(toks) and (1, True) in toks and (3, True) in toks
        assert all(n < L for n, by in toks if by)  # 500 is past every answer: not a level
        lv3 = next(lv for lv in s.levels if lv.hint_tokens == 3)
        assert lv3.fraction == round(3 / L, 6) and lv3.hint_text == " ".join(llm_answer(
            GenerationRequest.create(s.messages)).split()[:3])
        lab = label_item(s)
        i = int(s.item_id.split("/")[1])
        if s.llm_full.correct and 0 < need(i) <= 3:  # a short hint now suffices: n* is the token level
            assert lab.kind == "hint" and lab.hint_tokens == (1 if need(i) <= 1 else 3)
    stats = label_stats(store.item_sweeps(task.name))
    assert stats is not None
    fams = build_families(task.name, store.item_sweeps(task.name), scorers={}, predictor=None, wanted=["fixed-ratio"])
    assert fams[0].values == [0.5, 1.0]  # the fractions only
