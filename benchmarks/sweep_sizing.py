"""How long would a sweep of N items take on a cluster? The sizing model of docs/scaling.md, fed with the
per-item token counts of the committed study traces.

    python benchmarks/sweep_sizing.py [--items 10000] [--servers 1,2,4,8]
        [--slm-tps 55] [--llm-tps 25] [--slm-prefill-tps 300] [--llm-prefill-tps 160]
        [--traces traces/gsm8k-test.jsonl.gz,...] [--out runs/sweep_sizing.json]

Per item, a full-grid sweep makes one LLM answer and (grid levels + samples) SLM continuations. From the
packed traces: the tokens each model generates per item, and the prompt tokens it must evaluate that no
earlier call of the item already evaluated (a continuation's prompt is the previous level's prompt plus
more hint: with prefix caching only the new hint is evaluated; without it the whole prompt). With aggregate
throughputs T (tokens/s one server sustains at its batch size, decode and prefill),

    seconds per item on one server pair = LLM_gen / T_llm + LLM_prefill / P_llm
                                        + SLM_gen / T_slm + SLM_prefill / P_slm

and N server pairs sweep N times the items per hour while the driver, which only writes rows, keeps up
(measured here: the store service takes about a millisecond a write; a unit makes about 30). The
throughputs are inputs: the defaults are this 2-core machine's batched engine (benchmarks/sweep_batched.py);
for a GPU, measure your server at your batch size (`vllm bench serve`) and pass its numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

DEFAULT_TRACES = ["traces/gsm8k-test.jsonl.gz", "traces/humaneval.jsonl.gz", "traces/mbpp.jsonl.gz",
                  "traces/cnk12.jsonl.gz"]


def per_item(path: Path) -> dict:
    from shepherd.traces.compact import read_compact

    header, items = read_compact(path)
    slm, llm = header["slm"], header["llm"]
    rows = []
    for it in items:
        gens = {g["key"]: g for g in it["generations"]}
        calls = [c for c in it["calls"]]
        llm_gen = sum(c[3] for c in calls if c[1] == llm)
        llm_prompt = sum(c[2] for c in calls if c[1] == llm)
        slm_calls = [c for c in calls if c[1] == slm]
        slm_gen = sum(c[3] for c in slm_calls)
        slm_prompt_all = sum(c[2] for c in slm_calls)
        # with prefix caching: the base prompt once, then each level's new hint tokens
        base = min((c[2] for c in slm_calls), default=0)
        hint_tokens = max((h[1] for h in it["hints"]), default=0)
        slm_prompt_cached = base + hint_tokens
        rows.append({"llm_gen": llm_gen, "llm_prompt": llm_prompt, "slm_gen": slm_gen, "slm_calls": len(slm_calls),
                     "slm_prompt_all": slm_prompt_all, "slm_prompt_cached": slm_prompt_cached})
        del gens
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]} if rows else {}
    return {"task": header["task"], "items": len(rows), "mean_per_item": {k: round(v, 1) for k, v in mean.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--servers", default="1,2,4,8", help="server pairs (one SLM and one LLM server each)")
    ap.add_argument("--slm-tps", type=float, default=55.0, help="SLM decode tokens/s of one server, batched")
    ap.add_argument("--llm-tps", type=float, default=25.0, help="LLM decode tokens/s of one server, batched")
    ap.add_argument("--slm-prefill-tps", type=float, default=300.0)
    ap.add_argument("--llm-prefill-tps", type=float, default=160.0)
    ap.add_argument("--no-prefix-cache", action="store_true", help="evaluate every SLM prompt whole")
    ap.add_argument("--traces", default=",".join(DEFAULT_TRACES))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = {"inputs": vars(args) | {"out": None}, "tasks": []}
    for p in args.traces.split(","):
        t = per_item(Path(p))
        m = t["mean_per_item"]
        slm_prompt = m["slm_prompt_all"] if args.no_prefix_cache else m["slm_prompt_cached"]
        sec = (m["llm_gen"] / args.llm_tps + m["llm_prompt"] / args.llm_prefill_tps
               + m["slm_gen"] / args.slm_tps + slm_prompt / args.slm_prefill_tps)
        t["seconds_per_item_one_pair"] = round(sec, 3)
        t["share_of_time"] = {"llm_decode": round(m["llm_gen"] / args.llm_tps / sec, 3),
                              "slm_decode": round(m["slm_gen"] / args.slm_tps / sec, 3),
                              "prefill": round(1 - (m["llm_gen"] / args.llm_tps + m["slm_gen"] / args.slm_tps) / sec, 3)}
        t["hours_for_items"] = {n: round(args.items * sec / int(n) / 3600, 1) for n in args.servers.split(",")}
        t["items_per_hour_one_pair"] = round(3600 / sec, 1)
        out["tasks"].append(t)
        print(f"{t['task']:10s} {t['items']:4d} items swept: per item LLM {m['llm_gen']:.0f} generated + "
              f"{m['llm_prompt']:.0f} prompt, SLM {m['slm_gen']:.0f} generated in {m['slm_calls']:.0f} calls + "
              f"{slm_prompt:.0f} prompt -> {sec:.2f} s/item on one pair ({3600 / sec:.1f} items/h); "
              f"{args.items} items: " + ", ".join(f"{n} pair(s) {h} h" for n, h in t["hours_for_items"].items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
