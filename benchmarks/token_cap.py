"""How much does a sweep's answer cap cost the LLM? Regenerate the answers that hit it with a larger cap.

    python benchmarks/token_cap.py --store runs/cnk12.sqlite --task cnk12 --max-tokens 1024 \
        [--limit 12 | --cached-only] [--config runs/one_thread.toml] [--cache runs/token_cap.sqlite] \
        [--out runs/token_cap_cnk12.json]

Reads the LLM's full answers of a sweep's finished items, takes those that stopped at the sweep's cap
(finish reason "length"; all of them, or a seeded sample of `--limit`), asks the sweep's LLM the very same
request with a larger `max_tokens`, and grades the new answers with the task's grader. It reports how many
of the cut-off answers now finish and how many are right, and what the LLM-only accuracy over all items
would be if the swept sample is representative. Greedy decoding makes the longer answer the old one
extended, which the report checks (`prefix_kept`). Every new answer is cached in `--cache` (a trace
store), so an interrupted run resumes where it stopped; `--cached-only` reports on the cut-off answers
regenerated so far without calling a model (a sample of them, when the run was stopped early: the answers
are taken in item-id order, and item ids are hashes). It answers whether a sweep should be redone with
a larger cap before anyone spends the hours; it does not change any sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="the sweep's trace store (sqlite)")
    ap.add_argument("--task", required=True)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=None, help="a seeded sample of the cut-off answers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cached-only", action="store_true",
                    help="report on the cut-off answers already regenerated in --cache; call no model")
    ap.add_argument("--config", default=None, help="shepherd config naming the LLM (default: the embedded pair)")
    ap.add_argument("--cache", default="runs/token_cap.sqlite")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from shepherd.config import load_config
    from shepherd.models.factory import build_backend
    from shepherd.tasks.registry import get_task
    from shepherd.traces.cached import CachedBackend
    from shepherd.traces.store import TraceStore

    store = TraceStore(args.store, readonly=True)
    info = store.resolve_sweep(args.task)
    sweeps = store.item_sweeps(args.task, sweep=info.sweep)
    if not sweeps:
        raise SystemExit(f"no finished items of {args.task} in {args.store}")
    cut = [s for s in sweeps if s.llm_full.generation.cut_off]
    picked = sorted(cut, key=lambda s: s.item_id)
    if args.limit is not None and args.limit < len(picked):
        picked = sorted(random.Random(args.seed).sample(picked, args.limit), key=lambda s: s.item_id)
    cfg = load_config(args.config)
    if cfg.llm.identity != info.llm:
        raise SystemExit(f"the config's LLM is {cfg.llm.identity!r}, the sweep's {info.llm!r}: pass the sweep's --config")
    task = get_task(args.task)
    split = sweeps[0].split
    items = {it.id: it for it in task.load(split, ids=[s.item_id for s in picked])}
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
    cache = TraceStore(args.cache)
    if args.cached_only:
        llm = CachedBackend(None, cache, model_id=info.llm, generate_missing=False)

        def regenerated(s) -> bool:
            base = store.item_request(info.sweep, s.item_id)
            return base is not None and cache.get(replace(base, max_tokens=args.max_tokens).key(info.llm)) is not None

        picked = [s for s in picked if regenerated(s)]
    else:
        llm = CachedBackend(build_backend(cfg.llm), cache)

    rows = []
    t0 = time.perf_counter()
    for i, s in enumerate(picked, 1):
        base = store.item_request(info.sweep, s.item_id)
        if base is None:
            raise SystemExit(f"{s.item_id}: the sweep stored no request")
        (gen,) = asyncio.run(llm.agenerate(replace(base, max_tokens=args.max_tokens)))
        grade = task.grade(items[s.item_id], gen.text)
        old = s.llm_full.generation.text
        rows.append({"item_id": s.item_id, "old_tokens": s.llm_full.generation.completion_tokens,
                     "new_tokens": gen.completion_tokens, "finished": gen.finish_reason == "stop",
                     "correct": bool(grade.correct), "prefix_kept": gen.text.startswith(old[: max(0, len(old) - 8)])})
        print(f"[{i}/{len(picked)}] {s.item_id}: {gen.completion_tokens} tokens, "
              f"{'finished' if gen.finish_reason == 'stop' else 'cut again'}, "
              f"{'right' if grade.correct else 'wrong'} ({time.perf_counter() - t0:.0f} s)", flush=True)

    n, n_cut, n_new = len(sweeps), len(cut), len(rows)
    acc_old = sum(bool(s.llm_full.correct) for s in sweeps) / n
    cut_ids = {s.item_id for s in cut}
    right_within = sum(bool(s.llm_full.correct) for s in sweeps if s.item_id not in cut_ids)
    fix_rate = sum(r["correct"] for r in rows) / n_new if n_new else 0.0
    report = {
        "store": args.store, "task": args.task, "sweep": info.sweep, "items": n,
        "old_cap": sweeps[0].sweep.get("max_tokens"), "new_cap": args.max_tokens,
        "cut_off": n_cut, "regenerated": n_new,
        "selection": "cached" if args.cached_only else ("all" if args.limit is None or args.limit >= n_cut else
                                                        f"seeded sample (seed {args.seed})"),
        "finished_now": sum(r["finished"] for r in rows), "correct_now": sum(r["correct"] for r in rows),
        "prefix_kept": sum(r["prefix_kept"] for r in rows),
        "llm_accuracy_old_cap": round(acc_old, 4),
        # the answers within the old cap stay as they are (greedy); the sample's rate stands for every cut one
        "llm_accuracy_new_cap_est": round((right_within + fix_rate * n_cut) / n, 4),
        "mean_new_tokens": round(sum(r["new_tokens"] for r in rows) / n_new, 1) if n_new else None,
        "model_calls": llm.misses, "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
