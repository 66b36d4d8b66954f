"""Executors run sweep units. The default runs them here with asyncio; `ray_executor.RayExecutor` spreads
them over a Ray cluster; any other implements the same `run(units) -> iterator of UnitResult`.

The contract a new executor must keep (what makes sweeps resumable and safe to scale out):

1. A unit (`SweepUnit`) is plain, picklable data: the sweep id, its config (models, decoding), its plan
   (grid, trials, samples) and the task item. It can run on any worker holding the two models and the
   task's grader, any number of times.
2. Every generation is content-addressed: its key is `GenerationRequest.key(model_id)`, a hash of the
   model, messages, prefix, decoding parameters and seed. A worker must look a key up before calling a
   model, and the result must reach the store under that key, committed in its own transaction, before
   the unit counts it as done. Rows are INSERT OR IGNORE on (sweep, item, kind, fraction, trial).
   Hence units are idempotent: a unit run twice, or resumed after its worker died, ends with the same rows
   and pays for no stored generation again.
3. The SQLite store has one writer at a time. Remote workers therefore either write through a single
   store service (what the Ray executor does: a store actor on the driver's node), or stream their new
   generations and rows back to the driver, which commits them. Duplicate inserts of the same key are
   harmless (the first one is kept), so at-least-once delivery of results is enough.
4. Model identity must be stable across workers (the same `model_id` for the same weights and
   quantisation), or the keys will not match.
5. Results come back in completion order; callers must not rely on unit order.
"""

from __future__ import annotations

import asyncio
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

from ..models.base import Backend
from .cached import CachedBackend
from .store import TraceStore
from .sweep import SweepUnit, UnitResult, WorkerContext, run_unit


class Executor(ABC):
    @abstractmethod
    def run(self, units: Sequence[SweepUnit]) -> Iterator[UnitResult]:
        """Run the units; yield one result per unit as each finishes. A unit that fails yields a result
        with `error` set; the others go on."""


def _innermost(backend: Backend) -> Backend:
    b = backend
    while getattr(b, "inner", None) is not None:
        b = b.inner
    return b


def _serves_one_at_a_time(backend: Backend) -> bool:
    """An in-process model with one context (calls queue for it); the batched engine takes many at once."""
    b = _innermost(backend)
    return type(b).__name__ == "LlamaCppBackend" and not getattr(b, "batched", False)


def engine_name(backend: Backend) -> str:
    """What generates for a sweep, as its settings record it: 'llamacpp-batched(slots=8)', 'llamacpp',
    'openai-http', ..."""
    b = _innermost(backend)
    if getattr(b, "batched", False):
        return f"llamacpp-batched(slots={b.slots})"
    return {"LlamaCppBackend": "llamacpp", "OpenAICompatibleBackend": "openai-http",
            "ScriptedBackend": "scripted"}.get(type(b).__name__, type(b).__name__)


class LocalExecutor(Executor):
    """Runs units on this machine, `concurrency` units at a time, on one asyncio event loop driven from
    the calling thread (so `run` is a plain iterator; grading runs in worker threads).

    For the sequential in-process model (llama.cpp, one context) keep concurrency=1: units then run back to
    back and each item's calls reuse the KV cache of the shared prompt prefix; the model serves one call at
    a time anyway. With the batched engine or HTTP servers raise `concurrency`; `parallel_calls` (default:
    on unless a model serves one call at a time) also issues one unit's SLM calls at once.
    """

    def __init__(self, slm: Backend, llm: Backend, task, store: TraceStore, *, concurrency: int = 1,
                 parallel_calls: bool | None = None) -> None:
        self.slm = slm if isinstance(slm, CachedBackend) else CachedBackend(slm, store)
        self.llm = llm if isinstance(llm, CachedBackend) else CachedBackend(llm, store)
        if parallel_calls is None:
            parallel_calls = not (_serves_one_at_a_time(slm) or _serves_one_at_a_time(llm))
        self.ctx = WorkerContext(self.slm, self.llm, task, store, parallel_calls=parallel_calls)
        self.concurrency = max(1, concurrency)

    async def _guarded(self, unit: SweepUnit) -> UnitResult:
        try:
            return await run_unit(unit, self.ctx)
        except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the sweep
            return UnitResult(item_id=unit.item_id, error=f"{type(exc).__name__}: {exc}",
                              extra={"traceback": traceback.format_exc()})

    def run(self, units: Sequence[SweepUnit]) -> Iterator[UnitResult]:
        loop = asyncio.new_event_loop()
        todo = list(units)
        pending: set[asyncio.Task] = set()
        try:
            while todo or pending:
                while todo and len(pending) < self.concurrency:
                    pending.add(loop.create_task(self._guarded(todo.pop(0))))
                done, pending = loop.run_until_complete(
                    asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
                for t in done:
                    yield t.result()
        finally:
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
