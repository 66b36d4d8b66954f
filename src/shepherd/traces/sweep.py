"""The sweep driver: for each item, the LLM's full answer, SLM continuations of hints cut from it at a
grid of fractions (k trials each), and m sampled SLM answers, every one graded and stored.

One item's sweep is one `SweepUnit`, the unit of work an `Executor` runs. A unit is idempotent: every
generation it needs is addressed by its request (`GenerationRequest.key`), looked up in the store
first and committed right after it returns, and every row is INSERT OR IGNORE on (sweep, item, kind,
fraction, trial). Running a unit twice, or resuming one killed halfway, calls no model for a result
already stored and ends with the same rows.

The requests are exactly those the runner makes for `hint(n)`, built by the same functions
(`shepherd.hinting`): the LLM hint is `hint_request(base, n)` (here derived from the stored full answer, no
call), the SLM continuation `continuation_request(base, hint_text, n)`. So a replay of any policy through
the runner finds them in the store.

Order inside a unit (for llama.cpp's KV-cache reuse of the longest common prompt prefix): the LLM's full
answer, then the SLM's level-0 answer (the bare prompt), its samples (same prompt), then the levels in
increasing order (each level's prompt extends the previous level's hint).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..confidence import doubt_cut
from ..hinting import continuation_request, hint_request, rescue_request, tokens_before
from ..models.base import Backend, Generation, GenerationRequest
from .hints import hint_tokens_for, token_cutter
from .records import Graded, majority
from .store import TraceStore

DEFAULT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SweepPlan:
    """What to sweep per item. A plan may grow between runs (more levels, trials, samples): the rows
    already stored are kept and only the new ones are generated."""

    grid: tuple[float, ...] = DEFAULT_GRID
    #: SLM continuations per level: trial 0 greedy, the others sampled at `temperature`
    trials: int = 1
    #: SLM answers sampled at `temperature` (seeds seed, seed+1, ...)
    samples: int = 3
    temperature: float = 0.7
    #: stop at the first passing level (training labels only need n*); an item whose LLM answer is wrong
    #: stops after level 0 (the label filter drops it, so only what the baselines read is swept)
    early_stop: bool = False
    #: hint levels (grid fractions > 0) at which the SLM's continuation is also sampled `samples` times, so
    #: that a policy judging a hinted answer by its samples' agreement can be replayed
    samples_at: tuple[float, ...] = ()
    #: hint levels at fixed token counts beside the fractions (for example 8, 16, 32, 64): most items a
    #: hint fixes are fixed by a short one, finer than 10% of a long answer; stored at fraction n / L
    token_grid: tuple[int, ...] = ()
    #: rescues to record (the `rescue` policy's replay): for each threshold, where the SLM's greedy answer
    #: is first in doubt (its lowest `rescue_window`-token stretch under it, cut back to the line's start);
    #: from each distinct cut the LLM continues the SLM's partial answer for the largest of
    #: `rescue_tokens` (the shorter ones are its prefixes, derived), and the SLM continues each of them
    rescue_thresholds: tuple[float, ...] = ()
    rescue_tokens: tuple[int, ...] = ()
    rescue_window: int = 8

    def __post_init__(self) -> None:
        grid = sorted({round(float(f), 6) for f in self.grid} | {0.0})
        if any(not 0.0 <= f < 1.0 for f in grid):
            raise ValueError(f"grid fractions must be in [0, 1): {self.grid}")
        object.__setattr__(self, "grid", tuple(grid))
        if self.trials < 1:
            raise ValueError("trials must be >= 1")
        if self.samples < 0:
            raise ValueError("samples must be >= 0")
        if self.temperature <= 0 and (self.trials > 1 or self.samples > 0):
            raise ValueError("sampled trials and samples need temperature > 0")
        at = tuple(sorted({round(float(f), 6) for f in self.samples_at}))
        if any(f not in grid or f == 0.0 for f in at):
            raise ValueError(f"samples_at must be hint levels of the grid above 0 (grid {grid}), got {self.samples_at}")
        if at and self.samples < 1:
            raise ValueError("samples_at needs samples >= 1")
        object.__setattr__(self, "samples_at", at)
        if any(not float(n).is_integer() or n < 1 for n in self.token_grid):
            raise ValueError(f"token_grid must be whole token counts >= 1, got {self.token_grid}")
        object.__setattr__(self, "token_grid", tuple(sorted({int(n) for n in self.token_grid})))
        if bool(self.rescue_thresholds) != bool(self.rescue_tokens):
            raise ValueError("rescue sweeps need both rescue_thresholds and rescue_tokens")
        if any(not float(n).is_integer() or n < 1 for n in self.rescue_tokens) or self.rescue_window < 1:
            raise ValueError(f"rescue_tokens must be whole token counts >= 1 and rescue_window >= 1, got "
                             f"{self.rescue_tokens}, {self.rescue_window}")
        object.__setattr__(self, "rescue_thresholds", tuple(sorted({float(t) for t in self.rescue_thresholds})))
        object.__setattr__(self, "rescue_tokens", tuple(sorted({int(n) for n in self.rescue_tokens})))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        for k in ("samples_at", "token_grid", "rescue_thresholds", "rescue_tokens"):  # a plan without them
            if getattr(self, k):                  # records as plans did before, so finished items stay finished
                d[k] = list(getattr(self, k))
            else:
                del d[k]
        if not self.rescue_tokens:
            del d["rescue_window"]
        return d


@dataclass(frozen=True)
class SweepConfig:
    """What shapes the generation keys of a sweep; its hash names the sweep."""

    task: str
    slm: str
    llm: str
    max_tokens: int | None = 512
    stop: tuple[str, ...] = ()
    seed: int = 0
    temperature: float = 0.7  # of sampled trials and samples

    @property
    def sweep_id(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return f"{self.task}:{self.slm}+{self.llm}:{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def base_request(self, messages, prefix: str = "") -> GenerationRequest:
        """The item's LLM request; `prefix` starts the assistant turn (a completion-style task's stub)."""
        return GenerationRequest.create(messages, prefix=prefix, max_tokens=self.max_tokens, temperature=0.0,
                                        seed=self.seed, stop=self.stop)


@dataclass
class SweepUnit:
    """One item's sweep: plain data (picklable), so any executor can ship it to any worker."""

    sweep: str
    config: SweepConfig
    plan: SweepPlan
    item: Any  # the task's Item (id, question, reference, metadata)
    split: str | None = None
    messages: list[dict[str, str]] | None = None  # filled from the task when None
    #: the item's request, when it is not the config's (`base_request(messages)`): a recorded query is swept
    #: with the budget and stops it was served with, so the generations paid for then are found by key
    base: GenerationRequest | None = None

    @property
    def item_id(self) -> str:
        return str(self.item.id)


@dataclass
class UnitResult:
    item_id: str
    seconds: float = 0.0
    #: real model calls made for this unit (a finished unit rerun makes none)
    calls: int = 0
    #: generations served from the store
    hits: int = 0
    levels: int = 0
    #: the first passing fraction (None: none passed)
    first_pass: float | None = None
    llm_correct: bool | None = None
    skipped: bool = False
    #: "host:pid" of the sweep process that holds the item, when skipped for that reason
    claimed_by: str | None = None
    error: str | None = None
    call_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkerContext:
    """What a worker needs to run units: both models behind the store, the task (grader) and the store."""

    slm: Backend
    llm: Backend
    task: Any
    store: TraceStore
    #: issue one unit's SLM calls concurrently (HTTP servers); False keeps them in cache-friendly order
    parallel_calls: bool = False


async def _grade(task, item, text: str):
    """Grade off the event loop (code graders wait on a sandbox; graders are thread-safe). A grader that
    raises fails the unit rather than storing a wrong verdict; the rerun grades again."""
    g = await asyncio.to_thread(task.grade, item, text)
    return bool(g.correct), (None if g.extracted is None else str(g.extracted)), getattr(g, "reason", None)


async def run_unit(unit: SweepUnit, ctx: WorkerContext) -> UnitResult:
    t0 = time.perf_counter()
    res = UnitResult(item_id=unit.item_id)
    store, task, item, sweep = ctx.store, ctx.task, unit.item, unit.sweep
    plan_d = unit.plan.to_dict()
    messages = unit.messages if unit.messages is not None else task.messages(item)
    base = unit.base if unit.base is not None else unit.config.base_request(messages, task_prefix(task, item))
    stored = store.item_request(sweep, unit.item_id)
    if stored is not None and stored != base:
        raise ValueError(f"item {unit.item_id} was swept into {sweep} with a different request (the task's "
                         "prompt changed?); sweep into a new store, or delete that sweep first")
    if store.done_plan(sweep, unit.item_id) == plan_d:
        res.skipped = True
        res.seconds = time.perf_counter() - t0
        return res
    # another sweep process on the same store is on this item: leave it to that one (run two processes
    # on one store and they share the items out instead of both computing each)
    holder = store.claim(sweep, unit.item_id)
    if holder is not None:
        res.skipped, res.claimed_by = True, holder
        res.seconds = time.perf_counter() - t0
        return res
    try:
        if store.done_plan(sweep, unit.item_id) == plan_d:  # finished by the holder we just took over from
            res.skipped = True
        else:
            await _sweep_item(unit, ctx, res, base)
    finally:
        store.release(sweep, unit.item_id)
    res.seconds = time.perf_counter() - t0
    return res


async def _sweep_item(unit: SweepUnit, ctx: WorkerContext, res: UnitResult, base: GenerationRequest) -> None:
    """One claimed item: the LLM's answer, the hint levels, the samples; every call and grade stored."""
    store, task, item, sweep = ctx.store, ctx.task, unit.item, unit.sweep
    plan_d = unit.plan.to_dict()

    async def call(backend: Backend, request: GenerationRequest) -> Generation:
        (gen,) = await backend.agenerate(request)
        if gen.cached:
            res.hits += 1
        else:
            res.calls += 1
            res.call_seconds += gen.latency_s
        return gen

    store.put_item(sweep, unit.item_id, unit.split, base, getattr(item, "reference", None),
                   getattr(item, "metadata", None))

    # 1. the LLM's full answer, once, greedy
    llm_id = ctx.llm.model_id
    full = await call(ctx.llm, base)
    full_key = base.key(llm_id)
    ok, ext, why = await _grade(task, item, full.text)
    res.llm_correct = ok
    cutter = token_cutter(ctx.llm, full.text)
    L = cutter.length
    store.set_full(sweep, unit.item_id, full_key, L)
    store.put_row(sweep, unit.item_id, "llm_full", 1.0, 0, full_key, ok, ext, why, hint_tokens=L)

    # 2. hints cut from it at every grid fraction, and at every token count of the token grid (stored at
    #    this item's fraction n / L): derived LLM generations, no LLM call
    levels: list[tuple[float, int, str]] = []

    def add_level(f: float, n: int) -> None:
        text = cutter.cut(n)
        hkey: str | None = None
        if 0 < n < L:
            hreq = hint_request(base, n)
            hkey = hreq.key(llm_id)
            hint = Generation(text=text, prompt_tokens=full.prompt_tokens, completion_tokens=n,
                              finish_reason="length", latency_s=full.latency_s * n / L, model=llm_id)
            store.put(hkey, llm_id, hreq, hint, origin="derived", derived_from=full_key)
            kept = store.get(hkey)
            if kept is not None:  # a real call with this budget stored earlier wins: use its text
                text = kept.text
        elif n >= L:
            hkey = full_key
        store.put_hint(sweep, unit.item_id, f, n, text, hkey)
        levels.append((f, n, text))

    for f in unit.plan.grid:
        add_level(f, hint_tokens_for(f, L))
    for n in unit.plan.token_grid:
        if n < L and n not in {m for _, m, _ in levels}:
            add_level(round(n / L, 6), n)
    levels.sort(key=lambda lv: (lv[1], lv[0]))

    T, seed0 = unit.config.temperature, base.seed or 0

    async def level(f: float, n: int, text: str) -> bool:
        trials: list[Graded] = []
        for j in range(unit.plan.trials):
            if n >= L:  # the hint is the whole answer: the runner would not call the SLM
                ok, ext, why = await _grade(task, item, text)
                store.put_row(sweep, unit.item_id, "hint", f, j, None, ok, ext, why, hint_tokens=n)
                trials.append(Graded(full, ok, ext))
                continue
            req = continuation_request(base, text, n)
            if j > 0:
                req = replace(req, temperature=T, seed=seed0 + j - 1)
            gen = await call(ctx.slm, req)
            ok, ext, why = await _grade(task, item, text + gen.text)
            store.put_row(sweep, unit.item_id, "hint", f, j, req.key(ctx.slm.model_id), ok, ext, why,
                          hint_tokens=n)
            trials.append(Graded(gen, ok, ext))
        res.levels += 1
        if f in unit.plan.samples_at and n < L:
            for i in range(unit.plan.samples):
                await sample(i, f, n, text)
        return majority(trials)

    async def sample(i: int, f: float = 0.0, n: int = 0, hint: str = "") -> None:
        """Sample i of the SLM's answer (f = 0) or of its continuation of the hint at level f."""
        req = replace(continuation_request(base, hint, n), temperature=T, seed=seed0 + i)
        gen = await call(ctx.slm, req)
        ok, ext, why = await _grade(task, item, hint + gen.text)
        store.put_row(sweep, unit.item_id, "sample", f, i, req.key(ctx.slm.model_id), ok, ext, why,
                      hint_tokens=n if f else 0)

    if ctx.parallel_calls and not unit.plan.early_stop:
        passed = await asyncio.gather(*(level(*lv) for lv in levels),
                                      *(sample(i) for i in range(unit.plan.samples)))
        res.first_pass = next((lv[0] for lv, p in zip(levels, passed) if p), None)
    else:
        # 3. level 0 (the bare prompt), the samples (same prompt), then the levels in order
        first, rest = levels[0], levels[1:]
        if await level(*first):
            res.first_pass = first[0]
        for i in range(unit.plan.samples):
            await sample(i)
        for lv in rest:
            # early stop: nothing past n*, and no hint at all when the LLM's own answer is wrong (the
            # paper's filter drops those items from training whatever a hint would do)
            if unit.plan.early_stop and (res.first_pass is not None or not res.llm_correct):
                break
            if await level(*lv) and res.first_pass is None:
                res.first_pass = lv[0]
    if unit.plan.rescue_tokens:
        await _sweep_rescues(unit, ctx, base, call)
    store.mark_done(sweep, unit.item_id, plan_d)


async def _sweep_rescues(unit: SweepUnit, ctx: WorkerContext, base: GenerationRequest, call) -> None:
    """The requests the `rescue` policy (one rescue, line backup) makes for every threshold and n of the
    plan, each generated once: the SLM's greedy answer (level 0, stored), and per distinct cut the LLM's
    continuation of the SLM's partial answer for the largest n (shorter n derived from it, as hints are)
    and the SLM's continuation after each n. Rows: kind "rescue", fraction = the cut's character offset in
    the SLM's answer, trial = n."""
    store, task, item, plan = ctx.store, ctx.task, unit.item, unit.plan
    llm_id, slm_id = ctx.llm.model_id, ctx.slm.model_id
    own = await call(ctx.slm, base)  # stored already as level 0
    cuts = sorted({c for t in plan.rescue_thresholds
                   if (c := doubt_cut(own.text, own.logprobs, t, plan.rescue_window)) is not None
                   and 0 <= c < len(own.text)})
    top = plan.rescue_tokens[-1]
    for c in cuts:
        partial, t = own.text[:c], tokens_before(own, c, ctx.slm)
        longest_req = rescue_request(base, partial, t, top)
        longest = await call(ctx.llm, longest_req)
        cutter = token_cutter(ctx.llm, longest.text)
        for n in plan.rescue_tokens:
            req = rescue_request(base, partial, t, n)
            if n == top:
                hint = longest
            elif longest.finished and cutter.length <= n:  # the LLM ended within n tokens: the same answer
                hint = replace(longest, cached=False)
            else:
                hint = Generation(text=cutter.cut(n), prompt_tokens=longest.prompt_tokens, completion_tokens=n,
                                  finish_reason="length", latency_s=longest.latency_s * n / max(1, top),
                                  model=llm_id, cached_prompt_tokens=longest.cached_prompt_tokens)
            if n != top:
                store.put(req.key(llm_id), llm_id, req, hint, origin="derived", derived_from=longest_req.key(llm_id))
                hint = store.get(req.key(llm_id)) or hint  # a real call stored earlier wins
            text, done = partial + hint.text, t + hint.completion_tokens
            if hint.finished or (base.max_tokens is not None and done >= base.max_tokens):
                ok, ext, why = await _grade(task, item, text)
                key = req.key(llm_id)
            else:
                creq = continuation_request(base, text, done)
                gen = await call(ctx.slm, creq)
                ok, ext, why = await _grade(task, item, text + gen.text)
                key = creq.key(slm_id)
            store.put_row(unit.sweep, unit.item_id, "rescue", float(c), n, key, ok, ext, why, hint_tokens=n)


def task_prefix(task, item) -> str:
    """Where the task's assistant turn starts ("" for chat-style tasks and tasks without a `prefix`)."""
    prefix = getattr(task, "prefix", None)
    return prefix(item) if callable(prefix) else ""


def make_units(task, items: Sequence[Any], config: SweepConfig, plan: SweepPlan,
               split: str | None = None) -> list[SweepUnit]:
    return [SweepUnit(sweep=config.sweep_id, config=config, plan=plan, item=it, split=split,
                      messages=task.messages(it)) for it in items]


def register_sweep(store: TraceStore, config: SweepConfig, plan: SweepPlan, split: str | None = None, *,
                   settings: dict[str, Any] | None = None) -> str:
    """Record the sweep and its settings; `settings` (the engine, the executor: how it ran, not what it
    computes) describe the latest run and do not change the sweep's id."""
    cfg = asdict(config)
    cfg.update(plan.to_dict())
    cfg["split"] = split
    cfg.update(settings or {})
    store.ensure_sweep(config.sweep_id, config.task, config.slm, config.llm, cfg)
    store.update_sweep_config(config.sweep_id, cfg)
    return config.sweep_id
