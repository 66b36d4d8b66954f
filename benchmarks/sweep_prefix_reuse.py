"""What prompt-prefix reuse and early stop save in a real sweep (local llama.cpp models).

Runs the SLM side of the sweep (levels 0.0..0.9, greedy trial, m samples) for the same items in
several modes, each into a fresh store, with the LLM's full answers served from a cache (so every mode
makes exactly the same SLM requests and no LLM call):

  grouped      the sweep's own order: one item at a time, its calls back to back (KV cache reused)
  interleaved  three items at a time: their calls interleave on the model, so consecutive prompts
               share (almost) nothing
  fresh        the grouped order, but every prompt evaluated from scratch (cache reset: no reuse)
  early-stop   grouped, stopping each item at its first passing level

llama.cpp's own counters give, per call, the prompt tokens actually evaluated and the time spent on
them, which do not depend on how long the sampled answers happen to be; wall time is reported too.

usage: python benchmarks/sweep_prefix_reuse.py [--items 3] [--offset 0] [--modes grouped,interleaved,...]
       [--source runs/gsm8k_train.sqlite] [--max-tokens 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from shepherd.models.base import Backend, Generation, GenerationRequest
from shepherd.models.catalog import DEFAULT_LLM, DEFAULT_SLM
from shepherd.models.llamacpp import LlamaCppBackend
from shepherd.models.sources import resolve_model
from shepherd.tasks.gsm8k import GSM8K
from shepherd.traces.cached import CachedBackend
from shepherd.traces.executor import LocalExecutor
from shepherd.traces.prefix import FreshContext
from shepherd.traces.store import TraceStore
from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep


class Probe(Backend):
    """Records llama.cpp's per-call prompt-eval / generation counters around each call."""

    def __init__(self, inner: Backend, llama_backend: LlamaCppBackend) -> None:
        self.inner, self.lb = inner, llama_backend
        self.model_id = inner.model_id
        self.records: list[dict] = []
        self._lock = asyncio.Lock()

    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        import llama_cpp

        llama = await asyncio.to_thread(self.lb.load)
        async with self._lock:
            llama_cpp.llama_perf_context_reset(llama._ctx.ctx)
            t0 = time.perf_counter()
            out = await self.inner.agenerate(request, n)
            wall = time.perf_counter() - t0
            p = llama_cpp.llama_perf_context(llama._ctx.ctx)
            self.records.append({"prompt_tokens": out[0].prompt_tokens, "p_eval_tokens": p.n_p_eval,
                                 "p_eval_s": p.t_p_eval_ms / 1e3, "gen_tokens": p.n_eval,
                                 "gen_s": p.t_eval_ms / 1e3, "wall_s": wall})
        return out

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def copy_llm_answers(source: Path, cache: TraceStore, model: str) -> int:
    if not source.is_file():
        return 0
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    n = 0
    for key, request, text, pt, ct, fr, lat in src.execute(
            "SELECT key, request, text, prompt_tokens, completion_tokens, finish_reason, latency_s "
            "FROM generations WHERE model = ? AND origin = 'model'", (model,)):
        if not cache.has(key):
            from shepherd.traces.store import request_from_json

            cache.put(key, model, request_from_json(request), Generation(text, pt, ct, fr, lat, model),
                      origin="copied")
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=3)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--split", default="train")
    ap.add_argument("--modes", default="grouped,interleaved,fresh,early-stop")
    ap.add_argument("--source", type=Path, default=Path("runs/gsm8k_train.sqlite"))
    ap.add_argument("--cache", type=Path, default=Path("runs/bench_llm_cache.sqlite"))
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    task = GSM8K()
    items = task.load(args.split)[args.offset: args.offset + args.items]
    slm_lb = LlamaCppBackend(resolve_model(DEFAULT_SLM), model_id=DEFAULT_SLM)
    llm_lb = LlamaCppBackend(resolve_model(DEFAULT_LLM), model_id=DEFAULT_LLM)
    cache = TraceStore(args.cache)
    copied = copy_llm_answers(args.source, cache, DEFAULT_LLM)
    llm = CachedBackend(llm_lb, cache)  # the LLM's full answers: from the cache, generated once if missing
    print(f"{len(items)} items ({items[0].id} ..), LLM answers copied from {args.source}: {copied}", flush=True)
    slm_lb.load()

    results = {}
    for mode in args.modes.split(","):
        inner = FreshContext(slm_lb) if mode == "fresh" else slm_lb
        probe = Probe(inner, slm_lb)
        plan = SweepPlan(samples=args.samples, temperature=0.7, early_stop=(mode == "early-stop"))
        cfg = SweepConfig(task=task.name, slm=DEFAULT_SLM, llm=DEFAULT_LLM, max_tokens=args.max_tokens)
        with tempfile.TemporaryDirectory() as tmp:
            store = TraceStore(Path(tmp) / "bench.sqlite")
            register_sweep(store, cfg, plan, args.split)
            ex = LocalExecutor(probe, llm, task, store, concurrency=3 if mode == "interleaved" else 1,
                               parallel_calls=False)
            t0 = time.perf_counter()
            units = list(ex.run(make_units(task, items, cfg, plan, args.split)))
            wall = time.perf_counter() - t0
            errors = [u.error for u in units if u.error]
            labels = {k: (v.kind, v.hint_fraction) for k, v in store.labels(task.name, filter=False).items()}
            store.close()
        recs = probe.records
        agg = {k: sum(r[k] for r in recs) for k in ("prompt_tokens", "p_eval_tokens", "p_eval_s", "gen_tokens",
                                                     "gen_s", "wall_s")}
        agg.update(calls=len(recs), sweep_wall_s=wall, errors=errors, labels=labels,
                   gen_tok_per_s=agg["gen_tokens"] / agg["gen_s"] if agg["gen_s"] else None,
                   p_eval_tok_per_s=agg["p_eval_tokens"] / agg["p_eval_s"] if agg["p_eval_s"] else None)
        results[mode] = agg
        print(f"{mode:12s} calls {agg['calls']:3d}  prompt tokens {agg['prompt_tokens']:6d}  evaluated "
              f"{agg['p_eval_tokens']:6d} in {agg['p_eval_s']:6.1f}s  generated {agg['gen_tokens']:6d} in "
              f"{agg['gen_s']:6.1f}s  SLM wall {agg['wall_s']:6.1f}s  (sweep {wall:.1f}s)", flush=True)

    if "grouped" in results and "fresh" in results:
        g, f = results["grouped"], results["fresh"]
        print(f"prefix reuse (grouped vs fresh): prompt tokens evaluated {g['p_eval_tokens']} vs "
              f"{f['p_eval_tokens']} ({1 - g['p_eval_tokens'] / f['p_eval_tokens']:.0%} fewer), prompt time "
              f"{g['p_eval_s']:.1f}s vs {f['p_eval_s']:.1f}s, SLM wall {g['wall_s']:.1f}s vs {f['wall_s']:.1f}s "
              f"(x{f['wall_s'] / g['wall_s']:.2f})")
    if "grouped" in results and "interleaved" in results:
        g, i = results["grouped"], results["interleaved"]
        print(f"ordering (grouped vs interleaved): prompt tokens evaluated {g['p_eval_tokens']} vs "
              f"{i['p_eval_tokens']}, prompt time {g['p_eval_s']:.1f}s vs {i['p_eval_s']:.1f}s, SLM wall "
              f"{g['wall_s']:.1f}s vs {i['wall_s']:.1f}s (x{i['wall_s'] / g['wall_s']:.2f})")
    if "grouped" in results and "early-stop" in results:
        g, e = results["grouped"], results["early-stop"]
        same = g["labels"] == e["labels"]
        print(f"early stop: {e['calls']} vs {g['calls']} SLM calls, SLM wall {e['wall_s']:.1f}s vs {g['wall_s']:.1f}s "
              f"(x{g['wall_s'] / e['wall_s']:.2f}); same labels: {same}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
