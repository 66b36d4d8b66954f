"""Replay: what would policy P have done on these items, answered from the trace store alone.

The policy runs unchanged through `shepherd.runner.Runner`; only the model handles differ: both are
`CachedBackend`s over the store with no model behind them (unless `generate=True`). The LLM's handle
serves hint requests from the item's stored full answer, moving n up to the next swept grid level (the
record lists each such mapping); the SLM's continuation of that hint is then the stored sweep call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..answer import Answer
from ..costs import FREE, PAPER_LLM_PRICE, Price
from ..models.base import Backend, GenerationRequest, run_sync
from ..policies.base import Policy
from ..policies.oracles import OracleCascade, OracleRouting, OracleShepherd
from ..runner import Runner, RunSettings
from ..traces.cached import CachedBackend, HintMapping
from ..traces.store import TraceStore
from ..traces.sweep import task_prefix


@dataclass
class ReplayRecord:
    item_id: str
    answer: Answer
    correct: bool
    extracted: str | None
    reason: str
    #: the LLM alone on this item, at its real stored usage
    llm_only_cost_usd: float
    #: hint requests moved up onto the swept grid for this answer
    mapped: list[HintMapping] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return self.answer.cost.total


def _select(store: TraceStore, task, items, split, sweep):
    info = store.resolve_sweep(task.name, sweep)
    entries = {e.item_id: e for e in store.item_entries(info.sweep) if e.full_key is not None}
    if split is not None:
        entries = {k: e for k, e in entries.items() if e.split == split}
    if items is None:  # every finished item (one still being swept may lack generations)
        return info, [(e.item_id, e.request, None) for e in entries.values() if e.done]
    chosen = []
    cap = info.config.get("max_tokens")
    for it in items:
        iid = str(getattr(it, "id", it))
        if iid in entries:
            chosen.append((iid, entries[iid].request, it if not isinstance(it, str) else None))
        elif not isinstance(it, str):  # an item never swept: the request the sweep would have made
            req = GenerationRequest.create(task.messages(it), prefix=task_prefix(task, it), max_tokens=cap,
                                           temperature=0.0,
                                           seed=info.config.get("seed", 0), stop=info.config.get("stop", ()))
            chosen.append((iid, req, it))
        else:
            raise LookupError(f"item {iid!r} is not in sweep {info.sweep} of {store.path}")
    return info, chosen


def replay(policy: Policy, task, items: Sequence[Any] | None, store: TraceStore, *,
           split: str | None = None, sweep: str | None = None, generate: bool = False,
           slm: Backend | None = None, llm: Backend | None = None, map_hints: bool = True,
           slm_price: Price = FREE, llm_price: Price = PAPER_LLM_PRICE) -> list[ReplayRecord]:
    """Run `policy` over the swept items (all, or `items`: Items or ids) without calling a model.

    A needed generation that is not stored raises `MissingGeneration` (model, item, request); with
    `generate=True` (and `slm`/`llm` given) it is generated and stored instead."""
    info, chosen = _select(store, task, items, split, sweep)
    if generate and (slm is None or llm is None):
        raise ValueError("replay(generate=True) needs the slm= and llm= backends")
    slm_h = CachedBackend(slm if generate else None, store, model_id=info.slm, generate_missing=generate,
                          tokenizer=slm)
    llm_h = CachedBackend(llm if generate else None, store, model_id=info.llm, generate_missing=generate,
                          map_hints=map_hints, tokenizer=llm)
    settings = RunSettings(max_tokens=info.config.get("max_tokens") or 512, seed=info.config.get("seed", 0))
    runner = Runner(slm_h, llm_h, slm_price=slm_price, llm_price=llm_price, settings=settings)
    item_objs = {}
    if any(obj is None for _, _, obj in chosen):
        item_objs = {it.id: it for it in task.load(split or info.config.get("split"),
                                                    ids=[iid for iid, _, obj in chosen if obj is None])}

    async def go() -> list[ReplayRecord]:
        records = []
        for iid, request, obj in chosen:
            item = obj if obj is not None else item_objs[iid]
            mark = len(llm_h.mappings)
            ans = await runner.answer(request, policy, item=item)
            grade = task.grade(item, ans.text)
            full = store.get(request.key(info.llm))
            llm_only = (llm_price.cost(full.prompt_tokens, full.completion_tokens) if full is not None
                        else ans.llm_only_cost_usd)
            records.append(ReplayRecord(iid, ans, bool(grade.correct), grade.extracted, grade.reason, llm_only,
                                        list(llm_h.mappings[mark:])))
        return records

    return run_sync(go())


def summarize(records: list[ReplayRecord]) -> dict[str, Any]:
    n = len(records)
    cost = sum(r.cost_usd for r in records)
    llm_only = sum(r.llm_only_cost_usd for r in records)
    return {
        "items": n,
        "accuracy": sum(r.correct for r in records) / n if n else 0.0,
        "cost_usd": cost,
        "llm_only_cost_usd": llm_only,
        "cost_ratio": cost / llm_only if llm_only else 0.0,
        "llm_calls": sum(r.answer.usage["llm"].calls for r in records),
        "llm_output_tokens": sum(r.answer.usage["llm"].completion_tokens for r in records),
        "decisions": dict(Counter(r.answer.decision.kind for r in records)),
        "mapped_hints": sum(len(r.mapped) for r in records),
    }


def oracle_report(task, store: TraceStore, *, split: str | None = None, sweep: str | None = None,
                  slm_price: Price = FREE, llm_price: Price = PAPER_LLM_PRICE) -> dict[str, Any]:
    """SLM-only, LLM-only, and oracle routing / cascading / shepherding, replayed from the store."""
    from ..policies.simple import LLMOnly, SLMOnly

    info = store.resolve_sweep(task.name, sweep)
    sweeps = store.item_sweeps(task.name, split, sweep=info.sweep)
    ids = [s.item_id for s in sweeps]
    strategies: dict[str, Any] = {}
    for name, pol in (("slm-only", SLMOnly()), ("llm-only", LLMOnly()), ("oracle-routing", OracleRouting(sweeps)),
                      ("oracle-cascade", OracleCascade(sweeps)), ("oracle-shepherd", OracleShepherd(sweeps))):
        recs = replay(pol, task, ids, store, sweep=info.sweep, slm_price=slm_price, llm_price=llm_price)
        strategies[name] = summarize(recs)
    c = {k: v["cost_usd"] for k, v in strategies.items()}
    notes = []
    if not (c["oracle-shepherd"] <= c["oracle-routing"] + 1e-12 <= c["oracle-cascade"] + 2e-12):
        notes.append("cost order shepherding <= routing <= cascading does NOT hold")
    if slm_price == FREE:
        notes.append("the SLM is free (as in the paper): cascading costs what routing does")
    return {"sweep": info.sweep, "items": len(ids), "strategies": strategies, "notes": notes}
