"""A small, CI-stable trace store of real GSM8K questions with labels that carry a real signal.

The store is written by the project's own sweep driver (`shepherd.traces.sweep.run_unit`) into a real
SQLite `TraceStore`, so training reads it through the same `item_sweeps` / `labels` API as a real sweep.
The two models are scripted stand-ins (no GGUF needed); what makes the labels learnable is real: the
number of computation steps in the item's GSM8K reference solution (its `<<a*b=c>>` annotations).
  - the "LLM" answers with the reference solution's reasoning and the right number;
  - the "SLM" answers right alone on short (<= 2 step) problems; longer ones need a hint that covers a
    fraction of the LLM answer growing with the step count (3 steps: 0.2, 4: 0.4, 5+: 0.6); one item in
    seven (seeded by its id) gets a random requirement instead, so the signal is real but noisy;
  - sampled SLM answers (temperature 0.7, seeds 0..2) agree on the right number when the SLM can solve
    the item alone; otherwise they scatter, except one hard item in five where they agree on a wrong one.
Nothing here shows a model working; it shows that the predictor learns a signal the questions carry.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

N_ITEMS = 240


def _rng(item_id: str, salt: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{item_id}:{salt}".encode()).hexdigest()[:12], 16))


def llm_answer(item) -> str:
    sol = item.metadata["solution"].rsplit("####", 1)[0]
    sol = re.sub(r"<<[^>]*>>", "", sol)
    words = " ".join(sol.split())
    return f"{words} The answer is {item.reference}."


def need_fraction(item) -> float:
    steps = item.metadata["solution"].count("<<")
    need = 0.0 if steps <= 2 else 0.2 if steps == 3 else 0.4 if steps == 4 else 0.6
    r = _rng(item.id, "noise")
    if r.random() < 0.15:
        need = r.choice([0.0, 0.2, 0.4, 0.6])
    return need


def build_store(path: Path, n_items: int = N_ITEMS, seed: int = 0, split: str = "train") -> Path:
    from shepherd.models.base import GenerationRequest
    from shepherd.models.scripted import ScriptedBackend
    from shepherd.tasks.registry import get_task
    from shepherd.traces.executor import LocalExecutor
    from shepherd.traces.store import TraceStore
    from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep

    task = get_task("gsm8k")
    items = task.load(split=split, limit=n_items, seed=seed)
    by_prompt = {task.messages(it)[0]["content"]: it for it in items}

    def item_of(req: GenerationRequest):
        return by_prompt[req.messages[-1][1]]

    def llm_script(req: GenerationRequest) -> str:
        return llm_answer(item_of(req))

    def slm_script(req: GenerationRequest) -> str:
        item = item_of(req)
        full = llm_answer(item)
        words = full.split()
        prefix = req.prefix.split()
        need = need_fraction(item)
        gold = int(float(item.reference))
        if req.temperature > 0 and not prefix:  # a sampled answer
            r = _rng(item.id, "samples")
            if need == 0.0:
                return full
            if r.random() < 0.2:
                return f"{' '.join(words[:5])} so the answer is {gold + 7}."
            return f"{' '.join(words[:5])} so the answer is {gold + 1 + (req.seed or 0)}."
        if len(prefix) >= need * len(words):
            return full if not prefix else req.prefix + " " + " ".join(words[len(prefix):])
        return (req.prefix + " " if prefix else "") + f"I think the answer is {gold + 3}."

    store = TraceStore(path)
    config = SweepConfig(task="gsm8k", slm="scripted-slm", llm="scripted-llm", max_tokens=512, seed=0,
                         temperature=0.7)
    plan = SweepPlan(samples=3, trials=1, temperature=0.7, early_stop=False)
    register_sweep(store, config, plan, split=split)
    units = make_units(task, items, config, plan, split=split)
    slm = ScriptedBackend(slm_script, model_id="scripted-slm")
    llm = ScriptedBackend(llm_script, model_id="scripted-llm")
    for res in LocalExecutor(slm, llm, task, store).run(units):
        assert res.error is None, res.error
    store.close()
    return path


#: a small, quick model configuration for tests
FAST_MODEL = {"hidden": 16, "epochs": 250, "l2": 0.1, "lam": 0.5}
