"""Training examples from sweeps: one row per item, with its label, its text and its SLM samples.

Label semantics (from `shepherd.traces.labels`):
  - "none"  -> y = 0 (the SLM alone passes);
  - "hint"  -> y = 1, size target = n*/L (the grid fraction) or log(1 + n*);
  - "llm"   -> y = 1, size target = 1.0 (the whole LLM answer) — only present with filter=False;
  - "unsolvable" items (the LLM is wrong too) are never trained on: no hint can be right.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agreement import agreement_key, normalize_answer, normalize_extracted, query_text, task_for
from .features import SampleInfo, sample_confidence

POSITIVE_KINDS = ("hint", "llm")


@dataclass
class Example:
    item_id: str
    text: str
    kind: str
    #: hint needed (the SLM alone does not pass)
    y: int
    #: n*/L for positives (1.0 for "llm"), 0.0 otherwise
    fraction: float
    #: n* in LLM tokens (L for "llm"), 0 otherwise
    tokens: int
    #: L, the LLM's full answer length in tokens
    full_tokens: int
    samples: list[SampleInfo] = field(default_factory=list)
    #: the sweep record (kept for calibration's simulation; not saved)
    sweep: Any = None

    @property
    def log_tokens(self) -> float:
        return math.log1p(self.tokens)

    @property
    def log_len(self) -> float:
        return math.log1p(self.full_tokens)


def samples_of(sweep: Any, item: Any = None) -> list[SampleInfo]:
    """The sweep's SLM samples as `SampleInfo`. With the task item at hand, each answer is the sample's
    agreement key, exactly as the reactive policy computes it (for code: what the program does on the
    prompt's example calls). Without it, the answer the task's grader extracted (None where it found none):
    the same key for math, the program's syntax tree for code."""
    task = task_for(getattr(sweep, "task", None))
    kind = getattr(task, "kind", None)
    out = []
    for g in getattr(sweep, "samples", []) or []:
        gen = g[0]
        if item is not None and task is not None:
            answer = agreement_key(task, item, gen.text)
        else:
            answer = normalize_extracted(g[2], kind) if len(g) > 2 else normalize_answer(gen.text)
        out.append(SampleInfo(gen.text, gen.completion_tokens, gen.finish_reason == "stop",
                              getattr(gen, "mean_logprob", None), answer, sample_confidence(gen)))
    return out


def examples_from_sweeps(sweeps: Iterable[Any], labels: dict[str, Any],
                         items: Mapping[str, Any] | None = None) -> list[Example]:
    """Join sweeps with their labels (items without a label, or unsolvable ones, are left out). `items`
    (item id -> task item, see `sweep_task_items`) lets code samples agree by behaviour, as the policies'."""
    items = items or {}
    out = []
    for s in sweeps:
        lab = labels.get(s.item_id)
        if lab is None or lab.kind == "unsolvable":
            continue
        L = int(s.full_tokens or s.llm_full[0].completion_tokens or 0)
        if lab.kind == "none":
            y, frac, tok = 0, 0.0, 0
        elif lab.kind == "hint":
            y, frac, tok = 1, float(lab.hint_fraction), int(lab.hint_tokens)
        elif lab.kind == "llm":
            y, frac, tok = 1, 1.0, L
        else:  # pragma: no cover - future kinds
            continue
        out.append(Example(item_id=str(s.item_id), text=query_text(s.messages), kind=lab.kind, y=y,
                           fraction=frac, tokens=tok, full_tokens=L,
                           samples=samples_of(s, items.get(str(s.item_id))), sweep=s))
    return out


def sweep_task_items(task: str, sweeps: Sequence[Any], data: str | Path | None = None) -> dict[str, Any]:
    """The task items behind code sweeps (item id -> Item), read from the benchmark's data, so that training
    and diagnostic features compare code samples by behaviour as the reactive policy does. Empty for other
    tasks, whose grader-extracted answers already are the policies' agreement keys. Raises what loading the
    data raises (a missing data folder, an unknown id)."""
    from ..tasks.registry import get_task

    if getattr(task_for(task), "kind", None) != "code" or not sweeps:
        return {}
    loader = get_task(task, data) if data else get_task(task)
    out: dict[str, Any] = {}
    by_split: dict[str | None, list[str]] = {}
    for s in sweeps:
        by_split.setdefault(getattr(s, "split", None), []).append(str(s.item_id))
    for split, ids in by_split.items():
        out.update({str(it.id): it for it in loader.load(split, ids=ids)})
    return out


def label_grid(sweeps: Iterable[Any]) -> list[float]:
    """The hint fractions the labels live on: the sweeps' grid and every level they reached."""
    sweeps = list(sweeps)
    return sorted({float(f) for s in sweeps for f in (s.sweep.get("grid") or [])}
                  | {float(lv.fraction) for s in sweeps for lv in s.levels if not lv.by_tokens})


@dataclass
class StoreData:
    examples: list[Example]
    grid: list[float]
    sweep_settings: dict[str, Any]
    store: str
    task: str
    n_swept: int
    label_counts: dict[str, int]
    #: what the reader should know (e.g. code samples compared by syntax tree: no task items at hand)
    notes: list[str] = field(default_factory=list)


def load_store(store: str | Path | Any, task: str, *, filter: bool = True, sweep: str | None = None,
               split: str | None = None, data: str | Path | None = None) -> StoreData:
    """Read a trace store's sweeps and labels for `task` (a path or an open `TraceStore`). Code tasks also
    read their items (from `data`, else the task's default source) so that samples agree by behaviour; when
    the items cannot be read, samples are compared by syntax tree and a note says so."""
    from ..traces.labels import label_item, labels_from_sweeps
    from ..traces.store import TraceStore

    own = not hasattr(store, "item_sweeps")
    if own and not Path(store).is_file():
        raise FileNotFoundError(f"trace store not found: {store}")
    ts = TraceStore(store, readonly=True) if own else store
    try:
        sweeps = ts.item_sweeps(task, split, sweep=sweep)
    finally:
        if own:
            ts.close()
    labels = labels_from_sweeps(sweeps, filter=filter)
    counts: dict[str, int] = {}
    for s in sweeps:
        k = label_item(s).kind
        counts[k] = counts.get(k, 0) + 1
    settings = dict(sweeps[0].sweep) if sweeps else {}
    grid = label_grid(sweeps)
    notes: list[str] = []
    try:
        items = sweep_task_items(task, sweeps, data)
    except (OSError, ImportError, LookupError, ValueError) as exc:
        items = {}
        notes.append(f"{task}: code samples compared by syntax tree, not behaviour (task items unavailable: {exc})")
    return StoreData(examples=examples_from_sweeps(sweeps, labels, items), grid=grid, sweep_settings=settings,
                     store=str(getattr(ts, "path", store)), task=task, n_swept=len(sweeps), label_counts=counts,
                     notes=notes)


def fingerprint(examples: Sequence[Example]) -> str:
    """sha256 of what the model was trained on: item ids, texts, labels and sample answers."""
    h = hashlib.sha256()
    for e in sorted(examples, key=lambda e: e.item_id):
        rec = [e.item_id, e.text, e.kind, round(e.fraction, 6), e.tokens, e.full_tokens,
               [[s.answer, s.completion_tokens, s.finished] for s in e.samples]]
        h.update(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def split_items(examples: Sequence[Example], val_fraction: float = 0.25, seed: int = 0
                ) -> tuple[list[Example], list[Example]]:
    """A seeded train/validation split by item, stratified by the hint-needed class."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be in (0, 1)")
    rng = random.Random(seed)
    train, val = [], []
    for cls in (0, 1):
        group = sorted((e for e in examples if e.y == cls), key=lambda e: e.item_id)
        rng.shuffle(group)
        k = round(len(group) * val_fraction)
        if len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        else:
            k = 0
        val.extend(group[:k])
        train.extend(group[k:])
    order = {e.item_id: i for i, e in enumerate(examples)}
    return sorted(train, key=lambda e: order[e.item_id]), sorted(val, key=lambda e: order[e.item_id])


def kfold(examples: Sequence[Example], k: int = 5, seed: int = 0) -> list[list[int]]:
    """Stratified fold assignment: k lists of indices into `examples`."""
    rng = random.Random(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for cls in (0, 1):
        idx = [i for i, e in enumerate(examples) if e.y == cls]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[j % k].append(i)
    return [sorted(f) for f in folds]
