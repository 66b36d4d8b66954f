"""Rescues recorded by the sweep, and the `rescue` policy replayed from them without calling a model: the
same answer, segments and usage as the policy run live, for every threshold and n of the plan. Scripted
models with log-probabilities (tests/rescue_fakes.py); the real pair is in test_trace_replay."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rescue_fakes import UnsureSLM, llm

from shepherd.policies.registry import make_policy
from shepherd.runner import Runner, RunSettings
from shepherd.tasks.base import Grade, Item
from shepherd.traces.cached import CachedBackend
from shepherd.traces.executor import LocalExecutor
from shepherd.traces.store import TraceStore
from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep

QUESTION = "How many apples?"


class AppleTask:
    name = "apples"
    default_split = "test"
    def __init__(self) -> None:
        self.items = [Item("apples/0", QUESTION, "102", {})]

    def messages(self, item):
        return [{"role": "user", "content": item.question}]

    def grade(self, item, response: str) -> Grade:
        nums = re.findall(r"-?\d+", response)
        return Grade(bool(nums) and nums[-1] == item.reference, nums[-1] if nums else None, "compared")


PLAN = SweepPlan(grid=(0.0,), samples=0, rescue_thresholds=(-1.0, -1.5, -9.0), rescue_tokens=(2, 4, 5, 30),
                 rescue_window=2)


def sweep(store: TraceStore) -> None:
    task = AppleTask()
    cfg = SweepConfig(task=task.name, slm="slm", llm="llm", max_tokens=60)
    register_sweep(store, cfg, PLAN, "test")
    units = make_units(task, task.items, cfg, PLAN, "test")
    results = list(LocalExecutor(UnsureSLM(), llm(), task, store).run(units))
    assert not [r.error for r in results if r.error]


def run(slm, big, tokens: int, threshold: float = -1.0):
    policy = make_policy("rescue", threshold=threshold, tokens=tokens, window=2)
    return asyncio.run(Runner(slm, big, settings=RunSettings(max_tokens=60)).answer(QUESTION, policy))


def test_the_sweep_records_each_cut_once_and_derives_the_shorter_hints(tmp_path):
    store = TraceStore(tmp_path / "s.sqlite")
    sweep(store)
    rows = store._conn.execute("SELECT fraction, trial, hint_tokens, correct FROM rows WHERE kind = 'rescue' "
                               "ORDER BY trial").fetchall()
    # thresholds -1 and -1.5 find the same doubt ("99": a 2-token window of mean -2.0), -9 none: one cut,
    # at the start of that line
    cut = float(len("Alice has 3 apples.\n"))
    assert [(r[0], r[1]) for r in rows] == [(cut, 2), (cut, 4), (cut, 5), (cut, 30)]
    assert [bool(r[3]) for r in rows] == [True, True, True, True]  # the LLM's "99 more" makes the SLM right
    calls = store._conn.execute("SELECT model, COUNT(*) FROM calls GROUP BY model").fetchall()
    # the LLM: its full answer (every sweep has it) and the longest rescue, which ends the answer; the SLM: its
    # own answer and its continuations of the three shorter rescues
    assert dict(calls) == {"llm": 2, "slm": 4}
    derived = store._conn.execute("SELECT COUNT(*) FROM generations WHERE origin = 'derived'").fetchone()[0]
    assert derived == 3
    # a rerun finds everything: no model call
    before = store._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    sweep(store)
    assert store._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == before


@pytest.mark.parametrize("tokens", [2, 4, 5, 30])
def test_rescue_replays_as_it_runs_live(tmp_path, tokens):
    store = TraceStore(tmp_path / "s.sqlite")
    sweep(store)
    live = run(UnsureSLM(), llm(), tokens)
    replay = run(CachedBackend(None, store, model_id="slm", generate_missing=False),
                 CachedBackend(None, store, model_id="llm", generate_missing=False), tokens)
    assert replay.text == live.text
    assert replay.segments == live.segments
    for role in ("slm", "llm"):
        a, b = live.usage[role], replay.usage[role]
        assert (a.calls, a.prompt_tokens, a.completion_tokens, a.cached_prompt_tokens) == (
            b.calls, b.prompt_tokens, b.completion_tokens, b.cached_prompt_tokens), role
    assert replay.cost_usd == pytest.approx(live.cost_usd)
    # a threshold under which no doubt is found: the SLM's own answer, also replayed
    calm = run(CachedBackend(None, store, model_id="slm", generate_missing=False),
               CachedBackend(None, store, model_id="llm", generate_missing=False), tokens, threshold=-9.0)
    assert calm.text == run(UnsureSLM(), llm(), tokens, threshold=-9.0).text and calm.usage["llm"].calls == 0


@pytest.mark.slow
def test_rescue_replays_as_it_runs_live_on_the_real_pair(tmp_path, slm_backend, llm_backend):
    """The real pair on a GSM8K item: the sweep records the rescue from the SLM's first doubt, and the
    policy replayed from the store answers as the live policy does (text, segments, tokens), for two n."""
    from shepherd.confidence import lowest_window_mean
    from shepherd.tasks import get_task

    task = get_task("gsm8k")
    (item,) = task.load("test", limit=1)
    cfg = SweepConfig(task=task.name, slm=slm_backend.model_id, llm=llm_backend.model_id, max_tokens=96)
    # a threshold just above the SLM's least confident 8-token stretch: the watch fires there
    (own,) = asyncio.run(slm_backend.agenerate(cfg.base_request(task.messages(item))))
    threshold = round(lowest_window_mean(own.logprobs, 8) + 0.05, 3)
    plan = SweepPlan(grid=(0.0,), samples=0, rescue_thresholds=(threshold,), rescue_tokens=(8, 16), rescue_window=8)
    store = TraceStore(tmp_path / "s.sqlite")
    register_sweep(store, cfg, plan, "test")
    units = make_units(task, [item], cfg, plan, "test")
    results = list(LocalExecutor(slm_backend, llm_backend, task, store).run(units))
    assert not [r.error for r in results if r.error]
    rows = store._conn.execute("SELECT fraction, trial FROM rows WHERE kind = 'rescue'").fetchall()
    assert rows, "the SLM's answer should hold a doubt at this threshold"
    for n in (8, 16):
        policy = make_policy("rescue", threshold=threshold, tokens=n, window=8)
        settings = RunSettings(max_tokens=96)
        live = asyncio.run(Runner(slm_backend, llm_backend, settings=settings).answer(task.messages(item), policy))
        replayed = asyncio.run(Runner(
            CachedBackend(None, store, model_id=slm_backend.model_id, generate_missing=False),
            CachedBackend(None, store, model_id=llm_backend.model_id, generate_missing=False),
            settings=settings).answer(task.messages(item), policy))
        assert [s for s, _, _ in live.segments][:2] == ["slm", "llm"]
        assert replayed.text == live.text and replayed.segments == live.segments
        assert replayed.usage["llm"].completion_tokens == live.usage["llm"].completion_tokens == n


def test_the_evaluation_suite_replays_rescue_over_the_recorded_grid(tmp_path):
    """Where a sweep recorded rescues, the suite's `rescue` family spans its thresholds x n, and each point
    replays from the store (the doubt found at -1 and -1.5 is rescued; at -9 the SLM's wrong answer stands)."""
    from shepherd.evaluation.replay import replay
    from shepherd.evaluation.suite import build_families

    store = TraceStore(tmp_path / "s.sqlite")
    sweep(store)
    sweeps = store.item_sweeps("apples")
    (fam,) = build_families("apples", sweeps, scorers={}, predictor=None, wanted=["rescue"])
    assert fam.values == [(t, n) for t in (-9.0, -1.5, -1.0) for n in (2, 4, 5, 30)]
    task = AppleTask()
    for t, n in fam.values:
        (rec,) = replay(fam.make((t, n)), task, task.items, store)
        assert rec.correct == (t > -9.0), (t, n)
        assert (rec.answer.usage["llm"].completion_tokens > 0) == (t > -9.0)


def test_a_packed_rescue_sweep_keeps_the_llms_rescues(tmp_path):
    """`shepherd sweep pack` of a rescue sweep carries every generation its replay reads: the LLM's rescues
    (named by no row: a row names the SLM's continuation) and the real call the shorter ones came from."""
    from shepherd.traces.compact import export_compact, read_compact

    store = TraceStore(tmp_path / "s.sqlite")
    sweep(store)
    export_compact(store, tmp_path / "p.jsonl.gz")
    _, (rec,) = read_compact(tmp_path / "p.jsonl.gz")
    packed = {g["key"] for g in rec["generations"]}
    every = {k for (k,) in store._conn.execute("SELECT key FROM generations")}
    rescues = {k for (k,) in store._conn.execute("SELECT key FROM generations WHERE model = 'llm' AND origin = 'derived'")}
    assert len(rescues) == 3 and rescues <= packed
    assert packed == every
