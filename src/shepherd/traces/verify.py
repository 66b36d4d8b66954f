"""Add the SLM's self-verifications (`shepherd.verification`) to a swept store, for the `automix` policy.

For every finished item the SLM's stored greedy answer is put back to the SLM as a yes/no question about its
own correctness, through the store's `CachedBackend`: the generation is committed with its call-log line
before anything else happens, so a run killed at any point and started again pays for nothing twice (a
stored verification is a cache hit). A `verify` row per item then records that the sweep carries it, graded
as the answer it verifies, with the verdict and the prompt form (`VERIFY_FORMAT`); the evaluation adds the
`automix` family only where every item has one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..models.base import run_sync
from ..verification import VERIFY_FORMAT, p_yes, verdict, verification_request, verify
from .cached import CachedBackend
from .store import TraceStore


@dataclass
class VerifySummary:
    sweep: str
    model: str
    verified: int = 0  # verification rows written by this run
    calls: int = 0  # of which the model was really called for (the rest were already stored)
    skipped: int = 0  # items that already had their verification row
    missing: list[str] = field(default_factory=list)  # items without a stored greedy SLM answer
    failed: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    seconds: float = 0.0
    p_yes: list[float] = field(default_factory=list)


def _greedy_row(store: TraceStore, sweep: str, item_id: str) -> Any:
    rows = store._query("SELECT key, correct FROM rows WHERE sweep = ? AND item_id = ? AND kind = 'hint' "
                        "AND fraction = 0 AND trial = 0", (sweep, item_id))
    return rows[0] if rows else None


def verify_sweep(store: TraceStore, backend: Any, *, task: str | None = None, sweep: str | None = None,
                 ids: Iterable[str] | None = None, limit: int | None = None,
                 progress: Callable[[str, int, int, VerifySummary], None] | None = None) -> VerifySummary:
    """Verify the SLM's greedy answer of each finished item of the sweep with `backend` (the sweep's SLM).

    `ids` keeps only these items, `limit` the first N (in sweep order); `progress(item, done, total,
    summary)` after each item."""
    info = store.resolve_sweep(task, sweep)
    if backend.model_id != info.slm:
        raise ValueError(f"sweep {info.sweep} was written by {info.slm}; verifying its answers with "
                         f"{backend.model_id} would not be the SLM checking itself")
    entries = [e for e in store.item_entries(info.sweep) if e.done and e.full_key is not None]
    if ids is not None:
        wanted = set(ids)
        entries = [e for e in entries if e.item_id in wanted]
    if limit is not None:
        entries = entries[:limit]
    handle = CachedBackend(backend, store, model_id=info.slm)
    summary = VerifySummary(info.sweep, info.slm)
    t0 = time.perf_counter()
    for n, e in enumerate(entries, 1):
        if store.has_row(info.sweep, e.item_id, "verify", 0.0, 0):
            summary.skipped += 1
        else:
            row = _greedy_row(store, info.sweep, e.item_id)
            answer = store.get(e.request.key(info.slm))
            if row is None or answer is None:
                summary.missing.append(e.item_id)
            else:
                before = handle.misses
                try:
                    check = run_sync(verify(handle, e.request, answer.text))
                except Exception as exc:  # noqa: BLE001 - one item's failure is recorded, the rest goes on
                    summary.failed.append(f"{e.item_id}: {exc}")
                else:
                    key = verification_request(e.request, answer.text).key(info.slm)
                    store.put_row(info.sweep, e.item_id, "verify", 0.0, 0, key, bool(row["correct"]),
                                  verdict(check), VERIFY_FORMAT)
                    summary.verified += 1
                    summary.calls += handle.misses - before
                    summary.prompt_tokens += check.prompt_tokens
                    p = p_yes(check)
                    if p is not None:
                        summary.p_yes.append(p)
        summary.seconds = time.perf_counter() - t0
        if progress is not None:
            progress(e.item_id, n, len(entries), summary)
    return summary


__all__ = ["VerifySummary", "verify_sweep"]
