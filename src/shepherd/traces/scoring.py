"""Token log-probabilities for stored generations, without regenerating them (teacher forcing).

A sweep made before its backend recorded log-probabilities still holds every text the SLM wrote and the
exact request it answered. Scoring a text under the model that wrote it gives the same per-token numbers
the generation would have recorded (up to kernel rounding; `LlamaCppBackend.score`), so answer-side
confidence features can be computed for old traces. The text, token counts and call log are untouched;
only `logprobs` and `mean_logprob` are filled. Resumable: a scored generation is skipped next time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .store import TraceStore

#: which of the SLM's stored generations a plain `shepherd sweep score` adds log-probabilities to: its
#: answer without a hint (trial 0 of level 0, greedy) and its samples, what answer-side policies read
DEFAULT_KINDS = ("hint0", "sample")


@dataclass
class ScoreSummary:
    sweep: str
    model: str
    scored: int = 0
    skipped: int = 0  # already had log-probabilities
    failed: list[str] = field(default_factory=list)  # keys a scoring error left as they were
    tokens: int = 0
    seconds: float = 0.0


def generations_to_score(store: TraceStore, sweep: str, model: str, kinds: Iterable[str] = DEFAULT_KINDS,
                         levels: Iterable[float] | None = None) -> list[tuple[str, str]]:
    """(item id, generation key) of the sweep's generations by `model` of the given kinds, in item order
    (an item's generations share a prompt, which the KV cache then evaluates once). Kinds: `hint0` (the
    SLM's answers at the no-hint level: its greedy trial, and any sampled ones), `hint` (every hinted
    continuation, or with `levels` only those at these hint fractions), `sample`."""
    kinds = set(kinds)
    at = None if levels is None else {round(float(f), 6) for f in levels}
    unknown = kinds - {"hint0", "hint", "sample"}
    if unknown:
        raise ValueError(f"unknown generation kinds {sorted(unknown)} (known: hint0, hint, sample)")
    rows = store._query(
        "SELECT r.item_id, r.kind, r.fraction, r.key FROM rows r JOIN sweep_items i "
        "ON i.sweep = r.sweep AND i.item_id = r.item_id JOIN generations g ON g.key = r.key "
        "WHERE r.sweep = ? AND g.model = ? ORDER BY i.seq, r.kind, r.fraction, r.trial", (sweep, model))
    out, seen = [], set()
    for r in rows:
        wanted = (r["kind"] == "sample" and "sample" in kinds) or (r["kind"] == "hint" and (
            ("hint" in kinds and (at is None or round(r["fraction"], 6) in at))
            or ("hint0" in kinds and r["fraction"] == 0)))
        if wanted and r["key"] not in seen:
            seen.add(r["key"])
            out.append((r["item_id"], r["key"]))
    return out


def score_sweep(store: TraceStore, backend: Any, *, task: str | None = None, sweep: str | None = None,
                kinds: Iterable[str] = DEFAULT_KINDS, levels: Iterable[float] | None = None,
                limit: int | None = None, ids: Iterable[str] | None = None,
                progress: Callable[[str, int, int, ScoreSummary], None] | None = None) -> ScoreSummary:
    """Score the sweep's SLM generations under `backend` (which must be the sweep's SLM) and store them.

    `ids` keeps only these items (a named subset, as `sweep run --ids` sweeps it), `limit` caps the items
    (the first ones, in sweep order); `progress(item, done, total, summary)` is
    called after each item."""
    info = store.resolve_sweep(task, sweep)
    if backend.model_id != info.slm:
        raise ValueError(f"sweep {info.sweep} was written by {info.slm}; scoring it under {backend.model_id} "
                         "would not give the log-probabilities its SLM drew with")
    todo = generations_to_score(store, info.sweep, info.slm, kinds, levels)
    if ids is not None:
        wanted = set(ids)
        todo = [t for t in todo if t[0] in wanted]
    items = list(dict.fromkeys(i for i, _ in todo))
    if limit is not None:
        keep = set(items[:limit])
        items = items[:limit]
        todo = [t for t in todo if t[0] in keep]
    summary = ScoreSummary(info.sweep, info.slm)
    t0 = time.perf_counter()
    by_item: dict[str, list[str]] = {}
    for iid, key in todo:
        by_item.setdefault(iid, []).append(key)
    for n, iid in enumerate(items, 1):
        for key in by_item[iid]:
            gen = store.get(key)
            if gen is None or gen.logprobs is not None:
                summary.skipped += 1
                continue
            request = store.get_request(key)
            try:
                lp = backend.score(request, gen.text)
            except Exception as exc:  # noqa: BLE001 - one text's failure is recorded, the rest goes on
                summary.failed.append(f"{key[:12]}: {exc}")
                continue
            store.set_logprobs(key, lp)
            summary.scored += 1
            summary.tokens += len(lp)
        summary.seconds = time.perf_counter() - t0
        if progress is not None:
            progress(iid, n, len(items), summary)
    return summary


__all__ = ["DEFAULT_KINDS", "ScoreSummary", "generations_to_score", "score_sweep"]
