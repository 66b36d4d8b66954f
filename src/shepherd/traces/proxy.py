"""Proxy labels from committed sweeps: every row regraded by agreement with the LLM's full answer instead of
the gold grader, so that n* (and every oracle label) can be derived as recorded traffic would give it.

Recorded traffic has no gold answers; what a deployment can compute is whether the SLM's (hinted) answer
agrees with the LLM's full answer (`agreement.proxy_verdict`). Before trusting labels made that way they are
checked against the gold labels of the study's sweeps: `proxy_sweep` rebuilds one `ItemSweep` whose every
row (hint trials, their sampled continuations, the SLM's samples) carries the proxy's verdict, and returns
each row's gold and proxy grade side by side. No model is called: the LLM's full answer is the sweep's own.

Two variants:
  - "live": what the server can do on a live query: the query text alone (code runs on the example calls
    the prompt's own `>>>` / `assert` lines show, math compares the stated or last number);
  - "task-aware": the benchmark task's own answer extraction and example calls (`CodeTask.probes`).

The LLM's own answer is "right" under the proxy when it agrees with itself: a program that does not load
or raises on every example, or a math answer without any answer, is not, and its item is labelled as one
the LLM gets wrong (the label filter drops it). An LLM answer that stopped at the token cap (known live from
its finish reason) states no result, so nothing agrees with it: every row of its item is "wrong" (basis
"reference cut off"). Why: compared by their last numbers, two cut-off derivations "agreed" on whatever
number each happened to stop near (CNK12, where a third of the LLM's answers stop at 512 tokens).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ..agreement import ProxyVerdict
from .records import Graded, HintLevel, ItemSweep

VARIANTS = ("live", "task-aware")
#: the basis of every row of an item whose LLM answer stopped at the sweep's token cap
CUT_OFF = "reference cut off"


@dataclass(frozen=True)
class ProxyRow:
    """One graded row of a sweep, by the gold grader and by the proxy."""

    item_id: str
    #: "llm" (the LLM's full answer), "hint" (a hint trial; fraction 0 is the SLM alone), "sample" (an SLM
    #: sample: of no hint at fraction 0, else a sampled continuation of that hint)
    kind: str
    fraction: float
    trial: int
    gold: bool
    proxy: bool
    #: how the proxy compared ("answer", "last number", "example calls", "syntax tree", "embedding", "empty",
    #: "reference cut off")
    basis: str
    similarity: float | None = None


@dataclass
class ProxySweep:
    """An item's sweep with proxy grades (`sweep`), and every row's gold and proxy grade (`rows`)."""

    sweep: ItemSweep
    rows: list[ProxyRow] = field(default_factory=list)


def _verdict_fn(variant: str, task: Any, item: Any, prompt: str, threshold: float | None,
                similarity: Callable[[str, str], float] | None) -> Callable[[str, str], Any]:
    from ..agreement import PROXY_SIMILARITY, proxy_verdict

    t = PROXY_SIMILARITY if threshold is None else threshold
    if variant == "live":
        return lambda a, ref: proxy_verdict(None, None, a, ref, prompt, threshold=t, similarity=similarity)
    return lambda a, ref: proxy_verdict(task, item, a, ref, prompt, threshold=t, similarity=similarity)


def _nothing_agrees(answer: str, reference: str) -> ProxyVerdict:
    return ProxyVerdict(False, CUT_OFF)


def proxy_sweep(s: ItemSweep, variant: str = "live", *, item: Any = None, task: Any = None,
                threshold: float | None = None,
                similarity: Callable[[str, str], float] | None = None) -> ProxySweep:
    """`s` with every row regraded by `agreement.proxy_verdict` against the LLM's full answer.

    A hint trial's answer is the hint text and the SLM's continuation, as the sweep graded it. "task-aware"
    needs the task item (`item`); the task defaults to the sweep's (`agreement.task_for`)."""
    from ..agreement import query_text, task_for

    if variant not in VARIANTS:
        raise ValueError(f"unknown proxy variant {variant!r} (known: {', '.join(VARIANTS)})")
    if variant == "task-aware":
        task = task if task is not None else task_for(s.task)
        if task is None or item is None:
            raise ValueError(f"{s.item_id}: the task-aware proxy needs the task ({s.task}) and its item")
    verdict = _verdict_fn(variant, task, item, query_text(s.messages), threshold, similarity)
    reference = s.llm_full.generation.text or ""
    if s.llm_full.generation.cut_off:  # stopped at the cap: it states no result, nothing can agree with it
        verdict = _nothing_agrees
    rows: list[ProxyRow] = []

    def regrade(g: Graded, kind: str, fraction: float, trial: int, prefix: str = "") -> Graded:
        text = prefix + (g.generation.text or "")
        v = verdict(text, reference)
        rows.append(ProxyRow(s.item_id, kind, fraction, trial, bool(g.correct), bool(v.agree), v.basis,
                             v.similarity))
        return g._replace(correct=bool(v.agree))

    llm = regrade(s.llm_full, "llm", 1.0, 0)
    levels = []
    for lv in s.levels:
        trials = [regrade(t, "hint", lv.fraction, i, lv.hint_text) for i, t in enumerate(lv.trials)]
        samples = [regrade(t, "sample", lv.fraction, i, lv.hint_text) for i, t in enumerate(lv.samples)]
        levels.append(HintLevel(lv.fraction, lv.hint_tokens, lv.hint_text, trials, samples, lv.by_tokens))
    samples = [regrade(g, "sample", 0.0, i) for i, g in enumerate(s.samples)]
    return ProxySweep(replace(s, llm_full=llm, levels=levels, samples=samples), rows)


def proxy_sweeps(sweeps: Sequence[ItemSweep], variant: str = "live", *, items: Mapping[str, Any] | None = None,
                 workers: int = 2, threshold: float | None = None,
                 similarity: Callable[[str, str], float] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[ProxySweep]:
    """`proxy_sweep` of every sweep, in order. Threads: a code verdict waits on its sandboxed subprocess."""
    items = items or {}
    done = [0]

    def one(s: ItemSweep) -> ProxySweep:
        out = proxy_sweep(s, variant, item=items.get(str(s.item_id)), threshold=threshold, similarity=similarity)
        done[0] += 1
        if progress is not None:
            progress(done[0], len(sweeps))
        return out

    if workers <= 1 or len(sweeps) <= 1:
        return [one(s) for s in sweeps]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="proxy") as pool:
        return list(pool.map(one, sweeps))


def task_items(task: str, sweeps: Iterable[ItemSweep], data: Any = None) -> dict[str, Any]:
    """The task items behind the sweeps (item id -> Item), of any task: the task-aware proxy reads them."""
    from ..tasks.registry import get_task

    loader = get_task(task, data) if data else get_task(task)
    by_split: dict[str | None, list[str]] = {}
    for s in sweeps:
        by_split.setdefault(s.split, []).append(str(s.item_id))
    out: dict[str, Any] = {}
    for split, ids in by_split.items():
        out.update({str(it.id): it for it in loader.load(split, ids=ids)})
    return out


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    """The Wilson score interval (95% by default) of k successes in n: honest near 0% and 100%."""
    if n <= 0:
        return None, None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _share(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "share": k / n if n else None, "ci": [lo, hi]}


def proxy_stats(gold: Sequence[ItemSweep], proxy: Sequence[ProxySweep]) -> dict[str, Any]:
    """How proxy grades and labels compare with gold ones, over the same items.

    - `rows`: hint rows (every trial of every level, fraction 0 being the SLM alone) whose proxy grade equals
      the gold grade, with a Wilson 95% interval (`rows_llm_right`: on the items whose LLM answer is right,
      where the proxy can only err by the comparison itself); `proxy_right_gold_wrong` / `proxy_wrong_gold_right` split
      the disagreements, the first also counted where the LLM's own answer is wrong (a continuation that
      repeats the LLM's wrong answer agrees with it);
    - `llm`: the LLM's answers the proxy counts as right (agreeing with themselves) against gold;
    - `labels`: per item, whether the proxy label says "hint needed" as gold does, and whether it gives the
      same n* (same kind and fraction); `kept`: items the paper's filter keeps under each."""
    from .labels import keep, label_item

    if len(gold) != len(proxy):
        raise ValueError(f"{len(gold)} gold sweeps but {len(proxy)} proxy sweeps")
    rows = [r for p in proxy for r in p.rows if r.kind == "hint"]
    llm_wrong = {p.sweep.item_id for p in proxy for r in p.rows if r.kind == "llm" and not r.gold}
    fp = [r for r in rows if r.proxy and not r.gold]
    fn = [r for r in rows if r.gold and not r.proxy]
    basis = Counter(r.basis for r in rows)
    by_basis = {b: _share(sum(r.proxy == r.gold for r in rows if r.basis == b), n) for b, n in basis.items()}
    llm_rows = [r for p in proxy for r in p.rows if r.kind == "llm"]
    needed = same = kept_gold = kept_proxy = kept_both = 0
    kinds_gold: Counter = Counter()
    kinds_proxy: Counter = Counter()
    for g, p in zip(gold, proxy, strict=True):
        if g.item_id != p.sweep.item_id:
            raise ValueError(f"gold item {g.item_id} paired with proxy item {p.sweep.item_id}")
        lg, lp = label_item(g), label_item(p.sweep)
        kinds_gold[lg.kind] += 1
        kinds_proxy[lp.kind] += 1
        needed += (lg.kind == "none") == (lp.kind == "none")
        same += lg.kind == lp.kind and lg.hint_tokens == lp.hint_tokens
        kept_gold += keep(lg)
        kept_proxy += keep(lp)
        kept_both += keep(lg) and keep(lp)
    n = len(gold)
    return {
        "items": n,
        "rows": _share(sum(r.proxy == r.gold for r in rows), len(rows)),
        "rows_llm_right": _share(sum(r.proxy == r.gold for r in rows if r.item_id not in llm_wrong),
                                 sum(r.item_id not in llm_wrong for r in rows)),
        "proxy_right_gold_wrong": {"rows": len(fp), "llm_wrong": sum(r.item_id in llm_wrong for r in fp)},
        "proxy_wrong_gold_right": {"rows": len(fn), "llm_wrong": sum(r.item_id in llm_wrong for r in fn)},
        "gold_right_rows": sum(r.gold for r in rows), "proxy_right_rows": sum(r.proxy for r in rows),
        "basis": dict(sorted(basis.items())), "by_basis": dict(sorted(by_basis.items())),
        "llm": {"gold_right": sum(r.gold for r in llm_rows), "proxy_right": sum(r.proxy for r in llm_rows),
                "agree": _share(sum(r.proxy == r.gold for r in llm_rows), len(llm_rows))},
        "labels": {"needed_equal": _share(needed, n), "nstar_equal": _share(same, n),
                   "kinds_gold": {k: kinds_gold.get(k, 0) for k in ("none", "hint", "llm", "unsolvable")},
                   "kinds_proxy": {k: kinds_proxy.get(k, 0) for k in ("none", "hint", "llm", "unsolvable")}},
        "kept": {"gold": kept_gold, "proxy": kept_proxy, "both": kept_both},
    }


__all__ = ["VARIANTS", "ProxyRow", "ProxySweep", "proxy_stats", "proxy_sweep", "proxy_sweeps", "task_items",
           "wilson"]
